"""The master's intake: what happens to a TCP connection between accept and the SSH banner.

`Intake` is the part of `relay.master.server.Master` that takes an accepted socket: the admission
check (relay.master.admission; at max-connections the connection silent longest makes room) and,
with `-x`, the PROXY protocol header first (relay.master.proxy). A connection behind a proxy is
held without a banner until its header is whole: the master peeks at the socket (non-blocking,
in its selector), reads exactly the header's bytes and no more, and then admits the connection
under the header's address, so that per-source limits, logs and notices see the client rather
than the load balancer. A header that is invalid, past its size limits, or not whole within
--proxy-timeout seconds (proxy.HEADER_TIMEOUT by default) of accept is refused with limit=proxy-header, logged with the socket's
own address.
"""

from __future__ import annotations

import heapq
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.master import admission, proxy
from relay.master.admission import Refusal

if TYPE_CHECKING:
    from relay.master.admission import Admission
    from relay.master.server import Child, Pending, RelayConfig


@dataclass(eq=False)
class HeaderWait:
    """An accepted connection behind a proxy whose PROXY header is not whole yet."""

    sock: socket.socket
    ip: str  # the socket's peer: the proxy
    accepted: float
    reader: proxy.HeaderReader = field(default_factory=proxy.HeaderReader)
    open: bool = True
    web: bool = False  # accepted on the web listener (relay.master.web)


class Intake:
    """Accept-side handling of the master (mixed into Master, which provides the state)."""

    cfg: RelayConfig
    log: Any
    admission: Admission
    children: dict[int, Child]
    pending: set[Pending]
    silent: dict[Pending, None]
    sel: selectors.BaseSelector
    deadlines: list[tuple[float, int, Any]]
    _seq: Iterator[int]

    def __init__(self) -> None:
        self.awaiting: dict[HeaderWait, None] = {}  # behind a proxy, header not whole; oldest first
        super().__init__()

    # Provided by Master.
    def _refuse(self, ip: str, refusal: Refusal, **fields: object) -> None:
        raise NotImplementedError

    def _hold(self, conn: socket.socket, ip: str, accepted: float | None = None, web: bool = False) -> None:
        raise NotImplementedError

    def _close_pending(self, p: Pending, reason: str, limit: str | None = None) -> None:
        raise NotImplementedError

    def _connections(self) -> int:
        return len(self.children) + len(self.pending) + len(self.awaiting)

    def _intake(self, conn: socket.socket, peer: str, web: bool = False) -> None:
        """A connection just accepted from `peer` (on the web listener when `web`)."""
        ip = proxy.plain_address(peer)
        if not self.cfg.proxy_protocol:
            self._admit_connection(conn, ip, web=web)
            return
        if self._connections() >= self.cfg.max_connections and self.silent:
            self._close_oldest_silent()
        if self._connections() >= self.cfg.max_connections:
            conn.close()
            limit = self.cfg.max_connections
            self._refuse(ip, Refusal(admission.MAX_CONNECTIONS, f"too many connections (limit {limit})"))
            return
        conn.setblocking(False)
        w = HeaderWait(conn, ip, time.monotonic(), web=web)
        self.awaiting[w] = None
        self.sel.register(conn, selectors.EVENT_READ, w)
        heapq.heappush(self.deadlines, (w.accepted + self.cfg.proxy_timeout, next(self._seq), w))

    def _admit_connection(
        self, conn: socket.socket, ip: str, accepted: float | None = None, web: bool = False
    ) -> None:
        """The admission limits for a connection from `ip`; the banner if admitted. The grace
        period counts from `accepted` (the TCP accept; now by default)."""
        if self._connections() >= self.cfg.max_connections and self.silent:
            self._close_oldest_silent()
        refusal = self.admission.check(ip, self._connections(), silent=len(self.silent))
        if refusal is not None:
            conn.close()
            self._refuse(ip, refusal)
            return
        self._hold(conn, ip, accepted, web)

    def _close_oldest_silent(self) -> None:
        """Make room at max-connections: a connection that has sent nothing costs a socket and
        nothing else, and a real client sends its banner within a round trip of ours, so the one
        silent longest goes, not the new arrival."""
        oldest = next(iter(self.silent))
        silent_for = time.monotonic() - oldest.accepted
        self._close_pending(
            oldest,
            f"closed for a new connection: silent for {silent_for:.1f} s while the relay was full "
            f"(limit {self.cfg.max_connections})",
            admission.MAX_CONNECTIONS,
        )

    # ------------------------------------------------------------------ the PROXY header
    def _on_header_bytes(self, w: HeaderWait) -> None:
        if not w.open:
            return
        try:
            peeked = w.sock.recv(w.reader.room(), socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as e:
            self._drop_waiting(w, f"connection lost before its PROXY header: {e.strerror or e}")
            return
        if not peeked:
            self._drop_waiting(w, "closed before its PROXY header was whole")
            return
        try:
            take, header = w.reader.feed(peeked)
        except proxy.ProxyError as e:
            self._drop_waiting(w, f"bad PROXY header: {e}", proxy.PROXY_HEADER)
            return
        try:
            got = w.sock.recv(take) if take else b""  # exactly the header's bytes: they are waiting
        except OSError as e:
            self._drop_waiting(w, f"connection lost in its PROXY header: {e.strerror or e}")
            return
        if len(got) != take:
            self._drop_waiting(w, "PROXY header bytes vanished", proxy.PROXY_HEADER)
            return
        if header is not None:
            self._forget_waiting(w)
            ip = header.source or w.ip
            self.log.debug("proxy header", ip=ip, proxy=w.ip, version=header.version, port=header.source_port)
            self._admit_connection(w.sock, ip, w.accepted, w.web)

    def _header_expired(self, w: HeaderWait) -> None:
        if w.open:
            reason = f"no whole PROXY header within {self.cfg.proxy_timeout:g} s ({len(w.reader.seen)} bytes)"
            self._drop_waiting(w, reason, proxy.PROXY_HEADER)

    def _forget_waiting(self, w: HeaderWait) -> None:
        w.open = False
        self.awaiting.pop(w, None)
        try:
            self.sel.unregister(w.sock)
        except (KeyError, ValueError):
            pass

    def _drop_waiting(self, w: HeaderWait, reason: str, limit: str | None = None) -> None:
        self._forget_waiting(w)
        w.sock.close()
        if limit is None:
            self.log.info("connection closed", ip=w.ip, reason=reason)
        else:
            self._refuse(w.ip, Refusal(limit, reason))

    def _close_awaiting(self) -> None:
        """At shutdown: close every connection still sending its header."""
        for w in list(self.awaiting):
            self._forget_waiting(w)
            w.sock.close()
