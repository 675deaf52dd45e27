"""Sans-IO state of one tmate session, fed the host's typed messages (relay.tmate.messages).

`Session.handle(msg)` updates the state and returns the messages to send back to the host. The
state is laid out for a renderer to read directly: `windows` (by index, in the host's order),
`panes` (by id, each with its `TerminalModel`), `active_window`, `sx`/`sy`, `status`, per-pane copy
mode and message-view lines, the replicated key tables and options.

Behaviour follows tmate-ssh-server (the C server, tmate 2.4 protocol) where it defines it; the
places where this module deliberately differs are marked "Differs from the C server".
"""

from __future__ import annotations

import shlex
from collections import deque
from dataclasses import dataclass, field

from relay.screen.terminal import TerminalModel
from relay.tmate import messages as m
from relay.tmux.args import UsageError, getopt

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
# Bounds on the replicated configuration (a default tmate config has 83 bindings, 6 options):
# past them a host is flooding, not configuring.
MAX_BINDINGS = 10000
MAX_OPTIONS = 10000
# Bound on the message-view lines kept per pane (tmate shows its notices there).
MAX_MESSAGE_LINES = 1000
MAX_WINDOW_STACK = 32  # previously current windows remembered for last-window
# Notice the C server sends once when the host asks for a named session (needs a websocket server).
NAMED_SESSION_OPTIONS = ("tmate-api-key", "tmate-session-name", "tmate-session-name-ro")
NAMED_SESSIONS_UNSUPPORTED = "Named sessions are not supported (no websocket server)"


class SessionError(Exception):
    """A protocol violation: the host connection should be closed. str() is a one-line reason."""


def ssh_connection_string(token: str, host: str, port: int) -> str:
    """`ssh -pPORT TOKEN@HOST`, without the port part for port 22 (as the C server prints it)."""
    port_arg = "" if port == 22 else f" -p{port}"
    return f"ssh{port_arg} {token}@{host}"


@dataclass(frozen=True, slots=True)
class Binding:
    command: tuple[str, ...]
    repeat: bool = False  # bind-key -r
    flags: tuple[str, ...] = ()  # other flags as given (e.g. "-c")


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
    message_lines: deque = field(default_factory=lambda: deque(maxlen=MAX_MESSAGE_LINES))

    @property
    def message_view(self) -> bool:
        """True while the pane shows tmate's message view (WRITE_COPY_MODE lines, not backed by
        the pane's own screen) until the user presses q."""
        return self.in_mode and (self.copy_mode is None or not self.copy_mode.backing)


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
    ):
        self.rw_token = rw_token
        self.ro_token = ro_token
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.max_panes = max_panes
        self.history_lines = history_lines
        self.ssh_rw = ssh_connection_string(rw_token, ssh_host, ssh_port)
        self.ssh_ro = ssh_connection_string(ro_token, ssh_host, ssh_port)

        self.protocol: int | None = None  # client protocol version from HEADER
        self.client_version: str | None = None
        self.host_ready = False
        self.finished = False
        self.uname: m.Uname | None = None
        self.reconnection_data: str | None = None

        self.sx = 0
        self.sy = 0
        self.windows: dict[int, WindowState] = {}
        self.panes: dict[int, PaneState] = {}
        self.active_window: int | None = None
        self.status: m.Status = m.Status("", "")
        self._window_stack: list[int] = []  # previously current windows, most recent first

        # Replicated host configuration.
        self.key_tables: dict[str, dict[str, Binding]] = {"prefix": {}, "root": {}}
        self.mode_key_tables: dict[str, dict[str, Binding]] = {}  # bind-key -t (vi-copy, ...)
        self.options: dict[str, str] = {}  # set-option [-g]: session/global options
        self.window_options: dict[str, str] = {}  # set-window-option, set-option -w
        self.server_options: dict[str, str] = {}  # set-option -s
        self.tmate_values: dict[str, str] = {}  # set-option tmate-set NAME=VALUE
        # Viewer access restriction (tmate -a FILE): None = anyone with the token; otherwise the
        # list of (key type, base64 blob) public keys allowed, possibly empty.
        self.authorized_keys: list[tuple[str, str]] | None = None

        self.other_commands: deque[tuple[str, ...]] = deque(maxlen=100)  # ignored, log-worthy
        self.failed_cmds: deque[tuple[int, str]] = deque(maxlen=100)  # for the viewer layer
        self.notes: deque[str] = deque(maxlen=100)  # log-worthy oddities
        self.generation = 0  # bumped on every state change other than pane output
        self._named_session_warned = False

    # ------------------------------------------------------------------ entry point
    def handle(self, msg) -> list:
        """Apply one host message; return the relay messages to send back to the host."""
        if self.protocol is None and not isinstance(msg, m.Header):
            raise SessionError(f"{type(msg).__name__} before HEADER")
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            raise SessionError(f"unexpected message {type(msg).__name__}")
        return handler(self, msg) or []

    @property
    def header_received(self) -> bool:
        return self.protocol is not None

    # ------------------------------------------------------------------ handlers
    def _header(self, msg: m.Header) -> list:
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
        out: list = [
            m.Notify("Note: clear your terminal before sharing readonly access"),
            m.Notify(f"ssh session read only: {self.ssh_ro}"),
        ]
        # SET_ENV and READY do not exist before protocol 4: the C server skips them.
        if msg.protocol >= 4:
            out.append(m.SetEnv("tmate_ssh_ro", self.ssh_ro))
        out.append(m.Notify(f"ssh session: {self.ssh_rw}"))
        if msg.protocol >= 4:
            out.append(m.SetEnv("tmate_ssh", self.ssh_rw))
            out.append(m.RelayReady())
        return out

    def _ready(self, msg: m.HostReady) -> None:
        self.host_ready = True
        self.generation += 1

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
        self.failed_cmds.append((msg.client_id, msg.cause))

    def _reconnect(self, msg: m.Reconnect) -> None:
        # Differs from the C server, which closes the session (it needs its websocket server for
        # reconnections). A client only sends this with data a server gave it; keep the session.
        self.reconnection_data = msg.data
        self.notes.append("RECONNECT ignored (reconnections not supported)")

    def _sync_layout(self, msg: m.SyncLayout) -> None:
        self._check_dim("session", msg.sx, msg.sy, allow_zero=True)
        new_windows: dict[int, WindowState] = {}
        geoms: dict[int, tuple[int, m.PaneGeom]] = {}
        # Validate everything before changing anything.
        for w in msg.windows:
            if w.idx in new_windows:
                raise SessionError(f"duplicate window index {w.idx}")
            ids = []
            for p in w.panes:
                if p.id in geoms:
                    raise SessionError(f"duplicate pane id {p.id}")
                if len(geoms) >= self.max_panes:
                    raise SessionError(f"too many panes (max {self.max_panes})")
                if p.id < 0:
                    raise SessionError(f"bad pane id {p.id}")
                self._check_dim(f"pane {p.id}", p.sx, p.sy, allow_zero=True)
                if not (0 <= p.xoff <= MAX_PANE_DIM and 0 <= p.yoff <= MAX_PANE_DIM):
                    raise SessionError(f"pane {p.id} offset {p.xoff},{p.yoff} out of range")
                geoms[p.id] = (w.idx, p)
                ids.append(p.id)
            if w.active_pane not in ids:
                raise SessionError(f"window {w.idx}: active pane {w.active_pane} not in window")
            new_windows[w.idx] = WindowState(w.idx, w.name, tuple(ids), w.active_pane)
        if msg.active_window not in new_windows:
            raise SessionError(f"active window {msg.active_window} not in layout")

        # Apply: drop vanished panes, resize changed ones, create new ones.
        for pid in [pid for pid in self.panes if pid not in geoms]:
            self.panes.pop(pid).model.close()
        for pid, (widx, g) in geoms.items():
            cols, rows = max(g.sx, 1), max(g.sy, 1)
            pane = self.panes.get(pid)
            if pane is None:
                self.panes[pid] = PaneState(
                    pid, widx, g.sx, g.sy, g.xoff, g.yoff, TerminalModel(cols, rows, self.history_lines)
                )
                continue
            # Differs from the C server, which closes the session when a pane shows up in
            # another window; break-pane / join-pane on the host legitimately move panes.
            pane.window_idx = widx
            pane.xoff, pane.yoff = g.xoff, g.yoff
            if (pane.sx, pane.sy) != (g.sx, g.sy):
                pane.sx, pane.sy = g.sx, g.sy
                pane.model.resize(cols, rows)
        if self.active_window is not None and msg.active_window != self.active_window:
            # tmux's last-window stack: the previously current window goes on top.
            prev = self.active_window
            self._window_stack = [prev] + [
                w for w in self._window_stack if w not in (prev, msg.active_window)
            ][: MAX_WINDOW_STACK - 1]
        self.windows = new_windows
        self.sx, self.sy = msg.sx, msg.sy
        self.active_window = msg.active_window
        self.generation += 1

    @staticmethod
    def _check_dim(what: str, sx: int, sy: int, allow_zero: bool) -> None:
        lo = 0 if allow_zero else 1
        if not (lo <= sx <= MAX_PANE_DIM and lo <= sy <= MAX_PANE_DIM):
            raise SessionError(f"{what} size {sx}x{sy} out of range")

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
            pane.model.feed(_snapshot_vt(sp))
        self.generation += 1

    def _exec_cmd(self, msg: m.ExecCmd) -> list:
        return self._apply_command(tuple(msg.argv))

    def _exec_cmd_str(self, msg: m.ExecCmdStr) -> list:
        # Old clients send the command as one string: shell-like words, commands split on `;`.
        try:
            words = shlex.split(msg.command, comments=False, posix=True)
        except ValueError:
            self.notes.append(f"unparsable command string: {msg.command[:80]!r}")
            return []
        out: list = []
        cmd: list[str] = []
        for w in words + [";"]:
            if w == ";":
                if cmd:
                    out += self._apply_command(tuple(cmd))
                cmd = []
            else:
                cmd.append(w)
        return out

    # ------------------------------------------------------------------ replicated commands
    def _apply_command(self, argv: tuple[str, ...]) -> list:
        if not argv:
            return []
        name, args = argv[0], argv[1:]
        fn = self._COMMANDS.get(name)
        if fn is None:
            self.other_commands.append(argv)
            return []
        try:
            return fn(self, args) or []
        except _Usage as e:
            self.notes.append(f"{name}: {e}")
            return []

    def _bind_key(self, args: tuple[str, ...]) -> None:
        flags, rest = _getopt(args, "cnr", "tT")
        if len(rest) < 2:
            raise _Usage("bind-key needs a key and a command")
        key, command = rest[0], tuple(rest[1:])
        binding = Binding(command, repeat="r" in flags, flags=tuple(f"-{f}" for f in flags if f in "c"))
        table = self._table_for(flags, create=True)
        if key not in table and self._count(self.key_tables, self.mode_key_tables) >= MAX_BINDINGS:
            raise SessionError(f"too many key bindings (max {MAX_BINDINGS})")
        table[key] = binding
        self.generation += 1

    def _unbind_key(self, args: tuple[str, ...]) -> None:
        flags, rest = _getopt(args, "acn", "tT")
        table = self._table_for(flags, create=False)
        if "a" in flags:
            if table is not None:
                table.clear()
        elif not rest:
            raise _Usage("unbind-key needs a key")
        elif table is not None:
            table.pop(rest[0], None)
        self.generation += 1

    @staticmethod
    def _count(*dicts_of_dicts: dict) -> int:
        return sum(len(d) for dd in dicts_of_dicts for d in dd.values())

    def _table_for(self, flags: dict, create: bool) -> dict | None:
        if "t" in flags:
            tables, name = self.mode_key_tables, flags["t"]
        else:
            tables = self.key_tables
            name = flags.get("T") or ("root" if "n" in flags else "prefix")
        if name not in tables:
            if not create:
                return None
            tables[name] = {}
        return tables[name]

    def _set_option(self, args: tuple[str, ...], window: bool = False) -> list:
        flags, rest = _getopt(args, "agoqsuw", "t")
        if not rest or not rest[0]:
            raise _Usage("set-option needs an option name")
        name = rest[0]
        value = rest[1] if len(rest) > 1 else None
        out: list = []
        if "u" not in flags:
            out += self._tmate_option_hooks(name, value)
        if window or "w" in flags:
            store = self.window_options
        elif "s" in flags:
            store = self.server_options
        else:
            store = self.options
        if (
            name not in store
            and "u" not in flags
            and self._count(
                {0: self.options, 1: self.window_options, 2: self.server_options, 3: self.tmate_values}
            )
            >= MAX_OPTIONS
        ):
            raise SessionError(f"too many options (max {MAX_OPTIONS})")
        if "u" in flags:
            store.pop(name, None)
        elif "o" in flags and name in store:
            pass
        elif value is None:
            # tmux toggles a flag option given without a value.
            store[name] = "off" if store.get(name) == "on" else "on"
        elif "a" in flags:
            store[name] = store.get(name, "") + value
        else:
            store[name] = value
        self.generation += 1
        return out

    def _set_window_option(self, args: tuple[str, ...]) -> list:
        return self._set_option(args, window=True)

    def _tmate_option_hooks(self, name: str, value: str | None) -> list:
        """Side effects the C server gives some options before storing them."""
        if name == "tmate-authorized-keys":
            self.authorized_keys = []
        elif name == "tmate-set" and value is not None and "=" in value:
            key, val = value.split("=", 1)
            if key not in self.tmate_values and len(self.tmate_values) >= MAX_OPTIONS:
                raise SessionError(f"too many options (max {MAX_OPTIONS})")
            self.tmate_values[key] = val
            if key == "authorized_keys":
                parts = val.split(" ")
                if self.authorized_keys is None:
                    self.authorized_keys = []
                if len(self.authorized_keys) >= MAX_OPTIONS:
                    raise SessionError(f"too many authorized keys (max {MAX_OPTIONS})")
                if len(parts) >= 2 and parts[0] and parts[1]:
                    self.authorized_keys.append((parts[0], parts[1]))
                else:
                    self.notes.append("malformed authorized key ignored")
        elif name in NAMED_SESSION_OPTIONS and not self._named_session_warned:
            self._named_session_warned = True
            return [m.Notify(NAMED_SESSIONS_UNSUPPORTED)]
        return []

    # ------------------------------------------------------------------ convenience for readers
    def option(self, name: str, default: str | None = None) -> str | None:
        """An option's value, looking at session, window then server options."""
        for store in (self.options, self.window_options, self.server_options):
            if name in store:
                return store[name]
        return default

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

    _HANDLERS = {
        m.Header: _header,
        m.SyncLayout: _sync_layout,
        m.PtyData: _pty_data,
        m.ExecCmdStr: _exec_cmd_str,
        m.FailedCmd: _failed_cmd,
        m.Status: _status,
        m.SyncCopyMode: _sync_copy_mode,
        m.WriteCopyMode: _write_copy_mode,
        m.Fin: _fin,
        m.HostReady: _ready,
        m.Reconnect: _reconnect,
        m.Snapshot: _snapshot,
        m.ExecCmd: _exec_cmd,
        m.Uname: _uname,
    }

    _COMMANDS = {
        "bind-key": _bind_key,
        "bind": _bind_key,
        "unbind-key": _unbind_key,
        "unbind": _unbind_key,
        "set-option": _set_option,
        "set": _set_option,
        "set-window-option": _set_window_option,
        "setw": _set_window_option,
    }


_Usage = UsageError


def _getopt(args: tuple[str, ...], bool_flags: str, arg_flags: str) -> tuple[dict, list[str]]:
    """Strict tmux getopt for replicated commands: an unknown flag or missing value is _Usage."""
    return getopt(args, arg_flags, known=bool_flags)


# ---------------------------------------------------------------------- snapshot restore
# tmux 2.x grid cell packing of SNAPSHOT lines: flags << 24 | attr << 16 | bg << 8 | fg.
_FLAG_FG256, _FLAG_BG256, _FLAG_PADDING, _FLAG_FGRGB, _FLAG_BGRGB = 0x1, 0x2, 0x4, 0x10, 0x20
_ATTR_SGR = ((0x1, "1"), (0x2, "2"), (0x4, "4"), (0x8, "5"), (0x10, "7"), (0x20, "8"), (0x40, "3"))
_ATTR_CHARSET = 0x80
_MODE_CURSOR = 0x1


def _colour_sgr(value: int, is256: bool, rgb: bool, base: int) -> str | None:
    if rgb:
        return None  # the packing keeps only one byte of an RGB colour
    if is256:
        return f"{base + 8};5;{value}"
    if value < 8:
        return str(base + value)
    if 90 <= value <= 97:  # aixterm bright colours
        return str(value + (base - 30))
    return None  # 8: default


def _snapshot_vt(sp: m.SnapshotPane) -> bytes:
    """VT bytes that repaint a SNAPSHOT pane: history and screen lines, then the cursor. With a
    saved grid the pane was on the alternate screen: the saved grid is the normal screen."""
    out: list[str] = []
    saved = getattr(sp, "saved", None)
    if saved is not None:
        _grid_vt(out, saved.lines, saved.cursor_x, saved.cursor_y)
        out.append("\x1b[?1049h\x1b[H")
    _grid_vt(out, sp.lines, sp.cursor_x, sp.cursor_y)
    if not sp.mode & _MODE_CURSOR:
        out.append("\x1b[?25l")
    return "".join(out).encode("utf-8", "replace")


def _grid_vt(out: list[str], lines, cursor_x: int, cursor_y: int) -> None:
    for n, line in enumerate(lines):
        if n:
            out.append("\r\n")
        chars = list(line.text)
        attrs = line.attrs
        skip_padding = len(chars) < len(attrs)
        ci = 0
        last = None
        for a in attrs:
            flags, attr, bg, fg = (a >> 24) & 0xFF, (a >> 16) & 0xFF, (a >> 8) & 0xFF, a & 0xFF
            if flags & _FLAG_PADDING:
                if not skip_padding:
                    ci += 1
                continue
            if ci >= len(chars):
                break
            ch = chars[ci]
            ci += 1
            if (flags, attr, bg, fg) != last:
                sgr = ["0"] + [code for bit, code in _ATTR_SGR if attr & bit]
                f = _colour_sgr(fg, bool(flags & _FLAG_FG256), bool(flags & _FLAG_FGRGB), 30)
                b = _colour_sgr(bg, bool(flags & _FLAG_BG256), bool(flags & _FLAG_BGRGB), 40)
                sgr += [c for c in (f, b) if c]
                out.append("\x1b[" + ";".join(sgr) + "m")
                out.append("\x1b(0" if attr & _ATTR_CHARSET else "\x1b(B")
                last = (flags, attr, bg, fg)
            out.append(ch)
        out.append("\x1b[0m\x1b(B")
    out.append(f"\x1b[{cursor_y + 1};{cursor_x + 1}H")
