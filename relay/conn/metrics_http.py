"""The metrics process: answers `--metrics` scrapes, jailed like a connection process.

The master accepts each scraper's TCP connection and sends it here over the feed socketpair,
one message per scrape: the Prometheus text the master rendered for it, with the socket attached
(SCM_RIGHTS). This process reads the request (at most REQUEST_LIMIT bytes, within
REQUEST_TIMEOUT), answers `GET /metrics` with that text and `GET /healthz` with `ok`, anything
else with 404 or 405, and closes. It sends the master nothing; it exits when the master closes
the feed. One scrape at a time: a slow scraper holds the next ones for REQUEST_TIMEOUT at most.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUEST_LIMIT = 8192  # bytes of request line and headers
REQUEST_TIMEOUT = 2.0  # seconds for a scraper to send its request and take the answer
MAX_FEED_MESSAGE = 256 * 1024
METHODS = ("GET", "HEAD")


def serve(feed: socket.socket) -> Callable[[], int]:
    """What the jailed metrics process runs."""

    def run() -> int:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(feed, MAX_FEED_MESSAGE, 4)
            except OSError:
                return 1
            if not data and not fds:
                return 0  # the master closed the feed
            for fd in fds[1:]:
                os.close(fd)
            if fds:
                conn = socket.socket(fileno=fds[0])
                try:
                    answer(conn, data)
                except OSError:
                    pass
                finally:
                    conn.close()

    return run


def read_request(conn: socket.socket, deadline: float) -> bytes | None:
    """The request head (up to the blank line), or None when it is too long, late or cut."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        left = deadline - time.monotonic()
        if left <= 0 or len(head) > REQUEST_LIMIT:
            return None
        conn.settimeout(left)
        try:
            chunk = conn.recv(REQUEST_LIMIT + 1 - len(head))
        except TimeoutError:
            return None
        if not chunk:
            return None
        head += chunk
    return head


def response(head: bytes, snapshot: bytes) -> bytes:
    """The whole HTTP/1.1 answer to one request head."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _reply(400, "Bad Request", b"bad request\n")
    method, target = parts[0].decode("ascii", "replace"), parts[1].split(b"?", 1)[0]
    if target not in (b"/metrics", b"/healthz"):
        return _reply(404, "Not Found", b"not found: /metrics or /healthz\n")
    if method not in METHODS:
        return _reply(405, "Method Not Allowed", b"GET only\n", allow="GET, HEAD")
    if target == b"/healthz":
        body, ctype = b"ok\n", "text/plain; charset=utf-8"
    else:
        body, ctype = snapshot, CONTENT_TYPE_LATEST
    return _reply(200, "OK", body, ctype=ctype, head_only=method == "HEAD")


def _reply(
    code: int,
    reason: str,
    body: bytes,
    *,
    ctype: str = "text/plain; charset=utf-8",
    allow: str | None = None,
    head_only: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if allow:
        lines.append(f"Allow: {allow}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


def answer(conn: socket.socket, snapshot: bytes) -> None:
    deadline = time.monotonic() + REQUEST_TIMEOUT
    head = read_request(conn, deadline)
    if head is None:
        out = _reply(400, "Bad Request", b"bad or incomplete request\n")
    else:
        out = response(head, snapshot)
    conn.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        conn.sendall(out)
        conn.shutdown(socket.SHUT_WR)
    except (TimeoutError, OSError):
        return
