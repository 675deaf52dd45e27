"""Metrics without a relay: the --metrics address, the master's registry (its gauges read from the
master's state, its counters moved by stats messages, never back), the text parsed by
prometheus_client's own parser, and the metrics process's HTTP answers over a real socket."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import control
from relay.conn import metrics_http
from relay.master.metrics import RECONNECT_OUTCOMES, Metrics, State, parse_address
from tests.test_master import make_master, registered_child


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
    ],
)
def test_metrics_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "70000", "::1:9100", "localhost:9100", "1.2.3:80"])
def test_bad_metrics_address(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_stats_move_the_byte_counters_by_what_is_new_never_back():
    m = Metrics()
    m.stats(10, 100, 50)
    m.stats(10, 150, 50)
    m.stats(11, 7, 3)
    m.stats(10, 20, 20)  # lower than before: nothing moves (a process cannot take bytes back)
    m.stats(10, 160, 60)
    got = samples(m.render())
    assert got[("pymate_bytes_in_total", ())] == 167
    assert got[("pymate_bytes_out_total", ())] == 63
    m.forget(10)
    m.stats(10, 5, 5)  # a new process with the same pid counts from zero
    m._rendered = float("-inf")
    assert samples(m.render())[("pymate_bytes_in_total", ())] == 172


def test_the_text_parses_and_has_every_family():
    m = Metrics(
        lambda: State(
            sessions=2,
            viewers=3,
            connections={"pending": 4, "host": 2, "viewer": 3},
            refusals={"max-sessions": 1, "per-source-rate": 5},
            held=1,
        )
    )
    m.spawn_seconds.observe(0.012)
    m.loop_lag.observe(0.0003)
    got = samples(m.render())
    assert got[("pymate_sessions", ())] == 2
    assert got[("pymate_viewers", ())] == 3
    assert got[("pymate_sessions_held", ())] == 1
    assert got[("pymate_connections", (("state", "pending"),))] == 4
    assert got[("pymate_connections", (("state", "handshake"),))] == 0
    assert got[("pymate_refusals_total", (("limit", "per-source-rate"),))] == 5
    assert got[("pymate_jail_spawn_seconds_count", ())] == 1
    assert got[("pymate_jail_spawn_seconds_bucket", (("le", "0.02"),))] == 1
    assert got[("pymate_master_loop_lag_seconds_count", ())] == 1


def test_the_gauges_read_the_master(monkeypatch):
    m = make_master()
    procs = []
    try:
        for role in (control.HOST, control.VIEWER, control.VIEWER, control.NO_ROLE):
            proc, _ours, child = registered_child(m, role)
            procs.append(proc)
            if role == control.HOST:
                host = child
                host.tokens = ("a" * 25, "ro-" + "b" * 25)
        host.viewers = {1, 2}
        m.admission.count("max-viewers")
        m.metrics.stats(host.proc.pid, 1000, 2000)
        got = samples(m.metrics.render())
        assert got[("pymate_sessions", ())] == 1
        assert got[("pymate_viewers", ())] == 2
        assert got[("pymate_connections", (("state", "viewer"),))] == 2
        assert got[("pymate_connections", (("state", "handshake"),))] == 1
        assert got[("pymate_refusals_total", (("limit", "max-viewers"),))] == 1
        assert got[("pymate_bytes_out_total", ())] == 2000
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_stats_through_the_control_table_from_a_host_only(monkeypatch):
    m = make_master()
    procs = []
    try:
        proc, ours, host = registered_child(m, control.HOST)
        procs.append(proc)
        control.Client(ours).report_stats(300, 400)
        m._on_control(host)
        assert m.metrics.bytes_in._value.get() == 300
        proc, ours, viewer = registered_child(m, control.VIEWER)
        procs.append(proc)
        ours.send(control.encode(control.TO_MASTER, "stats", 1, 1))
        m._on_control(viewer)
        assert viewer.killed and m.metrics.bytes_in._value.get() == 300
    finally:
        for p in procs:
            p.kill()
            p.wait()


class _Hosts:
    """Hosts of a master the test plays through the control table (real sleep processes)."""

    def __init__(self, m):
        self.m, self.procs = m, []

    def host(self):
        """A connection that took the host role and got its tokens."""
        proc, ours, child = registered_child(self.m)
        self.procs.append(proc)
        self.send(ours, child, "host")
        assert self.answer(ours)[0] == "tokens"
        return ours, child

    def send(self, ours, child, *msg):
        ours.send(control.encode(control.TO_MASTER, *msg))
        self.m._on_control(child)

    def answer(self, ours):
        spec, args = control.decode(control.TO_CONNECTION, ours.recv(control.MAX_CONTROL_MESSAGE))
        return spec.name, args

    def resume(self, datum):
        """A new host connection presents `datum`: the refusal's reason, or None (taken over)."""
        ours, child = self.host()
        self.send(ours, child, "resume", datum)
        name, args = self.answer(ours)
        assert name == "resumed"
        return args[2], ours, child

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


def test_held_sessions_and_reconnections_by_outcome_read_the_master():
    from relay.master.reconnect import Datum, make_datum, outcome_of

    m = make_master()
    hosts = _Hosts(m)

    def got(name, **labels):
        m.metrics._rendered = float("-inf")
        return samples(m.metrics.render()).get((name, tuple(sorted(labels.items()))), None)

    try:
        assert got("pymate_sessions_held") == 0
        assert {o: got("pymate_reconnections_total", outcome=o) for o in RECONNECT_OUTCOMES} == dict.fromkeys(
            RECONNECT_OUTCOMES, 0
        )  # every outcome is there before the first
        ours, first = hosts.host()
        hosts.send(ours, first, "rdata")
        name, (datum,) = hosts.answer(ours)
        assert name == "rdata"
        hosts.send(ours, first, "end", True)  # its host's connection was lost
        m._forget(first)  # as when it is reaped
        assert first.rc.held_until is not None and got("pymate_sessions_held") == 1
        tokens = first.tokens
        reason, ours, second = hosts.resume(datum)
        assert reason is None and second.tokens == tokens and first.tokens == ()
        assert (
            got("pymate_sessions_held") == 0 and got("pymate_reconnections_total", outcome="taken_over") == 1
        )
        rw, ro = second.tokens
        refusals = [
            datum,  # generation 0, the session is at 1 now
            datum.split(".")[0] + ".AAAA",
            "no-dot-here",
            make_datum(m.hmac_key, Datum(second.rc.sid, rw, ro, 1, 1000)),
            make_datum(m.hmac_key, Datum("another-session", rw, ro, 1, int(time.time()))),
        ]
        outcomes = [outcome_of(hosts.resume(d)[0]) for d in refusals]
        assert outcomes == ["stale", "forged", "malformed", "expired", "taken"]
        for o in outcomes:
            assert got("pymate_reconnections_total", outcome=o) == 1
        # The session held again, and its window ends.
        hosts.send(ours, second, "end", True)
        m._forget(second)
        assert got("pymate_sessions_held") == 1
        second.rc.held_until = time.monotonic() - 1
        m._hold_expired(second)
        assert got("pymate_sessions_held") == 0
        assert got("pymate_reconnections_total", outcome="window_expired") == 1
        assert got("pymate_reconnections_total", outcome="taken_over") == 1
    finally:
        hosts.close()


def test_stats_fields_are_bounded_counts():
    for bad in (-1, 1.5, True, "1", control.MAX_COUNT + 1):
        with pytest.raises(control.ControlError):
            control.encode(control.TO_MASTER, "stats", bad, 0)


@pytest.mark.parametrize(
    "request_line, status",
    [
        (b"GET /metrics HTTP/1.1", b"200"),
        (b"GET /metrics?x=1 HTTP/1.0", b"200"),
        (b"HEAD /healthz HTTP/1.1", b"200"),
        (b"GET /healthz HTTP/1.1", b"200"),
        (b"GET / HTTP/1.1", b"404"),
        (b"POST /metrics HTTP/1.1", b"405"),
        (b"GET /metrics", b"400"),
        (b"\xff\xfe", b"400"),
    ],
)
def test_http_answers(request_line, status):
    out = metrics_http.response(request_line + b"\r\nHost: x\r\n\r\n", b"pymate_sessions 1\n")
    assert out.split(b" ", 2)[1] == status
    if request_line.startswith(b"GET /metrics "):
        assert out.endswith(b"\r\n\r\npymate_sessions 1\n")
        assert b"Content-Type: text/plain; version=" in out


def _scrape(listener: socket.socket, feed: socket.socket, request: bytes, snapshot: bytes) -> bytes:
    """One scrape as the master hands it over: accept, send text + socket, close ours."""
    client = socket.create_connection(listener.getsockname(), timeout=5)
    conn, _ = listener.accept()
    socket.send_fds(feed, [snapshot], [conn.fileno()])
    conn.close()
    client.sendall(request)
    out = b""
    while chunk := client.recv(65536):
        out += chunk
    client.close()
    return out


def test_the_metrics_process_answers_on_handed_sockets_and_ends_with_the_feed():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(metrics_http.serve(theirs)()))
    t.start()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        out = _scrape(listener, ours, b"GET /metrics HTTP/1.1\r\n\r\n", b"pymate_sessions 0\n")
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"pymate_sessions 0\n")
        out = _scrape(listener, ours, b"GET /healthz HTTP/1.1\r\n\r\n", b"")
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\nok\n")
        out = _scrape(listener, ours, b"GET /" + b"x" * 9000, b"")  # no end of head within the limit
        assert out.startswith(b"HTTP/1.1 400")
    finally:
        ours.close()
        listener.close()
        t.join(5)
    assert result == [0]
