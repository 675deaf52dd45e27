"""Key codes and key names, as the host takes them.

The host is the real tmate client (a tmux 2.4 fork) and takes keys in *its own* encoding (tmate
2.4 `tmux.h`): a plain character is its Unicode code point; a control key is the control byte
itself (C-b is 0x02, C-Space is 0x00, Tab 0x09, Enter 0x0d, Escape 0x1b); the special keys are
`KEYC_BASE` plus their position in tmux's key enum; the modifiers are the bits `KEYC_ESCAPE`
(Meta), `KEYC_CTRL` and `KEYC_SHIFT`, which only special keys and Meta-characters carry (the host
drops a plain character carrying the CTRL or SHIFT bit). `key_from_name` / `key_to_name` follow
tmux 2.4's key-string.c: they read and print the names the host replicates in `bind-key` and
`set-option prefix`.

Relay-private key codes (`KEY_PASTE_START`, `KEY_PASTE_END`) lie above every tmux key code and are
never sent to the host.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------- key codes
# Values from tmate 2.4.0's tmux.h (identical in tmate-ssh-server's tmux.h).
KEYC_NONE = 0xFFFF00000000
KEYC_UNKNOWN = 0xFFFE00000000
KEYC_BASE = 0x100000000000
KEYC_ESCAPE = 0x200000000000  # Meta
KEYC_CTRL = 0x400000000000
KEYC_SHIFT = 0x800000000000
KEYC_MASK_MOD = KEYC_ESCAPE | KEYC_CTRL | KEYC_SHIFT
KEYC_MASK_KEY = (1 << 64) - 1 - KEYC_MASK_MOD

# The special-key enum, in tmux.h's order, starting at KEYC_BASE.
KEYC_FOCUS_IN = KEYC_BASE + 0
KEYC_FOCUS_OUT = KEYC_BASE + 1
KEYC_MOUSE = KEYC_BASE + 2  # unclassified mouse event
# Then 14 mouse events, each in three places (Pane, Status, Border): BASE+3 .. BASE+44.
_MOUSE_EVENTS = (
    "MouseDown1",
    "MouseDown2",
    "MouseDown3",
    "MouseUp1",
    "MouseUp2",
    "MouseUp3",
    "MouseDrag1",
    "MouseDrag2",
    "MouseDrag3",
    "MouseDragEnd1",
    "MouseDragEnd2",
    "MouseDragEnd3",
    "WheelUp",
    "WheelDown",
)
_MOUSE_PLACES = ("Pane", "Status", "Border")
KEYC_BSPACE = KEYC_MOUSE + 1 + 3 * len(_MOUSE_EVENTS)  # BASE+45
(
    KEYC_F1,
    KEYC_F2,
    KEYC_F3,
    KEYC_F4,
    KEYC_F5,
    KEYC_F6,
    KEYC_F7,
    KEYC_F8,
    KEYC_F9,
    KEYC_F10,
    KEYC_F11,
    KEYC_F12,
    KEYC_IC,
    KEYC_DC,
    KEYC_HOME,
    KEYC_END,
    KEYC_NPAGE,
    KEYC_PPAGE,
    KEYC_BTAB,
    KEYC_UP,
    KEYC_DOWN,
    KEYC_LEFT,
    KEYC_RIGHT,
    KEYC_KP_SLASH,
    KEYC_KP_STAR,
    KEYC_KP_MINUS,
    KEYC_KP_SEVEN,
    KEYC_KP_EIGHT,
    KEYC_KP_NINE,
    KEYC_KP_PLUS,
    KEYC_KP_FOUR,
    KEYC_KP_FIVE,
    KEYC_KP_SIX,
    KEYC_KP_ONE,
    KEYC_KP_TWO,
    KEYC_KP_THREE,
    KEYC_KP_ENTER,
    KEYC_KP_ZERO,
    KEYC_KP_PERIOD,
) = range(KEYC_BSPACE + 1, KEYC_BSPACE + 40)

KEY_TAB = 0x09
KEY_ENTER = 0x0D
KEY_ESCAPE = 0x1B
KEY_SPACE = 0x20
DEFAULT_PREFIX = 0x02  # C-b (options-table.c)

# Relay-private codes, above anything tmux uses (tmux codes stay below 2**48).
_RELAY_BASE = 1 << 56
KEY_PASTE_START = _RELAY_BASE + 1  # bracketed paste begins: keys until KEY_PASTE_END are text
KEY_PASTE_END = _RELAY_BASE + 2


def is_mouse_key(code: int) -> bool:
    return KEYC_MOUSE <= (code & KEYC_MASK_KEY) < KEYC_BSPACE


# ---------------------------------------------------------------------------------- key names
# Name table in key-string.c's order: where two names share a code, the first is the one printed.
_NAME_TABLE: list[tuple[str, int]] = [
    *((f"F{i + 1}", KEYC_F1 + i) for i in range(12)),
    ("IC", KEYC_IC),
    ("DC", KEYC_DC),
    ("Home", KEYC_HOME),
    ("End", KEYC_END),
    ("NPage", KEYC_NPAGE),
    ("PageDown", KEYC_NPAGE),
    ("PgDn", KEYC_NPAGE),
    ("PPage", KEYC_PPAGE),
    ("PageUp", KEYC_PPAGE),
    ("PgUp", KEYC_PPAGE),
    ("Tab", KEY_TAB),
    ("BTab", KEYC_BTAB),
    ("Space", KEY_SPACE),
    ("BSpace", KEYC_BSPACE),
    ("Enter", KEY_ENTER),
    ("Escape", KEY_ESCAPE),
    ("Up", KEYC_UP),
    ("Down", KEYC_DOWN),
    ("Left", KEYC_LEFT),
    ("Right", KEYC_RIGHT),
    ("KP/", KEYC_KP_SLASH),
    ("KP*", KEYC_KP_STAR),
    ("KP-", KEYC_KP_MINUS),
    ("KP7", KEYC_KP_SEVEN),
    ("KP8", KEYC_KP_EIGHT),
    ("KP9", KEYC_KP_NINE),
    ("KP+", KEYC_KP_PLUS),
    ("KP4", KEYC_KP_FOUR),
    ("KP5", KEYC_KP_FIVE),
    ("KP6", KEYC_KP_SIX),
    ("KP1", KEYC_KP_ONE),
    ("KP2", KEYC_KP_TWO),
    ("KP3", KEYC_KP_THREE),
    ("KPEnter", KEYC_KP_ENTER),
    ("KP0", KEYC_KP_ZERO),
    ("KP.", KEYC_KP_PERIOD),
    *(
        (ev + place, KEYC_MOUSE + 1 + 3 * i + j)
        for i, ev in enumerate(_MOUSE_EVENTS)
        for j, place in enumerate(_MOUSE_PLACES)
    ),
]
_NAME_TO_KEY: dict[str, int] = {}
for _n, _k in _NAME_TABLE:
    _NAME_TO_KEY.setdefault(_n.lower(), _k)
_KEY_TO_NAME: dict[int, str] = {}
for _n, _k in _NAME_TABLE:
    _KEY_TO_NAME.setdefault(_k, _n)

# Characters that keep an explicit CTRL bit instead of becoming a control byte ("C-1", "C-Enter").
CTRL_KEEP = frozenset(b"!#()+,-.0123456789:;<=>?'\r\t")
_HEX = frozenset("0123456789abcdefABCDEF")


def ctrl_key(key: int) -> int | None:
    """The control byte tmux uses for C-`key` (a character below KEYC_BASE), None if it has none:
    C-a..C-z -> 1..26, C-@..C-_ (and C-A..C-Z) -> 0..31, C-Space -> 0."""
    if 97 <= key <= 122:
        return key - 96
    if 64 <= key <= 95:
        return key - 64
    if key == 32:
        return 0
    return None


def key_from_name(name: str) -> int | None:
    """A tmux 2.4 key name ("C-b", "M-Up", "^B", "S-F5", "é", "0x41", "None") as a key code.
    Returns None for a name tmux would reject (KEYC_UNKNOWN), KEYC_NONE for "None"."""
    if not isinstance(name, str):
        return None
    s = name
    if s.lower() == "none":
        return KEYC_NONE
    if s.startswith("0x"):
        digits = ""
        for ch in s[2:]:
            if ch not in _HEX:
                break
            digits += ch
        if not digits or len(digits) > 4:
            return None
        return int(digits, 16)
    mods = 0
    if len(s) >= 2 and s[0] == "^":
        mods |= KEYC_CTRL
        s = s[1:]
    while len(s) >= 2 and s[1] == "-":
        mods |= {"c": KEYC_CTRL, "m": KEYC_ESCAPE, "s": KEYC_SHIFT}.get(s[0].lower(), 0)
        s = s[2:]
    if not s:
        return None
    if len(s) == 1 and ord(s) <= 127:
        key = ord(s)
        if key < 32 or key == 127:
            return None
    elif ord(s[0]) > 127:
        # A single non-ASCII character: its code point, modifiers kept as they are.
        if len(s) != 1 or 0xD800 <= ord(s) <= 0xDFFF:
            return None
        return ord(s) | mods
    else:
        named = _NAME_TO_KEY.get(s.lower())
        if named is None:
            return None
        key = named
    if key < KEYC_BASE and mods & KEYC_CTRL and key not in CTRL_KEEP:
        c = ctrl_key(key)
        if c is None:
            return None
        key = c
        mods &= ~KEYC_CTRL
    return key | mods


def key_to_name(code: int) -> str:
    """A key code as tmux 2.4 prints it ("C-b", "M-Up", "C-Space", "Enter", "é")."""
    if code == KEYC_NONE:
        return "None"
    if code == KEYC_UNKNOWN:
        return "Unknown"
    if code == KEYC_MOUSE:
        return "Mouse"
    if code == KEY_PASTE_START:
        return "PasteStart"
    if code == KEY_PASTE_END:
        return "PasteEnd"
    if code & KEYC_MASK_KEY == 0:
        code = KEY_SPACE | KEYC_CTRL | (code & KEYC_MASK_MOD)
    out = ""
    if code & KEYC_CTRL:
        out += "C-"
    if code & KEYC_ESCAPE:
        out += "M-"
    if code & KEYC_SHIFT:
        out += "S-"
    key = code & KEYC_MASK_KEY
    name = _KEY_TO_NAME.get(key)
    if name is not None:
        return out + name
    if 127 < key < KEYC_BASE and key <= 0x10FFFF and not 0xD800 <= key <= 0xDFFF:
        return out + chr(key)
    if key == 127 or key > 255:
        return out + f"Invalid#{key:x}"
    if key <= 32:
        return out + "C-" + chr((64 if key == 0 or key > 26 else 96) + key)
    if key <= 126:
        return out + chr(key)
    return out + "\\" + format(key, "o")
