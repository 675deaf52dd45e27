"""Typed tmate protocol messages (protocol version 6, tmate 2.4).

These are plain values: the codec (`relay.tmate.codec`) turns bytes into them and back, the session
(`relay.tmate.session`) consumes them. Field layouts: docs/architecture.md section 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class HostMsg(IntEnum):
    """Host -> relay message types (tmate's TMATE_OUT_*)."""

    HEADER = 0
    SYNC_LAYOUT = 1
    PTY_DATA = 2
    EXEC_CMD_STR = 3
    FAILED_CMD = 4
    STATUS = 5
    SYNC_COPY_MODE = 6
    WRITE_COPY_MODE = 7
    FIN = 8
    READY = 9
    RECONNECT = 10
    SNAPSHOT = 11
    EXEC_CMD = 12
    UNAME = 13


class RelayMsg(IntEnum):
    """Relay -> host message types (tmate's TMATE_IN_*)."""

    NOTIFY = 0
    LEGACY_PANE_KEY = 1
    RESIZE = 2
    EXEC_CMD_STR = 3
    SET_ENV = 4
    READY = 5
    PANE_KEY = 6
    EXEC_CMD = 7


# ---------------------------------------------------------------- host -> relay


@dataclass(frozen=True, slots=True)
class Header:
    protocol: int
    client_version: str


@dataclass(frozen=True, slots=True)
class PaneGeom:
    id: int
    sx: int
    sy: int
    xoff: int
    yoff: int


@dataclass(frozen=True, slots=True)
class Window:
    idx: int
    name: str
    panes: tuple[PaneGeom, ...]
    active_pane: int


@dataclass(frozen=True, slots=True)
class SyncLayout:
    sx: int
    sy: int
    windows: tuple[Window, ...]
    active_window: int


@dataclass(frozen=True, slots=True)
class PtyData:
    pane_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ExecCmdStr:
    command: str


@dataclass(frozen=True, slots=True)
class FailedCmd:
    client_id: int
    cause: str


@dataclass(frozen=True, slots=True)
class Status:
    left: str
    right: str


@dataclass(frozen=True, slots=True)
class Selection:
    selx: int
    sely: int
    flags: int


@dataclass(frozen=True, slots=True)
class Prompt:
    type: int
    prompt: str
    text: str


@dataclass(frozen=True, slots=True)
class CopyMode:
    backing: int
    oy: int
    cx: int
    cy: int
    selection: Selection | None
    prompt: Prompt | None


@dataclass(frozen=True, slots=True)
class SyncCopyMode:
    pane_id: int
    mode: CopyMode | None  # None: the pane left copy mode


@dataclass(frozen=True, slots=True)
class WriteCopyMode:
    pane_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Fin:
    pass


@dataclass(frozen=True, slots=True)
class HostReady:
    pass


@dataclass(frozen=True, slots=True)
class Reconnect:
    data: str


@dataclass(frozen=True, slots=True)
class SnapshotLine:
    text: str
    attrs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SnapshotGrid:
    """The grid a pane saved when it entered the alternate screen (restored when it leaves)."""

    cursor_x: int
    cursor_y: int
    lines: tuple[SnapshotLine, ...]


@dataclass(frozen=True, slots=True)
class SnapshotPane:
    pane_id: int
    cursor_x: int
    cursor_y: int
    mode: int
    lines: tuple[SnapshotLine, ...]
    saved: SnapshotGrid | None = None  # the saved normal-screen grid when on the alternate screen


@dataclass(frozen=True, slots=True)
class Snapshot:
    panes: tuple[SnapshotPane, ...]


@dataclass(frozen=True, slots=True)
class ExecCmd:
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Uname:
    sysname: str
    nodename: str
    release: str
    version: str
    machine: str


HostMessage = (
    Header
    | SyncLayout
    | PtyData
    | ExecCmdStr
    | FailedCmd
    | Status
    | SyncCopyMode
    | WriteCopyMode
    | Fin
    | HostReady
    | Reconnect
    | Snapshot
    | ExecCmd
    | Uname
)


# ---------------------------------------------------------------- relay -> host


@dataclass(frozen=True, slots=True)
class Notify:
    message: str


@dataclass(frozen=True, slots=True)
class LegacyPaneKey:
    key: int


@dataclass(frozen=True, slots=True)
class Resize:
    sx: int  # -1, -1: no read-write viewer
    sy: int


@dataclass(frozen=True, slots=True)
class ViewerExecCmdStr:
    client_id: int
    command: str


@dataclass(frozen=True, slots=True)
class SetEnv:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class RelayReady:
    pass


@dataclass(frozen=True, slots=True)
class PaneKey:
    pane_id: int  # -1: the active pane
    key: int  # tmux key code of the client's encoding (uint64)


@dataclass(frozen=True, slots=True)
class ViewerExecCmd:
    client_id: int
    argv: tuple[str, ...]


RelayMessage = (
    Notify | LegacyPaneKey | Resize | ViewerExecCmdStr | SetEnv | RelayReady | PaneKey | ViewerExecCmd
)
