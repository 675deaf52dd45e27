"""Decoding the host -> relay stream (TMATE_OUT_*) into `relay.tmate.messages` host messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    PaneGeom,
    Prompt,
    PtyData,
    Reconnect,
    Selection,
    Snapshot,
    SnapshotGrid,
    SnapshotLine,
    SnapshotPane,
    Status,
    SyncCopyMode,
    SyncLayout,
    Uname,
    Window,
    WriteCopyMode,
)
from relay.tmate.wire import (
    INT_MAX,
    INT_MIN,
    LEGACY_CLIENT_VERSION,
    MAX_DIMENSION,
    MAX_ID,
    MAX_MESSAGE_SIZE,
    MAX_PANES,
    MAX_SNAPSHOT_LINE_CELLS,
    MAX_SNAPSHOT_LINES,
    MAX_SNAPSHOT_SIZE,
    MAX_WINDOWS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    STRING_HEADER_VERSION,
    UINT64_MAX,
    UINT_MAX,
    FieldError,
    ProtocolError,
    StreamDecoder,
    argv_field,
    array_field,
    check_arity,
    int_field,
    text_field,
    type_name,
)


class HostDecoder(StreamDecoder[HostMessage]):
    """Decodes the host -> relay stream into `relay.tmate.messages` host messages.

    `feed` takes any chunking of the stream and returns the messages completed so far.
    `protocol` is the version from the last HEADER (`PROTOCOL_VERSION` until one arrives).
    """

    names = {t.value: t.name for t in HostMsg}
    large_type = HostMsg.SNAPSHOT

    def __init__(
        self,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_panes: int = MAX_PANES,
        max_snapshot_size: int = MAX_SNAPSHOT_SIZE,
    ):
        super().__init__(max_message_size, max_snapshot_size, pty_message=PtyData)
        self.max_panes = max_panes
        self.protocol = PROTOCOL_VERSION

    def _decode_fields(self, t: int, m: list[Any]) -> HostMessage:
        return _DECODERS[t](self, m)


def _header(dec: HostDecoder, m: list[Any]) -> Header:
    if len(m) < 2:
        raise FieldError("missing protocol version")
    proto = int_field(m[1], -(2**63), UINT64_MAX, "protocol version")
    if not MIN_PROTOCOL_VERSION <= proto <= PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {proto} (accepted: {MIN_PROTOCOL_VERSION}-{PROTOCOL_VERSION})"
        )
    if proto < STRING_HEADER_VERSION:
        check_arity(m, 1)
        version = LEGACY_CLIENT_VERSION
    else:
        check_arity(m, 2)
        version = text_field(m[2], "client version")
    dec.protocol = proto
    return Header(proto, version)


def _pane_geoms(raw: list[Any], pane_ids: set[int]) -> tuple[PaneGeom, ...]:
    panes = []
    for p in raw:
        array_field(p, "pane", 5)
        pid = int_field(p[0], 0, MAX_ID, "pane id")
        if pid in pane_ids:
            raise FieldError(f"duplicate pane id {pid}")
        pane_ids.add(pid)
        panes.append(
            PaneGeom(
                pid,
                int_field(p[1], 0, MAX_DIMENSION, "pane sx"),
                int_field(p[2], 0, MAX_DIMENSION, "pane sy"),
                int_field(p[3], 0, MAX_DIMENSION, "pane xoff"),
                int_field(p[4], 0, MAX_DIMENSION, "pane yoff"),
            )
        )
    return tuple(panes)


def _sync_layout(dec: HostDecoder, m: list[Any]) -> SyncLayout:
    check_arity(m, 4)
    sx = int_field(m[1], 0, MAX_DIMENSION, "sx")
    sy = int_field(m[2], 0, MAX_DIMENSION, "sy")
    wins = array_field(m[3], "windows")
    if len(wins) > MAX_WINDOWS:
        raise ProtocolError(f"too many windows: {len(wins)} > {MAX_WINDOWS}")
    npanes = 0
    pane_ids: set[int] = set()
    win_idxs: set[int] = set()
    windows = []
    for w in wins:
        array_field(w, "window", 4)
        idx = int_field(w[0], 0, MAX_ID, "window index")
        if idx in win_idxs:
            raise FieldError(f"duplicate window index {idx}")
        win_idxs.add(idx)
        name = text_field(w[1], "window name")
        praw = array_field(w[2], "panes")
        npanes += len(praw)
        if npanes > dec.max_panes:
            raise ProtocolError(f"too many panes: more than {dec.max_panes} in SYNC_LAYOUT")
        panes = _pane_geoms(praw, pane_ids)
        active = int_field(w[3], -1, MAX_ID, "active pane id")
        windows.append(Window(idx, name, panes, active))
    active_win = int_field(m[4], -1, MAX_ID, "active window index")
    return SyncLayout(sx, sy, tuple(windows), active_win)


def _pty_data(dec: HostDecoder, m: list[Any]) -> PtyData:
    check_arity(m, 2)
    pid = int_field(m[1], 0, MAX_ID, "pane id")
    data = m[2]
    if type(data) is not bytes:
        raise FieldError(f"data must be a string, got {type_name(data)}")
    return PtyData(pid, data)


def _exec_cmd_str(dec: HostDecoder, m: list[Any]) -> ExecCmdStr:
    check_arity(m, 1)
    return ExecCmdStr(text_field(m[1], "command"))


def _failed_cmd(dec: HostDecoder, m: list[Any]) -> FailedCmd:
    check_arity(m, 2)
    return FailedCmd(int_field(m[1], INT_MIN, INT_MAX, "client id"), text_field(m[2], "cause"))


def _status(dec: HostDecoder, m: list[Any]) -> Status:
    check_arity(m, 2)
    return Status(text_field(m[1], "left"), text_field(m[2], "right"))


def _selection(sel: list[Any]) -> Selection | None:
    if not sel:
        return None
    array_field(sel, "selection", 3)
    return Selection(
        int_field(sel[0], INT_MIN, INT_MAX, "selx"),
        int_field(sel[1], INT_MIN, INT_MAX, "sely"),
        int_field(sel[2], INT_MIN, INT_MAX, "selection flags"),
    )


def _prompt(pr: list[Any]) -> Prompt | None:
    if not pr:
        return None
    array_field(pr, "prompt", 3)
    return Prompt(
        int_field(pr[0], INT_MIN, INT_MAX, "prompt type"),
        text_field(pr[1], "prompt"),
        text_field(pr[2], "prompt input"),
    )


def _sync_copy_mode(dec: HostDecoder, m: list[Any]) -> SyncCopyMode:
    check_arity(m, 2)
    pid = int_field(m[1], 0, MAX_ID, "pane id")
    cm = array_field(m[2], "copy mode")
    if not cm:
        return SyncCopyMode(pid, None)
    if dec.protocol >= 2:
        array_field(cm, "copy mode", 6)
        backing = int_field(cm[0], 0, 1, "backing")
        cm = cm[1:]
    else:
        array_field(cm, "copy mode", 5)
        backing = 1
    oy = int_field(cm[0], 0, INT_MAX, "oy")
    cx = int_field(cm[1], 0, MAX_DIMENSION, "cx")
    cy = int_field(cm[2], 0, MAX_DIMENSION, "cy")
    selection = _selection(array_field(cm[3], "selection"))
    prompt = _prompt(array_field(cm[4], "prompt"))
    return SyncCopyMode(pid, CopyMode(backing, oy, cx, cy, selection, prompt))


def _write_copy_mode(dec: HostDecoder, m: list[Any]) -> WriteCopyMode:
    check_arity(m, 2)
    return WriteCopyMode(int_field(m[1], 0, MAX_ID, "pane id"), text_field(m[2], "text"))


def _fin(dec: HostDecoder, m: list[Any]) -> Fin:
    check_arity(m, 0)
    return Fin()


def _ready(dec: HostDecoder, m: list[Any]) -> HostReady:
    check_arity(m, 0)
    return HostReady()


def _reconnect(dec: HostDecoder, m: list[Any]) -> Reconnect:
    check_arity(m, 1)
    return Reconnect(text_field(m[1], "reconnection data"))


def _snapshot_grid(g: object, what: str) -> SnapshotGrid:
    grid = array_field(g, what, 3)
    cx = int_field(grid[0], 0, MAX_DIMENSION, "cursor x")
    cy = int_field(grid[1], 0, MAX_DIMENSION, "cursor y")
    raw_lines = array_field(grid[2], "lines")
    if len(raw_lines) > MAX_SNAPSHOT_LINES:
        raise ProtocolError(f"too many snapshot lines: {len(raw_lines)} > {MAX_SNAPSHOT_LINES}")
    lines = []
    for ln in raw_lines:
        array_field(ln, "line", 2)
        text = text_field(ln[0], "line text")
        attrs = array_field(ln[1], "line attributes")
        if len(attrs) > MAX_SNAPSHOT_LINE_CELLS:
            raise ProtocolError(
                f"too many cells in a snapshot line: {len(attrs)} > {MAX_SNAPSHOT_LINE_CELLS}"
            )
        for a in attrs:
            if type(a) is not int or a < 0 or a > UINT_MAX:
                int_field(a, 0, UINT_MAX, "cell attribute")
        lines.append(SnapshotLine(text, tuple(attrs)))
    return SnapshotGrid(cx, cy, tuple(lines))


def _snapshot(dec: HostDecoder, m: list[Any]) -> Snapshot:
    check_arity(m, 1)
    raw = array_field(m[1], "panes")
    if len(raw) > dec.max_panes:
        raise ProtocolError(f"too many panes: {len(raw)} > {dec.max_panes} in SNAPSHOT")
    panes = []
    for p in raw:
        array_field(p, "pane", 4)
        pid = int_field(p[0], 0, MAX_ID, "pane id")
        mode = int_field(p[1], 0, UINT_MAX, "mode")
        grid = _snapshot_grid(p[2], "grid")
        saved = None if p[3] is None else _snapshot_grid(p[3], "saved grid")
        panes.append(SnapshotPane(pid, grid.cursor_x, grid.cursor_y, mode, grid.lines, saved))
    return Snapshot(tuple(panes))


def _exec_cmd(dec: HostDecoder, m: list[Any]) -> ExecCmd:
    return ExecCmd(argv_field(m[1:]))


def _uname(dec: HostDecoder, m: list[Any]) -> Uname:
    check_arity(m, 5)
    return Uname(
        text_field(m[1], "sysname"),
        text_field(m[2], "nodename"),
        text_field(m[3], "release"),
        text_field(m[4], "version"),
        text_field(m[5], "machine"),
    )


_DECODERS: dict[int, Callable[[HostDecoder, list[Any]], HostMessage]] = {
    HostMsg.HEADER: _header,
    HostMsg.SYNC_LAYOUT: _sync_layout,
    HostMsg.PTY_DATA: _pty_data,
    HostMsg.EXEC_CMD_STR: _exec_cmd_str,
    HostMsg.FAILED_CMD: _failed_cmd,
    HostMsg.STATUS: _status,
    HostMsg.SYNC_COPY_MODE: _sync_copy_mode,
    HostMsg.WRITE_COPY_MODE: _write_copy_mode,
    HostMsg.FIN: _fin,
    HostMsg.READY: _ready,
    HostMsg.RECONNECT: _reconnect,
    HostMsg.SNAPSHOT: _snapshot,
    HostMsg.EXEC_CMD: _exec_cmd,
    HostMsg.UNAME: _uname,
}
