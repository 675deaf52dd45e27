"""Encoding tmate messages: the relay's (`encode`) and, for tests and the warm-up, the host's
(`encode_host`), each through a table of per-class encoders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from relay.tmate.messages import (
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
    PaneKey,
    PtyData,
    Reconnect,
    RelayMessage,
    RelayMsg,
    RelayReady,
    Resize,
    SetEnv,
    Snapshot,
    SnapshotLine,
    Status,
    SyncCopyMode,
    SyncLayout,
    Uname,
    ViewerExecCmd,
    ViewerExecCmdStr,
    WriteCopyMode,
)
from relay.tmate.wire import (
    INT_MAX,
    INT_MIN,
    MAX_ARGV,
    MAX_DIMENSION,
    MAX_ID,
    MSGPACK_STR8_VERSION,
    PROTOCOL_VERSION,
    STRING_HEADER_VERSION,
    UINT64_MAX,
)

# A message's msgpack array, before packing. The tables' values take their own message class;
# a dict keyed by class cannot say so, hence Any in the parameter.
_Fields = list[object]


def _int(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(v: object, what: str) -> str:
    if type(v) is not str:
        raise ValueError(f"{what} must be a str, got {type(v).__name__}")
    return v


def _argv(argv: tuple[str, ...]) -> list[str]:
    if not argv or len(argv) > MAX_ARGV:
        raise ValueError(f"EXEC_CMD argv must have 1 to {MAX_ARGV} strings")
    return [_str(a, "argument") for a in argv]


def _pack(obj: _Fields, protocol: int) -> bytes:
    return msgpack.packb(obj, use_bin_type=protocol >= MSGPACK_STR8_VERSION)


# ---------------------------------------------------------------- relay -> host


def _pane_key(msg: PaneKey) -> _Fields:
    return [RelayMsg.PANE_KEY, _int(msg.pane_id, -1, MAX_ID, "pane id"), _int(msg.key, 0, UINT64_MAX, "key")]


def _notify(msg: Notify) -> _Fields:
    return [RelayMsg.NOTIFY, _str(msg.message, "message")]


def _resize(msg: Resize) -> _Fields:
    return [RelayMsg.RESIZE, _int(msg.sx, -1, MAX_DIMENSION, "sx"), _int(msg.sy, -1, MAX_DIMENSION, "sy")]


def _set_env(msg: SetEnv) -> _Fields:
    return [RelayMsg.SET_ENV, _str(msg.name, "name"), _str(msg.value, "value")]


def _relay_ready(msg: RelayReady) -> _Fields:
    return [RelayMsg.READY]


def _viewer_exec_cmd(msg: ViewerExecCmd) -> _Fields:
    return [RelayMsg.EXEC_CMD, _int(msg.client_id, INT_MIN, INT_MAX, "client id"), *_argv(msg.argv)]


def _viewer_exec_cmd_str(msg: ViewerExecCmdStr) -> _Fields:
    client_id = _int(msg.client_id, INT_MIN, INT_MAX, "client id")
    return [RelayMsg.EXEC_CMD_STR, client_id, _str(msg.command, "command")]


def _legacy_pane_key(msg: LegacyPaneKey) -> _Fields:
    return [RelayMsg.LEGACY_PANE_KEY, _int(msg.key, 0, INT_MAX, "key")]


_RELAY_ENCODERS: dict[type, Callable[[Any], _Fields]] = {
    PaneKey: _pane_key,
    Notify: _notify,
    Resize: _resize,
    SetEnv: _set_env,
    RelayReady: _relay_ready,
    ViewerExecCmd: _viewer_exec_cmd,
    ViewerExecCmdStr: _viewer_exec_cmd_str,
    LegacyPaneKey: _legacy_pane_key,
}


def encode(msg: RelayMessage, protocol: int = PROTOCOL_VERSION) -> bytes:
    """Encode one relay -> host message. Strings are msgpack str.

    `protocol` is the host's protocol version: below 5 the host's msgpack predates str8, so
    strings of 32-255 bytes use str16 as the C server does for those clients. Translating key
    codes for older protocols (LEGACY_PANE_KEY, the protocol-5 key shift) is the caller's job.
    Raises ValueError for a value the protocol cannot carry.
    """
    fn = _RELAY_ENCODERS.get(type(msg))
    if fn is None:
        raise TypeError(f"not a relay -> host message: {type(msg).__name__}")
    return _pack(fn(msg), protocol)


# ---------------------------------------------------------------- host -> relay


def _raw_header(n: int, str8: bool) -> bytes:
    if n < 32:
        return bytes((0xA0 | n,))
    if n < 256 and str8:
        return bytes((0xD9, n))
    if n < 65536:
        return b"\xda" + n.to_bytes(2, "big")
    return b"\xdb" + n.to_bytes(4, "big")


def _pty_data(msg: PtyData, protocol: int) -> bytes:
    """PTY data as the client sends it: msgpack str (not bin) holding the raw bytes."""
    data = msg.data if type(msg.data) is bytes else bytes(msg.data)
    return b"".join(
        (
            b"\x93\x02",
            msgpack.packb(_int(msg.pane_id, 0, MAX_ID, "pane id")),
            _raw_header(len(data), protocol >= MSGPACK_STR8_VERSION),
            data,
        )
    )


def _header(msg: Header, protocol: int) -> _Fields:
    obj: _Fields = [HostMsg.HEADER, msg.protocol]
    if msg.protocol >= STRING_HEADER_VERSION:
        obj.append(_str(msg.client_version, "client version"))
    return obj


def _sync_layout(msg: SyncLayout, protocol: int) -> _Fields:
    windows = [
        [
            w.idx,
            _str(w.name, "window name"),
            [[p.id, p.sx, p.sy, p.xoff, p.yoff] for p in w.panes],
            w.active_pane,
        ]
        for w in msg.windows
    ]
    return [HostMsg.SYNC_LAYOUT, msg.sx, msg.sy, windows, msg.active_window]


def _exec_cmd_str(msg: ExecCmdStr, protocol: int) -> _Fields:
    return [HostMsg.EXEC_CMD_STR, _str(msg.command, "command")]


def _failed_cmd(msg: FailedCmd, protocol: int) -> _Fields:
    return [HostMsg.FAILED_CMD, msg.client_id, _str(msg.cause, "cause")]


def _status(msg: Status, protocol: int) -> _Fields:
    return [HostMsg.STATUS, _str(msg.left, "left"), _str(msg.right, "right")]


def _sync_copy_mode(msg: SyncCopyMode, protocol: int) -> _Fields:
    """Below protocol 2, the copy-mode state has no backing field."""
    cm = msg.mode
    if cm is None:
        return [HostMsg.SYNC_COPY_MODE, msg.pane_id, []]
    sel, pr = cm.selection, cm.prompt
    body: _Fields = [
        cm.oy,
        cm.cx,
        cm.cy,
        [] if sel is None else [sel.selx, sel.sely, sel.flags],
        [] if pr is None else [pr.type, _str(pr.prompt, "prompt"), _str(pr.text, "prompt input")],
    ]
    if protocol >= 2:
        body.insert(0, cm.backing)
    return [HostMsg.SYNC_COPY_MODE, msg.pane_id, body]


def _write_copy_mode(msg: WriteCopyMode, protocol: int) -> _Fields:
    return [HostMsg.WRITE_COPY_MODE, msg.pane_id, _str(msg.text, "text")]


def _fin(msg: Fin, protocol: int) -> _Fields:
    return [HostMsg.FIN]


def _host_ready(msg: HostReady, protocol: int) -> _Fields:
    return [HostMsg.READY]


def _reconnect(msg: Reconnect, protocol: int) -> _Fields:
    return [HostMsg.RECONNECT, _str(msg.data, "reconnection data")]


def _grid(cx: int, cy: int, lines: tuple[SnapshotLine, ...]) -> _Fields:
    return [
        _int(cx, 0, MAX_DIMENSION, "cursor x"),
        _int(cy, 0, MAX_DIMENSION, "cursor y"),
        [[_str(ln.text, "line text"), list(ln.attrs)] for ln in lines],
    ]


def _snapshot(msg: Snapshot, protocol: int) -> _Fields:
    panes = [
        [
            p.pane_id,
            p.mode,
            _grid(p.cursor_x, p.cursor_y, p.lines),
            None if p.saved is None else _grid(p.saved.cursor_x, p.saved.cursor_y, p.saved.lines),
        ]
        for p in msg.panes
    ]
    return [HostMsg.SNAPSHOT, panes]


def _exec_cmd(msg: ExecCmd, protocol: int) -> _Fields:
    return [HostMsg.EXEC_CMD, *_argv(msg.argv)]


def _uname(msg: Uname, protocol: int) -> _Fields:
    fields = (msg.sysname, msg.nodename, msg.release, msg.version, msg.machine)
    return [HostMsg.UNAME, *(_str(v, "uname field") for v in fields)]


_HOST_ENCODERS: dict[type, Callable[[Any, int], _Fields]] = {
    Header: _header,
    SyncLayout: _sync_layout,
    ExecCmdStr: _exec_cmd_str,
    FailedCmd: _failed_cmd,
    Status: _status,
    SyncCopyMode: _sync_copy_mode,
    WriteCopyMode: _write_copy_mode,
    Fin: _fin,
    HostReady: _host_ready,
    Reconnect: _reconnect,
    Snapshot: _snapshot,
    ExecCmd: _exec_cmd,
    Uname: _uname,
}


def encode_host(msg: HostMessage, protocol: int = PROTOCOL_VERSION) -> bytes:
    """Encode one host -> relay message the way the tmate client does (for tests and tools).

    PTY data goes out as msgpack str holding the raw bytes. With `protocol` below 3 a HEADER has
    no version string, below 2 SYNC_COPY_MODE has no backing field, below 5 no str8 is used.
    """
    if type(msg) is PtyData:
        return _pty_data(msg, protocol)
    fn = _HOST_ENCODERS.get(type(msg))
    if fn is None:
        raise TypeError(f"not a host -> relay message: {type(msg).__name__}")
    return _pack(fn(msg, protocol), protocol)
