"""-x: the PROXY protocol header parser (sans-IO) and the master's intake of it, on a live master
with a fake jailer (nothing is jailed; the connection factory records the address it is given)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from typing import cast

import pytest
import structlog

from jail import Jailer
from relay.master import proxy
from relay.master import server as server_mod
from relay.master.proxy import HeaderReader, ProxyError
from relay.master.server import BANNER, Master, RelayConfig
from tests.test_admission import SpawningJailer, live_master, turns

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str = "203.0.113.7", dst: str = "192.0.2.1", sport: int = 51234, dport: int = 22) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(
    src: str = "203.0.113.7",
    dst: str = "192.0.2.1",
    sport: int = 51234,
    dport: int = 22,
    command: int = 1,
    tlvs: bytes = b"",
) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21  # INET or INET6, STREAM
    body = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


# ---------------------------------------------------------------------- the parser
@pytest.mark.parametrize(
    ("data", "source", "port"),
    [
        (v1(), "203.0.113.7", 51234),
        (v1("2001:db8::7", "2001:db8::1"), "2001:db8::7", 51234),
        (v1("::ffff:198.51.100.4", "::1"), "198.51.100.4", 51234),  # IPv4-mapped reads as IPv4
        (b"PROXY UNKNOWN\r\n", None, None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None, None),
        (v2(), "203.0.113.7", 51234),
        (v2("2001:db8::7", "2001:db8::1", 7, 22), "2001:db8::7", 7),
        (v2(tlvs=b"\x04\x00\x03abc"), "203.0.113.7", 51234),  # TLVs are skipped
        (v2(command=0), None, None),  # LOCAL: the proxy's own connection
        (V2_SIG + b"\x21\x00\x00\x00", None, None),  # PROXY over AF_UNSPEC
        (V2_SIG + b"\x21\x31\x00\xd8" + bytes(216), None, None),  # AF_UNIX: no IP address
    ],
)
def test_valid_headers(data, source, port):
    header = proxy.parse(data + b"SSH-2.0-x\r\n")
    assert header is not None
    assert (header.source, header.source_port, header.length) == (source, port, len(data))
    assert header.version == (2 if data.startswith(V2_SIG) else 1)


@pytest.mark.parametrize("data", [v1(), v2(), v2("2001:db8::7", "2001:db8::1")])
def test_every_proper_prefix_is_incomplete(data):
    for n in range(len(data)):
        assert proxy.parse(data[:n]) is None, n


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not a PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n", "CRLF"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n", "4 fields"),
        (b"PROXY TCP5 203.0.113.7 192.0.2.1 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 203.0.113.777 192.0.2.1 1 2\r\n", "bad IPv4 address"),
        (b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n", "bad IPv4 address"),
        (b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n", "bad IPv6 address"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 2\r\n", "bad port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 01 2\r\n", "bad port"),
        (b"PROXY TCP4 203.0.113.7\x00", "printable"),
        (b"PROXY " + b"A" * 101, "longer than 107"),
        (V2_SIG + b"\x11\x11\x00\x0c" + bytes(12), "version/command"),
        (V2_SIG + b"\x22\x11\x00\x0c" + bytes(12), "version/command"),
        (V2_SIG + b"\x21\x41\x00\x0c" + bytes(12), "family/transport"),
        (V2_SIG + b"\x21\x11\x00\x08" + bytes(8), "IPv4 addresses cut short"),
        (V2_SIG + b"\x21\x21\x00\x0c" + bytes(12), "IPv6 addresses cut short"),
        (V2_SIG + b"\x21\x11\x04\x01", "of 1041 bytes (limit 1040)"),  # refused before its body
        (V2_SIG + b"\x21\x11\xff\xff", "of 65551 bytes"),
    ],
)
def test_invalid_and_oversized_headers(data, why):
    with pytest.raises(ProxyError, match=why.replace("(", r"\(").replace(")", r"\)")):
        proxy.parse(data)


def test_the_longest_v1_header_fits_and_one_byte_more_does_not():
    full = ":".join(["ffff"] * 8)
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(longest) == proxy.V1_MAX == 107  # the spec's worst case
    assert proxy.parse(longest) == proxy.Header(1, 107, None)
    with pytest.raises(ProxyError, match="longer than 107"):
        proxy.parse(longest.replace(b"UNKNOWN", b"UNKNOWN "))


def test_the_reader_takes_exactly_the_header_however_it_arrives():
    for header in (v1(), v2(tlvs=b"\x04\x00\x05hello")):
        stream = header + b"SSH-2.0-OpenSSH_9.2\r\n"
        for chunk in (1, 3, 16, 200):
            r, pos, got = HeaderReader(), 0, None
            while got is None:
                room = r.room()
                assert room >= 1
                # the peek sees what has arrived, up to room(); the reader names its header bytes
                arrived = stream[: min(len(stream), pos + chunk)]
                take, got = r.feed(arrived[pos : pos + room])
                pos += take
            assert pos == len(header) and bytes(r.seen) == header, (header, chunk)
            assert got.source == "203.0.113.7"


def test_the_reader_never_asks_past_a_v2_header_once_its_length_is_known():
    header = v2()
    r = HeaderReader()
    r.feed(header[:16])
    assert r.room() == len(header) - 16


# ---------------------------------------------------------------------- the master's intake
@pytest.fixture
def proxied():
    """A master with -x on a loopback port; the connection factory records its (ip, accepted)."""
    yield from live_master(
        RelayConfig(bind="127.0.0.1", port=0, proxy_protocol=True, per_source_max_startups=1)
    )


def test_the_header_address_is_the_connections_address(proxied):
    m, port, jailer, made = proxied
    clients = []
    for header in (v1("203.0.113.7"), v2("2001:db8::9", "2001:db8::1")):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(header + b"SSH-2.0-x\r\n")  # the client's bytes right behind the header
        clients.append(c)
    with structlog.testing.capture_logs():
        turns(m, 0.2)
    assert sorted(ip for ip, _ in made) == ["2001:db8::9", "203.0.113.7"]
    for c in clients:
        c.settimeout(1)
        assert c.recv(100) == BANNER  # the banner only once the header is read
        c.close()


def test_the_master_reads_the_header_and_not_one_byte_more(proxied):
    m, port, jailer, made = proxied
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(v1() + b"SSH-")
    turns(m, 0.1)
    [(ip, _)] = made  # admitted under the header's address and forked: its first bytes wait
    assert ip == "203.0.113.7" and not m.awaiting
    held = socket.socket(fileno=os.dup(jailer.held[0]))  # what the connection process gets
    try:
        assert held.recv(100, socket.MSG_PEEK) == b"SSH-"
    finally:
        held.close()
    c.close()


def test_per_source_limits_count_the_header_address(proxied):
    m, port, jailer, made = proxied  # per-source-max-startups 1
    socks = []
    for src in ("203.0.113.7", "203.0.113.7", "198.51.100.4"):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(v1(src))
        socks.append(c)
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.2)
    [refused] = [e for e in logs if e["event"] == "connection refused"]
    assert (refused["limit"], refused["ip"]) == ("per-source-max-startups", "203.0.113.7")
    assert sorted(p.ip for p in m.pending) == ["198.51.100.4", "203.0.113.7"]
    for c in socks:
        c.close()


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "bad PROXY header: not a PROXY protocol header"),  # missing
        (b"PROXY TCP4 nonsense\r\n", "bad PROXY header: version 1 header"),  # broken
        (b"PROXY " + b"9" * 120, "longer than 107 bytes"),  # oversized v1
        (V2_SIG + b"\x21\x11\x10\x00", "limit 1040"),  # oversized v2
    ],
)
def test_a_missing_broken_or_oversized_header_is_refused_and_logged(proxied, sent, why):
    m, port, jailer, made = proxied
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(sent)
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.2)
    [refused] = [e for e in logs if e["event"] == "connection refused"]
    assert refused["limit"] == proxy.PROXY_HEADER == "proxy-header"
    assert refused["ip"] == "127.0.0.1" and why in refused["reason"] and refused["count"] == 1
    c.settimeout(1)
    try:
        assert c.recv(100) == b""  # closed without a banner ...
    except ConnectionResetError:
        pass  # ... or reset, when what the client sent was left unread
    assert not made and not m.pending and not m.awaiting
    c.close()


def test_a_header_not_whole_in_time_is_refused(proxied, monkeypatch):
    m, port, jailer, made = proxied
    m.cfg.proxy_timeout = 0.3
    quiet = socket.create_connection(("127.0.0.1", port))
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(v1()[:10])
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.2)
        assert len(m.awaiting) == 2 and not logs
        turns(m, 0.3)
    refused = [e for e in logs if e["event"] == "connection refused"]
    assert [e["limit"] for e in refused] == ["proxy-header"] * 2
    assert {e["reason"] for e in refused} == {
        "no whole PROXY header within 0.3 s (0 bytes)",
        "no whole PROXY header within 0.3 s (10 bytes)",
    }
    assert not m.awaiting
    for c in (quiet, slow):
        c.close()


def test_a_connection_closed_in_its_header_is_logged_as_closed(proxied):
    m, port, jailer, made = proxied
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"PROXY TCP4")
    c.close()
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.2)
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("connection closed", "closed before its PROXY header was whole")
    ]
    assert not m.awaiting


def test_connections_waiting_for_their_header_count_for_max_connections(proxied):
    m, port, jailer, made = proxied
    m.cfg.max_connections = 2
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    with structlog.testing.capture_logs() as logs:
        turns(m, 0.2)
    [refused] = [e for e in logs if e["event"] == "connection refused"]
    assert refused["limit"] == "max-connections" and len(m.awaiting) == 2
    m.shutdown()  # closes them too
    assert not m.awaiting
    for c in socks:
        c.close()


def test_listening_on_the_ipv6_any_address_serves_both_families():
    jailer = SpawningJailer()
    made: list[str] = []

    def connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
        made.append(ip)
        return lambda: 0

    m = Master(RelayConfig(bind="::", port=0), connection=connection, jailer=cast(Jailer, jailer))
    listener = m.bind()
    m.sel.register(listener, server_mod.selectors.EVENT_READ, "accept")
    port = listener.getsockname()[1]
    try:
        clients = [socket.create_connection((addr, port)) for addr in ("127.0.0.1", "::1")]
        for c in clients:
            c.sendall(b"SSH-2.0-x\r\n")
        turns(m, 0.2)
        assert sorted(made) == ["127.0.0.1", "::1"]  # an IPv4 peer is logged as IPv4
        for c in clients:
            c.settimeout(1)
            assert c.recv(100) == BANNER
            c.close()
    finally:
        jailer.close()
        listener.close()


def test_the_grace_period_counts_from_the_tcp_accept_not_the_header(proxied):
    m, port, jailer, made = proxied
    c = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()
    c.sendall(v1()[:5])
    turns(m, 0.3)
    c.sendall(v1()[5:] + b"SSH-2.0-x\r\n")
    turns(m, 0.1)
    [(ip, accepted)] = made
    assert ip == "203.0.113.7" and t0 - 0.05 < accepted < t0 + 0.1  # the accept, 0.3 s before the header
    c.close()
