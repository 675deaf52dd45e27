"""Tests of jail/zygote.py: real zygotes forking real jailed processes, checked from outside
through /proc (status, descriptors, and the page frames of /proc/PID/pagemap). Every process
started is reaped (no_leftovers).

End to end, every relay in the suite forks its standbys and its connections' processes through
a zygote (jail/standby.py, relay/master/server.py).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import socket
import struct
import sys
import time

import pytest

from jail import Jailer, JailError, _sys, heap, pools, zygote
from jail.zygote import TITLE, Zygote
from tests.e2e import cmdline
from tests.test_jail import UID_BASE, _make_jailer, _status, _wait_exit, assert_jailed_status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root-mode jail tests need root")

PAGE = mmap.PAGESIZE
LATE: list[str] = []  # set in a forked copy by the clean-slate test


def answer_target(fds: list[int], args: list | None):
    """Runs in the jail: answers on its first descriptor what it was given, then exits with 5."""

    def target() -> int:
        with socket.socket(fileno=fds[0]) as s:
            s.sendall(
                json.dumps({"args": args, "fds": len(fds), "uid": os.getuid(), "pid": os.getpid()}).encode()
            )
            s.recv(1)  # until the test closes its end
        return 5

    return target


@pytest.fixture(scope="module")
def jailer():
    j = _make_jailer(uid_base=UID_BASE + 6000, memory_mb=None)
    yield j
    j.close()
    _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 0)


def _let_go(z: Zygote) -> None:
    z.close()
    assert os.waitstatus_to_exitcode(_wait_exit(z.pid)) == 0  # end of stream: it exits by itself


def _spawn(jailer: Jailer, z: Zygote, args: list | None = None):
    ours, theirs = socket.socketpair()
    try:
        proc = jailer.spawn_by(z, keep_fds=[theirs.fileno()], args=args, title="pymate test")
    finally:
        theirs.close()
    ours.settimeout(5)
    return proc, ours


def _finish(jailer: Jailer, proc, ours: socket.socket) -> int:
    ours.close()
    code = os.waitstatus_to_exitcode(_wait_exit(proc.pid))
    jailer.release(proc)
    return code


def test_the_process_it_forks_is_jailed_and_the_masters_child(jailer: Jailer, no_leftovers):
    z = Zygote(jailer.plan([], TITLE), answer_target)
    try:
        assert cmdline(z.pid).startswith(TITLE.encode())
        proc, ours = _spawn(jailer, z, ["192.0.2.9", 2.5])
        got = json.loads(ours.recv(4096))
        assert got == {"args": ["192.0.2.9", 2.5], "fds": 1, "uid": 1000, "pid": 1}
        st = _status(proc.pid)
        assert_jailed_status(st, proc.uid)
        assert st["Seccomp"] == "2"
        assert int(st["PPid"]) == os.getpid()  # C1 is gone: C2 is ours (the subreaper's), not the zygote's
        assert _finish(jailer, proc, ours) == 5  # and we reap it, with the target's exit code
        assert not jailer._in_use
    finally:
        _let_go(z)


def test_the_target_gets_its_descriptors_in_the_order_given(jailer: Jailer, no_leftovers):
    """A connection's socket and its control socket, whatever their numbers."""

    def two(fds: list[int], args: list | None):
        def target() -> int:
            for n, word in zip(fds, (b"first", b"second"), strict=True):
                with socket.socket(fileno=n) as s:
                    s.sendall(word)
            return 0

        return target

    z = Zygote(jailer.plan([], TITLE), two)
    low_ours, low = socket.socketpair()
    high_ours, high = socket.socketpair()
    try:
        assert high.fileno() > low.fileno()
        proc = jailer.spawn_by(z, keep_fds=[high.fileno(), low.fileno()], args=[], title="pymate test")
        high.close()
        low.close()
        for s in (high_ours, low_ours):
            s.settimeout(5)
        assert (high_ours.recv(16), low_ours.recv(16)) == (b"first", b"second")
        assert os.waitstatus_to_exitcode(_wait_exit(proc.pid)) == 0
        jailer.release(proc)
    finally:
        for s in (low_ours, high_ours, low, high):
            s.close()
        _let_go(z)


def test_it_holds_nothing_it_inherited_but_its_socket(jailer: Jailer, no_leftovers):
    listener = socket.create_server(("127.0.0.1", 0))  # like the master's listener
    old = signal.signal(signal.SIGHUP, lambda *_: None)  # like the master's handlers
    try:
        z = Zygote(jailer.plan([], TITLE), answer_target)
    finally:
        signal.signal(signal.SIGHUP, old)
    try:
        fds = {int(n) for n in os.listdir(f"/proc/{z.pid}/fd")}
        assert fds == {0, 1, 2, fds.difference({0, 1, 2}).pop()} and len(fds) == 4
        held = {os.readlink(f"/proc/{z.pid}/fd/{n}") for n in fds}
        assert os.readlink(f"/proc/self/fd/{listener.fileno()}") not in held
        caught = int(_status(z.pid)["SigCgt"], 16)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):  # the master's
            assert not caught & (1 << (sig - 1)), sig
    finally:
        listener.close()
        _let_go(z)


def test_it_dies_with_the_master(jailer: Jailer, no_leftovers):
    """Killed when its master dies (PR_SET_PDEATHSIG), even while its socket stays open (a
    process the stand-in master forked keeps the master's end: no end of stream)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a stand-in master: makes a zygote, then dies without letting it go
        try:
            os.close(r)
            z = Zygote(jailer.plan([], TITLE), answer_target)
            holder = os.fork()
            if holder == 0:
                try:
                    os.close(w)
                    time.sleep(30)  # holds z.sock open
                finally:
                    os._exit(0)
            os.write(w, b"%d %d" % (z.pid, holder))
        finally:
            os._exit(0)
    os.close(w)
    zpid, holder = (int(x) for x in os.read(r, 64).split())
    os.close(r)
    _wait_exit(pid)
    try:
        # killed, not ended by end of stream; as this process is a subreaper, it is ours to reap
        assert os.waitstatus_to_exitcode(_wait_exit(zpid)) == -signal.SIGKILL
    finally:
        os.kill(holder, signal.SIGKILL)
        _wait_exit(holder)


def test_failures_in_the_jail_are_reported_and_leave_nothing(jailer: Jailer, no_leftovers):
    z = Zygote(jailer.plan([], TITLE), answer_target)
    try:
        jailer._test_fail_step = "seccomp"
        with pytest.raises(JailError, match="jail step 'seccomp' failed: forced failure"):
            _spawn(jailer, z)
        jailer._test_fail_step = None
        assert not jailer._in_use
        proc, ours = _spawn(jailer, z)  # the same zygote goes on
        assert json.loads(ours.recv(4096))["args"] is None
        assert _finish(jailer, proc, ours) == 5
    finally:
        jailer._test_fail_step = None
        _let_go(z)


def test_a_hanging_intermediate_is_killed_and_the_next_spawn_works(no_leftovers):
    j = _make_jailer(spawn_timeout=0.3, uid_base=UID_BASE + 7000, memory_mb=None)
    z = Zygote(j.plan([], TITLE), answer_target)
    try:
        j._test_hang_step = "unshare"  # in C1, the zygote's child
        t0 = time.monotonic()
        with pytest.raises(JailError, match="timed out after 0.3 s"):
            _spawn(j, z)
        assert time.monotonic() - t0 < 2.5
        j._test_hang_step = None
        assert not j._in_use
        proc, ours = _spawn(j, z)  # the answers of the spawn given up are skipped
        assert json.loads(ours.recv(4096))["fds"] == 1
        assert _finish(j, proc, ours) == 5
    finally:
        _let_go(z)
        j.close()


def _frame(pid: int, address: int) -> int:
    """The physical page frame behind `address` in `pid` (/proc/PID/pagemap, as root)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(address // PAGE * 8)
        (entry,) = struct.unpack("<Q", f.read(8))
    assert entry >> 63, "page not present"
    return entry & ((1 << 55) - 1)


def page_target(fds: list[int], args: list | None):
    """Runs in the jail: waits until the test closes its end (it only reads memory)."""

    def target() -> int:
        with socket.socket(fileno=fds[0]) as s:
            s.sendall(b"up")
            s.recv(1)
        return 0

    return target


def test_pages_the_master_writes_later_stay_shared_between_its_children(jailer: Jailer, no_leftovers):
    """The point of it: the master writes a page after the zygote's fork (as serving sessions
    does); the processes forked before and after that write still share the page's original."""
    buf = ctypes.create_string_buffer(4 * PAGE)
    address = (ctypes.addressof(buf) + PAGE - 1) // PAGE * PAGE  # a whole page inside buf
    ctypes.memset(address, 1, PAGE)
    z = Zygote(jailer.plan([], TITLE), page_target)
    procs = []
    try:
        first, s1 = _spawn(jailer, z)
        procs.append((first, s1))
        assert s1.recv(2) == b"up"
        ctypes.memset(address, 2, PAGE)  # the master's write: its own copy now
        second, s2 = _spawn(jailer, z)
        procs.append((second, s2))
        assert s2.recv(2) == b"up"
        frames = {who: _frame(who, address) for who in (z.pid, first.pid, second.pid)}
        assert _frame(os.getpid(), address) not in frames.values()
        assert len(set(frames.values())) == 1, frames  # one page, shared by all three
    finally:
        for proc, ours in procs:
            _finish(jailer, proc, ours)
        _let_go(z)


def test_before_its_first_fork_it_lets_go_what_a_child_would_free_and_takes_the_holes():
    """What the zygote does once before it serves (zygote._clean_slate), in a forked copy of this
    process: what was made since the last freeze is immortal (where the interpreter has immortal
    objects), a name only the type attribute cache held is let go (a child evicting the entry
    would free it, writing two inherited pages), and the allocators' holes are taken."""
    global LATE

    class Probe:
        pass

    name = "".join(["never_", "an_attribute"])  # made at run time: not interned
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked copy
        try:
            os.close(r)
            getattr(Probe, name, None)
            cached = sys.getrefcount(name)
            LATE = ["made", "after", "the", "freeze"]  # reachable through sys.modules
            junk = [bytes(40) for _ in range(50_000)]  # 80-byte blocks,
            del junk[::2]  # every other one free again: 2 MB of holes
            before = pools.holes()[0]
            zygote._clean_slate()
            after = pools.holes()[0]
            freed = [cached, sys.getrefcount(name), heap._is_immortal(LATE), heap.check()]
            holes = [sum(size * n for size, n in h.items()) for h in (before, after)]
            os.write(w, json.dumps(freed + holes).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    cached, now, late_immortal, why, before, after = json.loads(got)
    assert now < cached  # the cache's references to the name are gone
    assert late_immortal == (why == ""), why
    # What is left is about one pool per block size that its last allocation started (its
    # blocks past the first never touched, so no inherited page): under half a pool each.
    assert before > 2_000_000 and after < 32 * pools.POOL_SIZE / 2, (before, after)
