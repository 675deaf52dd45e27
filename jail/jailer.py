"""The jail: forks one process per connection and locks it down before it runs any code.

Sequence (see docs/architecture.md section 6; the master is single-threaded). This module is the
master's side; jail/child.py runs C1 and C2, jail/title.py sets the process title:

  master                         C1 (intermediate)              C2 (the session, PID 1)
  ------                         -----------------              -----------------------
  alloc uid, socketpair, fork -> stdin/out/err -> /dev/null
                                 setgroups([])  (root mode)
                                 unshare(user|mnt|pid|ipc|net|uts|cgroup)
                                 fork ----------------------->  gc.freeze(); wait for "G"
  <- "P<pid of C2>"              exit(0)
  reap C1 (C2 is reparented to
  the master: PR_SET_CHILD_SUBREAPER)
  /proc/C2/setgroups = deny,
  uid_map/gid_map: inside -> outside
  "G" ------------------------------------------------------->  mounts private, read-only tmpfs
                                                                as root (pivot_root . .), detach
                                                                old root, chroot/chdir /
                                                                sethostname, setdomainname
                                                                setresgid/setresuid(inside)
                                                                drop bounding set, clear e/p/i
                                                                and ambient capabilities
                                                                no_new_privs, dumpable 0
                                                                RLIMIT_AS: the memory cap
                                                                seccomp filter
                                                                SIGTERM/HUP/INT -> exit,
                                                                SIGCHLD ignored (auto-reap)
                                                                close fds not kept, title
  <- "R" (or "E<step>: <reason>") ---------------------------  target(); _exit(its result)

With `spawn_by`, the fork of C1 is a zygote's (jail/zygote.py): the master sends it the spawn's
socket and waits for C1's pid, and for the zygote to have reaped C1 where it would reap C1
itself; the rest is the same. The master waits at most `spawn_timeout` seconds for all of it; on
any failure it kills and reaps whatever it started and raises JailError. C2 does nothing before
"G", and exits on EOF, so a C2 whose C1 was killed before reporting its pid cannot run
half-jailed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _sys, hotcode, pools
from .child import UNSHARE_FLAGS, ChildPlan, OnError, Target, reap, run_child1
from .heap import HeapReport, pack_hot, prepare_heap
from .seccomp import SeccompProgram, build_filter
from .zygote import Zygote, ZygoteError

if TYPE_CHECKING:
    from .standby import Standby

EXIT_SIGNALLED = 128 + signal.SIGTERM

# The hard memory cap of every jailed connection process (`--session-memory`, limit name
# `session-memory`), as RLIMIT_AS (soft = hard), set in the jail before seccomp: address space,
# not resident memory, because that is what a process can be capped by without a cgroup v2 memory
# controller (this machine's unified hierarchy has none; a rootless relay can create no cgroups).
# Sized with bench/session_memory.py (Python 3.11, this 2-core machine):
# - a connection process starts with ~350 MB of address space inherited from the master, 255 MB
#   of it PROT_NONE reservations of the malloc arenas the warm-up's threads made (free), the rest
#   libraries, the frozen heap and thread stacks; 40 MB resident;
# - a busy session (4 windows, 5 panes at 200x50 under seq and ls -laR, alternate screen used,
#   history full, 3 viewers): 376 MB virtual at its peak, 64 MB resident; with 30 windows
#   (31 such panes): 514 MB virtual, 165 MB resident;
# - each further pane costs ~1.5 MB of address space (3 with the alternate screen) besides ~10
#   bytes per cell and its history, which the session model bounds per session (4M cells, 128 MB
#   of history: relay/tmate/wire.py), so even 100 busy panes stay near ~800 MB.
# 1024 MB is twice what 30 busy windows need; a session that reaches it ends with the reason
# logged (relay/conn/host.py) and only that session ends.
DEFAULT_MEMORY_MB = 1024
MIN_MEMORY_MB = 64  # the smallest cap, and the least room a child needs above what it inherits


class JailError(Exception):
    """A jail could not be set up; str(e) is a one-line reason for the log."""


@dataclass
class JailConfig:
    uid_base: int = 100000
    uid_count: int = 50000
    inside_uid: int = 1000
    rootless: bool | None = None
    seccomp: bool = True
    empty_root: str | None = None
    spawn_timeout: float = 2.0
    memory_mb: int | None = DEFAULT_MEMORY_MB  # RLIMIT_AS of every jailed process; None: no cap


@dataclass
class JailedProcess:
    pid: int
    uid: int


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _vm_size_mb() -> int | None:
    """This process's address space (VmSize) in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _has_setid_capabilities() -> bool:
    """CAP_SETUID and CAP_SETGID are effective (a dedicated user given them as ambient capabilities)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, ValueError, StopIteration, IndexError):
        return False
    return eff & (1 << 6 | 1 << 7) == 1 << 6 | 1 << 7  # CAP_SETGID = 6, CAP_SETUID = 7


def _userns_hint() -> str:
    hints = []
    if _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        hints.append("sysctl kernel.unprivileged_userns_clone=0")
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        hints.append("sysctl user.max_user_namespaces=0")
    if _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1:
        hints.append("sysctl kernel.apparmor_restrict_unprivileged_userns=1")
    return f" ({', '.join(hints)})" if hints else ""


class Jailer:
    def __init__(self, config: JailConfig):
        self.config = c = config
        pools.one_arena()  # before the warm-up's threads (jail/pools.py)
        euid = os.geteuid()
        # Root mode needs only CAP_SETUID and CAP_SETGID (measured: systemd/pymate-relay.service).
        can_map = euid == 0 or _has_setid_capabilities()
        self.rootless = (not can_map) if c.rootless is None else bool(c.rootless)
        if not self.rootless and not can_map:
            raise JailError("root mode needs root or CAP_SETUID+CAP_SETGID; use rootless=True or None")
        if self.rootless and euid == 0:
            raise JailError("rootless mode as root would map every jail to uid 0; use root mode")
        if not (0 < c.inside_uid < 65534):
            raise JailError(f"inside_uid {c.inside_uid} must be in 1..65533")
        if not self.rootless:
            last = c.uid_base + c.uid_count - 1
            if c.uid_count < 1 or c.uid_base < 1 or last > 0xFFFFFFFE:
                raise JailError(f"bad uid range {c.uid_base}+{c.uid_count}")
            if c.uid_base <= 65534 <= last:
                raise JailError(f"uid range {c.uid_base}..{last} contains 65534 (nobody)")
        if c.empty_root is not None and not os.path.isdir(c.empty_root):
            raise JailError(f"empty_root {c.empty_root!r} is not a directory")
        if c.spawn_timeout <= 0:
            raise JailError("spawn_timeout must be positive")
        if c.memory_mb is not None and c.memory_mb < MIN_MEMORY_MB:
            raise JailError(f"memory cap {c.memory_mb} MB is below {MIN_MEMORY_MB} MB")
        self._in_use: set[int] = set()
        self._next = 0
        self._prepared = False
        self.heap: HeapReport | None = None  # set by prepare()
        self.standby: Standby | None = None  # jail/standby.py, when the master keeps one
        self._own_root: str | None = None
        self._root: bytes = b""
        self._seccomp: SeccompProgram | None = None
        self._cap_last_cap = 0
        self._keep_alive: list[object] = []
        # Test hooks: make the child fail (raise) or hang at the named step.
        self._test_fail_step: str | None = None
        self._test_hang_step: str | None = None
        self._probe_userns()

    # ----------------------------------------------------------------- master side

    def _probe_userns(self) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                _sys.unshare(UNSHARE_FLAGS)
                code = 0
            except OSError as e:
                code = e.errno or 255
            except BaseException:
                code = 255
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            why = os.strerror(code) if 0 < code < 255 else f"exit status {code}"
            mode = "rootless" if self.rootless else "root"
            raise JailError(f"user namespaces unavailable in {mode} mode: unshare: {why}{_userns_hint()}")

    def prepare(self, learn: Iterable[str] = ()) -> None:
        """Once in the master, after importing what targets need, before any spawn. `learn`: the
        kinds of report on the code connection processes ran (jail/hotcode.py)."""
        if self._prepared:
            return
        # Shared libraries that are dlopen'ed lazily (pthread_exit/cancel unwind via
        # libgcc_s) must be loaded while the filesystem is there.
        for lib in ("libgcc_s.so.1",):
            try:
                self._keep_alive.append(ctypes.CDLL(lib))
            except OSError as e:
                raise JailError(f"cannot preload {lib}: {e}") from None
        cap_last = _read_int("/proc/sys/kernel/cap_last_cap")
        if cap_last is None:
            raise JailError("cannot read /proc/sys/kernel/cap_last_cap")
        self._cap_last_cap = cap_last
        time.localtime()  # loads /etc/localtime into libc
        for enc in ("utf-8", "ascii", "latin-1"):
            "x".encode(enc)
        self._check_memory_cap()
        if self.config.seccomp:
            try:
                self._seccomp = build_filter()
            except Exception as e:
                raise JailError(f"cannot build seccomp filter: {e}") from None
        try:
            _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 1)
        except OSError as e:
            raise JailError(f"PR_SET_CHILD_SUBREAPER: {e}") from None
        if self.config.empty_root is None:
            base = "/run" if (not self.rootless and os.access("/run", os.W_OK)) else None
            self._own_root = tempfile.mkdtemp(prefix="pymate-jail-root-", dir=base)
            os.chmod(self._own_root, 0o555)
            atexit.register(self.close)
            root = self._own_root
        else:
            root = self.config.empty_root
        self._root = os.path.abspath(root).encode()
        # Keep inherited objects out of the children's (and the master's) collections, and
        # where the interpreter honours it (3.12+) make them immortal: nothing of the warm heap
        # gets its GC header or its reference count written, so its pages stay shared
        # (jail/heap.py says which objects, why it is safe and what it costs).
        self.heap = prepare_heap(learn)
        self._prepared = True

    def _check_memory_cap(self) -> None:
        """A cap below what a child inherits would leave it no memory at all: refuse it at start."""
        cap = self.config.memory_mb
        size = _vm_size_mb()
        if cap is not None and size is not None and cap < size + MIN_MEMORY_MB:
            raise JailError(
                f"memory cap {cap} MB leaves no room: a connection process starts with {size} MB of "
                f"address space (the master's); give at least {size + MIN_MEMORY_MB} MB"
            )

    def pack_hot(self, kind: str, ids: Iterable[int]) -> int | None:
        """A connection process told the code it ran (jail/hotcode.py): the first time for that
        kind, copy it next to each other and let the standbys forked before go; the number of
        code objects copied, or None when the kind was learnt already (or never wanted)."""
        if not hotcode.wanted(kind):
            return None
        n = pack_hot(kind, ids, immortal=self.heap is not None and self.heap.immortal)
        if n and self.standby is not None:
            self.standby.flush()
        return n

    @property
    def memory_cap_bytes(self) -> int | None:
        """RLIMIT_AS of every jailed process, or None."""
        mb = self.config.memory_mb
        return None if mb is None else mb * 1024 * 1024

    def close(self) -> None:
        """Kill any standby; remove the private empty-root directory (the master calls it at exit)."""
        if self.standby is not None:
            self.standby.close()
        if self._own_root is not None:
            shutil.rmtree(self._own_root, ignore_errors=True)
            self._own_root = None

    def _alloc_uid(self) -> int:
        if self.rootless:
            return os.geteuid()
        c = self.config
        if len(self._in_use) >= c.uid_count:
            raise JailError(f"no free uid: all {c.uid_count} from {c.uid_base} in use")
        for i in range(c.uid_count):
            off = (self._next + i) % c.uid_count
            uid = c.uid_base + off
            if uid not in self._in_use:
                self._in_use.add(uid)
                self._next = (off + 1) % c.uid_count
                return uid
        raise JailError("no free uid")  # pragma: no cover

    def release(self, proc: JailedProcess) -> None:
        """After the master reaped proc.pid: its uid may be given to a new connection."""
        if not self.rootless:
            self._in_use.discard(proc.uid)

    def spawn(
        self,
        target: Target,
        *,
        keep_fds: Sequence[int],
        title: str,
        on_error: OnError | None = None,
    ) -> JailedProcess:
        """A jailed process running `target`, forked from this process."""
        return self._spawn(keep_fds, title, target, on_error, None, None)

    def spawn_by(
        self, zygote: Zygote, *, keep_fds: Sequence[int], args: list | None, title: str
    ) -> JailedProcess:
        """A jailed process forked by `zygote` (jail/zygote.py), running the target it makes of
        `keep_fds` and `args`."""
        return self._spawn(keep_fds, title, None, None, zygote, args)

    def _spawn(
        self,
        keep_fds: Sequence[int],
        title: str,
        target: Target | None,
        on_error: OnError | None,
        zygote: Zygote | None,
        args: list | None,
    ) -> JailedProcess:
        plan = self.plan(keep_fds, title)
        uid = self._alloc_uid()
        gid = os.getegid() if self.rootless else uid
        deadline = time.monotonic() + self.config.spawn_timeout
        m, c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c1: int | None = None
        c2: int | None = None
        ok = False
        try:
            if zygote is None:
                assert target is not None
                c1 = os.fork()
                if c1 == 0:  # pragma: no cover - runs in the child
                    try:
                        m.close()
                        run_child1(plan, c, target, on_error)
                    finally:
                        os._exit(127)
            else:
                try:
                    c1 = zygote.fork(c, keep_fds, plan, args, deadline)
                except ZygoteError as e:
                    raise JailError(f"zygote: {e}") from None
            c.close()
            msg = self._recv(m, deadline, "namespaces")
            if not msg.startswith(b"P"):
                raise JailError(f"unexpected message from jail: {msg[:40]!r}")
            c2 = int(msg[1:])
            if zygote is None:
                reap(c1)
            else:
                try:
                    zygote.exited(c1, deadline)
                except ZygoteError as e:
                    raise JailError(f"zygote: {e}") from None
            c1 = None
            try:
                self._write_maps(c2, uid, gid)
            except OSError as e:
                raise JailError(f"writing uid/gid maps of {c2}: {e}") from None
            m.send(b"G")
            msg = self._recv(m, deadline, "jail setup")
            if msg != b"R":
                raise JailError(f"unexpected message from jail: {msg[:40]!r}")
            ok = True
            return JailedProcess(pid=c2, uid=uid)
        except JailError:
            raise
        except Exception as e:
            raise JailError(f"spawn failed: {type(e).__name__}: {e}") from None
        finally:
            if not ok:
                self._abort(m, c1, c2, zygote)
                if not self.rootless:
                    self._in_use.discard(uid)
            m.close()
            c.close()

    def plan(self, keep_fds: Sequence[int], title: str) -> ChildPlan:
        """What the children of a spawn keeping `keep_fds` need (after prepare())."""
        self.prepare()
        return ChildPlan(
            rootless=self.rootless,
            inside_uid=self.config.inside_uid,
            root=self._root,
            seccomp=self._seccomp,
            cap_last_cap=self._cap_last_cap,
            keep=sorted({int(fd) for fd in keep_fds}),
            title=title,
            memory_cap=self.memory_cap_bytes,
            fail_step=self._test_fail_step,
            hang_step=self._test_hang_step,
        )

    def _recv(self, m: socket.socket, deadline: float, what: str) -> bytes:
        left = deadline - time.monotonic()
        poller = select.poll()  # not select(): the master's fds go past 1024
        poller.register(m, select.POLLIN)
        if left <= 0 or not poller.poll(left * 1000):
            raise JailError(f"timed out after {self.config.spawn_timeout:g} s waiting for {what}")
        msg = m.recv(4096)
        if not msg:
            raise JailError(f"jailed process exited during {what}")
        if msg.startswith(b"E"):
            raise JailError(msg[1:].decode("utf-8", "replace").replace("\n", " "))
        return msg

    def _write_maps(self, pid: int, uid: int, gid: int) -> None:
        inside = self.config.inside_uid
        for name, data in (
            ("setgroups", b"deny"),
            ("uid_map", b"%d %d 1\n" % (inside, uid)),
            ("gid_map", b"%d %d 1\n" % (inside, gid)),
        ):
            fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _abort(self, m: socket.socket, c1: int | None, c2: int | None, zygote: Zygote | None = None) -> None:
        """Kill and reap everything this spawn started (C1 is a zygote's child when `zygote`
        is given: it reaps it, and then C2 is ours)."""
        if c2 is None:
            # C1 may have reported C2's pid just as we gave up.
            try:
                m.setblocking(False)
                msg = m.recv(4096)
                if msg.startswith(b"P"):
                    c2 = int(msg[1:])
            except (OSError, ValueError):
                pass
        for pid in (c2, c1):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if c1 is not None:  # after this, C2 (if any) is our child: we are a subreaper
            if zygote is None:
                reap(c1)
            else:
                try:
                    zygote.exited(c1, time.monotonic() + 1.0)
                except ZygoteError:
                    pass
        if c2 is not None:
            reap(c2)
