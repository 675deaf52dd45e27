"""The child side of a spawn: C1 (enters the namespaces, forks C2, exits) and C2 (waits for its
uid map, takes the jail steps, runs the target). See jail/jailer.py for the whole sequence.

Everything here runs in a forked child of the master and ends in os._exit.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from . import _sys
from .seccomp import SeccompProgram
from .title import set_process_title

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

Target = Callable[[], int | None]
OnError = Callable[[BaseException], object]


class _Step(Exception):
    """A failure forced by a test hook; carries the step it was forced at."""

    def __init__(self, step: str):
        super().__init__(f"forced failure (test hook) at {step}")
        self.step = step


@dataclass(frozen=True)
class ChildPlan:
    """What the children of one spawn need from the Jailer, fixed before the fork."""

    rootless: bool
    inside_uid: int
    root: bytes  # the empty directory that becomes /
    seccomp: SeccompProgram | None
    cap_last_cap: int
    keep: list[int]  # fds the target keeps (besides 0, 1, 2)
    title: str
    memory_cap: int | None = None  # RLIMIT_AS in bytes (soft and hard), or None
    # Test hooks: make the child fail (raise) or hang at the named step.
    fail_step: str | None = None
    hang_step: str | None = None

    def step(self, name: str) -> str:
        if self.hang_step == name:
            while True:
                time.sleep(3600)
        if self.fail_step == name:
            raise _Step(name)
        return name


def run_child1(
    plan: ChildPlan, c: socket.socket, target: Target, on_error: OnError | None
) -> None:  # pragma: no cover - runs in the child
    """C1: stdio to /dev/null, no groups (root mode), new namespaces, fork C2, report its pid."""
    step = "start"
    try:
        step = plan.step("stdio")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            if null != fd:
                os.dup2(null, fd)
        if null > 2:
            os.close(null)
        if not plan.rootless:
            step = plan.step("setgroups")
            os.setgroups([])
        step = plan.step("unshare")
        _sys.unshare(UNSHARE_FLAGS)
        step = plan.step("fork")
        pid = os.fork()
        if pid == 0:
            try:
                _run_child2(plan, c, target, on_error)
            finally:
                os._exit(127)
        c.send(b"P%d" % pid)
        os._exit(0)
    except BaseException as e:
        _report_error(c, step, e)
        os._exit(127)


def _run_child2(
    plan: ChildPlan, c: socket.socket, target: Target, on_error: OnError | None
) -> None:  # pragma: no cover - runs in the jail
    """C2: PID 1 of the new namespaces; jailed once the master wrote its uid map, then the target."""
    # Everything inherited is permanent for this process: the collector never walks
    # (and so never dirties) the master's objects, and never finalizes the master's
    # garbage (whose fds we are about to close).
    gc.freeze()
    step = "wait for uid map"
    try:
        if c.recv(16) != b"G":
            os._exit(126)  # the master gave up
        for step in _jail_steps(plan, c):  # noqa: B007  (the except clause reports the last step)
            pass
        c.send(b"R")
        c.close()
    except BaseException as e:
        _report_error(c, step, e)
        os._exit(127)
    os._exit(_run_target(target, on_error) & 0xFF)


def _jail_steps(plan: ChildPlan, c: socket.socket) -> Iterator[str]:  # pragma: no cover - runs in the jail
    """The jail, in order; yields each step's name before taking it (for error reports)."""
    inside = plan.inside_uid
    yield plan.step("mounts")
    _sys.mount(None, b"/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    yield plan.step("empty root")
    _sys.mount(
        b"tmpfs",
        plan.root,
        b"tmpfs",
        _sys.MS_RDONLY | _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
        b"size=4k,nr_inodes=2,mode=555",
    )
    os.chdir(plan.root)
    yield plan.step("pivot_root")
    _sys.pivot_root(b".", b".")
    _sys.umount2(b".", _sys.MNT_DETACH)
    os.chroot(".")
    os.chdir("/")
    yield plan.step("hostname")
    _sys.sethostname(HOSTNAME)
    _sys.setdomainname(DOMAINNAME)
    yield plan.step("setresuid")
    os.setresgid(inside, inside, inside)
    os.setresuid(inside, inside, inside)
    yield plan.step("capabilities")
    _sys.drop_bounding_set(plan.cap_last_cap)
    _sys.clear_capabilities()
    yield plan.step("no_new_privs")
    _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1)
    yield plan.step("dumpable")
    _sys.prctl(_sys.PR_SET_DUMPABLE, 0)
    yield plan.step("memory limit")
    if plan.memory_cap is not None:  # soft = hard: raising it again needs CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_AS, (plan.memory_cap, plan.memory_cap))
    yield plan.step("seccomp")
    if plan.seccomp is not None:
        plan.seccomp.load()
    yield plan.step("signals")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # PID 1: children auto-reaped
    yield plan.step("close fds")
    close_fds_except(set(plan.keep) | {0, 1, 2, c.fileno()})
    yield plan.step("title")
    set_process_title(plan.title)
    yield plan.step("ready")


def _run_target(target: Target, on_error: OnError | None) -> int:  # pragma: no cover - runs in the jail
    """The target's exit code: its int result, SystemExit's code, 0, or 1 if it raised."""
    try:
        rc = target()
        return rc if isinstance(rc, int) else 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        if on_error is not None:
            try:
                on_error(e)
            except BaseException:
                pass
        return 1


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - runs in the jail
    os._exit(128 + signum)


def reap(pid: int) -> None:
    """Wait for the child `pid` to exit (nothing to wait for if it was reaped elsewhere: a
    SIGCHLD handler)."""
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover
            continue


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


_close_range: Callable[[int, int, int], int] | None
try:
    _close_range = _sys.libc.close_range
    _close_range.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
    _close_range.restype = ctypes.c_int
except AttributeError:  # pragma: no cover - glibc < 2.34
    _close_range = None


def close_fds_except(keep: set[int]) -> None:
    lo = 0
    for fd in sorted(keep) + [0x7FFFFFFF + 1]:
        if fd > lo:
            hi = fd - 1
            if _close_range is None or _close_range(lo, min(hi, 0xFFFFFFFF), 0) != 0:
                os.closerange(lo, hi + 1)
        lo = fd + 1
