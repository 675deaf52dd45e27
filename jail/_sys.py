"""Thin ctypes layer over the Linux calls the jail needs (no SSH, no tmate here).

Everything is resolved at import time, in the master, while the filesystem is still
there: a jailed child must not need dlopen/dlsym or any file after pivot_root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc_path = ctypes.util.find_library("c") or "libc.so.6"
libc = ctypes.CDLL(_libc_path, use_errno=True)

# Namespace flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
CLONE_NEW_ALL = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _fn(name: str, restype, *argtypes):
    f = libc[name]  # a fresh function object: prctl is bound twice with different argtypes
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_unshare = _fn("unshare", ctypes.c_int, ctypes.c_int)
_mount = _fn(
    "mount", ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
)
_umount2 = _fn("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_prctl = _fn(
    "prctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong
)
_sethostname = _fn("sethostname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_setdomainname = _fn("setdomainname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_syscall = _fn("syscall", ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_capset = _fn("capset", ctypes.c_int, ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


_prctl_ptr = _fn(
    "prctl",
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.POINTER(SockFprog),
    ctypes.c_ulong,
    ctypes.c_ulong,
)

# pivot_root has no glibc wrapper: its number, per architecture.
_PIVOT_ROOT_NR = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "ppc64le": 203,
    "s390x": 217,
    "i686": 217,
    "armv7l": 218,
}
PIVOT_ROOT_NR = _PIVOT_ROOT_NR.get(os.uname().machine)


def _check(ret: int, what: str) -> int:
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def mount(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None = None
) -> None:
    _check(_mount(source, target, fstype, flags, data), f"mount {target!r}")


def umount2(target: bytes, flags: int) -> None:
    _check(_umount2(target, flags), f"umount2 {target!r}")


def pivot_root(new_root: bytes, put_old: bytes) -> None:
    if PIVOT_ROOT_NR is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(_syscall(PIVOT_ROOT_NR, new_root, put_old), "pivot_root")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(_prctl(option, a2, a3, a4, a5), f"prctl({option})")


def sethostname(name: bytes) -> None:
    _check(_sethostname(name, len(name)), "sethostname")


def setdomainname(name: bytes) -> None:
    _check(_setdomainname(name, len(name)), "setdomainname")


def drop_bounding_set(cap_last_cap: int) -> None:
    for cap in range(cap_last_cap + 1):
        _check(_prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"PR_CAPBSET_DROP {cap}")


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets, then the ambient set."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_capset(ctypes.byref(hdr), data), "capset")
    _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "PR_CAP_AMBIENT_CLEAR_ALL")


def load_seccomp(prog: SockFprog) -> None:
    _check(_prctl_ptr(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "PR_SET_SECCOMP")
