"""The web viewer's WebSocket (RFC 6455, wsproto), sans-IO: the upgrade, then messages.

From the page: a binary message is terminal input (the bytes xterm.js produced for keys and
pastes); a text message is a JSON object `{"cols": C, "rows": R}`, the terminal's size. To the
page: binary messages carry the session's frames (the bytes an ssh viewer gets), a text message
`{"end": LINE}` says the session is done with this viewer (`[server exited]`) and one
`{"error": LINE}` that it could not join (an unknown token), each followed by a close.

Limits (named, enforced here): MAX_MESSAGE bytes per incoming message (frames included: a frame
is part of a message), INPUT_RATE bytes of input a second in bursts of INPUT_BURST, MAX_SIZE_TEXT
characters of a size message, sizes within 1..MAX_DIMENSION.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from relay.web.http import Request

MAX_MESSAGE = 64 * 1024  # bytes of one message from the page (a frame cannot be larger)
INPUT_RATE = 64 * 1024  # bytes of terminal input a second ...
INPUT_BURST = 256 * 1024  # ... in bursts of up to this many (a large paste)
MAX_SIZE_TEXT = 256  # characters of a size message
MAX_DIMENSION = 10000  # columns or rows (relay.tmate.wire's dimension limit)
TOO_BIG = 1009  # close code: message too big
POLICY = 1008  # close code: policy violation (input rate, a malformed message)
NORMAL = 1000


class HandshakeError(Exception):
    """Not a WebSocket upgrade this relay takes: `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class WsLimit(Exception):
    """The page broke a limit: `code` closes the socket, `limit` names it in the log."""

    def __init__(self, code: int, limit: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.limit = limit


@dataclass(frozen=True)
class Input:
    data: bytes


@dataclass(frozen=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True)
class Closed:
    code: int
    reason: str


Event = Input | Resize | Closed


def is_upgrade(req: Request) -> bool:
    return req.header("upgrade") is not None or req.has_token("connection", "upgrade")


def accept(req: Request, origin_ok: bool, headers: dict[str, str]) -> bytes:
    """The 101 answer to a valid upgrade from an allowed origin; HandshakeError if not."""
    if req.method != "GET":
        raise HandshakeError(405, f"upgrade with {req.method[:16]}")
    if not (req.has_token("upgrade", "websocket") and req.has_token("connection", "upgrade")):
        raise HandshakeError(400, "not a websocket upgrade")
    if req.header("sec-websocket-version") != "13":
        raise HandshakeError(426, "websocket version is not 13")
    key = req.header("sec-websocket-key")
    if key is None or len(key) != 24:
        raise HandshakeError(400, "no valid Sec-WebSocket-Key")
    if not origin_ok:
        raise HandshakeError(403, f"origin not allowed: {str(req.header('origin'))[:100]}")
    fields = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": generate_accept_token(key.encode("ascii")).decode("ascii"),
        **headers,
    }
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class InputBudget:
    """A token bucket over input bytes (INPUT_RATE a second, INPUT_BURST at once)."""

    def __init__(self, rate: float = INPUT_RATE, burst: float = INPUT_BURST):
        self.rate, self.burst = rate, burst
        self.allowance = burst
        self.stamp: float | None = None

    def take(self, n: int, now: float) -> bool:
        if self.stamp is not None:
            self.allowance = min(self.burst, self.allowance + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.allowance:
            return False
        self.allowance -= n
        return True


class WebSocket:
    """The server side of one accepted WebSocket: `feed` what the page sent, send what
    `to_send` returns (pongs, close replies) and the messages the methods below compose."""

    def __init__(self, trailing: bytes = b"", budget: InputBudget | None = None):
        self._ws = Connection(ConnectionType.SERVER)
        self._partial: list[bytes | str] = []
        self._partial_size = 0
        self._out = bytearray()
        self.budget = budget or InputBudget()
        self.closed = False
        self._pending = trailing

    def feed(self, data: bytes, now: float) -> list[Event]:
        """The page's events in `data` (b"": end of stream); WsLimit past a limit."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        self._ws.receive_data(data or None)
        out: list[Event] = []
        for event in self._ws.events():
            if isinstance(event, Message):
                done = self._message(event, now)
                if done is not None:
                    out.append(done)
            elif isinstance(event, Ping):
                self._out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:  # the page closed
                    self._out += self._ws.send(event.response())
                elif self._ws.state is ConnectionState.OPEN:  # a frame wsproto refused: we close
                    self._out += self._ws.send(
                        CloseConnection(code=event.code, reason=(event.reason or "")[:100])
                    )
                self.closed = True
                out.append(Closed(event.code, event.reason or ""))
        return out

    def _message(self, event: Message, now: float) -> Event | None:
        self._partial.append(event.data)
        self._partial_size += len(event.data)
        if self._partial_size > MAX_MESSAGE:
            raise WsLimit(TOO_BIG, "web-message-size", f"message over {MAX_MESSAGE} bytes")
        if not event.message_finished:
            return None
        parts, self._partial, self._partial_size = self._partial, [], 0
        if isinstance(event, BytesMessage):
            data = b"".join(p for p in parts if isinstance(p, bytes))
            if not self.budget.take(len(data), now):
                raise WsLimit(POLICY, "web-input-rate", f"input faster than {INPUT_RATE} bytes/s")
            return Input(data)
        assert isinstance(event, TextMessage)
        return _size("".join(p for p in parts if isinstance(p, str)))

    def to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def output(self, data: bytes) -> bytes:
        return self._ws.send(BytesMessage(data=data))

    def notice(self, key: str, line: str) -> bytes:
        """A text message {key: line} (`end` or `error`)."""
        return self._ws.send(TextMessage(data=json.dumps({key: line})))

    def joined(self, readonly: bool) -> bytes:
        """The text message {"joined": {"readonly": R}}: the page is a viewer now."""
        return self._ws.send(TextMessage(data=json.dumps({"joined": {"readonly": readonly}})))

    def close(self, code: int = NORMAL, reason: str = "") -> bytes:
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        self.closed = True
        return self._ws.send(CloseConnection(code=code, reason=reason[:100]))


def _size(text: str) -> Resize:
    if len(text) > MAX_SIZE_TEXT:
        raise WsLimit(POLICY, "web-message-size", f"size message over {MAX_SIZE_TEXT} characters")
    try:
        obj = json.loads(text)
    except ValueError:
        raise WsLimit(POLICY, "web-message", "size message is not JSON") from None
    if not isinstance(obj, dict):
        raise WsLimit(POLICY, "web-message", "size message is not an object")
    cols, rows = obj.get("cols"), obj.get("rows")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIMENSION for v in (cols, rows))
    if not ok:
        raise WsLimit(POLICY, "web-message", "size out of range")
    assert isinstance(cols, int) and isinstance(rows, int)
    return Resize(cols, rows)
