"""Host path end to end: the real Debian tmate 2.4 client hosts sessions through a real relay."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import msgpack
import paramiko
import pytest

from relay.master.tokens import ALPHABET
from tests.e2e import SSH_LINE, Relay, fake_host, viewer_answer, wait_for

NOTE = "Note: clear your terminal before sharing readonly access"


def _tokens(host, port: int) -> tuple[str, str]:
    rw = host.display("#{tmate_ssh}")
    ro = host.display("#{tmate_ssh_ro}")
    m_rw, m_ro = SSH_LINE.match(rw), SSH_LINE.match(ro)
    assert m_rw and m_ro, (rw, ro)
    assert m_rw.group(1) == m_ro.group(1) == str(port)
    assert m_rw.group(3) == m_ro.group(3) == "127.0.0.1"
    return m_rw.group(2), m_ro.group(2)


def test_host_gets_tokens_notices_and_ready(relay, make_host):
    host = make_host(relay, attached=True)
    t0 = time.monotonic()
    host.wait_ready()
    assert time.monotonic() - t0 < 5
    rw, ro = _tokens(host, relay.port)
    assert len(rw) == 25 and set(rw) <= set(ALPHABET)
    assert ro.startswith("ro-") and len(ro) == 28 and set(ro[3:]) <= set(ALPHABET)
    assert rw != ro[3:]
    msgs = host.messages()
    assert NOTE in msgs
    assert f"ssh session read only: ssh -p{relay.port} {ro}@127.0.0.1" in msgs
    assert f"ssh session: ssh -p{relay.port} {rw}@127.0.0.1" in msgs
    # The notices come in the C server's order.
    assert msgs.index(NOTE) < msgs.index("ssh session read only:") < msgs.index("ssh session: ssh")
    relay.wait_log("host session started")


def test_two_hosts_get_distinct_tokens(relay, make_host):
    a, b = make_host(relay), make_host(relay)
    a.wait_ready()
    b.wait_ready()
    ta, tb = _tokens(a, relay.port), _tokens(b, relay.port)
    assert not set(ta) & set(tb)


def test_advertised_port_22_has_no_port_part(keys_dir, make_host):
    with Relay(keys_dir, extra=["-q", "22", "-h", "relay.example"]) as relay:
        host = make_host(relay)
        host.wait_ready()
        rw = host.display("#{tmate_ssh}")
        ro = host.display("#{tmate_ssh_ro}")
        assert rw.startswith("ssh ") and not rw.startswith("ssh -p"), rw
        assert rw.endswith("@relay.example") and ro.startswith("ssh ro-") and ro.endswith("@relay.example")


def test_wrong_fingerprint_is_refused_by_the_client(relay, make_host):
    bogus = "SHA256:" + "A" * 43
    host = make_host(relay, rsa_fp=bogus, ed25519_fp=bogus, attached=True)
    wait_for(
        lambda: "Cannot authenticate server" in host.messages(), 10, "the client to refuse the server key"
    )
    assert host.display("#{tmate_ssh}") == ""


def test_session_end_clears_process_and_registry(keys_dir, make_host):
    with Relay(keys_dir) as relay:
        host = make_host(relay)
        host.wait_ready()
        wait_for(lambda: len(relay.children()) == 1, 5, "one connection process")
        [pid] = relay.children()
        rw, ro = _tokens(host, relay.port)
        host.cmd("kill-server")
        t0 = time.monotonic()
        # Gone and reaped (a zombie would still have its /proc entry).
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the session process to be reaped")
        assert time.monotonic() - t0 < 1.5
        assert not relay.children()
        line = relay.wait_log("host session ended")
        assert "reason=" in line
        # The registry entries went with it: both tokens are now refused as expired.
        for token in (rw, ro):
            assert viewer_answer(relay.port, token)[1] == b"Invalid or expired session token\r\n"
        again = make_host(relay)
        again.wait_ready()


def test_connection_without_role_is_closed_after_grace_period(keys_dir):
    with Relay(keys_dir, extra=["--grace-period", "1"]) as relay:
        s = socket.create_connection(("127.0.0.1", relay.port))
        s.settimeout(10)
        t0 = time.monotonic()
        banner = s.recv(100)
        assert banner.startswith(b"SSH-2.0-tmate")
        while s.recv(4096):
            pass
        elapsed = time.monotonic() - t0
        s.close()
        assert 0.8 < elapsed < 4, elapsed
        relay.wait_log("no role taken within the grace period")
        wait_for(lambda: not relay.children(), 3, "the connection process to go")


def _closed(ch: paramiko.Channel, timeout: float = 5) -> bool:
    ch.settimeout(timeout)
    try:
        while ch.recv(65536):
            pass
    except TimeoutError:
        return False
    return True


def test_oversize_message_ends_only_that_session(keys_dir, make_host):
    with Relay(keys_dir) as relay:
        good = make_host(relay)
        good.wait_ready()
        t, ch = fake_host(relay.port)
        try:
            ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
            try:
                ch.sendall(msgpack.packb([2, 0, "x" * (64 * 1024)]))
            except (EOFError, OSError):
                # The relay refuses once the buffered part passes the limit, often before the
                # rest of the message is written: the write then meets a closed connection
                # (EOFError), or a channel paramiko has already seen closed ("Socket is closed").
                pass
            else:
                assert _closed(ch)
        finally:
            t.close()
        line = relay.wait_log("protocol violation")
        assert "too large" in line
        # The other session is untouched.
        assert good.alive()
        assert SSH_LINE.match(good.display("#{tmate_ssh}"))
        assert len(relay.children()) == 1


LAYOUT_1001 = [1, 100, 30, [[0, "w", [[p, 10, 10, 0, 0] for p in range(1001)], 0]], 0]


@pytest.mark.parametrize(
    "payload, reason",
    [
        ([0, 6, "2.4.0"], "second HEADER"),
        ([42, 1], "unknown message type 42"),
        ([2, "zero", "data"], "PTY_DATA"),
        ([2, 7, "output for a pane that does not exist"], "unknown pane id 7"),
        (LAYOUT_1001, "panes"),
        ("not an array", "not an array"),
    ],
)
def test_hostile_messages_end_the_session_with_a_reason(relay, payload, reason):
    t, ch = fake_host(relay.port)
    try:
        ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
        ch.sendall(msgpack.packb([1, 100, 30, [[0, "sh", [[0, 100, 30, 0, 0]], 0]], 0]))
        ch.sendall(msgpack.packb(payload))
        assert _closed(ch)
    finally:
        t.close()
    relay.wait_log("reason='protocol violation: ", timeout=5)
    wait_for(
        lambda: any(
            "protocol violation" in line and reason in line for line in relay.log_text().splitlines()
        ),
        5,
        f"a refusal naming {reason!r}",
    )


def test_message_before_header_is_refused(relay):
    t, ch = fake_host(relay.port)
    try:
        ch.sendall(msgpack.packb([2, 0, "early"]))
        assert _closed(ch)
    finally:
        t.close()
    relay.wait_log("before HEADER")


def test_closed_channel_ends_the_session(keys_dir):
    with Relay(keys_dir) as relay:
        t, ch = fake_host(relay.port)
        ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
        wait_for(lambda: len(relay.children()) == 1, 5, "the session process")
        try:
            ch.close()  # the channel's EOF and CLOSE; the SSH connection itself stays up
        except EOFError:
            # The relay ends the session at the EOF and closes the connection, sometimes before
            # paramiko has written the CLOSE that follows it.
            pass
        wait_for(lambda: not relay.children(), 2, "the session to end")
        t.close()
        relay.wait_log("host session ended")


@pytest.mark.parametrize(
    "request_kind, reason",
    [
        ("exec", "exec requests are not supported"),
        ("subsystem", "unknown subsystem 'sftp'"),
    ],
)
def test_exec_and_unknown_subsystem_are_refused(relay, request_kind, reason):
    t = paramiko.Transport(("127.0.0.1", relay.port))
    t.connect()
    t.auth_none("tmate")
    ch = t.open_session()
    # The relay refuses and closes the connection: the client sees the refusal, an EOF or a
    # reset, depending on how far it got.
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionResetError)):
        if request_kind == "exec":
            ch.exec_command("ls")
        else:
            ch.invoke_subsystem("sftp")
    wait_for(lambda: not t.is_active(), 5, "the relay to close the connection")
    t.close()
    relay.wait_log(reason)


def test_header_reply_over_raw_protocol(relay):
    """A scripted host sees the exact relay->host messages after HEADER."""
    from relay.tmate.codec import RelayDecoder
    from relay.tmate.messages import Notify, RelayReady, SetEnv

    t, ch = fake_host(relay.port)
    try:
        ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
        dec = RelayDecoder()
        got: list[Any] = []
        ch.settimeout(5)
        while not any(isinstance(m, RelayReady) for m in got):
            got += dec.feed(ch.recv(65536))
        # As the C server: each SET_ENV follows its notice.
        assert [type(m) for m in got] == [Notify, Notify, SetEnv, Notify, SetEnv, RelayReady]
        assert got[0].message == NOTE
        assert got[2].name == "tmate_ssh_ro" and got[4].name == "tmate_ssh"
        assert got[1].message == f"ssh session read only: {got[2].value}"
        assert got[3].message == f"ssh session: {got[4].value}"
    finally:
        t.close()


def test_connections_beyond_the_limit_are_refused_and_logged(keys_dir, make_host):
    with Relay(keys_dir, extra=["--max-connections", "2"]) as relay:
        idle = [socket.create_connection(("127.0.0.1", relay.port)) for _ in range(2)]
        for s in idle:  # a client that sends nothing costs no process: these send a banner
            s.sendall(b"SSH-2.0-idle\r\n")
        try:
            wait_for(lambda: len(relay.children()) == 2, 5, "two connection processes")
            extra = socket.create_connection(("127.0.0.1", relay.port))
            extra.settimeout(5)
            assert extra.recv(100) == b""  # closed without a banner
            extra.close()
            relay.wait_log("too many connections (limit 2)")
            assert len(relay.children()) == 2
        finally:
            for s in idle:
                s.close()
        # Once the others are gone, a host is served again.
        wait_for(lambda: not relay.children(), 25, "the idle connections to end")
        host = make_host(relay)
        host.wait_ready()
