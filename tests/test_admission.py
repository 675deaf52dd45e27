"""Admission control (relay.master.admission) and the master's side of it (relay.master.server):
max-startups' random early drop with an injected random, the per-source token bucket with an
injected clock, the counters, a connection that sends nothing costs no process, the grace period
as a timer (one kill, one line), a dead child's last words drained, max-sessions and max-viewers
refused through the control table, and the connection side's banner swallowing."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import structlog

from jail import JailedProcess, Jailer
from relay import control
from relay.conn.ssh import QuickAckSocket
from relay.master import admission
from relay.master import server as server_mod
from relay.master.admission import Admission, MaxStartups
from relay.master.server import BANNER, Child, Master, Pending, RelayConfig
from tests.test_master import FakeClock, registered_child


# ---------------------------------------------------------------------- max-startups
def test_max_startups_parses_sshds_forms():
    assert MaxStartups.parse("10:30:100") == MaxStartups(10, 30, 100)
    assert MaxStartups.parse("7") == MaxStartups(7, 100, 7)  # a bare FULL: no early drop
    for bad in ("", "1:2", "a:b:c", "10:30:5", "0:30:0", "1:101:5", "-1:30:5", "1:2:3:4"):
        with pytest.raises(ValueError):
            MaxStartups.parse(bad)


def test_max_startups_drop_probability_rises_linearly_from_start_to_full():
    ms = MaxStartups(10, 30, 100)
    assert [ms.drop_probability(n) for n in (0, 9)] == [0.0, 0.0]
    assert ms.drop_probability(10) == pytest.approx(0.30)
    assert ms.drop_probability(55) == pytest.approx(0.65)
    assert ms.drop_probability(99) == pytest.approx(0.30 + 0.70 * 89 / 90)
    assert ms.drop_probability(100) == 1.0 and ms.drop_probability(5000) == 1.0
    assert MaxStartups(5, 100, 5).drop_probability(4) == 0.0
    assert MaxStartups(5, 100, 5).drop_probability(5) == 1.0


def _startups(a: Admission, n: int) -> None:
    for i in range(n):
        a.began(f"192.0.2.{i % 250}")


def test_max_startups_refuses_with_its_probability():
    rng = random.Random(8)
    a = Admission(max_startups=MaxStartups(10, 30, 100), per_source_max_startups=10**6, rand=rng.random)
    a.per_source_rate, a.burst = 1e9, 1e9  # not what this test is about
    for held, expected in ((9, 0.0), (10, 0.30), (55, 0.65), (100, 1.0)):
        a.startups, a.startups_by_source = 0, type(a.startups_by_source)()
        _startups(a, held)
        refused = [a.check("198.51.100.1", 0) for _ in range(4000)]
        share = sum(r is not None for r in refused) / len(refused)
        assert share == pytest.approx(expected, abs=0.03), (held, share)
        assert all(r.limit == admission.MAX_STARTUPS for r in refused if r is not None)


def test_max_startups_draws_against_the_injected_random():
    draws = iter([0.29, 0.31])  # p = 0.30 at START: refused below it, admitted above
    a = Admission(max_startups=MaxStartups(2, 30, 4), rand=lambda: next(draws))
    _startups(a, 2)
    r = a.check("198.51.100.1", 2)
    assert r is not None and r.limit == "max-startups" and "limit 2:30:4" in r.reason
    assert a.check("198.51.100.1", 2) is None


# ---------------------------------------------------------------------- per source
def test_per_source_rate_is_a_token_bucket_of_five_seconds():
    clock = FakeClock()
    a = Admission(per_source_rate=4, per_source_max_startups=10**6, clock=clock.monotonic)
    results = [a.check("198.51.100.7", 0) for _ in range(25)]
    assert all(r is None for r in results[:20])  # the burst: 5 * 4
    assert all(r is not None and r.limit == admission.PER_SOURCE_RATE for r in results[20:])
    assert a.check("198.51.100.8", 0) is None  # another address has its own bucket
    clock.now += 0.5  # two more tokens
    assert [a.check("198.51.100.7", 0) is None for _ in range(3)] == [True, True, False]
    clock.now += 100  # full again (never beyond the burst)
    assert sum(a.check("198.51.100.7", 0) is None for _ in range(30)) == 20


def test_full_buckets_are_forgotten():
    clock = FakeClock()
    a = Admission(per_source_rate=10, clock=clock.monotonic)
    for i in range(100):
        a.check(f"198.51.100.{i}", 0)
    assert len(a.buckets) == 100
    clock.now += 0.5  # half refilled: kept
    a.check("198.51.100.200", 0)
    assert len(a.buckets) == 101
    clock.now += 1.0  # every one of them is full again: gone at the next sweep
    a.check("198.51.100.201", 0)
    assert list(a.buckets) == ["198.51.100.201"]


def test_per_source_max_startups_counts_each_address():
    a = Admission(per_source_max_startups=2)
    for _ in range(2):
        assert a.check("198.51.100.1", 0) is None
        a.began("198.51.100.1")
    r = a.check("198.51.100.1", 0)
    assert r is not None and r.limit == admission.PER_SOURCE_MAX_STARTUPS and "(limit 2)" in r.reason
    assert a.check("198.51.100.2", 0) is None
    a.ended("198.51.100.1")
    assert a.check("198.51.100.1", 0) is None
    a.ended("198.51.100.1")
    assert a.startups == 0 and not a.startups_by_source


def test_max_connections_and_the_counters():
    a = Admission(max_connections=3)
    r = a.check("198.51.100.1", 3)
    assert r is not None and r.limit == admission.MAX_CONNECTIONS and "(limit 3)" in r.reason
    assert [a.count("x"), a.count("x"), a.count("y")] == [1, 2, 1]
    assert a.refusals == {"x": 2, "y": 1}


def test_silent_connections_are_no_startups_for_max_startups():
    a = Admission(max_startups=MaxStartups(2, 100, 2), per_source_max_startups=10**6, rand=lambda: 0.0)
    _startups(a, 50)
    assert a.check("198.51.100.1", 50, silent=50) is None  # none of them costs a process
    assert a.check("198.51.100.1", 50, silent=49) is None  # one working: below START
    r = a.check("198.51.100.1", 50, silent=48)  # two working: at FULL
    assert r is not None and r.limit == admission.MAX_STARTUPS and "(2, limit 2:100:2)" in r.reason


# ---------------------------------------------------------------------- the master
class SpawningJailer:
    """Records what the master forks; each 'process' is a real `sleep`, so killing it is harmless."""

    def __init__(self) -> None:
        self.spawned: list[subprocess.Popen] = []
        self.held: list[int] = []  # the descriptors a real connection process would hold
        self.rootless = True

    def spawn(self, target: Callable[[], int], *, keep_fds, title: str) -> JailedProcess:
        proc = subprocess.Popen(["sleep", "30"])
        self.spawned.append(proc)
        self.held += [os.dup(fd) for fd in keep_fds]
        return JailedProcess(pid=proc.pid, uid=0)

    def release(self, proc: JailedProcess) -> None:
        pass

    def close(self) -> None:
        for p in self.spawned:
            p.kill()
            p.wait()
        for fd in self.held:
            os.close(fd)


def live_master(cfg: RelayConfig) -> Iterator[tuple[Master, int, SpawningJailer, list[tuple[str, float]]]]:
    """A master on cfg's loopback port whose connection factory records the (ip, accept time) of
    every connection it is asked to run; all of it closed at the end."""
    jailer = SpawningJailer()
    made: list[tuple[str, float]] = []

    def connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
        made.append((ip, accepted))
        return lambda: 0

    m = Master(cfg, connection=connection, jailer=cast(Jailer, jailer))
    listener = m.bind()
    m.sel.register(listener, server_mod.selectors.EVENT_READ, "accept")
    yield m, listener.getsockname()[1], jailer, made
    jailer.close()
    m._close_awaiting()
    for p in list(m.pending):
        p.sock.close()
    listener.close()


@pytest.fixture
def live():
    yield from live_master(RelayConfig(bind="127.0.0.1", port=0, grace_period=0.5, per_source_max_startups=3))


def turns(m: Master, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        m.step(left)


def test_a_connection_costs_no_process_until_its_client_sends(live):
    m, port, jailer, made = live
    quiet = socket.create_connection(("127.0.0.1", port))
    talker = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()
    turns(m, 0.1)
    quiet.settimeout(1)
    talker.settimeout(1)
    assert quiet.recv(100) == BANNER == b"SSH-2.0-tmate\r\n"  # written by the master itself
    assert talker.recv(100) == BANNER
    assert not jailer.spawned and len(m.pending) == 2
    talker.sendall(b"SSH-2.0-x\r\n")
    turns(m, 0.1)
    assert len(jailer.spawned) == 1 and len(m.children) == 1
    [(ip, accepted)] = made
    assert ip == "127.0.0.1" and t0 - 0.1 < accepted <= t0 + 0.01  # the accept time, handed on
    assert m.admission.startups == 2  # the forked one has no role yet: still a startup
    for s in (quiet, talker):
        s.close()


def test_refused_before_the_banner_with_the_limits_name_and_count(live):
    m, port, jailer, made = live
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.1)
    refused = [e for e in logs if e["event"] == "connection refused"]
    assert [(e["limit"], e["count"]) for e in refused] == [
        ("per-source-max-startups", 1),
        ("per-source-max-startups", 2),
    ]
    assert refused[0]["ip"] == "127.0.0.1" and "limit 3" in refused[0]["reason"]
    assert m.refusals == {"per-source-max-startups": 2}
    got = []
    for s in socks:
        s.settimeout(1)
        got.append(s.recv(100))
        s.close()
    assert got == [BANNER] * 3 + [b""] * 2


def test_stalled_connections_are_closed_at_the_grace_period_once(live):
    m, port, jailer, made = live
    quiet = socket.create_connection(("127.0.0.1", port))
    talker = socket.create_connection(("127.0.0.1", port))
    talker.sendall(b"SSH-2.0-x\r\n")
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.3)
        assert not [e for e in logs if e.get("limit") == "grace-period"]
        turns(m, 0.4)
        [proc] = jailer.spawned
        assert not m.children  # killed and reaped by the master
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)
        turns(m, 0.3)  # no second line
    lines = [e for e in logs if e.get("limit") == "grace-period"]
    assert len(lines) == 2, lines
    assert {e["reason"] for e in lines} == {
        "no role taken within the grace period (no bytes sent)",
        "no role taken within the grace period (ssh handshake incomplete)",
    }
    assert [e["count"] for e in lines] == [1, 2]
    assert not m.pending and not m.children and m.admission.startups == 0
    quiet.settimeout(1)
    assert quiet.recv(100) == BANNER and quiet.recv(100) == b""
    for s in (quiet, talker):
        s.close()


def test_a_connection_closed_without_a_byte_is_logged_by_the_master(live):
    m, port, jailer, made = live
    polite = socket.create_connection(("127.0.0.1", port))
    turns(m, 0.05)
    polite.settimeout(1)
    assert polite.recv(100) == BANNER
    polite.close()
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.05)
        rude = socket.create_connection(("127.0.0.1", port))
        turns(m, 0.05)
        rude.close()  # with the banner unread: a reset
        turns(m, 0.05)
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("connection closed", "closed before sending a byte"),
        ("connection closed", "connection lost before it was served: Connection reset by peer"),
    ]
    assert not jailer.spawned and not m.pending and m.admission.startups == 0


def test_one_kill_one_line():
    m = Master(RelayConfig(), connection=lambda *a: lambda: 0, jailer=cast(Jailer, SpawningJailer()))
    proc, ours, child = registered_child(m)
    with structlog.testing.capture_logs() as logs:
        m._kill(child, "no role taken within the grace period", admission.GRACE_PERIOD)
        m._kill(child, "again")
        m.deadlines = [(0.0, 0, child)]
        m._expire()
    assert [e["event"] for e in logs] == ["connection refused"] and logs[0]["count"] == 1
    assert proc.wait(5) == -9
    ours.close()


def test_a_dead_childs_queued_log_events_are_logged_before_its_socket_closes():
    m = Master(RelayConfig(), connection=lambda *a: lambda: 0, jailer=cast(Jailer, SpawningJailer()))
    proc, ours, child = registered_child(m)
    for i in range(50):
        ours.send(control.encode(control.TO_MASTER, "log", "info", "connection refused", {"n": i}))
    ours.close()
    proc.kill()
    with structlog.testing.capture_logs() as logs:
        deadline = time.monotonic() + 5
        while m.children and time.monotonic() < deadline:
            m._reap()  # reaped before its control socket was read, as under load
            time.sleep(0.01)
    assert [e["n"] for e in logs if e["event"] == "connection refused"] == list(range(50))
    assert child.ctl.fileno() < 0 and not m.children


def test_a_limit_a_connection_process_enforces_is_counted_by_the_master():
    m = Master(RelayConfig(), connection=lambda *a: lambda: 0, jailer=cast(Jailer, SpawningJailer()))
    proc, ours, child = registered_child(m, control.HOST)
    fields = {"limit": "max-viewers", "reason": "too many viewers (limit 1)", "count": 99}
    ours.send(control.encode(control.TO_MASTER, "log", "warning", "connection refused", fields))
    with structlog.testing.capture_logs() as logs:
        m._on_control(child)
    assert logs[0]["limit"] == "max-viewers" and logs[0]["count"] == 1 and m.refusals == {"max-viewers": 1}
    proc.kill()
    proc.wait()
    ours.close()


def _answer(ours: socket.socket) -> tuple[str, list]:
    data, fds, _, _ = socket.recv_fds(ours, control.MAX_CONTROL_MESSAGE + 1, 4)
    for fd in fds:
        socket.socket(fileno=fd).close()
    spec, args = control.decode(control.TO_CONNECTION, data)
    return spec.name, args


def test_max_sessions_and_max_viewers_are_refused_with_a_line_for_the_client():
    cfg = RelayConfig(max_sessions=1, max_viewers=1)
    m = Master(cfg, connection=lambda *a: lambda: 0, jailer=cast(Jailer, SpawningJailer()))
    kids = [registered_child(m) for _ in range(4)]
    for _, ours, _ in kids:
        ours.settimeout(2)
    (_, h1, host1), (_, h2, host2), (_, v1, viewer1), (_, v2, viewer2) = kids
    h1.send(control.encode(control.TO_MASTER, "host"))
    m._on_control(host1)
    name, (rw, _ro) = _answer(h1)
    assert name == "tokens"
    h1.send(control.encode(control.TO_MASTER, "access", None))
    m._on_control(host1)
    with structlog.testing.capture_logs() as logs:
        h2.send(control.encode(control.TO_MASTER, "host"))
        m._on_control(host2)
        for ours, child in ((v1, viewer1), (v2, viewer2)):
            ours.send(control.encode(control.TO_MASTER, "join", rw, None, None, None))
            m._on_control(child)
    assert _answer(h2) == ("refused", ["Relay full: too many sessions"])
    assert _answer(v1)[0] == "joined"
    _answer(h1)  # the session's end of the first viewer's link
    assert _answer(v2) == ("refused", ["Too many viewers in this session"])
    refused = [(e["limit"], e["count"]) for e in logs if e["event"] == "connection refused"]
    assert refused == [("max-sessions", 1), ("max-viewers", 1)]
    assert m.admission.startups == 0 and host2.role == control.HOST and not host2.tokens
    # The viewer leaves: the next one is linked.
    m._forget(viewer1)
    v3proc, v3, viewer3 = registered_child(m)
    v3.settimeout(2)
    v3.send(control.encode(control.TO_MASTER, "join", rw, None, None, None))
    m._on_control(viewer3)
    assert _answer(v3)[0] == "joined"
    for proc, ours, _ in [*kids, (v3proc, v3, viewer3)]:
        proc.kill()
        proc.wait()
        ours.close()


def test_the_client_side_raises_refused_with_the_line(pair=None):
    ours, theirs = control.socketpair()
    ours.settimeout(2)
    client = control.Client(theirs)
    ours.send(control.encode(control.TO_CONNECTION, "refused", "Relay full: too many sessions"))
    with pytest.raises(control.Refused, match="Relay full"):
        client.request_tokens()
    ours.send(control.encode(control.TO_CONNECTION, "refused", "Too many viewers in this session"))
    with pytest.raises(control.Refused, match="Too many viewers"):
        client.join("x" * 25, None, None)
    ours.close()
    theirs.close()


# ---------------------------------------------------------------------- the connection side
def test_the_connection_process_does_not_send_the_banner_again():
    a, b = socket.socketpair()
    wrapped = QuickAckSocket(a, banner_sent=True)
    assert wrapped.send(b"SSH-2.0-tmate\r\n") == 15  # swallowed: the master wrote it
    assert wrapped.send(b"SSH-2.0-tmate\r\n") == 15  # only the first write
    assert wrapped.send(b"\x00\x00\x01") == 3
    b.settimeout(1)
    assert b.recv(100) == b"SSH-2.0-tmate\r\n\x00\x00\x01"
    other = QuickAckSocket(a, banner_sent=True)
    assert other.send(b"not a banner") == 12  # a first write that is not the banner goes out
    assert b.recv(100) == b"not a banner"
    plain = QuickAckSocket(a)
    assert plain.send(b"SSH-2.0-tmate\r\n") == 15 and b.recv(100) == b"SSH-2.0-tmate\r\n"
    a.close()
    b.close()


def test_pending_and_child_carry_the_startup():
    p = Pending(sock=cast(socket.socket, None), ip="198.51.100.1", accepted=0.0)
    assert p.startup and p.open
    c = Child(proc=JailedProcess(1, 1), ip="x", ctl=cast(socket.socket, None), started=0.0)
    assert not c.startup and not c.killed


def test_the_connection_process_moves_its_sockets_to_low_descriptors():
    from relay.conn.process import LOW_FD, _renumbered

    a, b = socket.socketpair()
    high = socket.socket(fileno=os.dup2(a.fileno(), 1500))  # as a master with many connections hands it
    a.close()
    low = _renumbered(high)
    assert low.fileno() < LOW_FD and high.fileno() < 0
    low.send(b"x")
    assert b.recv(1) == b"x"
    assert _renumbered(low) is low  # already low: kept
    low.close()
    b.close()


def test_at_max_connections_the_connection_silent_longest_makes_room(live):
    m, port, jailer, made = live
    m.cfg.max_connections = 3
    m.admission.max_connections = 3
    m.admission.per_source_max_startups = 10
    old = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    turns(m, 0.05)
    talker = socket.create_connection(("127.0.0.1", port))
    talker.sendall(b"SSH-2.0-x\r\n")
    turns(m, 0.05)
    assert len(m.children) == 1 and len(m.pending) == 2  # full: 1 process, 2 silent sockets
    with structlog.testing.capture_logs() as logs:
        new = socket.create_connection(("127.0.0.1", port))
        turns(m, 0.05)
    closed = [e for e in logs if e["event"] == "connection refused"]
    assert [e["limit"] for e in closed] == ["max-connections"]
    assert "silent for" in closed[0]["reason"] and "(limit 3)" in closed[0]["reason"]
    for s in (*old, new):
        s.settimeout(1)
    assert old[0].recv(100) == BANNER and old[0].recv(100) == b""  # the oldest silent one went
    assert old[1].recv(100) == BANNER and new.recv(100) == BANNER  # the others stay
    assert len(m.pending) == 2 and len(m.silent) == 2
    # Nothing silent left to close: the next one is refused by the limit.
    new.sendall(b"SSH-2.0-y\r\n")
    old[1].sendall(b"SSH-2.0-z\r\n")
    turns(m, 0.05)
    assert len(m.children) == 3 and not m.silent
    with structlog.testing.capture_logs() as logs:
        late = socket.create_connection(("127.0.0.1", port))
        turns(m, 0.05)
    assert [e["limit"] for e in logs if e["event"] == "connection refused"] == ["max-connections"]
    late.settimeout(1)
    assert late.recv(100) == b""
    for s in (*old, new, late, talker):
        s.close()


def test_max_startups_is_asked_again_when_silent_connections_start_to_cost_a_process(live):
    m, port, jailer, made = live
    m.admission.max_startups = MaxStartups(2, 100, 2)
    m.admission.per_source_max_startups = 10
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    turns(m, 0.05)
    assert len(m.pending) == 4 and not jailer.spawned  # silent: admitted, no process
    with structlog.testing.capture_logs() as logs:
        for s in socks:  # all four speak at once: only two may cost a process
            s.sendall(b"SSH-2.0-x\r\n")
        turns(m, 0.1)
    assert len(jailer.spawned) == 2
    refused = [e for e in logs if e["event"] == "connection refused"]
    assert [e["limit"] for e in refused] == ["max-startups", "max-startups"]
    for s in socks:
        s.close()
