"""The PROXY protocol header (HAProxy's, versions 1 and 2), sans-IO: what a load balancer in
front of the relay sends before the client's own bytes, naming the client's address.

The master (`-x`, relay.master.intake) reads it and nothing past it: it peeks at most `room()`
bytes, hands them to `HeaderReader.feed`, which says how many of them are header bytes (the
master then reads exactly those) and, once the header is whole, what it says. Hard limits:
a version 1 line is at most V1_MAX bytes with its CRLF, a version 2 header at most
V2_FIXED + V2_MAX_BODY; anything else at the start of a connection is refused (`ProxyError`).

The address in the header is the connection's address everywhere (logs, admission limits,
notices). `LOCAL` (v2) and `UNKNOWN` (v1) headers, and addresses that are not IP (v2 AF_UNIX,
AF_UNSPEC), say nothing about the client: `Header.source` is None and the socket's own peer
address stands.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PROXY_HEADER = "proxy-header"  # the limit's name in refusals
HEADER_TIMEOUT = 5.0  # seconds from accept a connection has to send its whole header
V1_PREFIX = b"PROXY "
V1_MAX = 107  # "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF, as the spec bounds it
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, body length
V2_MAX_BODY = 1024  # addresses (216 bytes at most, AF_UNIX) and TLVs, which are ignored

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_INET, _V2_INET6 = 0x1, 0x2
_V2_FAMILIES = {0x0, 0x1, 0x2, 0x3}  # UNSPEC, INET, INET6, UNIX
_V2_TRANSPORTS = {0x0, 0x1, 0x2}  # UNSPEC, STREAM, DGRAM


class ProxyError(ValueError):
    """Not a valid PROXY header, or one past the limits."""


@dataclass(frozen=True)
class Header:
    version: int  # 1 or 2
    length: int  # bytes the header takes on the wire
    source: str | None  # the client's address; None: use the socket's own
    source_port: int | None = None


def plain_address(ip: str) -> str:
    """An IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer) as plain IPv4."""
    if ip.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        except ValueError:
            return ip
        if mapped is not None:
            return str(mapped)
    return ip


def parse(data: bytes) -> Header | None:
    """The header at the start of `data`, or None while `data` is a valid beginning of one;
    ProxyError when it cannot become one (within the limits)."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data):
        return None  # too short to tell yet
    raise ProxyError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> Header | None:
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError(f"version 1 header longer than {V1_MAX} bytes")
        if any(not 32 <= b < 127 and b != 13 for b in data):
            raise ProxyError("version 1 header is not printable ASCII")
        return None
    line = data[: end + 1]
    if not line.endswith(b"\r\n"):
        raise ProxyError("version 1 header does not end with CRLF")
    try:
        words = line[len(V1_PREFIX) : -2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("version 1 header is not ASCII") from None
    if words[0] == "UNKNOWN":
        return Header(1, len(line), None)  # the rest of the line is to be ignored
    if words[0] not in ("TCP4", "TCP6") or len(words) != 5:
        raise ProxyError(
            f"version 1 header: expected TCP4, TCP6 or UNKNOWN and 4 fields, got {len(words) - 1}"
        )
    version = 4 if words[0] == "TCP4" else 6
    source = _v1_address(words[1], version)
    _v1_address(words[2], version)
    sport = _v1_port(words[3])
    _v1_port(words[4])
    return Header(1, len(line), plain_address(source), sport)


def _v1_address(text: str, version: int) -> str:
    try:
        addr = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyError(f"version 1 header: bad IPv{version} address") from None
    return str(addr)


def _v1_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyError("version 1 header: bad port")
    return int(text)


def _parse_v2(data: bytes) -> Header | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, fam, size = data[12], data[13], int.from_bytes(data[14:16], "big")
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyError(f"version 2 header: bad version/command byte 0x{ver_cmd:02x}")
    if fam >> 4 not in _V2_FAMILIES or fam & 0xF not in _V2_TRANSPORTS:
        raise ProxyError(f"version 2 header: bad family/transport byte 0x{fam:02x}")
    if size > V2_MAX_BODY:
        raise ProxyError(f"version 2 header of {V2_FIXED + size} bytes (limit {V2_FIXED + V2_MAX_BODY})")
    total = V2_FIXED + size
    if len(data) < total:
        return None
    body = data[V2_FIXED:total]
    if ver_cmd & 0xF == _V2_LOCAL:
        return Header(2, total, None)  # the proxy's own connection (a health check)
    family = fam >> 4
    if family == _V2_INET:
        if size < 12:
            raise ProxyError("version 2 header: IPv4 addresses cut short")
        return Header(2, total, str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big"))
    if family == _V2_INET6:
        if size < 36:
            raise ProxyError("version 2 header: IPv6 addresses cut short")
        source = str(ipaddress.IPv6Address(body[0:16]))
        return Header(2, total, plain_address(source), int.from_bytes(body[32:34], "big"))
    return Header(2, total, None)  # AF_UNSPEC or AF_UNIX: no client address


@dataclass
class HeaderReader:
    """One connection's header as it arrives. The caller peeks at most `room()` bytes (more may
    wait behind them), passes them to `feed`, then reads exactly the count it returns."""

    seen: bytearray = field(default_factory=bytearray)  # header bytes read so far

    def room(self) -> int:
        """How many bytes to peek at: never more than the longest header could still need."""
        if len(self.seen) >= V2_FIXED and self.seen.startswith(V2_SIGNATURE):
            size = min(int.from_bytes(self.seen[14:16], "big"), V2_MAX_BODY)
            return max(1, V2_FIXED + size - len(self.seen))
        return max(1, max(V1_MAX, V2_FIXED) - len(self.seen))

    def feed(self, peeked: bytes) -> tuple[int, Header | None]:
        """(how many of `peeked` are header bytes, to be read now; the header once whole, else
        None). Bytes of an incomplete header are all header bytes; ProxyError when invalid."""
        data = bytes(self.seen) + peeked
        header = parse(data)
        take = len(peeked) if header is None else header.length - len(self.seen)
        self.seen += peeked[:take]
        return take, header
