"""A joined web viewer: its page's WebSocket on one side, its link to the session on the other.

The page's binary messages become `I` records, its size messages `R` records (the first link
gets the erase character first: xterm.js sends 0x7f for Backspace); `O` records go to the page as
binary messages, the `X` record as one too and then `{"end": LINE}` and a close.

As for an ssh viewer (relay.conn.viewer), a link that ends without an `X` record means the host
is away (its connection was lost; relay.master.reconnect holds the session): the page is shown
the same notice on its bottom row, what it types goes nowhere, and the master's word decides:
`relink` (the host is back: a new link, the erase character and the page's size again, and the
new session process draws the page from scratch) or `ended` (its last line); after the
reconnect window and a margin this process stops waiting by itself. A page that does not read
stalls this process alone: its link fills and the session skips its frames.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import time
from typing import Any

from relay import control
from relay.conn import link
from relay.conn.viewer import DEFAULT_SIZE, Link, host_away_notice
from relay.web import ws

READ_CHUNK = 16384
INPUT_RECORD = 16384  # bytes of input per link record (the session reads records of up to 64 KiB)
VERASE = 0x7F  # what xterm.js sends for Backspace


_VT = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def last_line(payload: bytes) -> str:
    """The text of an `X` record (`[server exited]`), without its terminal sequences."""
    return _VT.sub(b"", payload).decode("utf-8", "replace").strip()


class WebViewer:
    def __init__(
        self,
        sock: socket.socket,
        page: ws.WebSocket,
        lk: socket.socket,
        master: control.Client,
        wait: float,
        log: Any,
    ):
        self.sock, self.page, self.master, self.log = sock, page, master, log
        self.size: tuple[int, int] | None = None  # the page's last size
        self.link = Link(lk, VERASE, lambda: self.size, wait)

    def run(self) -> str:
        """Move messages and records until one side ends; why it ended."""
        self.link.greet()  # the erase character: the page's size comes with its first message
        tls = isinstance(self.sock, ssl.SSLSocket)
        while True:
            buffered = tls and self.sock.pending() > 0  # type: ignore[attr-defined]
            lk = self.link.sock
            watched: list[Any] = [self.sock, self.master] + ([lk] if lk is not None else [])
            readable = select.select(watched, [], [], 0 if buffered else self.link.timeout())[0]
            why = self.master in readable and self._from_master()
            if not why and self.link.sock is None:
                why = self._still_away()
            if not why and (buffered or self.sock in readable):
                why = self._from_page()
            if not why and self.link.sock is not None and self.link.sock in readable:
                why = self._from_session()
            if why:
                return why

    # ------------------------------------------------------------------ the page
    def _from_page(self) -> str | None:
        try:  # not sticky: re-armed before every read (as relay.conn.ssh does; echo 12.5 -> 8.5 ms)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        data = self.sock.recv(READ_CHUNK)
        why = None
        for event in self.page.feed(data, time.monotonic()):
            if isinstance(event, ws.Input):
                for i in range(0, len(event.data), INPUT_RECORD):
                    self.link.send(link.INPUT + event.data[i : i + INPUT_RECORD])
            elif isinstance(event, ws.Resize):
                self.size = (event.cols, event.rows)
                self.link.send_size(event.cols, event.rows)
            else:
                why = f"viewer left (close {event.code}{': ' + event.reason if event.reason else ''})"[:200]
        self.sock.sendall(self.page.to_send())
        return why or (None if data else "viewer left")

    def _end(self, line: str, code: int = ws.NORMAL, terminal: bytes = b"") -> None:
        """The page's last words: what its terminal shows, the line, the close."""
        data = (self.page.output(terminal) if terminal else b"") + self.page.notice("end", line)
        try:
            self.sock.sendall(data + self.page.close(code))
        except OSError:
            pass

    # ------------------------------------------------------------------ the session
    def _from_session(self) -> str | None:
        assert self.link.sock is not None
        try:
            record = self.link.sock.recv(link.MAX_RECORD)
        except OSError:  # a peer gone with our records unread resets the link: the same end
            record = b""
        if not record:
            self._lost()
            return None
        kind, payload = link.parse(record)
        if kind == link.OUTPUT and isinstance(payload, bytes):
            self.sock.sendall(self.page.output(payload))
        elif kind == link.EXIT and isinstance(payload, bytes):
            self._end(last_line(payload), terminal=payload)
            return "session closed the viewer"
        return None

    def _lost(self) -> None:
        """The session let this viewer go without a last line: its host is away."""
        self.link.lost()
        self.sock.sendall(self.page.output(host_away_notice(*(self.size or DEFAULT_SIZE))))
        self.log.info("viewer waiting", reason="its session let it go without a last line")

    def close(self) -> None:
        self.link.close()

    def _still_away(self) -> str | None:
        if self.link.ended is not None:
            self._end(self.link.ended)
            return "session ended while its host was away"
        if self.link.timeout() == 0.0:
            self._end("[server exited]")
            return "its host did not come back"
        return None

    # ------------------------------------------------------------------ the master
    def _from_master(self) -> str | None:
        try:
            event = self.master.viewer_event()
        except control.MasterGone:
            self._end("[relay shutting down]", 1001)
            return "relay is shutting down"
        self.link.on_master(event, self.log)  # a relink, or the last line for when the host is away
        return None
