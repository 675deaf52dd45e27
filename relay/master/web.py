"""The master's web listener (--web-port): the second door, for browsers.

A connection accepted here goes through the same intake as an SSH one (the PROXY header with
-x, the admission limits, the grace period, the round-robin spawn) and becomes a jailed
connection process of its own before a byte of it is read, but the master writes no banner and
the process it forks runs what `web_connection` (relay.cli: relay.conn.web) returns. The master
parses no HTTP: it only knows that the connection came through this door, so the viewer it
joins is counted and logged as a `web` viewer, and a session whose host restricts its viewers to
authorized keys (`tmate -a`) refuses it (ssh only, as tmate.io).
"""

from __future__ import annotations

import selectors
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.master.server import RelayConfig

SSH_ONLY = "This session is ssh only (tmate -a): join it with ssh"


class WebDoor:
    """The web listener of the master (mixed into Master)."""

    cfg: RelayConfig
    log: Any
    sel: selectors.BaseSelector
    web_listener: socket.socket | None

    def bind_web(self) -> socket.socket | None:
        """Bind --web-bind:--web-port (before the loop, like the SSH listener); None without
        --web-port; OSError if it cannot."""
        if self.cfg.web_port is None:
            return None
        addr = self.cfg.web_bind
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((addr, self.cfg.web_port))
        s.listen(self.cfg.backlog)
        s.setblocking(False)
        self.web_listener = s
        return s

    def _start_web(self) -> None:
        if self.web_listener is None and self.cfg.web_port is not None:
            self.bind_web()
        if self.web_listener is not None:
            self.sel.register(self.web_listener, selectors.EVENT_READ, "accept-web")
            addr = self.web_listener.getsockname()
            self.log.info("listening for web viewers", address=addr[0], port=addr[1])

    def _close_web(self) -> None:
        if self.web_listener is not None:
            try:
                self.sel.unregister(self.web_listener)
            except (KeyError, ValueError):
                pass
            self.web_listener.close()
            self.web_listener = None
