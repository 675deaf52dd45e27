"""Keys and commands as messages for the host, in the encoding of its protocol version.

Protocol 6 (tmate 2.4) takes key codes as relay.input.keycodes has them and commands as words;
protocol 5 (tmate 2.2) has a shorter key enum; older hosts take 32-bit legacy keys and commands
as one string.
"""

from __future__ import annotations

from relay.input.keycodes import (
    KEYC_BASE,
    KEYC_BSPACE,
    KEYC_CTRL,
    KEYC_ESCAPE,
    KEYC_F1,
    KEYC_FOCUS_IN,
    KEYC_FOCUS_OUT,
    KEYC_IC,
    KEYC_KP_PERIOD,
    KEYC_MASK_KEY,
    KEYC_NONE,
    KEYC_SHIFT,
    KEYC_UNKNOWN,
    is_mouse_key,
)
from relay.tmate import messages as m
from relay.tmux.cmdline import quote_command

# Protocol < 5 (tmate 1.8): 32-bit keys, the old tmux key enum (tmate-ssh-server's
# tmate-daemon-legacy.c): base 0x1000, F1-F20, focus keys last, modifier bits 0x2000/0x4000/0x8000.
_LEGACY_BASE = 0x1000
_LEGACY_ESCAPE, _LEGACY_CTRL, _LEGACY_SHIFT = 0x2000, 0x4000, 0x8000
_LEGACY_KEYS: dict[int, int] = {KEYC_BSPACE: _LEGACY_BASE + 1}
_LEGACY_KEYS.update({KEYC_F1 + i: _LEGACY_BASE + 2 + i for i in range(12)})  # F13-F20 unused
_LEGACY_KEYS.update({k: _LEGACY_BASE + 22 + i for i, k in enumerate(range(KEYC_IC, KEYC_KP_PERIOD + 1))})
_LEGACY_KEYS[KEYC_FOCUS_IN] = _LEGACY_BASE + 22 + (KEYC_KP_PERIOD + 1 - KEYC_IC)
_LEGACY_KEYS[KEYC_FOCUS_OUT] = _LEGACY_KEYS[KEYC_FOCUS_IN] + 1
# Protocol 5 (tmate 2.2.0): its enum lacks the nine MouseDragEnd keys, so every key from
# KEYC_BSPACE on is 9 lower (tmate-ssh-server's tmate_client_pane_key).
_PROTO5_SHIFT = 9


def encode_key(code: int, protocol: int | None) -> list:
    """The messages that send key `code` to a pane of a host speaking `protocol`: [] for keys
    that cannot be sent (None/Unknown, mouse, relay-private codes)."""
    if code < 0 or code >= 1 << 48 or code in (KEYC_NONE, KEYC_UNKNOWN) or is_mouse_key(code):
        return []
    if protocol is None or protocol >= 6:
        return [m.PaneKey(-1, code)]
    if protocol == 5:
        if code & KEYC_BASE and code & KEYC_MASK_KEY >= KEYC_BSPACE:
            code -= _PROTO5_SHIFT
        return [m.PaneKey(-1, code)]
    # Protocol < 5: LEGACY_PANE_KEY always goes to the host's active pane.
    key = code & KEYC_MASK_KEY
    flags = (
        (_LEGACY_ESCAPE if code & KEYC_ESCAPE else 0)
        | (_LEGACY_CTRL if code & KEYC_CTRL else 0)
        | (_LEGACY_SHIFT if code & KEYC_SHIFT else 0)
    )
    if key >= KEYC_BASE:
        lk = _LEGACY_KEYS.get(key)
        return [] if lk is None else [m.LegacyPaneKey(flags | lk)]
    if key > 0x7F:
        if key > 0x10FFFF or 0xD800 <= key <= 0xDFFF:
            return []
        out = []
        for byte in chr(key).encode("utf-8"):  # one key per byte, modifiers on the first
            out.append(m.LegacyPaneKey(flags | byte))
            flags = 0
        return out
    return [m.LegacyPaneKey(flags | key)]


def encode_command(argv, protocol: int | None, client_id: int):
    """A command for the host to run on behalf of viewer `client_id`."""
    argv = tuple(argv)
    if protocol is None or protocol >= 6:
        return m.ViewerExecCmd(client_id, argv)
    return m.ViewerExecCmdStr(client_id, quote_command(argv))
