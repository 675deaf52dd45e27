"""Key tables and dispatch: one viewer's keys -> what to do (sans-IO: time is passed in as `now`).

tmux 2.4's key tables as the C server applies them to a viewer (server-client.c): root table,
prefix / prefix2, one key in the prefix table, repeat (-r) bindings for `repeat-time`,
`assume-paste-time`, read-only clients. `KeyDispatcher` returns relay.tmate.messages objects ready
to send to the host (PaneKey / LegacyPaneKey already encoded for the host's protocol version,
ViewerExecCmd / ViewerExecCmdStr), `Local` for commands the relay runs itself, and `Notice` for a
message to show the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.input.commands import LOCAL_COMMANDS, READONLY_COMMANDS, canonical_command
from relay.input.encode import encode_command, encode_key
from relay.input.keycodes import (
    DEFAULT_PREFIX,
    KEY_PASTE_END,
    KEY_PASTE_START,
    KEYC_ESCAPE,
    KEYC_FOCUS_IN,
    KEYC_FOCUS_OUT,
    KEYC_NONE,
    KEYC_UNKNOWN,
    is_mouse_key,
    key_from_name,
)
from relay.tmate.session import Binding
from relay.tmux.args import getopt
from relay.tmux.cmdline import split_commands
from relay.tmux.options import number


@dataclass(frozen=True, slots=True)
class Local:
    """A command for the relay itself: `name` is the canonical command name, `argv` the words
    as bound (argv[0] may be an alias). A caller that does not implement `name` should show
    the viewer a "not supported" message. switch-client's -r (toggle read-only) must never be
    honoured."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for the viewer's status line (e.g. "client is read-only")."""

    text: str


# Bytes a bracketed-paste-aware application expects around pasted text, as key codes.
_PASTE_OPEN = [ord("[") | KEYC_ESCAPE, *b"200~"]
_PASTE_CLOSE = [ord("[") | KEYC_ESCAPE, *b"201~"]


class KeyDispatcher:
    """One viewer's key handling (tmux 2.4 server_client_handle_key, as the C server runs it).

    `key(code, now)` returns a list of: relay.tmate.messages objects to send to the host as they
    are (PaneKey, LegacyPaneKey, ViewerExecCmd, ViewerExecCmdStr), `Local` commands and `Notice`
    texts, in order. Keys typed while the
    caller shows this viewer a prompt or menu belong to that UI, not here.
    """

    def __init__(self, session, client_id: int, readonly: bool):
        self.session = session
        self.client_id = client_id
        self.readonly = readonly
        self.table = self.root_table  # this viewer's current key table
        self.repeating = False  # in a -r binding's repeat window
        self._repeat_deadline: float | None = None
        self._last_key: float | None = None
        self._pasting = False  # assume-paste-time state
        self._in_paste = False  # between KEY_PASTE_START and KEY_PASTE_END
        self._paste_wrapped = False
        self._gen: int | None = None
        self._tables: dict[str, dict[int, Binding]] = {}
        self._prefix = DEFAULT_PREFIX
        self._prefix2 = KEYC_NONE

    # ------------------------------------------------------------ state from the session
    def _refresh(self) -> None:
        s = self.session
        if self._gen == s.generation:
            return
        tables: dict[str, dict[int, Binding]] = {}
        for tname, bindings in s.key_tables.items():
            t: dict[int, Binding] = {}
            for kname, bd in bindings.items():
                code = key_from_name(kname)
                if code is not None and code != KEYC_NONE:
                    t[code] = bd
            tables[tname] = t
        self._tables = tables
        p = key_from_name(s.option("prefix") or "")
        self._prefix = DEFAULT_PREFIX if p is None else p
        p2 = key_from_name(s.option("prefix2") or "")
        self._prefix2 = KEYC_NONE if p2 is None else p2
        self._gen = s.generation

    @property
    def root_table(self) -> str:
        return self.session.option("key-table") or "root"

    @property
    def protocol(self) -> int | None:
        return self.session.protocol

    # ------------------------------------------------------------ timers
    def pending_timeout(self, now: float) -> float | None:
        """Seconds until a repeat window ends (call `expire` then), None if none is open."""
        if self._repeat_deadline is None:
            return None
        return max(0.0, self._repeat_deadline - now)

    def expire(self, now: float) -> bool:
        """End the repeat window if repeat-time has passed; True if the key table changed."""
        if self.repeating and self._repeat_deadline is not None and now >= self._repeat_deadline:
            self._set_table(None)
            return True
        return False

    def _set_table(self, name: str | None) -> None:
        self.table = name or self.root_table
        self.repeating = False
        self._repeat_deadline = None

    # ------------------------------------------------------------ keys
    def keys(self, codes, now: float) -> list:
        out: list = []
        for c in codes:
            out += self.key(c, now)
        return out

    def key(self, code: int, now: float) -> list:
        self._refresh()
        if code == KEY_PASTE_START:
            self._in_paste = True
            self._paste_wrapped = not self.readonly and self._pane_wants_bracketed_paste()
            return self._send_keys(_PASTE_OPEN) if self._paste_wrapped else []
        if code == KEY_PASTE_END:
            self._in_paste = False
            wrapped, self._paste_wrapped = self._paste_wrapped, False
            return self._send_keys(_PASTE_CLOSE) if wrapped else []
        if self._in_paste:
            return self._forward(code)  # pasted text never runs bindings
        if code in (KEYC_NONE, KEYC_UNKNOWN) or code >= 1 << 48:
            return []
        if code in (KEYC_FOCUS_IN, KEYC_FOCUS_OUT) or is_mouse_key(code):
            return []  # not supported (as the C server)
        self.expire(now)
        if self._assume_paste(now):
            return self._forward(code)
        while True:
            table = self._tables.get(self.table, {})
            bd = table.get(code)
            if bd is not None:
                if self.repeating and not bd.repeat:
                    self._set_table(None)  # left the repeat: look again from root
                    continue
                repeat_ms = number(self.session.option("repeat-time"), 500)
                if repeat_ms and bd.repeat:
                    self.repeating = True
                    self._repeat_deadline = now + repeat_ms / 1000
                else:
                    self._set_table(None)
                return self._run_binding(bd)
            if self.repeating:
                self._set_table(None)
                continue
            if self.table != self.root_table:
                self._set_table(None)  # not bound in this table: dropped
                return []
            if code == self._prefix or code == self._prefix2:
                self.table = "prefix"
                return []
            return self._forward(code)

    def _assume_paste(self, now: float) -> bool:
        """tmux's assume-paste-time: from the third key arriving less than that many ms after
        the previous one, keys go to the pane without looking at bindings."""
        t = number(self.session.option("assume-paste-time"), 1, 0, 2**31 - 1)
        last, self._last_key = self._last_key, now
        if t == 0 or last is None or not 0 <= now - last < t / 1000:
            self._pasting = False
            return False
        if self._pasting:
            return True
        self._pasting = True
        return False

    def _pane_wants_bracketed_paste(self) -> bool:
        w = self.session.current_window
        pane = self.session.panes.get(w.active_pane) if w is not None else None
        if pane is None or pane.in_mode:
            return False
        try:
            return bool(pane.model.mode(2004))
        except Exception:
            return False

    def _forward(self, code: int) -> list:
        if self.readonly:
            return []
        return encode_key(code, self.protocol)

    def _send_keys(self, codes) -> list:
        out: list = []
        for c in codes:
            out += encode_key(c, self.protocol)
        return out

    # ------------------------------------------------------------ commands
    def _run_binding(self, bd: Binding) -> list:
        cmds = split_commands(bd.command)
        if self.readonly and not all(canonical_command(c[0]) in READONLY_COMMANDS for c in cmds):
            return [Notice("client is read-only")]
        out: list = []
        for argv in cmds:
            out += self._command(argv)
        return out

    def run_command(self, argv) -> list:
        """Run a command the viewer gave outside a key binding (e.g. typed at a prompt the
        relay shows), with the same routing and read-only rule as a binding's command."""
        argv = tuple(argv)
        if not argv:
            return []
        if self.readonly and canonical_command(argv[0]) not in READONLY_COMMANDS:
            return [Notice("client is read-only")]
        return self._command(argv)

    def _command(self, argv: tuple[str, ...]) -> list:
        name = canonical_command(argv[0])
        if name == "send-prefix":
            flags, _ = getopt(argv[1:], "t")
            if "t" not in flags:
                key = self._prefix2 if "2" in flags else self._prefix
                return encode_key(key, self.protocol)
        elif name == "switch-client":
            flags, _ = getopt(argv[1:], "ctT")
            if "T" in flags:
                tname = str(flags["T"])
                if tname not in self._tables:
                    return [Notice(f"table {tname} doesn't exist")]
                self.table = tname
                self.repeating = False
                self._repeat_deadline = None
                return []
        if name in LOCAL_COMMANDS:
            return [Local(name, argv)]
        return [encode_command(argv, self.protocol, self.client_id)]
