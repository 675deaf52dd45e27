"""The jail: forks one process per connection and locks it down before it runs any code.

Sequence (see ARCHITECTURE.md section 2; the master is single-threaded):

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
                                                                seccomp filter
                                                                SIGTERM/HUP/INT -> exit,
                                                                SIGCHLD ignored (auto-reap)
                                                                close fds not kept, title
  <- "R" (or "E<step>: <reason>") ---------------------------  target(); _exit(its result)

The master waits at most `spawn_timeout` seconds for all of it; on any failure it kills and
reaps whatever it started and raises JailError. C2 does nothing before "G", and exits on EOF,
so a C2 whose C1 was killed before reporting its pid cannot run half-jailed.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import _sys
from .seccomp import SeccompProgram, build_filter

UNSHARE_FLAGS = (
    _sys.CLONE_NEWUSER
    | _sys.CLONE_NEWNS
    | _sys.CLONE_NEWPID
    | _sys.CLONE_NEWIPC
    | _sys.CLONE_NEWNET
    | _sys.CLONE_NEWUTS
    | _sys.CLONE_NEWCGROUP
)
HOSTNAME = b"pymate"
DOMAINNAME = b"(none)"
EXIT_SIGNALLED = 128 + signal.SIGTERM


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


@dataclass
class JailedProcess:
    pid: int
    uid: int


_ENVIRON_COPIES: list = []  # libc's environ points here once the original strings are freed


def _free_environ_strings(env_start: int, env_end: int) -> bool:
    """Copy libc's environment strings elsewhere and repoint `environ` at the copies, so the
    original strings' memory (right after argv) may carry a longer process title. Python's
    os.environ is a copy made at start-up and is not affected."""
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(_sys.libc, "environ")
        i = 0
        while environ[i]:
            addr = environ[i]
            if env_start <= addr < env_end:
                copy = ctypes.create_string_buffer(ctypes.string_at(addr))
                _ENVIRON_COPIES.append(copy)
                environ[i] = ctypes.addressof(copy)
            i += 1
        return True
    except (ValueError, OSError):
        return False


def _argv_area() -> tuple[int, int] | None:
    """The memory ps shows as this process's command line: the original argv strings and, when
    they follow them directly, the environment strings (moved out of the way first).

    Read once at import, in the master, while /proc is there; forked children have the
    same layout. (python-prctl's set_proctitle finds the area by walking back from
    environ[0] instead, and segfaults when the environment is empty.)
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        # stat fields 48-51: arg_start, arg_end, env_start, env_end
        start, end, env_start, env_end = (int(x) for x in fields[45:49])
    except (OSError, ValueError, IndexError):
        return None
    if not 0 < start < end:
        return None
    if env_start == end and env_end > env_start and _free_environ_strings(env_start, env_end):
        end = env_end
    return start, end


_ARGV_AREA = _argv_area()


def set_process_title(title: str) -> None:
    """Title in ps (argv and environment area, truncated to its length) and
    comm (PR_SET_NAME, 15 bytes). Works inside the jail: no file, no allocation by libc."""
    raw = title.encode("utf-8", "replace")
    if _ARGV_AREA is not None:
        start, end = _ARGV_AREA
        size = end - start
        text = raw[: size - 1].decode("utf-8", "ignore").encode()
        ctypes.memmove(start, text + b"\0" * (size - len(text)), size)
    name = ctypes.create_string_buffer(raw[:15].decode("utf-8", "ignore").encode(), 16)
    _sys.prctl(_sys.PR_SET_NAME, ctypes.addressof(name))


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _userns_hint() -> str:
    hints = []
    if _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        hints.append("sysctl kernel.unprivileged_userns_clone=0")
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        hints.append("sysctl user.max_user_namespaces=0")
    if _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1:
        hints.append("sysctl kernel.apparmor_restrict_unprivileged_userns=1")
    return f" ({', '.join(hints)})" if hints else ""


class _Step(Exception):
    """A failure forced by a test hook; carries the step it was forced at."""

    def __init__(self, step: str):
        super().__init__(f"forced failure (test hook) at {step}")
        self.step = step


class Jailer:
    def __init__(self, config: JailConfig):
        self.config = c = config
        euid = os.geteuid()
        self.rootless = (euid != 0) if c.rootless is None else bool(c.rootless)
        if not self.rootless and euid != 0:
            raise JailError("root mode needs root (euid 0); use rootless=True or None")
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
        self._in_use: set[int] = set()
        self._next = 0
        self._prepared = False
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

    def prepare(self) -> None:
        """Once in the master, after importing what targets need, before any spawn."""
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
        # Keep inherited objects out of the children's (and the master's) collections:
        # nothing of the warm heap gets its GC header written, so its pages stay shared.
        gc.freeze()
        self._prepared = True

    def close(self) -> None:
        """Remove the private empty-root directory (the master calls it at exit)."""
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
        target: Callable[[], int | None],
        *,
        keep_fds: Sequence[int],
        title: str,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> JailedProcess:
        self.prepare()
        keep = sorted({int(fd) for fd in keep_fds})
        uid = self._alloc_uid()
        gid = os.getegid() if self.rootless else uid
        deadline = time.monotonic() + self.config.spawn_timeout
        m, c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c1: int | None = None
        c2: int | None = None
        ok = False
        try:
            c1 = os.fork()
            if c1 == 0:  # pragma: no cover - runs in the child
                try:
                    m.close()
                    self._child1(c, keep, title, target, on_error)
                finally:
                    os._exit(127)
            c.close()
            msg = self._recv(m, deadline, "namespaces")
            if not msg.startswith(b"P"):
                raise JailError(f"unexpected message from jail: {msg[:40]!r}")
            c2 = int(msg[1:])
            self._reap(c1)
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
                self._abort(m, c1, c2)
                if not self.rootless:
                    self._in_use.discard(uid)
            m.close()
            c.close()

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

    @staticmethod
    def _reap(pid: int) -> None:
        while True:
            try:
                os.waitpid(pid, 0)
                return
            except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler)
                return
            except InterruptedError:  # pragma: no cover
                continue

    def _abort(self, m: socket.socket, c1: int | None, c2: int | None) -> None:
        """Kill and reap everything this spawn started."""
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
        if c1 is not None:
            self._reap(c1)  # after this, C2 (if any) is our child: we are a subreaper
        if c2 is not None:
            self._reap(c2)

    # ----------------------------------------------------------------- child side

    def _step(self, name: str) -> str:
        if self._test_hang_step == name:
            while True:
                time.sleep(3600)
        if self._test_fail_step == name:
            raise _Step(name)
        return name

    def _child1(
        self,
        c: socket.socket,
        keep: list[int],
        title: str,
        target: Callable[[], int | None],
        on_error: Callable[[BaseException], object] | None,
    ) -> None:  # pragma: no cover
        step = "start"
        try:
            step = self._step("stdio")
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                if null != fd:
                    os.dup2(null, fd)
            if null > 2:
                os.close(null)
            if not self.rootless:
                step = self._step("setgroups")
                os.setgroups([])
            step = self._step("unshare")
            _sys.unshare(UNSHARE_FLAGS)
            step = self._step("fork")
            pid = os.fork()
            if pid == 0:
                try:
                    self._child2(c, keep, title, target, on_error)
                finally:
                    os._exit(127)
            c.send(b"P%d" % pid)
            os._exit(0)
        except BaseException as e:
            _report_error(c, step, e)
            os._exit(127)

    def _child2(
        self,
        c: socket.socket,
        keep: list[int],
        title: str,
        target: Callable[[], int | None],
        on_error: Callable[[BaseException], object] | None,
    ) -> None:  # pragma: no cover
        # Everything inherited is permanent for this process: the collector never walks
        # (and so never dirties) the master's objects, and never finalizes the master's
        # garbage (whose fds we are about to close).
        gc.freeze()
        step = "wait for uid map"
        try:
            if c.recv(16) != b"G":
                os._exit(126)  # the master gave up
            cfg = self.config
            inside = cfg.inside_uid
            step = self._step("mounts")
            _sys.mount(None, b"/", None, _sys.MS_REC | _sys.MS_PRIVATE)
            step = self._step("empty root")
            _sys.mount(
                b"tmpfs",
                self._root,
                b"tmpfs",
                _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
                b"size=4k,nr_inodes=2,mode=555",
            )
            os.chdir(self._root)
            step = self._step("pivot_root")
            _sys.pivot_root(b".", b".")
            _sys.umount2(b".", _sys.MNT_DETACH)
            os.chroot(".")
            os.chdir("/")
            step = self._step("hostname")
            _sys.sethostname(HOSTNAME)
            _sys.setdomainname(DOMAINNAME)
            step = self._step("setresuid")
            os.setresgid(inside, inside, inside)
            os.setresuid(inside, inside, inside)
            step = self._step("capabilities")
            _sys.drop_bounding_set(self._cap_last_cap)
            _sys.clear_capabilities()
            step = self._step("no_new_privs")
            _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1)
            step = self._step("dumpable")
            _sys.prctl(_sys.PR_SET_DUMPABLE, 0)
            step = self._step("seccomp")
            if self._seccomp is not None:
                self._seccomp.load()
            step = self._step("signals")
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, _exit_on_signal)
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # PID 1: children auto-reaped
            step = self._step("close fds")
            _close_fds_except(set(keep) | {0, 1, 2, c.fileno()})
            step = self._step("title")
            set_process_title(title)
            step = self._step("ready")
            c.send(b"R")
            c.close()
        except BaseException as e:
            _report_error(c, step, e)
            os._exit(127)
        code = 0
        try:
            rc = target()
            code = rc if isinstance(rc, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            code = 1
            if on_error is not None:
                try:
                    on_error(e)
                except BaseException:
                    pass
        os._exit(code & 0xFF)


def _exit_on_signal(signum, frame):  # pragma: no cover - runs in the jail
    os._exit(128 + signum)


def _report_error(c: socket.socket, step: str, e: BaseException) -> None:  # pragma: no cover
    try:
        if isinstance(e, _Step):
            step, reason = e.step, str(e)
        else:
            reason = f"{type(e).__name__}: {e}"
        c.send(
            b"E" + f"jail step {step!r} failed: {reason}".replace("\n", " ").encode("utf-8", "replace")[:2000]
        )
    except BaseException:
        pass


try:
    _close_range = _sys.libc.close_range
    _close_range.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
    _close_range.restype = ctypes.c_int
except AttributeError:  # pragma: no cover - glibc < 2.34
    _close_range = None


def _close_fds_except(keep: set[int]) -> None:
    lo = 0
    for fd in sorted(keep) + [0x7FFFFFFF + 1]:
        if fd > lo:
            hi = fd - 1
            if _close_range is None or _close_range(lo, min(hi, 0xFFFFFFFF), 0) != 0:
                os.closerange(lo, hi + 1)
        lo = fd + 1
