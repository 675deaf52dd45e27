"""Tests of jail/standby.py: real jailed standbys, handed real file descriptors, checked from
outside through /proc. Every process started is reaped (no_leftovers).

End to end, every relay in the suite serves its connections through a standby when one is ready
(relay/master/server.py); tests/test_lifecycle_e2e.py's SIGHUP tests cover the flush on reload.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from jail import Jailer, _sys
from jail.standby import TITLE, Standby
from tests.e2e import children_of, cmdline, wait_for
from tests.test_jail import UID_BASE, _make_jailer, _status, _wait_exit, assert_jailed_status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root-mode jail tests need root")


def echo_factory(fds: list[int], args: list):
    """Runs in the jail, after the hand-over: answers on the connection what it was given."""
    sock = socket.socket(fileno=fds[0])

    def target() -> int:
        sock.sendall(json.dumps({"args": args, "fds": len(fds), "uid": os.getuid()}).encode())
        sock.close()
        return 7

    return target


@pytest.fixture(scope="module")
def jailer():
    j = _make_jailer(uid_base=UID_BASE + 5000, memory_mb=None)  # whatever this process grew to
    yield j
    j.close()
    _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 0)


def test_a_standby_is_jailed_before_it_is_handed_anything(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory, size=2)
    try:
        assert sb.short
        assert sb.refill() is None and sb.refill() is None
        assert not sb.short and sb.refill() is None  # full: no third
        (p1, _), (p2, _) = sb.ready
        assert p1.uid != p2.uid
        for p in (p1, p2):
            st = _status(p.pid)
            assert_jailed_status(st, p.uid)
            assert st["Seccomp"] == "2"
            assert cmdline(p.pid).startswith(TITLE.encode())
    finally:
        sb.close()
    assert not sb.ready and not sb.flushed


def test_hand_over_runs_the_factory_in_the_jail(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory)
    try:
        sb.refill()
        waiting = sb.ready[0][0]
        a, b = socket.socketpair()
        proc = sb.take([b.fileno(), b.fileno()], ["192.0.2.7", 1.25], "pymate [pending] 192.0.2.7")
        b.close()
        assert proc is not None and proc.pid == waiting.pid
        a.settimeout(5)
        got = json.loads(a.recv(4096))
        assert got == {"args": ["192.0.2.7", 1.25], "fds": 2, "uid": 1000}
        assert os.waitstatus_to_exitcode(_wait_exit(proc.pid)) == 7  # the factory's target's code
        jailer.release(proc)
        a.close()
        assert sb.short and sb.take([0], [], "x") is None  # none left: the caller spawns
    finally:
        sb.close()


def test_ahead_runs_in_the_jail_before_the_hand_over(jailer: Jailer, no_leftovers):
    """What a standby does ahead of its connection (relay.conn.process.Handshake: paramiko's
    thread started) runs once, jailed, before anything is handed over; the factory it made
    serves the connection."""

    def ahead():
        prepared = {"at": time.monotonic(), "uid": os.getuid(), "pid": os.getpid()}

        def factory(fds: list[int], args: list):
            sock = socket.socket(fileno=fds[0])

            def target() -> int:
                sock.sendall(json.dumps({**prepared, "now_pid": os.getpid()}).encode())
                return 0

            return target

        return factory

    sb = Standby(jailer, ahead)
    try:
        sb.refill()
        time.sleep(0.2)  # the standby waits, prepared
        handed = time.monotonic()
        a, b = socket.socketpair()
        proc = sb.take([b.fileno()], [], "pymate [pending] 192.0.2.8")
        b.close()
        assert proc is not None
        a.settimeout(5)
        got = json.loads(a.recv(4096))
        assert got["at"] < handed  # done while it waited, not after the hand-over
        assert got["uid"] == 1000 and got["pid"] == got["now_pid"]  # in the jail, in that process
        _wait_exit(proc.pid)
        jailer.release(proc)
        a.close()
    finally:
        sb.close()


def test_title_is_set_at_hand_over(jailer: Jailer, no_leftovers):
    def hold(fds: list[int], args: list):
        sock = socket.socket(fileno=fds[0])
        return lambda: sock.recv(1) and 0

    sb = Standby(jailer, lambda: hold)
    try:
        sb.refill()
        a, b = socket.socketpair()
        proc = sb.take([b.fileno()], [], "pymate [pending] 198.51.100.9")
        b.close()
        assert proc is not None
        for _ in range(500):
            if cmdline(proc.pid).startswith(b"pymate [pending] 198.51.100.9"):
                break
            os.sched_yield()
        assert cmdline(proc.pid).startswith(b"pymate [pending] 198.51.100.9")
        a.close()  # the target's recv ends
        _wait_exit(proc.pid)
        jailer.release(proc)
    finally:
        sb.close()


def test_flushed_standbys_exit_and_are_reaped(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory, size=2)
    sb.refill()
    sb.refill()
    pids = [p.pid for p, _ in sb.ready]
    sb.flush()  # e.g. SIGHUP: they hold the old host keys
    assert not sb.ready and sb.short
    for pid in pids:
        assert os.waitstatus_to_exitcode(_wait_exit(pid)) == 0  # end of stream: exits by itself
        assert sb.reaped(pid)
    assert not sb.flushed and not sb.reaped(pids[0])
    sb.close()


def test_a_dead_standby_is_skipped_and_reaped(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory, size=2)
    try:
        sb.refill()
        sb.refill()
        (dead, _), (alive, _) = sb.ready
        os.kill(dead.pid, signal.SIGKILL)
        _wait_exit(dead.pid)  # the master's _reap would do this; it tells the standby
        assert sb.reaped(dead.pid)
        a, b = socket.socketpair()
        proc = sb.take([b.fileno()], ["x"], "pymate [pending] x")
        b.close()
        assert proc is not None and proc.pid == alive.pid
        a.settimeout(5)
        assert json.loads(a.recv(4096))["args"] == ["x"]
        _wait_exit(proc.pid)
        jailer.release(proc)
        a.close()
    finally:
        sb.close()


def test_a_standby_that_died_unreaped_is_skipped_and_its_uid_freed_when_reaped(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory)
    try:
        sb.refill()
        dead = sb.ready[0][0]
        os.kill(dead.pid, signal.SIGKILL)
        for _ in range(500):  # dead, not reaped: its end of the socket is closed
            if _status(dead.pid).get("State", "").startswith("Z"):
                break
            os.sched_yield()
        a, b = socket.socketpair()
        assert sb.take([b.fileno()], ["x"], "pymate [pending] x") is None  # the caller spawns
        b.close()
        a.close()
        _wait_exit(dead.pid)
        assert sb.reaped(dead.pid)  # the master's _reap: the standby's uid is free again
        assert dead.uid not in jailer._in_use
    finally:
        sb.close()


def test_connections_are_forked_by_the_zygote_and_a_dead_one_is_replaced(jailer: Jailer, no_leftovers):
    """With no standby ready, a connection's process comes from the zygote; a zygote that died
    makes that spawn fail (None: the master forks it itself) and the next refill makes a new one."""
    sb = Standby(jailer, lambda: echo_factory, size=0)  # none kept: every connection is spawned
    try:
        a, b = socket.socketpair()
        proc = sb.spawn([b.fileno(), b.fileno()], ["192.0.2.5"], "pymate [pending] 192.0.2.5")
        b.close()
        assert proc is not None and sb.zygote is not None
        first = sb.zygote.pid
        a.settimeout(5)
        assert json.loads(a.recv(4096)) == {"args": ["192.0.2.5"], "fds": 2, "uid": 1000}
        assert os.waitstatus_to_exitcode(_wait_exit(proc.pid)) == 7
        jailer.release(proc)
        a.close()
        os.kill(first, signal.SIGKILL)
        for _ in range(500):  # dead, not reaped yet: its end of the socket is closed
            if _status(first).get("State", "").startswith("Z"):
                break
            time.sleep(0.002)
        a, b = socket.socketpair()
        assert sb.spawn([b.fileno(), b.fileno()], ["x"], "pymate [pending] x") is None
        assert sb.zygote is None and not jailer._in_use
        _wait_exit(first)
        assert sb.reaped(first)  # the master's _reap tells the standby
        proc = sb.spawn([b.fileno(), b.fileno()], ["y"], "pymate [pending] y")  # a new zygote
        b.close()
        assert proc is not None and sb.zygote is not None and sb.zygote.pid != first
        assert json.loads(a.recv(4096))["args"] == ["y"]
        _wait_exit(proc.pid)
        jailer.release(proc)
        a.close()
    finally:
        sb.close()


def test_a_failed_spawn_is_reported_and_retried_later(jailer: Jailer, no_leftovers):
    sb = Standby(jailer, lambda: echo_factory)
    jailer._test_fail_step = "seccomp"
    try:
        why = sb.refill()
        assert why is not None and "seccomp" in why
        assert not sb.ready and not sb.short  # not again at once
    finally:
        jailer._test_fail_step = None
        sb.close()


def standbys_of(pid: int) -> list[int]:
    return children_of(pid, TITLE.encode())


def test_a_relay_serves_a_host_from_its_standby(relay, make_host):
    """The master keeps one standby; a real tmate host's connection is handed to it (the session
    process is that pid, titled for its session now), and the master makes the next one."""
    before = wait_for(lambda: standbys_of(relay.proc.pid), 5, "a standby")
    assert len(before) == 1
    host = make_host(relay)
    host.wait_ready()
    assert before[0] in relay.children()  # the session process: the standby, retitled
    assert f"pid={before[0]}" in relay.wait_log(f"pid={before[0]}")
    after = wait_for(lambda: [p for p in standbys_of(relay.proc.pid) if p != before[0]], 5, "a new standby")
    assert len(after) == 1
