"""-x end to end: a real relay behind a small forwarder that prepends a PROXY header (v1 or v2)
to each connection, as a load balancer does; a real tmate host and a real OpenSSH viewer go
through it, and the relay logs the header's addresses. Headers that are missing, broken or
oversized are refused with limit=proxy-header."""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e import Relay, SshViewer, paramiko_viewer, session_tokens, tmate_available, wait_for
from tests.forward import Forwarder
from tests.test_proxy import V2_SIG, v1, v2

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate is not installed")


def line_with(relay: Relay, *needles: str, timeout: float = 10.0) -> str:
    def find():
        with relay._lock:
            return next((x for x in relay.lines if all(n in x for n in needles)), None)

    try:
        return wait_for(find, timeout, f"a log line with {needles}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; the relay logged:\n{relay.log_text()[-4000:]}") from None


@pytest.fixture(scope="module")
def proxied_relay(keys_dir):
    with Relay(keys_dir, extra=["-x", "--proxy-timeout", "1"]) as r:
        yield r


def test_the_headers_address_is_logged_for_host_and_viewer(proxied_relay, make_host, tmp_path):
    relay = proxied_relay
    host_side = Forwarder(relay.port, lambda: v1("203.0.113.7", "192.0.2.1", 40001, 22))
    viewer_side = Forwarder(relay.port, lambda: v2("2001:db8::9", "2001:db8::1", 40002, 22))
    try:
        # tmate's config names the relay's port; the host goes through the v1 forwarder instead
        host = make_host(_Via(relay, host_side.port))
        host.wait_ready()
        line_with(relay, "host session started", "203.0.113.7")
        rw, _ = session_tokens(host)
        with SshViewer(tmp_path / "viewer", viewer_side.port, rw) as viewer:
            line_with(relay, "viewer linked", "2001:db8::9")
            host.leave_messages()
            host.cmd("send-keys", "echo through-the-proxy", "Enter")
            viewer.wait_screen("through-the-proxy", timeout=10)
        assert "127.0.0.1" not in line_with(relay, "host session started")  # not the forwarder's
    finally:
        host_side.close()
        viewer_side.close()


class _Via:
    """What make_host needs of a relay (its port), pointing at a forwarder instead."""

    def __init__(self, relay: Relay, port: int):
        self.relay, self.port = relay, port


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not a PROXY protocol header"),  # no header at all
        (b"PROXY TCP4 203.0.113.7 nonsense\r\n", "version 1 header"),  # broken
        (b"PROXY TCP4 " + b"1" * 200, "longer than 107 bytes"),  # oversized v1
        (V2_SIG + b"\x21\x11\x10\x00" + bytes(4096), "of 4112 bytes (limit 1040)"),  # oversized v2
    ],
)
def test_a_missing_broken_or_oversized_header_is_refused_and_logged(proxied_relay, sent, why):
    with socket.create_connection(("127.0.0.1", proxied_relay.port)) as s:
        s.sendall(sent)
        s.settimeout(5)
        try:
            assert s.recv(100) == b""  # no banner: closed (or reset, with bytes left unread)
        except ConnectionResetError:
            pass
    line = line_with(proxied_relay, "connection refused", "proxy-header", why)
    assert "127.0.0.1" in line  # no header: the socket's own address


def test_a_client_without_a_proxy_in_front_gets_no_banner_and_is_refused_in_time(proxied_relay):
    with socket.create_connection(("127.0.0.1", proxied_relay.port)) as s:
        s.settimeout(8)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # nothing, then closed at the header's deadline
        assert 0.9 < time.monotonic() - t0 < 3
    line_with(proxied_relay, "connection refused", "proxy-header", "no whole PROXY header within 1 s")


def test_listening_on_the_ipv6_any_address_serves_both_families(keys_dir, make_host):
    with Relay(keys_dir, extra=["-b", "::"]) as relay:  # the last -b wins over the helper's
        host = make_host(relay)  # tmate connects to 127.0.0.1: IPv4
        host.wait_ready()
        host.leave_messages()
        host_line = line_with(relay, "host session started")
        assert "127.0.0.1" in host_line and "::ffff:" not in host_line  # an IPv4 peer logged as IPv4
        rw, _ = session_tokens(host)
        t, _ = paramiko_viewer(socket.create_connection(("::1", relay.port)), rw)  # a viewer over IPv6
        try:
            line_with(relay, "viewer linked", "::1")
        finally:
            t.close()
