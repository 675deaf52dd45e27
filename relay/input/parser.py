"""A viewer terminal's input bytes -> tmux key codes (sans-IO: time is passed in as `now`, in
seconds, by the caller).

xterm, rxvt, vt220/linux-console and screen/tmux forms of the cursor, editing and function keys,
xterm modifier parameters (`CSI 1;5A` = C-Up), SS3 keypad keys, Meta as an ESC prefix, UTF-8,
bracketed paste. A lone ESC (or a sequence cut short) waits `escape_time` for the rest: the caller
asks `pending_timeout(now)` and calls `flush(now)` when it has passed. Unknown escape sequences,
focus reports and mouse reports are dropped whole; invalid UTF-8 bytes are dropped.
"""

from __future__ import annotations

from relay.input.keycodes import (
    CTRL_KEEP,
    KEY_ENTER,
    KEY_ESCAPE,
    KEY_PASTE_END,
    KEY_PASTE_START,
    KEYC_BASE,
    KEYC_BSPACE,
    KEYC_BTAB,
    KEYC_CTRL,
    KEYC_DC,
    KEYC_DOWN,
    KEYC_END,
    KEYC_ESCAPE,
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
    KEYC_HOME,
    KEYC_IC,
    KEYC_KP_EIGHT,
    KEYC_KP_ENTER,
    KEYC_KP_FIVE,
    KEYC_KP_FOUR,
    KEYC_KP_MINUS,
    KEYC_KP_NINE,
    KEYC_KP_ONE,
    KEYC_KP_PERIOD,
    KEYC_KP_PLUS,
    KEYC_KP_SEVEN,
    KEYC_KP_SIX,
    KEYC_KP_SLASH,
    KEYC_KP_STAR,
    KEYC_KP_THREE,
    KEYC_KP_TWO,
    KEYC_KP_ZERO,
    KEYC_LEFT,
    KEYC_NPAGE,
    KEYC_PPAGE,
    KEYC_RIGHT,
    KEYC_SHIFT,
    KEYC_UP,
    ctrl_key,
)
from relay.tmux.options import number

# How long a lone ESC (or a cut-short sequence) waits for more bytes, unless the host replicated
# its own `escape-time` (see escape_time_for). tmux's default is 500 ms, which turns a quick
# "Escape then key" into a Meta key and delays every Escape press by half a second; a terminal
# writes a whole key sequence at once, and ssh forwards it in one packet, so a few ms suffice.
DEFAULT_ESCAPE_TIME = 0.010
MIN_ESCAPE_TIME = 0.001
DEFAULT_VERASE = 0x7F  # the erase character when the viewer's terminal modes name none (DEL)


MAX_ESCAPE_TIME = 5.0  # a host's larger escape-time would hold a viewer's Escape key for ever


def escape_time_for(session) -> float:
    """The escape-time for a session's viewers, in seconds: the host's replicated `escape-time`
    option (milliseconds) if it set one (the C server applies it to viewers), at most
    MAX_ESCAPE_TIME, else DEFAULT_ESCAPE_TIME."""
    ms = number(session.option("escape-time"), -1, 0, 2**31 - 1)
    if ms < 0:
        return DEFAULT_ESCAPE_TIME
    return min(ms / 1000, MAX_ESCAPE_TIME)


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
        if mods & KEYC_CTRL and ch not in CTRL_KEEP:
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
        key = _TILDE_KEYS.get(first or 0)
        return [key | mods] if key is not None else []
    if final in b"^$@":
        key = _TILDE_KEYS.get(first or 0)
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

    def __init__(self, escape_time: float = DEFAULT_ESCAPE_TIME, verase: int | None = DEFAULT_VERASE):
        self.escape_time = escape_time
        self.verase = verase
        self._buf = bytearray()
        self._deadline: float | None = None
        self._paste = False
        self._skip_seq = False  # discarding the rest of an overlong escape sequence

    @property
    def escape_time(self) -> float:
        """Seconds a lone ESC waits; may change at any time (the host's escape-time option)."""
        return self._escape_time

    @escape_time.setter
    def escape_time(self, seconds: float) -> None:
        # tmux's escape-time 0 still lets bytes already on their way arrive (its zero timer runs
        # after pending input is read); 1 ms is the equivalent here.
        self._escape_time = max(seconds, MIN_ESCAPE_TIME)

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
