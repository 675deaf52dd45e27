"""Admission control end to end at a small scale: a real relay on loopback, real tmate hosts and
OpenSSH viewers, raw sockets and paramiko for the attackers.

- idle connections cost no process, and a real host gets ready and a real viewer joins while a
  flood of them from the same address is held open (limits set so that it does not exhaust them);
- connections stalled without a byte, mid key exchange and authenticated without a channel are
  closed at the grace period (within 1 s after it), each with one `limit=grace-period` line;
- every limit refuses with its name: max-startups, per-source-max-startups, per-source-rate,
  max-sessions (the host is told the relay is full), max-viewers (the viewer is told);
- after a connect-and-close loop every connection's last log event is in the log.
Tests with distinct source addresses are in tests/test_per_source_e2e.py (network namespaces).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time

import paramiko
import pytest

from relay.tmate import messages as m
from relay.tmate.codec import RelayDecoder
from tests.e2e import Relay, SshViewer, session_tokens, tmate_available, viewer_answer, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate is not installed")

BANNER = b"SSH-2.0-tmate\r\n"
GRACE = 2.0
IDLE_FLOOD = 30
PID = r"\bpid=(\d+)"


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    return s


def lines_since(relay: Relay, start: int, needle: str) -> list[str]:
    with relay._lock:
        return [line for line in relay.lines[start:] if needle in line]


def mark(relay: Relay) -> int:
    with relay._lock:
        return len(relay.lines)


def found(pattern: str, line: str) -> str:
    """The first group of `pattern` in a log line (which must have it)."""
    match = re.search(pattern, line)
    assert match, (pattern, line)
    return match.group(1)


def kexinit() -> bytes:
    """A client's SSH_MSG_KEXINIT as one unencrypted binary packet (RFC 4253 7.1)."""
    names = [
        b"curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256",
        b"ssh-ed25519,rsa-sha2-512",
        b"aes128-ctr",
        b"aes128-ctr",
        b"hmac-sha2-256",
        b"hmac-sha2-256",
        b"none",
        b"none",
        b"",
        b"",
    ]
    payload = bytes([20]) + os.urandom(16) + b"".join(struct.pack(">I", len(n)) + n for n in names)
    payload += b"\x00" + struct.pack(">I", 0)
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + b"\x00" * pad


def closed_after(s: socket.socket, t0: float, timeout: float = 10) -> float:
    """Seconds from t0 until the relay closed `s` (reading and dropping what it sent)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def roomy(keys_dir):
    """Limits the small floods here do not reach; one session of one viewer."""
    flags = ["--grace-period", "10", "--max-startups", "200:30:400", "--per-source-max-startups", "200"]
    flags += ["--per-source-rate", "1000", "--max-sessions", "1", "--max-viewers", "1"]
    with Relay(keys_dir, extra=flags) as r:
        yield r


def test_an_idle_flood_costs_no_process_and_holds_up_no_host_or_viewer(roomy, make_host, tmp_path):
    idle = [connect(roomy.port) for _ in range(IDLE_FLOOD)]
    try:
        assert all(s.recv(100) == BANNER for s in idle)  # each got the banner from the master
        assert roomy.children() == []  # and costs no process
        t0 = time.monotonic()
        host = make_host(roomy)
        host.wait_ready()
        ready = time.monotonic() - t0
        rw, _ro = session_tokens(host)
        with SshViewer(tmp_path / "viewer", roomy.port, rw) as viewer:
            viewer.wait_screen("0:")
            assert len(roomy.children()) == 2  # the session process and the viewer's, nothing else
            assert ready < 5, ready
            # max-viewers 1: the next viewer is told, and the refusal is logged with its name.
            _, text = viewer_answer(roomy.port, rw)
            assert text == b"Too many viewers in this session\r\n"
            line = roomy.wait_log("limit='max-viewers'")
            assert "count=1" in line and "ip='127.0.0.1'" in line
            # max-sessions 1: a second host sees the relay is full on its status line.
            t = paramiko.Transport(("127.0.0.1", roomy.port))
            try:
                t.connect()
                t.auth_none("tmate")
                ch = t.open_session()
                ch.invoke_subsystem("tmate")
                ch.settimeout(5)
                got, data = [], b""
                while chunk := ch.recv(65536):
                    data += chunk
                got = list(RelayDecoder().feed(data))
                assert got == [m.Notify("Relay full: too many sessions")]
            finally:
                t.close()
            assert "count=1" in roomy.wait_log("limit='max-sessions'")
        for s in idle:  # still held open: the grace period (10 s) is not over
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in idle:
            s.close()


def test_every_connections_last_word_is_logged_after_a_connect_and_close_loop(roomy):
    start = mark(roomy)
    for _ in range(50):
        s = connect(roomy.port)  # sends a banner, so it gets a process, then leaves
        s.recv(100)
        s.sendall(b"SSH-2.0-loop\r\n")
        s.close()
        s = connect(roomy.port)  # leaves without a byte: the master alone sees it
        s.recv(100)
        s.close()
    wait_for(lambda: len(lines_since(roomy, start, "closed before sending a byte")) == 50, 10, "50 closes")
    wait_for(lambda: len(lines_since(roomy, start, "connection accepted")) == 50, 10, "50 processes")
    accepted = {found(PID, line) for line in lines_since(roomy, start, "connection accepted")}
    assert len(accepted) == 50

    def last_words() -> set[str]:
        return {found(PID, line) for line in lines_since(roomy, start, "connection refused")}

    wait_for(lambda: last_words() >= accepted, 10, "every connection process's last word")
    assert "ssh handshake failed" in lines_since(roomy, start, "connection refused")[0]


@pytest.fixture(scope="module")
def strict(keys_dir):
    with Relay(keys_dir, extra=["--grace-period", str(GRACE), "--per-source-max-startups", "3"]) as r:
        yield r


def test_stalled_connections_are_closed_at_the_grace_period(strict):
    start = mark(strict)
    t0 = time.monotonic()
    idle = connect(strict.port)
    kex = connect(strict.port)
    kex.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit())
    t = paramiko.Transport(("127.0.0.1", strict.port))
    t.connect()
    t.auth_none("someone")  # authenticated, and then no channel
    # A fourth startup from this address is one too many.
    extra = connect(strict.port)
    assert extra.recv(100) == b""
    assert "count=1" in strict.wait_log("limit='per-source-max-startups'")
    extra.close()
    assert len(strict.children()) == 2  # the idle one costs none
    delays = [closed_after(idle, t0), closed_after(kex, t0)]
    wait_for(lambda: not t.is_active(), 10, "the relay to close the authenticated connection")
    delays.append(time.monotonic() - t0)
    t.close()
    assert all(GRACE - 0.1 <= d <= GRACE + 1.0 for d in delays), delays
    wait_for(
        lambda: len(lines_since(strict, start, "limit='grace-period'")) >= 3, 3, "three grace-period lines"
    )
    time.sleep(0.3)  # a killed process is not killed (and logged) again
    lines = lines_since(strict, start, "limit='grace-period'")
    reasons = sorted(found(r"\((.*)\)'", line) for line in lines)
    assert reasons == ["authenticated, no session channel", "no bytes sent", "ssh handshake incomplete"], (
        lines
    )
    wait_for(lambda: not strict.children(), 3, "the stalled connection processes to go")
    for s in (idle, kex):
        s.close()


def test_max_startups_and_per_source_rate_refuse_with_their_names(keys_dir):
    with Relay(keys_dir, extra=["--max-startups", "3", "--per-source-rate", "1"]) as relay:
        held = [connect(relay.port) for _ in range(3)]
        assert all(s.recv(100) == BANNER for s in held)
        for s in held:  # a startup that has sent bytes costs a process: these count
            s.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        wait_for(lambda: len(relay.children()) == 3, 5, "three connection processes")
        extra = connect(relay.port)
        assert extra.recv(100) == b""  # refused before any byte
        assert "count=1" in relay.wait_log("limit='max-startups'")
        for s in [*held, extra]:
            s.close()
        # Five connections so far: the burst (5 * 1) is spent, so the next ones are refused.
        socks = [connect(relay.port) for _ in range(3)]
        assert [s.recv(100) for s in socks].count(b"") >= 2
        line = relay.wait_log("limit='per-source-rate'")
        assert "count=1" in line and "1/s" in line
        for s in socks:
            s.close()
