"""The tmate wire's framing: limits, the error, field checkers, and the bounded stream decoder that
the host and relay decoders share (see `relay.tmate.codec` for the protocol rules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

import msgpack

# ---------------------------------------------------------------- constants and limits

PROTOCOL_VERSION = 6  # tmate 2.2.1 .. 2.4.0
MIN_PROTOCOL_VERSION = 1  # tmate 1.8.3
STRING_HEADER_VERSION = 3  # headers below this protocol carry no client version string
LEGACY_CLIENT_VERSION = "1.8.5"
MSGPACK_STR8_VERSION = 5  # below this, the peer speaks the old msgpack spec (no str8/bin)

MAX_MESSAGE_SIZE = 17 * 1024  # one encoded message (the C server's limit; PTY_DATA chunks are <= 16 KiB)
MAX_SNAPSHOT_SIZE = 4 * 1024 * 1024  # one encoded SNAPSHOT message
MAX_PANES = 1000  # panes across all windows of a SYNC_LAYOUT / SNAPSHOT
MAX_WINDOWS = 1000  # windows in a SYNC_LAYOUT
MAX_DIMENSION = 10000  # sx, sy, xoff, yoff, cursor, cells (tmux's maximum)
MAX_ID = 2**31 - 1  # pane ids, window indexes, client ids (C int)
MAX_ARGV = 1024  # strings in one EXEC_CMD
MAX_SNAPSHOT_LINES = 2000  # lines per snapshot grid (the C server's history limit)
MAX_SNAPSHOT_LINE_CELLS = MAX_DIMENSION  # cells per snapshot line

# What one session's panes may cost, whatever their number and declared sizes (relay.tmate.session
# enforces both; docs/architecture.md section 7). libghostty-vt costs ~10 bytes of address space per
# cell (twice that with the alternate screen) besides ~1.5 MiB per terminal (relay/screen/terminal.py).
# Cells: the sum of sx*sy over every pane of every window. The panes of one window tile it, so a
# real host needs about one terminal's area per window: 4M cells are 35 windows of a 640x180
# terminal (a 4K screen with a 6-pixel font) or 400 windows of 200x50, and cost at most ~80 MB.
# One SYNC_LAYOUT of 200 panes of 10000x10000 (20G cells) is refused at once.
MAX_SESSION_CELLS = 4_000_000
# History: the bytes every pane's scrollback may take together. A pane alone keeps 2000 rows of its
# width (`history_cap_bytes`: ~5.3 MB at 200 columns); when the panes together would want more,
# each gets an equal share of this budget (and keeps fewer rows). 24 panes of 200 columns with
# full history fit; 200 panes of 10000 columns full of output would otherwise want ~41 GB.
SESSION_HISTORY_BYTES = 128 * 1024 * 1024
MSGPACK_MAX_DEPTH = 1024  # msgpack's unpacker refuses deeper nesting (StackError)

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class ProtocolError(Exception):
    """The peer broke the protocol; the session must end.

    `reason` is short and human-readable (``str(e) == e.reason``). `decoded` holds the messages
    that the failing `feed` call decoded before the error, in order (e.g. a FIN before garbage).
    """

    def __init__(self, reason: str, decoded: list[Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.decoded: list[Any] = decoded if decoded is not None else []


class FieldError(Exception):
    """A field-level problem; the decoder prefixes it with the message name."""


# ---------------------------------------------------------------- field checkers

_TYPE_NAMES: dict[type, str] = {
    bytes: "string",
    int: "integer",
    list: "array",
    bool: "boolean",
    float: "float",
    dict: "map",
    type(None): "nil",
}


def type_name(v: object) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def int_field(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int:
        raise FieldError(f"{what} must be an integer, got {type_name(v)}")
    if v < lo or v > hi:
        raise FieldError(f"{what} {v} out of range [{lo}, {hi}]")
    return v


def text_field(v: object, what: str) -> str:
    if type(v) is not bytes:
        raise FieldError(f"{what} must be a string, got {type_name(v)}")
    return v.decode("utf-8", "replace")


def array_field(v: object, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise FieldError(f"{what} must be an array, got {type_name(v)}")
    if n is not None and len(v) != n:
        raise FieldError(f"{what} must have {n} elements, got {len(v)}")
    return v


def check_arity(m: list[Any], nfields: int) -> None:
    if len(m) != nfields + 1:
        raise FieldError(f"expected {nfields} fields, got {len(m) - 1}")


def argv_field(items: list[Any]) -> tuple[str, ...]:
    """The argument strings of an EXEC_CMD (either direction)."""
    if not items:
        raise FieldError("empty argv")
    if len(items) > MAX_ARGV:
        raise ProtocolError(f"argv too long: {len(items)} > {MAX_ARGV} in EXEC_CMD")
    return tuple(text_field(a, "argument") for a in items)


# ---------------------------------------------------------------- the stream decoder

_HEAD_BYTES = 16  # enough for an array32 header and a uint64 type
# The unpacker's first buffer (msgpack's default is 1 MiB). It appends at the tail and moves what
# is left to the front only when the tail reaches the end, so a session's stream touched every
# page of it, a few bytes a message: 1 MiB more per session after ~30,000 small messages
# (bench/soak.py). It grows when a message needs more, up to the stream's limit as before.
READ_BUFFER = 64 * 1024
_PTY_DATA = 2  # the host's PTY_DATA type, decoded on the fast path

M = TypeVar("M")


def _unpack_detail(e: Exception) -> str:
    """What msgpack's unpacker objected to; some of its errors carry no message of their own."""
    if isinstance(e, msgpack.StackError):
        return f"nested deeper than {MSGPACK_MAX_DEPTH} levels"
    if isinstance(e, msgpack.FormatError) and not str(e):
        return "invalid type byte (such as 0xc1, which msgpack never uses)"
    return str(e) or type(e).__name__


def _too_large(size: int, limit: int) -> NoReturn:
    raise ProtocolError(f"message too large: {size} bytes > {limit}")


class StreamDecoder(Generic[M]):
    """Feeds a msgpack.Unpacker in bounded slices and enforces per-message size limits.

    A subclass names its message types (`names`), may allow one type up to `large_size`
    (`large_type`), and decodes one checked array in `_decode_fields`. With `pty_message`, a
    well-formed ``[2, pane id, bytes]`` skips the checks and becomes ``pty_message(id, bytes)``.
    """

    names: ClassVar[dict[int, str]] = {}
    large_type: ClassVar[int | None] = None

    def __init__(
        self,
        max_message_size: int,
        large_size: int = 0,
        pty_message: Callable[[int, bytes], M] | None = None,
    ):
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self._max = max_message_size
        self._large = max(large_size, max_message_size)
        self._slice = max_message_size
        self._pty_message = pty_message
        cap = self._large + self._slice
        self._unpacker = msgpack.Unpacker(
            raw=True,
            read_size=min(READ_BUFFER, cap),
            max_buffer_size=cap,
            max_str_len=cap,
            max_bin_len=cap,
            max_array_len=cap,
            max_map_len=0,
            max_ext_len=0,
        )
        self._fed = 0  # bytes given to the unpacker
        self._start = 0  # stream offset where the next (incomplete) message starts
        self._head = b""  # first bytes of the incomplete message at `_head_pos`
        self._head_pos = -1
        self._error: str | None = None

    @property
    def failed(self) -> str | None:
        """The reason of the error that made this decoder unusable, or None."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[M]:
        """The messages completed by `data` (any chunking of the stream), in order."""
        if self._error is not None:
            raise ProtocolError(f"decoder unusable after error: {self._error}")
        out: list[M] = []
        try:
            n = len(data)
            if n <= self._slice:
                self._feed_slice(data, out)
            else:
                mv = memoryview(data)
                for off in range(0, n, self._slice):
                    self._feed_slice(mv[off : off + self._slice], out)
        except ProtocolError as e:
            self._error = e.reason
            e.decoded = out
            raise
        return out

    def _feed_slice(self, chunk: bytes | bytearray | memoryview, out: list[M]) -> None:
        unpacker = self._unpacker
        chunk_start = self._fed
        start = self._start
        limit = self._max
        pty = self._pty_message
        try:
            unpacker.feed(chunk)
            self._fed += len(chunk)
            for obj in unpacker:
                pos = unpacker.tell()
                size = pos - start
                start = pos
                # Hot path: a well-formed PTY_DATA (host stream only).
                if (
                    pty is not None
                    and type(obj) is list
                    and len(obj) == 3
                    and type(obj[0]) is int
                    and obj[0] == _PTY_DATA
                    and type(obj[2]) is bytes
                    and type(obj[1]) is int
                    and 0 <= obj[1] <= MAX_ID
                ):
                    if size > limit:
                        _too_large(size, limit)
                    out.append(pty(obj[1], obj[2]))
                    continue
                if size > limit and not (size <= self._large and self._is_large(obj)):
                    _too_large(size, self._large if self._is_large(obj) else limit)
                out.append(self._decode(obj))
        except ProtocolError:
            raise
        except (ValueError, msgpack.UnpackException) as e:
            raise ProtocolError(f"malformed msgpack: {_unpack_detail(e)}") from None
        self._start = start
        self._check_incomplete(chunk, chunk_start)

    def _check_incomplete(self, chunk: bytes | bytearray | memoryview, chunk_start: int) -> None:
        """Refuse an incomplete message as soon as its buffered part exceeds its limit."""
        start = self._start
        tail = self._fed - start
        if tail == 0:
            self._head_pos = -1
            return
        if start != self._head_pos:
            self._head_pos = start
            self._head = bytes(chunk[start - chunk_start : start - chunk_start + _HEAD_BYTES])
        elif len(self._head) < _HEAD_BYTES:
            self._head += bytes(chunk[: _HEAD_BYTES - len(self._head)])
        if tail > self._max:
            limit = self._large if self._head_type() == self.large_type else self._max
            if tail > limit:
                raise ProtocolError(f"message too large: {tail} bytes buffered and incomplete > {limit}")

    def _is_large(self, obj: object) -> bool:
        return type(obj) is list and bool(obj) and type(obj[0]) is int and obj[0] == self.large_type

    def _head_type(self) -> int | None:
        """The type of the incomplete message, read from its first bytes (None if unknown)."""
        u = msgpack.Unpacker(raw=True, max_buffer_size=_HEAD_BYTES)
        u.feed(self._head)
        try:
            if u.read_array_header() < 1:
                return None
            t = u.unpack()
        except Exception:
            return None
        return t if type(t) is int else None

    def _decode(self, obj: object) -> M:
        if type(obj) is not list:
            raise ProtocolError(f"message is not an array but {type_name(obj)}")
        if not obj:
            raise ProtocolError("empty message (no type)")
        t = obj[0]
        if type(t) is not int:
            raise ProtocolError(f"message type must be an integer, got {type_name(t)}")
        if t not in self.names:
            raise ProtocolError(f"unknown message type {t}")
        try:
            return self._decode_fields(t, obj)
        except FieldError as e:
            raise ProtocolError(f"malformed {self.names[t]}: {e}") from None

    def _decode_fields(self, t: int, m: list[Any]) -> M:
        """The message of known type `t` from its array `m` (FieldError for a bad field)."""
        raise NotImplementedError
