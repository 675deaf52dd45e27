"""A viewer's keyboard: terminal input bytes -> tmux key codes -> messages for the host.

Three layers, all sans-IO (time is passed in as `now`, in seconds, by the caller):

- Key codes and names. The host is the real tmate client (a tmux 2.4 fork) and takes keys in
  *its own* encoding (tmate 2.4 `tmux.h`): a plain character is its Unicode code point; a control
  key is the control byte itself (C-b is 0x02, C-Space is 0x00, Tab 0x09, Enter 0x0d, Escape
  0x1b); the special keys are `KEYC_BASE` plus their position in tmux's key enum; the modifiers
  are the bits `KEYC_ESCAPE` (Meta), `KEYC_CTRL` and `KEYC_SHIFT`, which only special keys and
  Meta-characters carry (the host drops a plain character carrying the CTRL or SHIFT bit).
  `key_from_name` / `key_to_name` follow tmux 2.4's key-string.c: they read and print the names
  the host replicates in `bind-key` and `set-option prefix`.

- `InputParser`: a viewer terminal's bytes -> key codes. xterm, rxvt, vt220/linux-console and
  screen/tmux forms of the cursor, editing and function keys, xterm modifier parameters
  (`CSI 1;5A` = C-Up), SS3 keypad keys, Meta as an ESC prefix, UTF-8, bracketed paste. A lone
  ESC (or a sequence cut short) waits `escape_time` for the rest: the caller asks
  `pending_timeout(now)` and calls `flush(now)` when it has passed. Unknown escape sequences,
  focus reports and mouse reports are dropped whole; invalid UTF-8 bytes are dropped.

- `KeyDispatcher` (one per viewer): tmux 2.4's key tables as the C server applies them to a
  viewer (server-client.c): root table, prefix / prefix2, one key in the prefix table, repeat
  (-r) bindings for `repeat-time`, `assume-paste-time`, read-only clients. It returns what to do:
  relay.tmate.messages objects ready to send to the host (PaneKey / LegacyPaneKey already encoded for
  the host's protocol version, ViewerExecCmd / ViewerExecCmdStr), `Local` for commands the relay
  runs itself, and `Notice` for a message to show the viewer.

Relay-private key codes (`KEY_PASTE_START`, `KEY_PASTE_END`) lie above every tmux key code and are
never sent to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.tmate import messages as m
from relay.tmux.args import getopt

__all__ = [
    "KEYC_NONE",
    "KEYC_UNKNOWN",
    "KEYC_BASE",
    "KEYC_ESCAPE",
    "KEYC_CTRL",
    "KEYC_SHIFT",
    "KEYC_MASK_MOD",
    "KEYC_FOCUS_IN",
    "KEYC_FOCUS_OUT",
    "KEYC_MOUSE",
    "KEYC_BSPACE",
    "KEYC_F1",
    "KEYC_F2",
    "KEYC_F3",
    "KEYC_F4",
    "KEYC_F5",
    "KEYC_F6",
    "KEYC_F7",
    "KEYC_F8",
    "KEYC_F9",
    "KEYC_F10",
    "KEYC_F11",
    "KEYC_F12",
    "KEYC_IC",
    "KEYC_DC",
    "KEYC_HOME",
    "KEYC_END",
    "KEYC_NPAGE",
    "KEYC_PPAGE",
    "KEYC_BTAB",
    "KEYC_UP",
    "KEYC_DOWN",
    "KEYC_LEFT",
    "KEYC_RIGHT",
    "KEYC_KP_SLASH",
    "KEYC_KP_STAR",
    "KEYC_KP_MINUS",
    "KEYC_KP_SEVEN",
    "KEYC_KP_EIGHT",
    "KEYC_KP_NINE",
    "KEYC_KP_PLUS",
    "KEYC_KP_FOUR",
    "KEYC_KP_FIVE",
    "KEYC_KP_SIX",
    "KEYC_KP_ONE",
    "KEYC_KP_TWO",
    "KEYC_KP_THREE",
    "KEYC_KP_ENTER",
    "KEYC_KP_ZERO",
    "KEYC_KP_PERIOD",
    "KEY_ENTER",
    "KEY_TAB",
    "KEY_ESCAPE",
    "KEY_SPACE",
    "KEY_PASTE_START",
    "KEY_PASTE_END",
    "DEFAULT_ESCAPE_TIME",
    "MIN_ESCAPE_TIME",
    "DEFAULT_PREFIX",
    "key_from_name",
    "key_to_name",
    "is_mouse_key",
    "ctrl_key",
    "InputParser",
    "KeyDispatcher",
    "Local",
    "Notice",
    "HOST_MESSAGES",
    "encode_key",
    "encode_command",
    "quote_command",
    "split_commands",
    "canonical_command",
    "escape_time_for",
    "LOCAL_COMMANDS",
    "READONLY_COMMANDS",
]

# ---------------------------------------------------------------------------------- key codes
# Values from tmate 2.4.0's tmux.h (identical in tmate-ssh-server's tmux.h).
KEYC_NONE = 0xFFFF00000000
KEYC_UNKNOWN = 0xFFFE00000000
KEYC_BASE = 0x100000000000
KEYC_ESCAPE = 0x200000000000  # Meta
KEYC_CTRL = 0x400000000000
KEYC_SHIFT = 0x800000000000
KEYC_MASK_MOD = KEYC_ESCAPE | KEYC_CTRL | KEYC_SHIFT
_MASK_KEY = (1 << 64) - 1 - KEYC_MASK_MOD

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

# How long a lone ESC (or a cut-short sequence) waits for more bytes, unless the host replicated
# its own `escape-time` (see escape_time_for). tmux's default is 500 ms, which turns a quick
# "Escape then key" into a Meta key and delays every Escape press by half a second; a terminal
# writes a whole key sequence at once, and ssh forwards it in one packet, so a few ms suffice.
DEFAULT_ESCAPE_TIME = 0.010
MIN_ESCAPE_TIME = 0.001


def is_mouse_key(code: int) -> bool:
    return KEYC_MOUSE <= (code & _MASK_KEY) < KEYC_BSPACE


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
_CTRL_KEEP = frozenset(b"!#()+,-.0123456789:;<=>?'\r\t")
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
        key = _NAME_TO_KEY.get(s.lower())
        if key is None:
            return None
    if key < KEYC_BASE and mods & KEYC_CTRL and key not in _CTRL_KEEP:
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
    if code & _MASK_KEY == 0:
        code = KEY_SPACE | KEYC_CTRL | (code & KEYC_MASK_MOD)
    out = ""
    if code & KEYC_CTRL:
        out += "C-"
    if code & KEYC_ESCAPE:
        out += "M-"
    if code & KEYC_SHIFT:
        out += "S-"
    key = code & _MASK_KEY
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


# ---------------------------------------------------------------------------------- parser
def _mods_from_param(v: int | None) -> int:
    """xterm's modifier parameter: 1 + (1 Shift | 2 Alt | 4 Ctrl | 8 Meta)."""
    if v is None or v < 2:
        return 0
    f = v - 1
    mods = 0
    if f & 1:
        mods |= KEYC_SHIFT
    if f & 2 or f & 8:
        mods |= KEYC_ESCAPE
    if f & 4:
        mods |= KEYC_CTRL
    return mods


# CSI n ~ (and the rxvt forms CSI n ^ / $ / @): vt220, xterm, rxvt, linux console, screen.
_TILDE_KEYS = {
    1: KEYC_HOME,
    2: KEYC_IC,
    3: KEYC_DC,
    4: KEYC_END,
    5: KEYC_PPAGE,
    6: KEYC_NPAGE,
    7: KEYC_HOME,
    8: KEYC_END,
    11: KEYC_F1,
    12: KEYC_F2,
    13: KEYC_F3,
    14: KEYC_F4,
    15: KEYC_F5,
    17: KEYC_F6,
    18: KEYC_F7,
    19: KEYC_F8,
    20: KEYC_F9,
    21: KEYC_F10,
    23: KEYC_F11,
    24: KEYC_F12,
}
# CSI final bytes for cursor keys and F1-F4 (CSI 1;m X form).
_CSI_LETTER_KEYS = {
    ord("A"): KEYC_UP,
    ord("B"): KEYC_DOWN,
    ord("C"): KEYC_RIGHT,
    ord("D"): KEYC_LEFT,
    ord("H"): KEYC_HOME,
    ord("F"): KEYC_END,
}
_CSI_FKEYS = {ord("P"): KEYC_F1, ord("Q"): KEYC_F2, ord("R"): KEYC_F3, ord("S"): KEYC_F4}
# rxvt: CSI a-d are Shift-arrows, SS3 a-d Ctrl-arrows.
_RXVT_ARROWS = {ord("a"): KEYC_UP, ord("b"): KEYC_DOWN, ord("c"): KEYC_RIGHT, ord("d"): KEYC_LEFT}
# SS3 finals: cursor keys in application mode, F1-F4, keypad in application mode.
_SS3_KEYS = {
    **_CSI_LETTER_KEYS,
    **_CSI_FKEYS,
    ord("o"): KEYC_KP_SLASH,
    ord("j"): KEYC_KP_STAR,
    ord("m"): KEYC_KP_MINUS,
    ord("w"): KEYC_KP_SEVEN,
    ord("x"): KEYC_KP_EIGHT,
    ord("y"): KEYC_KP_NINE,
    ord("k"): KEYC_KP_PLUS,
    ord("t"): KEYC_KP_FOUR,
    ord("u"): KEYC_KP_FIVE,
    ord("v"): KEYC_KP_SIX,
    ord("q"): KEYC_KP_ONE,
    ord("r"): KEYC_KP_TWO,
    ord("s"): KEYC_KP_THREE,
    ord("M"): KEYC_KP_ENTER,
    ord("p"): KEYC_KP_ZERO,
    ord("n"): KEYC_KP_PERIOD,
}
_LINUX_FKEYS = {ord("A"): KEYC_F1, ord("B"): KEYC_F2, ord("C"): KEYC_F3, ord("D"): KEYC_F4, ord("E"): KEYC_F5}
_PASTE_END_SEQ = b"\x1b[201~"
_MAX_SEQ = 64  # longest escape sequence kept whole; longer ones are dropped as garbage
_PARTIAL = object()  # parse result: need more bytes
_NOT_SEQ = object()  # parse result: ESC [ / ESC O not followed by a valid sequence


def _utf8_at(buf, i: int, end: int, expired: bool):
    """Decode one UTF-8 character at buf[i] (a byte >= 0x80), not reading past `end`.
    Returns (size, code point), (1, None) for an invalid byte, or None when cut short."""
    lead = buf[i]
    if 0xC2 <= lead <= 0xDF:
        need = 2
    elif 0xE0 <= lead <= 0xEF:
        need = 3
    elif 0xF0 <= lead <= 0xF4:
        need = 4
    else:
        return 1, None
    avail = min(need, end - i)
    for k in range(1, avail):
        if not 0x80 <= buf[i + k] <= 0xBF:
            return 1, None
    if avail < need:
        return (1, None) if expired else None
    try:
        ch = bytes(buf[i : i + need]).decode("utf-8")
    except UnicodeDecodeError:  # overlong form or surrogate
        return 1, None
    return need, ord(ch)


def _params(raw: bytes) -> list[int | None]:
    out: list[int | None] = []
    for part in raw.split(b";"):
        digits = part.split(b":", 1)[0]
        out.append(int(digits) if digits.isdigit() and len(digits) < 10 else None)
    return out


def _modified_char(ch: int | None, mods: int) -> list[int]:
    """A character reported with modifiers (xterm modifyOtherKeys `CSI 27;m;c~`, `CSI c;m u`)."""
    if ch is None or ch > 0x10FFFF or 0xD800 <= ch <= 0xDFFF:
        return []
    if ch == 127:
        ch = KEYC_BSPACE
    if ch < KEYC_BASE:
        if ch > 32:
            mods &= ~KEYC_SHIFT  # the character already is the shifted one
        if mods & KEYC_CTRL and ch not in _CTRL_KEEP:
            c = ctrl_key(ch)
            if c is not None:
                ch, mods = c, mods & ~KEYC_CTRL
    return [ch | mods]


def _csi_key(params: bytes, inter: bytes, final: int) -> list[int]:
    """Key codes for a complete CSI sequence; [] to drop it."""
    if inter or (params and params[0] in b"<=>?"):
        return []  # SGR mouse, replies, private forms
    p = _params(params) if params else []
    first = p[0] if p else None
    mods = _mods_from_param(p[1]) if len(p) >= 2 else 0
    if final in _CSI_LETTER_KEYS:
        if first not in (None, 1):
            return []
        return [_CSI_LETTER_KEYS[final] | mods]
    if final in _CSI_FKEYS:
        if not p or (first == 1 and len(p) >= 2):
            return [_CSI_FKEYS[final] | mods]
        return []  # e.g. a cursor position report
    if final == ord("Z"):
        return [KEYC_BTAB | (mods & ~KEYC_SHIFT)]
    if final in _RXVT_ARROWS and not p:
        return [_RXVT_ARROWS[final] | KEYC_SHIFT]
    if final == ord("~"):
        if first == 200 and len(p) == 1:
            return [KEY_PASTE_START]
        if first == 27 and len(p) >= 3:
            return _modified_char(p[2], mods)
        key = _TILDE_KEYS.get(first)
        return [key | mods] if key is not None else []
    if final in b"^$@":
        key = _TILDE_KEYS.get(first)
        if key is None:
            return []
        return [key | {ord("^"): KEYC_CTRL, ord("$"): KEYC_SHIFT, ord("@"): KEYC_CTRL | KEYC_SHIFT}[final]]
    if final == ord("u") and p:
        return _modified_char(first, mods)
    return []  # focus (I/O), mouse (M/m), KP5 (E/G), ...


def _ss3_key(params: bytes, final: int) -> list[int]:
    mods = 0
    if params:
        p = _params(params)
        mods = _mods_from_param(p[-1])
    if final in _RXVT_ARROWS and not params:
        return [_RXVT_ARROWS[final] | KEYC_CTRL]
    key = _SS3_KEYS.get(final)
    return [key | mods] if key is not None else []


class InputParser:
    """Turns one viewer's terminal input bytes into tmux key codes (see the module docstring).

    `verase` is the byte the viewer's terminal sends for Backspace (the pty-req's VERASE mode,
    usually DEL 0x7f): it becomes KEYC_BSPACE, as tmux does with the termios VERASE character.
    """

    def __init__(self, escape_time: float = DEFAULT_ESCAPE_TIME, verase: int | None = 0x7F):
        # tmux's escape-time 0 still lets bytes already on their way arrive (its zero timer runs
        # after pending input is read); 1 ms is the equivalent here.
        self.escape_time = max(escape_time, MIN_ESCAPE_TIME)
        self.verase = verase
        self._buf = bytearray()
        self._deadline: float | None = None
        self._paste = False
        self._skip_seq = False  # discarding the rest of an overlong escape sequence

    @property
    def in_paste(self) -> bool:
        return self._paste

    def feed(self, data: bytes, now: float) -> list[int]:
        out: list[int] = []
        if self._deadline is not None and now >= self._deadline:
            # What was waiting timed out before these bytes came: resolve it first.
            self._drain(out, True)
        self._buf += data
        progressed = self._drain(out, False)
        if not self._buf or self._paste:
            self._deadline = None
        elif progressed or self._deadline is None:
            self._deadline = now + self.escape_time
        return out

    def pending_timeout(self, now: float) -> float | None:
        """Seconds until `flush` has something to resolve; None when nothing waits."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - now)

    def flush(self, now: float, force: bool = False) -> list[int]:
        """Resolve a lone ESC or a cut-short sequence once escape-time has passed (or now, with
        force): ESC -> Escape, ESC [ -> M-[, a cut-short UTF-8 character is dropped. Inside a
        bracketed paste nothing times out: the paste ends with its end marker."""
        if self._deadline is None or (not force and now < self._deadline):
            return []
        out: list[int] = []
        self._drain(out, True)
        self._deadline = None
        return out

    # -------------------------------------------------------------- internals
    def _drain(self, out: list[int], expired: bool) -> bool:
        buf = self._buf
        start_len = len(buf)
        while buf:
            if self._paste:
                if not self._paste_step(out):
                    break
                continue
            if self._skip_seq:
                k = 0
                while k < len(buf) and 0x20 <= buf[k] <= 0x3F:
                    k += 1
                if k < len(buf):
                    self._skip_seq = False
                    if 0x40 <= buf[k] <= 0x7E:
                        k += 1
                del buf[:k]
                continue
            r = self._parse_one(buf, expired)
            if r is None:
                break
            size, keys = r
            del buf[:size]
            for k in keys:
                if k == KEY_PASTE_START:
                    self._paste = True
                out.append(k)
        return len(buf) != start_len

    def _parse_one(self, buf: bytearray, expired: bool):
        b = buf[0]
        if b == 0x1B:
            return self._parse_escape(buf, expired)
        if b < 0x80:
            return 1, [KEYC_BSPACE if b == self.verase else b]
        r = _utf8_at(buf, 0, len(buf), expired)
        if r is None:
            return None
        size, ch = r
        return size, ([] if ch is None else [ch])

    def _parse_escape(self, buf: bytearray, expired: bool):
        n = len(buf)
        if n == 1:
            return (1, [KEY_ESCAPE]) if expired else None
        c = buf[1]
        if c in b"[O":
            r = self._parse_seq(buf, 0, expired)
            if r is _PARTIAL:
                return (2, [c | KEYC_ESCAPE]) if expired else None
            if r is _NOT_SEQ:
                return 2, [c | KEYC_ESCAPE]
            return r
        if c == 0x1B:
            # ESC ESC: Meta plus the sequence that follows (rxvt's Meta-arrows), else Escape.
            if n == 2:
                return (1, [KEY_ESCAPE]) if expired else None
            if buf[2] in b"[O":
                r = self._parse_seq(buf, 1, expired)
                if r is _PARTIAL:
                    return (1, [KEY_ESCAPE]) if expired else None
                if r is _NOT_SEQ:
                    return 1, [KEY_ESCAPE]
                size, keys = r
                if keys == [KEY_PASTE_START]:
                    return size, keys
                return size, [k | KEYC_ESCAPE for k in keys]
            return 1, [KEY_ESCAPE]
        if c < 0x80:
            return 2, [(KEYC_BSPACE if c == self.verase else c) | KEYC_ESCAPE]
        r = _utf8_at(buf, 1, n, expired)
        if r is None:
            return (1, [KEY_ESCAPE]) if expired else None
        size, ch = r
        if ch is None:
            return 1, [KEY_ESCAPE]
        return 1 + size, [ch | KEYC_ESCAPE]

    def _parse_seq(self, buf: bytearray, i: int, expired: bool):
        """buf[i] is ESC and buf[i+1] '[' or 'O'. Returns (end index, keys), _PARTIAL or
        _NOT_SEQ."""
        n = len(buf)
        j = i + 2
        if j >= n:
            return _PARTIAL
        csi = buf[i + 1] == 0x5B
        if csi and buf[j] == ord("M"):
            # X10 mouse report: CSI M and three raw bytes. Dropped.
            if j + 3 < n:
                return j + 4, []
            return (n, []) if expired else _PARTIAL
        p0 = j
        while j < n and 0x30 <= buf[j] <= 0x3F:
            j += 1
        p1 = j
        if csi and j < n and buf[j] == ord("$") and p1 > p0 and buf[p0:p1].isdigit():
            # rxvt's Shift forms (CSI 3 $) end in '$', which is an intermediate byte in ECMA-48.
            return j + 1, _csi_key(bytes(buf[p0:p1]), b"", buf[j])
        while j < n and 0x20 <= buf[j] <= 0x2F:
            j += 1
        if j - i > _MAX_SEQ:
            # Garbage: drop it whole, up to and including its final byte (maybe still to come).
            if j < n and 0x40 <= buf[j] <= 0x7E:
                return j + 1, []
            if j >= n:
                self._skip_seq = True
            return j, []
        if j >= n:
            return (n, []) if expired and j > i + 2 else _PARTIAL
        final = buf[j]
        if not 0x40 <= final <= 0x7E:
            if j == i + 2:
                return _NOT_SEQ
            return j, []  # malformed: drop what was read
        params, inter = bytes(buf[p0:p1]), bytes(buf[p1:j])
        if not csi:
            if inter:
                return j + 1, []
            return j + 1, _ss3_key(params, final)
        if final == ord("[") and not params and not inter:
            # Linux console F1-F5: CSI [ A .. CSI [ E.
            if j + 1 >= n:
                return (j + 1, []) if expired else _PARTIAL
            key = _LINUX_FKEYS.get(buf[j + 1])
            return j + 2, ([key] if key is not None else [])
        return j + 1, _csi_key(params, inter, final)

    def _paste_step(self, out: list[int]) -> bool:
        """Emit pasted text up to the end marker. False when it must wait for more bytes."""
        buf = self._buf
        end = buf.find(_PASTE_END_SEQ)
        limit = end if end >= 0 else len(buf)
        if end < 0:
            # Keep back a tail that may be the start of the end marker.
            k = buf.rfind(b"\x1b", max(0, limit - len(_PASTE_END_SEQ) + 1))
            if k >= 0 and _PASTE_END_SEQ.startswith(bytes(buf[k:])):
                limit = k
        i = 0
        while i < limit:
            b = buf[i]
            if b < 0x80:
                if b == 0x0D:
                    if i + 1 == limit and end < 0:
                        break  # maybe CR LF split across reads
                    out.append(KEY_ENTER)
                    if i + 1 < limit and buf[i + 1] == 0x0A:
                        i += 1
                elif b == 0x0A:
                    out.append(KEY_ENTER)  # as tmux's paste-buffer and xterm do
                else:
                    out.append(b)
                i += 1
                continue
            r = _utf8_at(buf, i, limit, end >= 0)
            if r is None:
                break  # cut short: wait for the rest
            size, ch = r
            if ch is not None:
                out.append(ch)
            i += size
        if end >= 0 and i >= limit:
            del buf[: end + len(_PASTE_END_SEQ)]
            self._paste = False
            out.append(KEY_PASTE_END)
            return True
        del buf[:i]
        return False


# ---------------------------------------------------------------------------------- encoding
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


def encode_key(code: int, protocol: int | None, pane_id: int = -1) -> list:
    """The messages that send key `code` to a pane of a host speaking `protocol`: [] for keys
    that cannot be sent (None/Unknown, mouse, relay-private codes)."""
    if code < 0 or code >= 1 << 48 or code in (KEYC_NONE, KEYC_UNKNOWN) or is_mouse_key(code):
        return []
    if protocol is None or protocol >= 6:
        return [m.PaneKey(pane_id, code)]
    if protocol == 5:
        if code & KEYC_BASE and code & _MASK_KEY >= KEYC_BSPACE:
            code -= _PROTO5_SHIFT
        return [m.PaneKey(pane_id, code)]
    # Protocol < 5: LEGACY_PANE_KEY always goes to the host's active pane.
    key = code & _MASK_KEY
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


def quote_command(argv) -> str:
    """One command as a string the host's tmux parses back into the same argv (EXEC_CMD_STR,
    protocol < 6): every word double-quoted with \\ " $ escaped; a word ending in ';' written
    with '\\;' so it is not taken for a command separator."""
    words = []
    for a in argv:
        q = a.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        if q.endswith(";"):
            q = q[:-1] + "\\\\;"
        words.append(f'"{q}"')
    return " ".join(words)


def encode_command(argv, protocol: int | None, client_id: int):
    """A command for the host to run on behalf of viewer `client_id`."""
    argv = tuple(argv)
    if protocol is None or protocol >= 6:
        return m.ViewerExecCmd(client_id, argv)
    return m.ViewerExecCmdStr(client_id, quote_command(argv))


def split_commands(argv) -> list[tuple[str, ...]]:
    """Split a binding's command words into commands as tmux's cmd_list_parse does: a word
    ending in ';' ends a command (the ';' removed, a lone ';' dropped); a word ending in '\\;'
    keeps a literal ';'."""
    cmds: list[tuple[str, ...]] = []
    cur: list[str] = []
    for a in argv:
        if a.endswith(";"):
            if a.endswith("\\;"):
                cur.append(a[:-2] + ";")
                continue
            if a != ";":
                cur.append(a[:-1])
            if cur:
                cmds.append(tuple(cur))
            cur = []
        else:
            cur.append(a)
    if cur:
        cmds.append(tuple(cur))
    return cmds


# tmux 2.4's commands and aliases (cmd-*.c), for resolving a binding's command name.
_COMMANDS = {
    "attach-session": "attach",
    "bind-key": "bind",
    "break-pane": "breakp",
    "capture-pane": "capturep",
    "choose-buffer": None,
    "choose-client": None,
    "choose-session": None,
    "choose-tree": None,
    "choose-window": None,
    "clear-history": "clearhist",
    "clock-mode": None,
    "command-prompt": None,
    "confirm-before": "confirm",
    "copy-mode": None,
    "delete-buffer": "deleteb",
    "detach-client": "detach",
    "display-message": "display",
    "display-panes": "displayp",
    "find-window": "findw",
    "has-session": "has",
    "if-shell": "if",
    "join-pane": "joinp",
    "kill-pane": "killp",
    "kill-server": None,
    "kill-session": None,
    "kill-window": "killw",
    "last-pane": "lastp",
    "last-window": "last",
    "link-window": "linkw",
    "list-buffers": "lsb",
    "list-clients": "lsc",
    "list-commands": "lscm",
    "list-keys": "lsk",
    "list-panes": "lsp",
    "list-sessions": "ls",
    "list-windows": "lsw",
    "load-buffer": "loadb",
    "lock-client": "lockc",
    "lock-server": "lock",
    "lock-session": "locks",
    "move-pane": "movep",
    "move-window": "movew",
    "new-session": "new",
    "new-window": "neww",
    "next-layout": "nextl",
    "next-window": "next",
    "paste-buffer": "pasteb",
    "pipe-pane": "pipep",
    "previous-layout": "prevl",
    "previous-window": "prev",
    "refresh-client": "refresh",
    "rename-session": "rename",
    "rename-window": "renamew",
    "resize-pane": "resizep",
    "respawn-pane": "respawnp",
    "respawn-window": "respawnw",
    "rotate-window": "rotatew",
    "run-shell": "run",
    "save-buffer": "saveb",
    "select-layout": "selectl",
    "select-pane": "selectp",
    "select-window": "selectw",
    "send-keys": "send",
    "send-prefix": None,
    "server-info": "info",
    "set-buffer": "setb",
    "set-environment": "setenv",
    "set-hook": None,
    "set-option": "set",
    "set-window-option": "setw",
    "show-buffer": "showb",
    "show-environment": "showenv",
    "show-hooks": None,
    "show-messages": "showmsgs",
    "show-options": "show",
    "show-window-options": "showw",
    "source-file": "source",
    "split-window": "splitw",
    "start-server": "start",
    "suspend-client": "suspendc",
    "swap-pane": "swapp",
    "swap-window": "swapw",
    "switch-client": "switchc",
    "unbind-key": "unbind",
    "unlink-window": "unlinkw",
    "wait-for": "wait",
}
_ALIASES = {alias: name for name, alias in _COMMANDS.items() if alias}


def canonical_command(name: str) -> str | None:
    """A command name, alias or unambiguous prefix as tmux 2.4 resolves it; None if unknown or
    ambiguous."""
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _COMMANDS:
        return name
    if not name:
        return None
    found = [c for c in _COMMANDS if c.startswith(name)]
    return found[0] if len(found) == 1 else None


# Commands the relay runs itself (returned as `Local`), never sent to the host.
LOCAL_COMMANDS = frozenset(
    {
        # The C server runs these on its own copy of the state (tmate_should_exec_cmd_locally).
        "bind-key",
        "unbind-key",
        "set-option",
        "set-window-option",
        "detach-client",
        "attach-session",
        # They act on "the client": on the host no client runs the command, so tmux would pick the
        # host's own terminal (a prompt, a menu, a message or a suspend on the host's screen).
        "command-prompt",
        "confirm-before",
        "display-message",
        "display-panes",
        "choose-buffer",
        "choose-client",
        "choose-session",
        "choose-tree",
        "choose-window",
        "refresh-client",
        "suspend-client",
        "lock-client",
        "switch-client",
        # They print to the client: the host discards the output of a client-less command.
        "list-keys",
        "list-clients",
        "list-commands",
        "list-buffers",
        "list-panes",
        "list-sessions",
        "list-windows",
        "show-messages",
        "show-options",
        "show-window-options",
        "show-buffer",
        "show-environment",
        "show-hooks",
        "server-info",
    }
)
# What a read-only viewer may run: the commands tmux flags CMD_READONLY (tmate-ssh-server's tmux:
# detach-client, list-clients, switch-client), as key_bindings_dispatch allows them.
READONLY_COMMANDS = frozenset({"detach-client", "list-clients", "switch-client"})


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


HOST_MESSAGES = (m.PaneKey, m.LegacyPaneKey, m.ViewerExecCmd, m.ViewerExecCmdStr)


def _getopt(args, flags_with_value: str) -> dict[str, str | bool]:
    """Flags of a tmux command's words (for send-prefix and switch-client), leniently."""
    return getopt(args, flags_with_value)[0]


def _int_option(session, name: str, default: int) -> int:
    try:
        v = int(session.option(name, str(default)))
    except (TypeError, ValueError):
        return default
    return max(0, v)


def escape_time_for(session) -> float:
    """The escape-time for a session's viewers, in seconds: the host's replicated
    `escape-time` option if it set one (the C server applies it to viewers), else
    DEFAULT_ESCAPE_TIME."""
    v = session.option("escape-time")
    if v is None:
        return DEFAULT_ESCAPE_TIME
    try:
        return min(max(int(v), 0), 5000) / 1000
    except ValueError:
        return DEFAULT_ESCAPE_TIME


# Bytes a bracketed-paste-aware application expects around pasted text, as key codes.
_PASTE_OPEN = [ord("[") | KEYC_ESCAPE, *b"200~"]
_PASTE_CLOSE = [ord("[") | KEYC_ESCAPE, *b"201~"]


class KeyDispatcher:
    """One viewer's key handling (tmux 2.4 server_client_handle_key, as the C server runs it).

    `key(code, now)` returns a list of: relay.tmate.messages objects to send to the host as they are
    (`HOST_MESSAGES`), `Local` commands and `Notice` texts, in order. Keys typed while the
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
        self._tables: dict[str, dict[int, object]] = {}
        self._prefix = DEFAULT_PREFIX
        self._prefix2 = KEYC_NONE

    # ------------------------------------------------------------ state from the session
    def _refresh(self) -> None:
        s = self.session
        if self._gen == s.generation:
            return
        tables: dict[str, dict[int, object]] = {}
        for tname, bindings in s.key_tables.items():
            t: dict[int, object] = {}
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
    def prefix(self) -> int:
        self._refresh()
        return self._prefix

    @property
    def prefix2(self) -> int:
        self._refresh()
        return self._prefix2

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
                repeat_ms = _int_option(self.session, "repeat-time", 500)
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
        t = _int_option(self.session, "assume-paste-time", 1)
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
    def _run_binding(self, bd) -> list:
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
            flags = _getopt(argv[1:], "t")
            if "t" not in flags:
                key = self._prefix2 if "2" in flags else self._prefix
                return encode_key(key, self.protocol)
        elif name == "switch-client":
            flags = _getopt(argv[1:], "ctT")
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
