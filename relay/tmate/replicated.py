"""The host's replicated configuration and the commands that change it.

At start (and after a reconnection) the host replays its key tables and options as EXEC_CMD
(old clients: EXEC_CMD_STR); the relay keeps its own copy, which the viewers' key dispatch and
screens read. The commands: bind-key, unbind-key, set-option, set-window-option (and their
aliases). Flags follow tmux's getopt strictly: a bad command is a `UsageError` (noted by the
session, not fatal); a flood past `MAX_BINDINGS` / `MAX_OPTIONS` is a `ConfigFlood`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.tmate import messages as m
from relay.tmux.args import UsageError, getopt
from relay.tmux.options import flag

__all__ = [
    "Binding",
    "ConfigFlood",
    "ReplicatedConfig",
    "COMMANDS",
    "MAX_BINDINGS",
    "MAX_OPTIONS",
    "NAMED_SESSIONS_UNSUPPORTED",
    "option_set",
]

# Bounds on the replicated configuration (a default tmate config has 83 bindings, 6 options):
# past them a host is flooding, not configuring.
MAX_BINDINGS = 10000
MAX_OPTIONS = 10000
# Notice the C server sends once when the host asks for a named session (needs a websocket server).
NAMED_SESSION_OPTIONS = ("tmate-api-key", "tmate-session-name", "tmate-session-name-ro")
NAMED_SESSIONS_UNSUPPORTED = "Named sessions are not supported (no websocket server)"

KeyTable = dict[str, "Binding"]
Flags = dict[str, str | bool]


class ConfigFlood(Exception):
    """The host went past a bound of the replicated configuration; str() says which."""


@dataclass(frozen=True, slots=True)
class Binding:
    command: tuple[str, ...]
    repeat: bool = False  # bind-key -r
    flags: tuple[str, ...] = ()  # other flags as given (e.g. "-c")


class ReplicatedConfig:
    """Key tables, options, tmate values and authorized keys as the host's commands set them.
    Oddities that are not errors go to `notes` (the session's)."""

    def __init__(self, notes: deque[str]):
        self.key_tables: dict[str, KeyTable] = {"prefix": {}, "root": {}}
        self.mode_key_tables: dict[str, KeyTable] = {}  # bind-key -t (vi-copy, ...)
        self.options: dict[str, str] = {}  # set-option [-g]: session/global options
        self.window_options: dict[str, str] = {}  # set-window-option, set-option -w
        self.server_options: dict[str, str] = {}  # set-option -s
        self.tmate_values: dict[str, str] = {}  # set-option tmate-set NAME=VALUE
        # Viewer access restriction (tmate -a FILE): None = anyone with the token; otherwise the
        # list of (key type, base64 blob) public keys allowed, possibly empty.
        self.authorized_keys: list[tuple[str, str]] | None = None
        self._notes = notes
        self._named_session_warned = False
        # Told once when the host asks for a name: the C server's text by default; the relay's
        # session process sets its own, or None where it names sessions (relay.tmate.names).
        self.named_sessions_notice: str | None = NAMED_SESSIONS_UNSUPPORTED

    def option(self, name: str, default: str | None = None) -> str | None:
        """An option's value, looking at session, window then server options."""
        for store in (self.options, self.window_options, self.server_options):
            if name in store:
                return store[name]
        return default

    # ------------------------------------------------------------------ key bindings
    def bind_key(self, args: tuple[str, ...]) -> list[m.RelayMessage]:
        flags, rest = getopt(args, "tT", known="cnr")
        if len(rest) < 2:
            raise UsageError("bind-key needs a key and a command")
        key, command = rest[0], tuple(rest[1:])
        binding = Binding(command, repeat="r" in flags, flags=tuple(f"-{f}" for f in flags if f in "c"))
        tables, name = self._tables(flags)
        table = tables.setdefault(name, {})
        if key not in table and self._binding_count() >= MAX_BINDINGS:
            raise ConfigFlood(f"too many key bindings (max {MAX_BINDINGS})")
        table[key] = binding
        return []

    def unbind_key(self, args: tuple[str, ...]) -> list[m.RelayMessage]:
        flags, rest = getopt(args, "tT", known="acn")
        tables, name = self._tables(flags)
        table = tables.get(name)
        if "a" in flags:
            if table is not None:
                table.clear()
        elif not rest:
            raise UsageError("unbind-key needs a key")
        elif table is not None:
            table.pop(rest[0], None)
        return []

    def _tables(self, flags: Flags) -> tuple[dict[str, KeyTable], str]:
        """The tables a -t (mode table) / -T (key table) / -n (root) choice is in, and its name."""
        mode_table = flags.get("t")
        if isinstance(mode_table, str):
            return self.mode_key_tables, mode_table
        key_table = flags.get("T")
        if isinstance(key_table, str) and key_table:
            return self.key_tables, key_table
        return self.key_tables, "root" if "n" in flags else "prefix"

    def _binding_count(self) -> int:
        tables = (*self.key_tables.values(), *self.mode_key_tables.values())
        return sum(len(t) for t in tables)

    # ------------------------------------------------------------------ options
    def set_option(self, args: tuple[str, ...], window: bool = False) -> list[m.RelayMessage]:
        flags, rest = getopt(args, "t", known="agoqsuw")
        if not rest or not rest[0]:
            raise UsageError("set-option needs an option name")
        name = rest[0]
        value = rest[1] if len(rest) > 1 else None
        unset = "u" in flags
        out = [] if unset else self._tmate_option_hooks(name, value)
        if window or "w" in flags:
            store = self.window_options
        elif "s" in flags:
            store = self.server_options
        else:
            store = self.options
        if name not in store and not unset and self._option_count() >= MAX_OPTIONS:
            raise ConfigFlood(f"too many options (max {MAX_OPTIONS})")
        if unset:
            store.pop(name, None)
        elif "o" in flags and name in store:
            pass
        elif value is None:
            # tmux toggles a flag option given without a value.
            store[name] = "off" if flag(store.get(name), False) else "on"
        elif "a" in flags:
            store[name] = store.get(name, "") + value
        else:
            store[name] = value
        return out

    def set_window_option(self, args: tuple[str, ...]) -> list[m.RelayMessage]:
        return self.set_option(args, window=True)

    def _option_count(self) -> int:
        stores = (self.options, self.window_options, self.server_options, self.tmate_values)
        return sum(len(s) for s in stores)

    def _tmate_option_hooks(self, name: str, value: str | None) -> list[m.RelayMessage]:
        """Side effects the C server gives some options before storing them."""
        if name == "tmate-authorized-keys":
            self.authorized_keys = []
        elif name == "tmate-set" and value is not None and "=" in value:
            key, val = value.split("=", 1)
            if key not in self.tmate_values and len(self.tmate_values) >= MAX_OPTIONS:
                raise ConfigFlood(f"too many options (max {MAX_OPTIONS})")
            self.tmate_values[key] = val
            if key == "authorized_keys":
                self._authorize(val)
        elif name in NAMED_SESSION_OPTIONS and self.named_sessions_notice and not self._named_session_warned:
            self._named_session_warned = True
            return [m.Notify(self.named_sessions_notice)]
        return []

    def _authorize(self, line: str) -> None:
        """One `tmate-set authorized_keys=TYPE BLOB [COMMENT]`."""
        parts = line.split(" ")
        if self.authorized_keys is None:
            self.authorized_keys = []
        if len(self.authorized_keys) >= MAX_OPTIONS:
            raise ConfigFlood(f"too many authorized keys (max {MAX_OPTIONS})")
        if len(parts) >= 2 and parts[0] and parts[1]:
            self.authorized_keys.append((parts[0], parts[1]))
        else:
            self._notes.append("malformed authorized key ignored")


def option_set(argv: Sequence[str]) -> tuple[str, str] | None:
    """(NAME, VALUE) of a replicated `set-option [-g...] NAME VALUE` (or `set`), read with
    set_option's flags; None for another command, a bad one, an unset (-u) or a toggle."""
    if not argv or argv[0] not in ("set-option", "set"):
        return None
    try:
        flags, rest = getopt(tuple(argv[1:]), "t", known="agoqsuw")
    except UsageError:
        return None
    if "u" in flags or len(rest) != 2:
        return None
    return rest[0], rest[1]


# The replicated commands by name; each returns the messages to send back to the host.
COMMANDS: dict[str, Callable[[ReplicatedConfig, tuple[str, ...]], list[m.RelayMessage]]] = {
    "bind-key": ReplicatedConfig.bind_key,
    "bind": ReplicatedConfig.bind_key,
    "unbind-key": ReplicatedConfig.unbind_key,
    "unbind": ReplicatedConfig.unbind_key,
    "set-option": ReplicatedConfig.set_option,
    "set": ReplicatedConfig.set_option,
    "set-window-option": ReplicatedConfig.set_window_option,
    "setw": ReplicatedConfig.set_window_option,
}
