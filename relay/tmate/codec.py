"""Sans-IO codec for the tmate protocol (protocol version 6, tmate 2.4; older hosts accepted).

Bytes in, typed messages (`relay.tmate.messages`) out, and the reverse. No sockets, no threads, no
clocks. Layouts follow ARCHITECTURE.md section 4; the tmate sources are the only specification.

Wire format: every message is a msgpack array whose first element is the message type. Text,
including pane output, travels as msgpack *str* that may hold invalid UTF-8, so everything is
unpacked with ``raw=True``: pane output stays ``bytes``; names and texts are decoded as UTF-8
with ``errors='replace'``. The *bin* type is accepted wherever a string is expected (the C
server accepts both).

Decoding is strict: a message with the wrong number of fields, a field of the wrong type or out
of range, an unknown type or a message over its size limit raises `ProtocolError`, and the
decoder refuses any further input (the session ends). The C server ignores trailing fields; this
codec does not, since no tmate client sends any.

Header variants accepted (`HostDecoder`, the only place the protocol version matters):
- ``[0, proto]`` for protocol 1 and 2 (tmate 1.8.3-1.8.5): `Header(proto, "1.8.5")`, the version
  the C server assumes for them.
- ``[0, proto, version]`` for protocol 3 to 6 (tmate 1.8.6 up to 2.4).
Other protocol numbers are refused. After a header with protocol 1, SYNC_COPY_MODE carries no
``backing`` field (`CopyMode.backing` is then reported as 1, the C server's default) and its
``sely`` is the raw value the client sent (protocol >= 2 sends it counted from the bottom).

Limits (all module constants, all enforced, each with a clear `ProtocolError.reason`):
- `MAX_MESSAGE_SIZE`: one encoded message, except SNAPSHOT which has `MAX_SNAPSHOT_SIZE` (a
  reconnecting host sends its panes with up to 300 lines of history in one message, which no
  17 KiB limit can hold). An incomplete message is refused as soon as the buffered part of it
  exceeds its limit, so a declared-huge string is never buffered beyond the limit.
- `MAX_PANES` panes in one SYNC_LAYOUT (all windows) or SNAPSHOT, `MAX_WINDOWS` windows.
- `MAX_DIMENSION` for sizes and offsets, `MAX_ID` for pane ids, window indexes and client ids.
- `MAX_ARGV` strings in an EXEC_CMD, `MAX_SNAPSHOT_LINES` lines per snapshot grid,
  `MAX_SNAPSHOT_LINE_CELLS` cells per snapshot line.
String lengths need no limit of their own: the message size bounds them.
"""

from __future__ import annotations

import msgpack

from relay.tmate.messages import (
    CopyMode,
    ExecCmd,
    ExecCmdStr,
    FailedCmd,
    Fin,
    Header,
    HostMessage,
    HostMsg,
    HostReady,
    LegacyPaneKey,
    Notify,
    PaneGeom,
    PaneKey,
    Prompt,
    PtyData,
    Reconnect,
    RelayMessage,
    RelayMsg,
    RelayReady,
    Resize,
    Selection,
    SetEnv,
    Snapshot,
    SnapshotGrid,
    SnapshotLine,
    SnapshotPane,
    Status,
    SyncCopyMode,
    SyncLayout,
    Uname,
    ViewerExecCmd,
    ViewerExecCmdStr,
    Window,
    WriteCopyMode,
)

__all__ = [
    "ProtocolError",
    "HostDecoder",
    "RelayDecoder",
    "encode",
    "encode_host",
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "LEGACY_CLIENT_VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_SNAPSHOT_SIZE",
    "MAX_PANES",
    "MAX_WINDOWS",
    "MAX_DIMENSION",
    "MAX_ID",
    "MAX_ARGV",
    "MAX_SNAPSHOT_LINES",
    "MAX_SNAPSHOT_LINE_CELLS",
    "MAX_PTY_CHUNK",
]

# ---------------------------------------------------------------- constants and limits

PROTOCOL_VERSION = 6  # tmate 2.2.1 .. 2.4.0
MIN_PROTOCOL_VERSION = 1  # tmate 1.8.3
STRING_HEADER_VERSION = 3  # headers below this protocol carry no client version string
LEGACY_CLIENT_VERSION = "1.8.5"
MSGPACK_STR8_VERSION = 5  # below this, the peer speaks the old msgpack spec (no str8/bin)

MAX_MESSAGE_SIZE = 17 * 1024  # one encoded message (the C server's limit)
MAX_SNAPSHOT_SIZE = 4 * 1024 * 1024  # one encoded SNAPSHOT message
MAX_PANES = 1000  # panes across all windows of a SYNC_LAYOUT / SNAPSHOT
MAX_WINDOWS = 1000  # windows in a SYNC_LAYOUT
MAX_DIMENSION = 10000  # sx, sy, xoff, yoff, cursor, cells (tmux's maximum)
MAX_ID = 2**31 - 1  # pane ids, window indexes, client ids (C int)
MAX_ARGV = 1024  # strings in one EXEC_CMD
MAX_SNAPSHOT_LINES = 2000  # lines per snapshot grid (the C server's history limit)
MAX_SNAPSHOT_LINE_CELLS = MAX_DIMENSION  # cells per snapshot line
MAX_PTY_CHUNK = 16 * 1024  # what the client puts in one PTY_DATA (not enforced)

_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
_UINT_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


class ProtocolError(Exception):
    """The peer broke the protocol; the session must end.

    `reason` is short and human-readable (``str(e) == e.reason``). `decoded` holds the messages
    that the failing `feed` call decoded before the error, in order (e.g. a FIN before garbage).
    """

    def __init__(self, reason: str, decoded: list | None = None):
        super().__init__(reason)
        self.reason = reason
        self.decoded = decoded if decoded is not None else []


class _Bad(Exception):
    """A field-level problem; the dispatcher prefixes it with the message name."""


_TYPE_NAMES = {
    bytes: "string",
    int: "integer",
    list: "array",
    bool: "boolean",
    float: "float",
    dict: "map",
    type(None): "nil",
}


def _tn(v) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def _int(v, lo: int, hi: int, what: str) -> int:
    if type(v) is not int:
        raise _Bad(f"{what} must be an integer, got {_tn(v)}")
    if v < lo or v > hi:
        raise _Bad(f"{what} {v} out of range [{lo}, {hi}]")
    return v


def _text(v, what: str) -> str:
    if type(v) is not bytes:
        raise _Bad(f"{what} must be a string, got {_tn(v)}")
    return v.decode("utf-8", "replace")


def _array(v, what: str, n: int | None = None) -> list:
    if type(v) is not list:
        raise _Bad(f"{what} must be an array, got {_tn(v)}")
    if n is not None and len(v) != n:
        raise _Bad(f"{what} must have {n} elements, got {len(v)}")
    return v


def _arity(m: list, nfields: int) -> None:
    if len(m) != nfields + 1:
        raise _Bad(f"expected {nfields} fields, got {len(m) - 1}")


# ---------------------------------------------------------------- streaming machinery

_HEAD_BYTES = 16  # enough for an array32 header and a uint64 type


class _StreamDecoder:
    """Feeds a msgpack.Unpacker in bounded slices and enforces per-message size limits."""

    _names: dict[int, str] = {}
    _large_type: int | None = None  # the one message type allowed up to `_large_size`

    def __init__(self, max_message_size: int, large_size: int = 0):
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self._max = max_message_size
        self._large = max(large_size, max_message_size)
        self._slice = max_message_size
        cap = self._large + self._slice
        self._unpacker = msgpack.Unpacker(
            raw=True,
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

    def feed(self, data) -> list:
        if self._error is not None:
            raise ProtocolError(f"decoder unusable after error: {self._error}")
        out: list = []
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

    def _feed_slice(self, chunk, out: list) -> None:
        unpacker = self._unpacker
        chunk_start = self._fed
        start = self._start
        decode = self._decode
        pty_fast = self._pty_fast
        try:
            unpacker.feed(chunk)
            self._fed += len(chunk)
            for obj in unpacker:
                pos = unpacker.tell()
                size = pos - start
                start = pos
                # Hot path: a well-formed PTY_DATA (host stream only).
                if (
                    pty_fast
                    and type(obj) is list
                    and len(obj) == 3
                    and type(obj[0]) is int
                    and obj[0] == 2
                    and type(obj[2]) is bytes
                    and type(obj[1]) is int
                    and 0 <= obj[1] <= MAX_ID
                ):
                    if size > self._max:
                        self._too_large(size, self._max)
                    out.append(PtyData(obj[1], obj[2]))
                    continue
                if size > self._max and not (
                    size <= self._large
                    and type(obj) is list
                    and obj
                    and type(obj[0]) is int
                    and obj[0] == self._large_type
                ):
                    self._too_large(size, self._limit_for(obj))
                out.append(decode(obj))
        except ProtocolError:
            raise
        except (ValueError, msgpack.UnpackException) as e:
            raise ProtocolError(f"malformed msgpack: {e}") from None
        self._start = start
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
            limit = self._large if self._head_type() == self._large_type else self._max
            if tail > limit:
                raise ProtocolError(f"message too large: {tail} bytes buffered and incomplete > {limit}")

    _pty_fast = False  # True where type 2 is PTY_DATA

    def _limit_for(self, obj) -> int:
        if type(obj) is list and obj and type(obj[0]) is int and obj[0] == self._large_type:
            return self._large
        return self._max

    @staticmethod
    def _too_large(size: int, limit: int):
        raise ProtocolError(f"message too large: {size} bytes > {limit}")

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

    def _decode(self, obj):
        if type(obj) is not list:
            raise ProtocolError(f"message is not an array but {_tn(obj)}")
        if not obj:
            raise ProtocolError("empty message (no type)")
        t = obj[0]
        if type(t) is not int:
            raise ProtocolError(f"message type must be an integer, got {_tn(t)}")
        fn = self._table.get(t)
        if fn is None:
            raise ProtocolError(f"unknown message type {t}")
        try:
            return fn(self, obj)
        except _Bad as e:
            raise ProtocolError(f"malformed {self._names[t]}: {e}") from None

    _table: dict = {}


# ---------------------------------------------------------------- host -> relay decoding


def _d_header(dec: HostDecoder, m: list) -> Header:
    if len(m) < 2:
        raise _Bad("missing protocol version")
    proto = _int(m[1], -(2**63), _UINT64_MAX, "protocol version")
    if not MIN_PROTOCOL_VERSION <= proto <= PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {proto} (accepted: {MIN_PROTOCOL_VERSION}-{PROTOCOL_VERSION})"
        )
    if proto < STRING_HEADER_VERSION:
        _arity(m, 1)
        version = LEGACY_CLIENT_VERSION
    else:
        _arity(m, 2)
        version = _text(m[2], "client version")
    dec.protocol = proto
    return Header(proto, version)


def _d_sync_layout(dec: HostDecoder, m: list) -> SyncLayout:
    _arity(m, 4)
    sx = _int(m[1], 0, MAX_DIMENSION, "sx")
    sy = _int(m[2], 0, MAX_DIMENSION, "sy")
    wins = _array(m[3], "windows")
    if len(wins) > MAX_WINDOWS:
        raise ProtocolError(f"too many windows: {len(wins)} > {MAX_WINDOWS}")
    max_panes = dec.max_panes
    npanes = 0
    pane_ids: set[int] = set()
    win_idxs: set[int] = set()
    windows = []
    for w in wins:
        _array(w, "window", 4)
        idx = _int(w[0], 0, MAX_ID, "window index")
        if idx in win_idxs:
            raise _Bad(f"duplicate window index {idx}")
        win_idxs.add(idx)
        name = _text(w[1], "window name")
        praw = _array(w[2], "panes")
        npanes += len(praw)
        if npanes > max_panes:
            raise ProtocolError(f"too many panes: more than {max_panes} in SYNC_LAYOUT")
        panes = []
        for p in praw:
            _array(p, "pane", 5)
            pid = _int(p[0], 0, MAX_ID, "pane id")
            if pid in pane_ids:
                raise _Bad(f"duplicate pane id {pid}")
            pane_ids.add(pid)
            panes.append(
                PaneGeom(
                    pid,
                    _int(p[1], 0, MAX_DIMENSION, "pane sx"),
                    _int(p[2], 0, MAX_DIMENSION, "pane sy"),
                    _int(p[3], 0, MAX_DIMENSION, "pane xoff"),
                    _int(p[4], 0, MAX_DIMENSION, "pane yoff"),
                )
            )
        active = _int(w[3], -1, MAX_ID, "active pane id")
        windows.append(Window(idx, name, tuple(panes), active))
    active_win = _int(m[4], -1, MAX_ID, "active window index")
    return SyncLayout(sx, sy, tuple(windows), active_win)


def _d_pty_data(dec, m: list) -> PtyData:
    _arity(m, 2)
    pid = _int(m[1], 0, MAX_ID, "pane id")
    if type(m[2]) is not bytes:
        raise _Bad(f"data must be a string, got {_tn(m[2])}")
    return PtyData(pid, m[2])


def _d_exec_cmd_str(dec, m: list) -> ExecCmdStr:
    _arity(m, 1)
    return ExecCmdStr(_text(m[1], "command"))


def _d_failed_cmd(dec, m: list) -> FailedCmd:
    _arity(m, 2)
    return FailedCmd(_int(m[1], _INT_MIN, _INT_MAX, "client id"), _text(m[2], "cause"))


def _d_status(dec, m: list) -> Status:
    _arity(m, 2)
    return Status(_text(m[1], "left"), _text(m[2], "right"))


def _d_sync_copy_mode(dec: HostDecoder, m: list) -> SyncCopyMode:
    _arity(m, 2)
    pid = _int(m[1], 0, MAX_ID, "pane id")
    cm = _array(m[2], "copy mode")
    if not cm:
        return SyncCopyMode(pid, None)
    if dec.protocol >= 2:
        _array(cm, "copy mode", 6)
        backing = _int(cm[0], 0, 1, "backing")
        cm = cm[1:]
    else:
        _array(cm, "copy mode", 5)
        backing = 1
    oy = _int(cm[0], 0, _INT_MAX, "oy")
    cx = _int(cm[1], 0, MAX_DIMENSION, "cx")
    cy = _int(cm[2], 0, MAX_DIMENSION, "cy")
    sel = _array(cm[3], "selection")
    selection = None
    if sel:
        _array(sel, "selection", 3)
        selection = Selection(
            _int(sel[0], _INT_MIN, _INT_MAX, "selx"),
            _int(sel[1], _INT_MIN, _INT_MAX, "sely"),
            _int(sel[2], _INT_MIN, _INT_MAX, "selection flags"),
        )
    pr = _array(cm[4], "prompt")
    prompt = None
    if pr:
        _array(pr, "prompt", 3)
        prompt = Prompt(
            _int(pr[0], _INT_MIN, _INT_MAX, "prompt type"),
            _text(pr[1], "prompt"),
            _text(pr[2], "prompt input"),
        )
    return SyncCopyMode(pid, CopyMode(backing, oy, cx, cy, selection, prompt))


def _d_write_copy_mode(dec, m: list) -> WriteCopyMode:
    _arity(m, 2)
    return WriteCopyMode(_int(m[1], 0, MAX_ID, "pane id"), _text(m[2], "text"))


def _d_fin(dec, m: list) -> Fin:
    _arity(m, 0)
    return Fin()


def _d_ready(dec, m: list) -> HostReady:
    _arity(m, 0)
    return HostReady()


def _d_reconnect(dec, m: list) -> Reconnect:
    _arity(m, 1)
    return Reconnect(_text(m[1], "reconnection data"))


def _snapshot_grid(g, what: str) -> tuple[int, int, tuple[SnapshotLine, ...]]:
    _array(g, what, 3)
    cx = _int(g[0], 0, MAX_DIMENSION, "cursor x")
    cy = _int(g[1], 0, MAX_DIMENSION, "cursor y")
    raw_lines = _array(g[2], "lines")
    if len(raw_lines) > MAX_SNAPSHOT_LINES:
        raise ProtocolError(f"too many snapshot lines: {len(raw_lines)} > {MAX_SNAPSHOT_LINES}")
    lines = []
    for ln in raw_lines:
        _array(ln, "line", 2)
        text = _text(ln[0], "line text")
        attrs = _array(ln[1], "line attributes")
        if len(attrs) > MAX_SNAPSHOT_LINE_CELLS:
            raise ProtocolError(
                f"too many cells in a snapshot line: {len(attrs)} > {MAX_SNAPSHOT_LINE_CELLS}"
            )
        for a in attrs:
            if type(a) is not int or a < 0 or a > _UINT_MAX:
                _int(a, 0, _UINT_MAX, "cell attribute")
        lines.append(SnapshotLine(text, tuple(attrs)))
    return cx, cy, tuple(lines)


def _d_snapshot(dec: HostDecoder, m: list) -> Snapshot:
    _arity(m, 1)
    raw = _array(m[1], "panes")
    if len(raw) > dec.max_panes:
        raise ProtocolError(f"too many panes: {len(raw)} > {dec.max_panes} in SNAPSHOT")
    panes = []
    for p in raw:
        _array(p, "pane", 4)
        pid = _int(p[0], 0, MAX_ID, "pane id")
        mode = _int(p[1], 0, _UINT_MAX, "mode")
        cx, cy, lines = _snapshot_grid(p[2], "grid")
        saved = None
        if p[3] is not None:
            scx, scy, slines = _snapshot_grid(p[3], "saved grid")
            saved = SnapshotGrid(scx, scy, slines)
        panes.append(SnapshotPane(pid, cx, cy, mode, lines, saved))
    return Snapshot(tuple(panes))


def _argv(items: list, what: str) -> tuple[str, ...]:
    if not items:
        raise _Bad("empty argv")
    if len(items) > MAX_ARGV:
        raise ProtocolError(f"argv too long: {len(items)} > {MAX_ARGV} in {what}")
    return tuple(_text(a, "argument") for a in items)


def _d_exec_cmd(dec, m: list) -> ExecCmd:
    return ExecCmd(_argv(m[1:], "EXEC_CMD"))


def _d_uname(dec, m: list) -> Uname:
    _arity(m, 5)
    return Uname(
        *(_text(m[i], f) for i, f in enumerate(("sysname", "nodename", "release", "version", "machine"), 1))
    )


class HostDecoder(_StreamDecoder):
    """Decodes the host -> relay stream into `relay.tmate.messages` host messages.

    `feed` takes any chunking of the stream and returns the messages completed so far.
    `protocol` is the version from the last HEADER (`PROTOCOL_VERSION` until one arrives).
    """

    _names = {t.value: t.name for t in HostMsg}
    _large_type = HostMsg.SNAPSHOT
    _pty_fast = True
    _table = {
        HostMsg.HEADER: _d_header,
        HostMsg.SYNC_LAYOUT: _d_sync_layout,
        HostMsg.PTY_DATA: _d_pty_data,
        HostMsg.EXEC_CMD_STR: _d_exec_cmd_str,
        HostMsg.FAILED_CMD: _d_failed_cmd,
        HostMsg.STATUS: _d_status,
        HostMsg.SYNC_COPY_MODE: _d_sync_copy_mode,
        HostMsg.WRITE_COPY_MODE: _d_write_copy_mode,
        HostMsg.FIN: _d_fin,
        HostMsg.READY: _d_ready,
        HostMsg.RECONNECT: _d_reconnect,
        HostMsg.SNAPSHOT: _d_snapshot,
        HostMsg.EXEC_CMD: _d_exec_cmd,
        HostMsg.UNAME: _d_uname,
    }

    def __init__(
        self,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_panes: int = MAX_PANES,
        max_snapshot_size: int = MAX_SNAPSHOT_SIZE,
    ):
        super().__init__(max_message_size, max_snapshot_size)
        self.max_panes = max_panes
        self.protocol = PROTOCOL_VERSION

    def feed(self, data: bytes) -> list[HostMessage]:
        return super().feed(data)


# ---------------------------------------------------------------- relay -> host decoding


def _r_notify(dec, m):
    _arity(m, 1)
    return Notify(_text(m[1], "message"))


def _r_legacy_pane_key(dec, m):
    _arity(m, 1)
    return LegacyPaneKey(_int(m[1], 0, _INT_MAX, "key"))


def _r_resize(dec, m):
    _arity(m, 2)
    return Resize(_int(m[1], -1, MAX_DIMENSION, "sx"), _int(m[2], -1, MAX_DIMENSION, "sy"))


def _r_exec_cmd_str(dec, m):
    _arity(m, 2)
    return ViewerExecCmdStr(_int(m[1], _INT_MIN, _INT_MAX, "client id"), _text(m[2], "command"))


def _r_set_env(dec, m):
    _arity(m, 2)
    return SetEnv(_text(m[1], "name"), _text(m[2], "value"))


def _r_ready(dec, m):
    _arity(m, 0)
    return RelayReady()


def _r_pane_key(dec, m):
    _arity(m, 2)
    return PaneKey(_int(m[1], -1, MAX_ID, "pane id"), _int(m[2], 0, _UINT64_MAX, "key"))


def _r_exec_cmd(dec, m):
    if len(m) < 2:
        raise _Bad("missing client id")
    return ViewerExecCmd(_int(m[1], _INT_MIN, _INT_MAX, "client id"), _argv(m[2:], "EXEC_CMD"))


class RelayDecoder(_StreamDecoder):
    """Decodes the relay -> host stream (what a tmate client reads); for tests and tools."""

    _names = {t.value: t.name for t in RelayMsg}
    _table = {
        RelayMsg.NOTIFY: _r_notify,
        RelayMsg.LEGACY_PANE_KEY: _r_legacy_pane_key,
        RelayMsg.RESIZE: _r_resize,
        RelayMsg.EXEC_CMD_STR: _r_exec_cmd_str,
        RelayMsg.SET_ENV: _r_set_env,
        RelayMsg.READY: _r_ready,
        RelayMsg.PANE_KEY: _r_pane_key,
        RelayMsg.EXEC_CMD: _r_exec_cmd,
    }

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE):
        super().__init__(max_message_size)

    def feed(self, data: bytes) -> list[RelayMessage]:
        return super().feed(data)


# ---------------------------------------------------------------- encoding


def _e_int(v, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _e_str(v, what: str) -> str:
    if type(v) is not str:
        raise ValueError(f"{what} must be a str, got {type(v).__name__}")
    return v


def _e_argv(argv, what: str) -> list[str]:
    if not argv or len(argv) > MAX_ARGV:
        raise ValueError(f"{what} argv must have 1 to {MAX_ARGV} strings")
    return [_e_str(a, "argument") for a in argv]


def _pack(obj: list, protocol: int) -> bytes:
    return msgpack.packb(obj, use_bin_type=protocol >= MSGPACK_STR8_VERSION)


def encode(msg: RelayMessage, protocol: int = PROTOCOL_VERSION) -> bytes:
    """Encode one relay -> host message. Strings are msgpack str.

    `protocol` is the host's protocol version: below 5 the host's msgpack predates str8, so
    strings of 32-255 bytes use str16 as the C server does for those clients. Translating key
    codes for older protocols (LEGACY_PANE_KEY, the protocol-5 key shift) is the caller's job.
    Raises ValueError for a value the protocol cannot carry.
    """
    t = type(msg)
    if t is PaneKey:
        obj = [
            RelayMsg.PANE_KEY,
            _e_int(msg.pane_id, -1, MAX_ID, "pane id"),
            _e_int(msg.key, 0, _UINT64_MAX, "key"),
        ]
    elif t is Notify:
        obj = [RelayMsg.NOTIFY, _e_str(msg.message, "message")]
    elif t is Resize:
        obj = [
            RelayMsg.RESIZE,
            _e_int(msg.sx, -1, MAX_DIMENSION, "sx"),
            _e_int(msg.sy, -1, MAX_DIMENSION, "sy"),
        ]
    elif t is SetEnv:
        obj = [RelayMsg.SET_ENV, _e_str(msg.name, "name"), _e_str(msg.value, "value")]
    elif t is RelayReady:
        obj = [RelayMsg.READY]
    elif t is ViewerExecCmd:
        obj = [
            RelayMsg.EXEC_CMD,
            _e_int(msg.client_id, _INT_MIN, _INT_MAX, "client id"),
            *_e_argv(msg.argv, "EXEC_CMD"),
        ]
    elif t is ViewerExecCmdStr:
        obj = [
            RelayMsg.EXEC_CMD_STR,
            _e_int(msg.client_id, _INT_MIN, _INT_MAX, "client id"),
            _e_str(msg.command, "command"),
        ]
    elif t is LegacyPaneKey:
        obj = [RelayMsg.LEGACY_PANE_KEY, _e_int(msg.key, 0, _INT_MAX, "key")]
    else:
        raise TypeError(f"not a relay -> host message: {t.__name__}")
    return _pack(obj, protocol)


def _raw_header(n: int, str8: bool) -> bytes:
    if n < 32:
        return bytes((0xA0 | n,))
    if n < 256 and str8:
        return bytes((0xD9, n))
    if n < 65536:
        return b"\xda" + n.to_bytes(2, "big")
    return b"\xdb" + n.to_bytes(4, "big")


def _e_grid(cx: int, cy: int, lines) -> list:
    return [
        _e_int(cx, 0, MAX_DIMENSION, "cursor x"),
        _e_int(cy, 0, MAX_DIMENSION, "cursor y"),
        [[_e_str(ln.text, "line text"), list(ln.attrs)] for ln in lines],
    ]


def encode_host(msg: HostMessage, protocol: int = PROTOCOL_VERSION) -> bytes:
    """Encode one host -> relay message the way the tmate client does (for tests and tools).

    PTY data goes out as msgpack str holding the raw bytes. With `protocol` below 3 a HEADER has
    no version string, below 2 SYNC_COPY_MODE has no backing field, below 5 no str8 is used.
    """
    t = type(msg)
    if t is PtyData:
        data = msg.data
        if type(data) is not bytes:
            data = bytes(data)
        return b"".join(
            (
                b"\x93\x02",
                msgpack.packb(_e_int(msg.pane_id, 0, MAX_ID, "pane id")),
                _raw_header(len(data), protocol >= MSGPACK_STR8_VERSION),
                data,
            )
        )
    if t is Header:
        obj = [HostMsg.HEADER, msg.protocol]
        if msg.protocol >= STRING_HEADER_VERSION:
            obj.append(_e_str(msg.client_version, "client version"))
    elif t is SyncLayout:
        obj = [
            HostMsg.SYNC_LAYOUT,
            msg.sx,
            msg.sy,
            [
                [
                    w.idx,
                    _e_str(w.name, "window name"),
                    [[p.id, p.sx, p.sy, p.xoff, p.yoff] for p in w.panes],
                    w.active_pane,
                ]
                for w in msg.windows
            ],
            msg.active_window,
        ]
    elif t is ExecCmdStr:
        obj = [HostMsg.EXEC_CMD_STR, _e_str(msg.command, "command")]
    elif t is FailedCmd:
        obj = [HostMsg.FAILED_CMD, msg.client_id, _e_str(msg.cause, "cause")]
    elif t is Status:
        obj = [HostMsg.STATUS, _e_str(msg.left, "left"), _e_str(msg.right, "right")]
    elif t is SyncCopyMode:
        cm = msg.mode
        if cm is None:
            body = []
        else:
            sel = cm.selection
            pr = cm.prompt
            body = [
                cm.oy,
                cm.cx,
                cm.cy,
                [] if sel is None else [sel.selx, sel.sely, sel.flags],
                [] if pr is None else [pr.type, _e_str(pr.prompt, "prompt"), _e_str(pr.text, "prompt input")],
            ]
            if protocol >= 2:
                body.insert(0, cm.backing)
        obj = [HostMsg.SYNC_COPY_MODE, msg.pane_id, body]
    elif t is WriteCopyMode:
        obj = [HostMsg.WRITE_COPY_MODE, msg.pane_id, _e_str(msg.text, "text")]
    elif t is Fin:
        obj = [HostMsg.FIN]
    elif t is HostReady:
        obj = [HostMsg.READY]
    elif t is Reconnect:
        obj = [HostMsg.RECONNECT, _e_str(msg.data, "reconnection data")]
    elif t is Snapshot:
        obj = [
            HostMsg.SNAPSHOT,
            [
                [
                    p.pane_id,
                    p.mode,
                    _e_grid(p.cursor_x, p.cursor_y, p.lines),
                    None if p.saved is None else _e_grid(p.saved.cursor_x, p.saved.cursor_y, p.saved.lines),
                ]
                for p in msg.panes
            ],
        ]
    elif t is ExecCmd:
        obj = [HostMsg.EXEC_CMD, *_e_argv(msg.argv, "EXEC_CMD")]
    elif t is Uname:
        obj = [
            HostMsg.UNAME,
            *(
                _e_str(v, "uname field")
                for v in (msg.sysname, msg.nodename, msg.release, msg.version, msg.machine)
            ),
        ]
    else:
        raise TypeError(f"not a host -> relay message: {t.__name__}")
    return _pack(obj, protocol)
