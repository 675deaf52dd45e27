"""The jail's seccomp policy: an allow-list, compiled once in the master.

Default action: fail with EPERM. A syscall some library merely probes then fails like any
denied operation instead of killing the whole session; everything dangerous (mount, ptrace,
unshare, setns, kexec, bpf, keyctl, open_by_handle_at, module loading, io_uring, execve,
socket, ...) is simply absent from the list and so gets EPERM too. `clone3` gets ENOSYS so
glibc's pthread_create falls back to `clone`, whose flags *can* be checked: only thread
creation (CLONE_THREAD set, no CLONE_NEW* flag) is allowed, so the jail can neither fork
nor make new namespaces. A foreign architecture (e.g. int 0x80 on x86_64) is killed.

The filter is exported as raw BPF in the master (libseccomp and its allocations never run in
the child); the child only calls prctl(PR_SET_SECCOMP) on the prepared program.
"""

from __future__ import annotations

import ctypes
import errno
import os

from . import _sys

# Plain allow-list: what a Python 3.11 process running threads, paramiko (cryptography),
# msgpack and pyghostty over already-open sockets uses. Checked with strace on the real
# workload; see tests/test_jail.py::test_paramiko_msgpack_ghostty_inside_jail.
ALLOW = (
    # memory
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    # fd I/O on fds the process already has
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fstat",
    "newfstatat",
    "statx",
    "getcwd",
    # waiting
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "pipe",
    "pipe2",
    "eventfd2",
    # sockets that already exist (accepted TCP, control socketpair, SCM_RIGHTS)
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    # threads and synchronisation
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "gettid",
    "sched_yield",
    "sched_getaffinity",
    "membarrier",
    # time
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "alarm",
    "setitimer",
    "getitimer",
    # signals (the pid namespace confines kill to the jail itself)
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sigaltstack",
    "kill",
    "tgkill",
    "tkill",
    "pause",
    "restart_syscall",
    # identity and limits (read-only)
    "getpid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getpgrp",
    "getpgid",
    "getsid",
    "uname",
    "getrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "sysinfo",
    "getcpu",
    "getrandom",
    # ending, reaping (PID 1)
    "exit",
    "exit_group",
    "wait4",
    "waitid",
)

# Never on the list (asserted by the tests and by build_filter): these get EPERM.
DENY = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "execve",
    "execveat",
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "open",
    "openat",
    "openat2",
    "setuid",
    "setgid",
    "setresuid",
    "setresgid",
    "setgroups",
    "capset",
    "personality",
    "seccomp",
    "fork",
    "vfork",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "memfd_create",
    "mknod",
    "mknodat",
    "symlink",
    "link",
    "unlink",
    "rename",
)

# ioctl requests allowed (x86_64/generic values): isatty, readable bytes, (non)blocking,
# close-on-exec flags, window size. Everything else (e.g. TIOCSTI) gets EPERM.
IOCTL_ALLOW = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)
# prctl options allowed: the thread name (set_process_title).
PRCTL_ALLOW = (_sys.PR_SET_NAME, _sys.PR_GET_NAME)
AF_UNIX = 1

DEFAULT_ACTION_ERRNO = errno.EPERM


class SeccompProgram:
    """A compiled BPF program kept alive in the master and inherited by every child."""

    def __init__(self, raw: bytes, n_rules: int):
        n = len(raw) // ctypes.sizeof(_sys.SockFilter)
        if n == 0 or len(raw) % ctypes.sizeof(_sys.SockFilter):
            raise ValueError(f"bad BPF program ({len(raw)} bytes)")
        self.raw = raw
        self.instructions = n
        self.rules = n_rules
        self._array = (_sys.SockFilter * n).from_buffer_copy(raw)
        self.fprog = _sys.SockFprog(n, ctypes.cast(self._array, ctypes.POINTER(_sys.SockFilter)))

    def load(self) -> None:
        """In the child, after PR_SET_NO_NEW_PRIVS."""
        _sys.load_seccomp(self.fprog)


class _Fd:
    def __init__(self, fd: int):
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def build_filter() -> SeccompProgram:
    import pyseccomp as sc

    overlap = set(ALLOW) & set(DENY)
    if overlap:  # pragma: no cover - a programming error
        raise AssertionError(f"allowed and denied: {sorted(overlap)}")
    f = sc.SyscallFilter(sc.ERRNO(DEFAULT_ACTION_ERRNO))
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    n = 0
    for name in ALLOW:
        try:
            f.add_rule(sc.ALLOW, name)
        except (OSError, ValueError):  # not a syscall on this architecture
            continue
        n += 1
    # Threads only: CLONE_THREAD set and no namespace flag.
    mask = _sys.CLONE_NEW_ALL | _sys.CLONE_THREAD
    f.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, mask, _sys.CLONE_THREAD))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for req in IOCTL_ALLOW:
        f.add_rule(sc.ALLOW, "ioctl", sc.Arg(1, sc.EQ, req))
    for opt in PRCTL_ALLOW:
        f.add_rule(sc.ALLOW, "prctl", sc.Arg(0, sc.EQ, opt))
    f.add_rule(sc.ALLOW, "socketpair", sc.Arg(0, sc.EQ, AF_UNIX))
    n += 5
    r, w = os.pipe()
    try:
        f.export_bpf(_Fd(w))
        os.close(w)
        w = -1
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return SeccompProgram(b"".join(chunks), n)
