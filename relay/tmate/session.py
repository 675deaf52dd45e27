"""Sans-IO state of one tmate session, fed the host's typed messages (relay.tmate.messages).

`Session.handle(msg)` updates the state and returns the messages to send back to the host. The
state is laid out for a renderer to read directly: `windows` (by index, in the host's order),
`panes` (by id, each with its `TerminalModel`), `active_window`, `sx`/`sy`, `status`, per-pane copy
mode and message-view lines, the replicated key tables and options (`config`, a
`relay.tmate.replicated.ReplicatedConfig`, also readable through the session's own attributes). What the host is told about its links and
when (the connection lines, named sessions' answer) is relay.tmate.lines.

Behaviour follows tmate-ssh-server (the C server, tmate 2.4 protocol) where it defines it; the
places where this module deliberately differs are marked "Differs from the C server".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.screen.terminal import TerminalModel
from relay.tmate import lines
from relay.tmate import messages as m
from relay.tmate.lines import ssh_connection_string
from relay.tmate.names import NOT_OFFERED, NameRequest
from relay.tmate.replicated import (
    COMMANDS,
    MAX_BINDINGS,
    MAX_OPTIONS,
    Binding,
    ConfigFlood,
    KeyTable,
    ReplicatedConfig,
)
from relay.tmate.snapshot import snapshot_vt
from relay.tmate.wire import MAX_SESSION_CELLS, SESSION_HISTORY_BYTES
from relay.tmux.args import UsageError
from relay.tmux.cmdline import CommandSyntaxError, parse_commands

__all__ = [
    "SessionError",
    "Session",
    "PaneState",
    "WindowState",
    "Binding",
    "ssh_connection_string",
    "MAX_PANE_DIM",
    "MAX_BINDINGS",
    "MAX_OPTIONS",
]

# Sanity bound on a pane's or the session's width/height. tmux's own limit is 10000; a 16-bit
# terminal size could otherwise make one pane allocate gigabytes.
MAX_PANE_DIM = 10000
# Bound on the message-view lines kept per pane (tmate shows its notices there).
MAX_MESSAGE_LINES = 1000
MAX_WINDOW_STACK = 32  # previously current windows remembered for last-window

Replies = list[m.RelayMessage]


class SessionError(Exception):
    """A protocol violation: the host connection should be closed. str() is a one-line reason."""


@dataclass(slots=True)
class WindowState:
    idx: int
    name: str
    pane_ids: tuple[int, ...]
    active_pane: int


@dataclass(slots=True)
class PaneState:
    id: int
    window_idx: int
    sx: int
    sy: int
    xoff: int
    yoff: int
    model: TerminalModel
    in_mode: bool = False  # copy mode or tmate's message view is shown
    copy_mode: m.CopyMode | None = None  # latest SYNC_COPY_MODE state while in_mode
    message_lines: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGE_LINES))

    @property
    def message_view(self) -> bool:
        """True while the pane shows tmate's message view (WRITE_COPY_MODE lines, not backed by
        the pane's own screen) until the user presses q."""
        return self.in_mode and (self.copy_mode is None or not self.copy_mode.backing)


def _check_dim(what: str, sx: int, sy: int) -> None:
    if not (0 <= sx <= MAX_PANE_DIM and 0 <= sy <= MAX_PANE_DIM):
        raise SessionError(f"{what} size {sx}x{sy} out of range")


class Session:
    def __init__(
        self,
        *,
        rw_token: str,
        ro_token: str,
        ssh_host: str,
        ssh_port: int,
        max_panes: int = 1000,
        history_lines: int = 2000,
        max_cells: int = MAX_SESSION_CELLS,
        history_budget: int = SESSION_HISTORY_BYTES,
        named_sessions: bool | None = None,  # the relay names sessions, or not; None: as the C server
        web_url: str | None = None,  # --web-url: the web links URL/t/TOKEN are shown too
    ):
        self.rw_token = rw_token
        self.ro_token = ro_token
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.max_panes = max_panes
        self.history_lines = history_lines
        self.max_cells = max_cells  # sum of sx*sy over every pane (relay/tmate/wire.py)
        self.history_budget = history_budget  # bytes of scrollback for all panes together
        self.ssh_rw = ssh_connection_string(rw_token, ssh_host, ssh_port)
        self.ssh_ro = ssh_connection_string(ro_token, ssh_host, ssh_port)
        self.web_url = web_url
        self.lines_due = False  # the lines wait for the host's READY (relay.tmate.lines)

        self.protocol: int | None = None  # client protocol version from HEADER
        self.client_version: str | None = None
        self.host_ready = False
        self.finished = False
        self.uname: m.Uname | None = None
        self.reconnection_data: str | None = None
        self.resumed = False  # took over its old tokens after a RECONNECT (relay.conn.reconnect)

        self.sx = 0
        self.sy = 0
        self.windows: dict[int, WindowState] = {}
        self.panes: dict[int, PaneState] = {}
        self.active_window: int | None = None
        self.status: m.Status = m.Status("", "")
        self._window_stack: list[int] = []  # previously current windows, most recent first

        self.other_commands: deque[tuple[str, ...]] = deque(maxlen=100)  # ignored, log-worthy
        self.notes: deque[str] = deque(maxlen=100)  # log-worthy oddities
        self.config = ReplicatedConfig(self.notes)  # the replicated host configuration
        self.generation = 0  # bumped on every state change other than pane output
        # Named sessions (relay.tmate.names): with them the lines wait for READY, and the session
        # process asks the master for the names in `names_wanted`, then calls names_given().
        self.named_sessions = named_sessions
        self.names_wanted: NameRequest | None = None
        if named_sessions is not None:
            self.config.named_sessions_notice = None if named_sessions else NOT_OFFERED

    # ------------------------------------------------------------------ entry point
    def handle(self, msg: m.HostMessage) -> Replies:
        """Apply one host message; return the relay messages to send back to the host."""
        if self.protocol is None and not isinstance(msg, m.Header):
            raise SessionError(f"{type(msg).__name__} before HEADER")
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            raise SessionError(f"unexpected message {type(msg).__name__}")
        return handler(self, msg) or []

    # ------------------------------------------------------------------ handlers
    def _header(self, msg: m.Header) -> Replies:
        if self.protocol is not None:
            raise SessionError("second HEADER")
        if msg.protocol < 1:
            raise SessionError(f"bad protocol version {msg.protocol}")
        self.protocol = msg.protocol
        # Protocol < 3 carries no client version; the C server assumes 1.8.5.
        self.client_version = msg.client_version if msg.protocol >= 3 else (msg.client_version or "1.8.5")
        if msg.protocol < 6:
            # Older clients send no READY: the C server treats the HEADER as ready.
            self.host_ready = True
        if lines.wait_for_ready(self.named_sessions, self.web_url, self.host_ready):
            self.lines_due = True
            return []
        return self._connection_lines()

    def _connection_lines(self) -> Replies:
        """The note and the links, then READY (relay.tmate.lines); `tmate -a`: no web links."""
        web_url = None if self.authorized_keys else self.web_url
        web = lines.web_links(web_url, self.ro_token, self.rw_token)
        ssh = (self.ssh_ro, self.ssh_rw)
        return lines.connection_lines(self.protocol or 0, ssh, web, resumed=self.resumed)

    def _ready(self, msg: m.HostReady) -> Replies:
        self.host_ready = True
        self.generation += 1
        if self.lines_due:
            self.lines_due = False
            wanted = lines.names_at_ready(self.config, self.named_sessions, self.resumed)
            if wanted is not None:
                self.names_wanted = wanted  # the lines follow the master's answer (names_given)
                return []
            return self._connection_lines()
        return []

    def names_given(self, rw_token: str, ro_token: str, notice: str | None) -> Replies:
        """The master's answer to `names_wanted`: the session's tokens from now on and, when it
        keeps its random ones, why; then the lines and READY."""
        self.names_wanted = None
        self.rw_token, self.ro_token = rw_token, ro_token
        self.ssh_rw = ssh_connection_string(rw_token, self.ssh_host, self.ssh_port)
        self.ssh_ro = ssh_connection_string(ro_token, self.ssh_host, self.ssh_port)
        self.generation += 1
        return lines.after_names(notice, self._connection_lines())

    def _fin(self, msg: m.Fin) -> None:
        self.finished = True
        self.generation += 1

    def _uname(self, msg: m.Uname) -> None:
        self.uname = msg

    def _status(self, msg: m.Status) -> None:
        if msg != self.status:
            self.status = msg
            self.generation += 1

    def _failed_cmd(self, msg: m.FailedCmd) -> None:
        """Nothing to keep: the session process shows the cause to the viewer whose command failed."""

    def _reconnect(self, msg: m.Reconnect) -> None:
        # Differs from the C server, which closes the session (it needs its websocket server for
        # reconnections): the session process asks the master (relay.conn.reconnect).
        self.reconnection_data = msg.data

    def _sync_layout(self, msg: m.SyncLayout) -> None:
        _check_dim("session", msg.sx, msg.sy)
        windows, geoms = self._checked_layout(msg)
        # Apply: drop vanished panes, resize changed ones, create new ones.
        for pid in [pid for pid in self.panes if pid not in geoms]:
            self.panes.pop(pid).model.close()
        share = self.history_budget // max(len(geoms), 1)  # each pane's part of the history budget
        for pid, (widx, g) in geoms.items():
            cols, rows = max(g.sx, 1), max(g.sy, 1)
            pane = self.panes.get(pid)
            if pane is None:
                # The terminal model allocates its native terminal on first use (lazily).
                model = TerminalModel(cols, rows, self.history_lines, history_budget=share)
                self.panes[pid] = PaneState(pid, widx, g.sx, g.sy, g.xoff, g.yoff, model)
                continue
            # Differs from the C server, which closes the session when a pane shows up in
            # another window; break-pane / join-pane on the host legitimately move panes.
            pane.window_idx = widx
            pane.xoff, pane.yoff = g.xoff, g.yoff
            if (pane.sx, pane.sy) != (g.sx, g.sy):
                pane.sx, pane.sy = g.sx, g.sy
                pane.model.resize(cols, rows)
            pane.model.set_history_budget(share)
        if self.active_window is not None and msg.active_window != self.active_window:
            # tmux's last-window stack: the previously current window goes on top.
            prev = self.active_window
            self._window_stack = [prev] + [
                w for w in self._window_stack if w not in (prev, msg.active_window)
            ][: MAX_WINDOW_STACK - 1]
        self.windows = windows
        self.sx, self.sy = msg.sx, msg.sy
        self.active_window = msg.active_window
        self.generation += 1

    def _checked_layout(
        self, msg: m.SyncLayout
    ) -> tuple[dict[int, WindowState], dict[int, tuple[int, m.PaneGeom]]]:
        """The layout's windows and its panes' (window index, geometry), validated before the
        session changes anything."""
        windows: dict[int, WindowState] = {}
        geoms: dict[int, tuple[int, m.PaneGeom]] = {}
        cells = 0
        for w in msg.windows:
            if w.idx in windows:
                raise SessionError(f"duplicate window index {w.idx}")
            ids = []
            for p in w.panes:
                if p.id in geoms:
                    raise SessionError(f"duplicate pane id {p.id}")
                if len(geoms) >= self.max_panes:
                    raise SessionError(f"too many panes (max {self.max_panes})")
                if p.id < 0:
                    raise SessionError(f"bad pane id {p.id}")
                _check_dim(f"pane {p.id}", p.sx, p.sy)
                if not (0 <= p.xoff <= MAX_PANE_DIM and 0 <= p.yoff <= MAX_PANE_DIM):
                    raise SessionError(f"pane {p.id} offset {p.xoff},{p.yoff} out of range")
                cells += max(p.sx, 1) * max(p.sy, 1)
                if cells > self.max_cells:
                    raise SessionError(
                        f"too many cells: the panes' sizes add up to more than {self.max_cells} "
                        f"(limit max-session-cells, at pane {p.id} of {p.sx}x{p.sy})"
                    )
                geoms[p.id] = (w.idx, p)
                ids.append(p.id)
            if w.active_pane not in ids:
                raise SessionError(f"window {w.idx}: active pane {w.active_pane} not in window")
            windows[w.idx] = WindowState(w.idx, w.name, tuple(ids), w.active_pane)
        if msg.active_window not in windows:
            raise SessionError(f"active window {msg.active_window} not in layout")
        return windows, geoms

    def _pty_data(self, msg: m.PtyData) -> None:
        pane = self.panes.get(msg.pane_id)
        if pane is None:
            raise SessionError(f"unknown pane id {msg.pane_id}")
        pane.model.feed(msg.data)

    def _copy_mode_pane(self, pane_id: int, what: str) -> PaneState | None:
        pane = self.panes.get(pane_id)
        if pane is None:
            # Differs from the C server (fatal): harmless to drop, so never reject a host for it.
            self.notes.append(f"{what} for unknown pane id {pane_id} ignored")
        return pane

    def _sync_copy_mode(self, msg: m.SyncCopyMode) -> None:
        pane = self._copy_mode_pane(msg.pane_id, "SYNC_COPY_MODE")
        if pane is None:
            return
        if msg.mode is None:
            pane.in_mode = False
            pane.copy_mode = None
            pane.message_lines.clear()
        else:
            if not pane.in_mode:
                pane.in_mode = True
                pane.message_lines.clear()  # entering a fresh view (backed or output-only)
            pane.copy_mode = msg.mode
        self.generation += 1

    def _write_copy_mode(self, msg: m.WriteCopyMode) -> None:
        pane = self._copy_mode_pane(msg.pane_id, "WRITE_COPY_MODE")
        if pane is None:
            return
        if not pane.in_mode:
            pane.in_mode = True
            pane.copy_mode = None
            pane.message_lines.clear()
        pane.message_lines.append(msg.text)
        self.generation += 1

    def _snapshot(self, msg: m.Snapshot) -> None:
        for sp in msg.panes:
            pane = self.panes.get(sp.pane_id)
            if pane is None:
                raise SessionError(f"unknown pane id {sp.pane_id} (snapshot)")
            pane.model.reset()
            pane.model.feed(snapshot_vt(sp))
        self.generation += 1

    def _exec_cmd(self, msg: m.ExecCmd) -> Replies:
        late = lines.late_name_notice(msg.argv, self.named_sessions, self.host_ready)
        return late + self._apply_command(tuple(msg.argv))

    def _exec_cmd_str(self, msg: m.ExecCmdStr) -> Replies:
        # Old clients send commands as one string, parsed by tmux's rules (`;` separates them).
        try:
            commands = parse_commands(msg.command)
        except CommandSyntaxError as e:
            self.notes.append(f"unparsable command string ({e}): {msg.command[:80]!r}")
            return []
        out: Replies = []
        for argv in commands:
            out += self._apply_command(argv)
        return out

    def _apply_command(self, argv: tuple[str, ...]) -> Replies:
        """A replicated command: applied to `config`; any other is kept in `other_commands`."""
        if not argv:
            return []
        name, args = argv[0], argv[1:]
        command = COMMANDS.get(name)
        if command is None:
            self.other_commands.append(argv)
            return []
        try:
            out = command(self.config, args)
        except UsageError as e:
            self.notes.append(f"{name}: {e}")
            return []
        except ConfigFlood as e:
            raise SessionError(str(e)) from None
        self.generation += 1
        return out

    # ------------------------------------------------------------------ convenience for readers
    @property
    def key_tables(self) -> dict[str, KeyTable]:
        return self.config.key_tables

    @property
    def mode_key_tables(self) -> dict[str, KeyTable]:
        return self.config.mode_key_tables

    @property
    def options(self) -> dict[str, str]:
        return self.config.options

    @property
    def window_options(self) -> dict[str, str]:
        return self.config.window_options

    @property
    def server_options(self) -> dict[str, str]:
        return self.config.server_options

    @property
    def tmate_values(self) -> dict[str, str]:
        return self.config.tmate_values

    @property
    def authorized_keys(self) -> list[tuple[str, str]] | None:
        return self.config.authorized_keys

    def option(self, name: str, default: str | None = None) -> str | None:
        """An option's value, looking at session, window then server options."""
        return self.config.option(name, default)

    @property
    def last_window(self) -> int | None:
        """The window tmux marks `-` in the window list: the most recent previously current
        window that still exists."""
        for idx in self._window_stack:
            if idx in self.windows and idx != self.active_window:
                return idx
        return None

    @property
    def current_window(self) -> WindowState | None:
        return self.windows.get(self.active_window) if self.active_window is not None else None

    def close(self) -> None:
        """Free every pane's terminal model."""
        for pane in self.panes.values():
            pane.model.close()
        self.panes.clear()


# Each handler takes its own message class (a dict keyed by class cannot say so: Any).
_HANDLERS: dict[type, Callable[[Session, Any], Replies | None]] = {
    m.Header: Session._header,
    m.SyncLayout: Session._sync_layout,
    m.PtyData: Session._pty_data,
    m.ExecCmdStr: Session._exec_cmd_str,
    m.FailedCmd: Session._failed_cmd,
    m.Status: Session._status,
    m.SyncCopyMode: Session._sync_copy_mode,
    m.WriteCopyMode: Session._write_copy_mode,
    m.Fin: Session._fin,
    m.HostReady: Session._ready,
    m.Reconnect: Session._reconnect,
    m.Snapshot: Session._snapshot,
    m.ExecCmd: Session._exec_cmd,
    m.Uname: Session._uname,
}
