"""A TCP forwarder for the end-to-end tests: a host or viewer connects to it instead of the relay.

It can put a PROXY header in front of each connection (what a load balancer does, for -x) and
can drop the network under a live connection (`cut()`: RSTs both sides, never a FIN), or keep
new connections out (`blocked`), for the reconnection tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

_LINGER_ZERO = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0 s}: close() sends a RST


class Forwarder:
    """127.0.0.1:port -> 127.0.0.1:target, a thread per direction; `header()`, when given, goes
    upstream before the client's first byte. `cut()` resets every live pair; while `blocked`,
    new connections are reset at once (a host that cannot get through); `close()` stops
    listening and resets what is left."""

    def __init__(self, target: int, header: Callable[[], bytes] | None = None):
        self.target, self.header = target, header
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.blocked = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
                if self.header is not None:
                    upstream.sendall(self.header())
            except OSError:
                reset(client)
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.append(pair)
            for src, dst in (pair, pair[::-1]):
                threading.Thread(target=self._pipe, args=(pair, src, dst), daemon=True).start()

    def _pipe(
        self, pair: tuple[socket.socket, socket.socket], src: socket.socket, dst: socket.socket
    ) -> None:
        """Copy until src's end of stream, then pass its FIN on (a half close), unless the pair
        was cut: a cut sends RSTs only (the lock orders the two)."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            with self.lock:
                if pair in self.pairs:
                    dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            reset(client)
            reset(upstream)

    def close(self) -> None:
        self.listener.close()
        self.cut()


def reset(s: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0). The pipe thread blocked in recv() holds the socket until
    it returns: SHUT_RD wakes it first (and sends nothing)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        s.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    s.close()
