"""HTTP/1.1 requests in, responses out.

`RequestReader` feeds client bytes to h11 and yields one request's head, bounded by
MAX_REQUEST_HEAD (a connection that serves several requests uses one reader per request); the
body of anything but a GET is never read. Responses are composed here (`response`); the caller
adds the security headers every response carries and says whether the connection stays open.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

MAX_REQUEST_HEAD = 8192  # bytes of request line and headers (h11 refuses more: 431)
MAX_HEADERS = 64  # header lines in one request
MAX_TARGET = 1024  # characters of the request target

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}


class RequestError(Exception):
    """The request cannot be served: `status` is the answer, str(e) the logged reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the path, without the query
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    trailing: bytes  # bytes after the head (a WebSocket's first frames)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def has_token(self, name: str, token: str) -> bool:
        """Whether the comma-separated header `name` holds `token` (case-insensitive)."""
        value = self.headers.get(name, "")
        return token.lower() in (t.strip().lower() for t in value.split(","))


class RequestReader:
    """Client bytes in, the request's head out (once)."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._seen = bytearray()  # the head so far (at most MAX_REQUEST_HEAD + one read)

    def feed(self, data: bytes) -> Request | None:
        """The request once its head is whole, None while it is not; RequestError if it is bad
        or the client closed first (b"" is the end of stream)."""
        self._seen += data
        end = self._seen.find(b"\r\n\r\n")
        if (end < 0 and len(self._seen) > MAX_REQUEST_HEAD) or end + 4 > MAX_REQUEST_HEAD:
            raise RequestError(431, f"request head over {MAX_REQUEST_HEAD} bytes")
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint if e.error_status_hint in REASONS else 400
            raise RequestError(status, f"bad request: {e}") from None
        if event is h11.NEED_DATA:
            if not data:
                raise RequestError(400, "closed before the request was whole")
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise RequestError(400, "closed before the request was whole")
        if not isinstance(event, h11.Request):
            raise RequestError(400, f"unexpected {type(event).__name__}")
        return _request(event, self._trailing())

    def _trailing(self) -> bytes:
        """What came after a bodiless request: a WebSocket's first frames, or the next request."""
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError:
            return b""
        if isinstance(event, h11.EndOfMessage):
            return bytes(self._h11.trailing_data[0])
        return b""


def _request(event: h11.Request, trailing: bytes) -> Request:
    if len(event.headers) > MAX_HEADERS:
        raise RequestError(431, f"more than {MAX_HEADERS} header lines")
    target = event.target.decode("ascii", "replace")
    if len(target) > MAX_TARGET:
        raise RequestError(431, f"request target over {MAX_TARGET} characters")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii", "replace").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(event.method.decode("ascii", "replace"), target.split("?", 1)[0], headers, trailing)


def response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
    keep_alive: bool = False,
) -> bytes:
    """A whole response; it closes the connection unless `keep_alive`; `headers` are added (the
    security headers among them: relay.web.policy.WebPolicy.headers)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    connection = "keep-alive" if keep_alive else "close"
    fields = {"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": connection}
    fields.update(headers or {})
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error(status: int, headers: dict[str, str] | None = None, keep_alive: bool = False) -> bytes:
    """A plain-text error response: the status line's words."""
    body = f"{status} {REASONS.get(status, 'Error')}\n".encode()
    return response(status, body, headers=headers, keep_alive=keep_alive)
