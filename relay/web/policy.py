"""The web viewer's policy: its public URL, the headers every response carries, the WebSocket's
Origin check, and which peer may say who the client is (X-Forwarded-For).

`--web-url` is the address mates open (`URL/t/TOKEN`); the WebSocket is accepted only from a page
of that origin, and the Content-Security-Policy lets the page load only the relay's own script
(its style is inline) and connect only to that origin's WebSocket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED = 16  # addresses of X-Forwarded-For looked at, from the right


def origin_of(url: str) -> str:
    """scheme://host[:port] of an http(s) URL, the port only when it is not the scheme's own."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http or https URL: {url!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = 80 if parts.scheme == "http" else 443
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """Comma-separated addresses or CIDRs; ValueError for any that is not one."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class WebPolicy:
    url: str  # --web-url, without a trailing slash: links are URL/t/TOKEN
    trusted_proxies: tuple[IpNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def for_url(cls, url: str, trusted_proxies: tuple[IpNetwork, ...] = ()) -> WebPolicy:
        origin_of(url)  # checks it
        return cls(url.rstrip("/"), trusted_proxies)

    @property
    def origin(self) -> str:
        return origin_of(self.url)

    @property
    def socket_origin(self) -> str:
        """The WebSocket's origin: ws:// for an http page, wss:// for https."""
        scheme, rest = self.origin.split("://", 1)
        return ("wss://" if scheme == "https" else "ws://") + rest

    def link(self, token: str) -> str:
        return f"{self.url}/t/{token}"

    def headers(self) -> dict[str, str]:
        """The headers of every response: no inline script, nothing from elsewhere.

        Styles are inline only ('unsafe-inline', and no stylesheet is loaded: the page holds its
        own), since xterm.js 6 cannot draw without inline style of two kinds, and neither can
        be pinned by a hash or a nonce: its DOM renderer and scroll bar create four `<style>`
        elements whose text it writes at run time (the theme's colours, the font, the measured
        cell size: blocked, the rows fall back to the browser's default font) and it has no
        option to give them a nonce; and it sets a `style` attribute (setAttribute) on each cell
        of a true-colour or contrast-adjusted colour (blocked under `style-src-attr 'none'`, a
        red cell is drawn white). A hash for the page's own `<style>` would not help either:
        beside a hash, browsers ignore 'unsafe-inline'."""
        csp = (
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
            f"connect-src {self.socket_origin}; img-src 'self' data:; font-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return {
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        }

    def origin_ok(self, origin: str | None) -> bool:
        return origin is not None and origin.strip().lower() == self.origin.lower()

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: `peer`, unless `peer` is a trusted proxy and X-Forwarded-For
        names who it forwards for (the right-most address that is not itself a trusted proxy)."""
        if forwarded_for is None or not self._trusted(peer):
            return peer
        for item in reversed(forwarded_for.split(",")[-MAX_FORWARDED:]):
            try:
                ip = ipaddress.ip_address(item.strip())
            except ValueError:
                return peer  # a malformed list: believe only the socket
            if not self._trusted(str(ip)):
                return str(ip)
        return peer

    def _trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self.trusted_proxies)
