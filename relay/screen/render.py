"""Per-viewer screen composition: what a tmux 2.4 client of the viewer's size would show.

A viewer (``ssh TOKEN@relay``) sees the session's current window drawn at the *session's* size:
every pane at its layout geometry, the pane borders, and the status line on the viewer's last row
(or first, with ``status-position top``). The rules below follow tmux 2.4 (the base of tmate 2.4
and of the C server); they were read from its drawing code, not copied:

- Borders: a cell is a border cell when it is just outside a pane's rectangle (the column left of
  / right of it, the row above / below it). Its character comes from which of its four neighbours
  are border cells too (``│ ─ ┌ ┐ └ ┘ ┬ ┴ ├ ┤ ┼``); cells further right or lower than the window
  (x > sx or y > sy) are "outside" and drawn as ``·``. So a viewer larger than the session sees a
  ``│`` column at x = sx, a ``─`` row at y = sy with ``┘`` at the corner, and dots beyond.
- Border colours: ``pane-border-style`` (default: terminal default) and
  ``pane-active-border-style`` (default ``fg=green``) for cells on the active pane's border. With
  exactly two panes in the window, only the half of the shared border nearer the active pane is
  coloured (tmux 2.x's split-border rule).
- A viewer larger than the session also gets ``(size WxH from a smaller client)`` at the right end
  of the last row above the status line, when it fits.
- Status line: ``status-style`` (default ``bg=green,fg=black``) across the row; the host's
  status-left (at most ``status-left-length`` = 10 columns) at the left; the window list
  (``window-status-format`` = ``#I:#W#{?window_flags,#{window_flags}, }``, ``*`` current window,
  ``-`` last window, separated by ``window-status-separator`` = one space); the host's
  status-right (at most ``status-right-length`` = 40 columns) right-aligned. ``#[fg=..,bg=..,
  bright,..]`` markup in them is a style relative to status-style. A window list too wide gets
  ``<`` / ``>`` arrows. ``status off`` removes the line (the window area gets the row).
- A message (``message``) replaces the status line, in ``message-style`` (black on yellow), and
  hides the cursor, as tmux does while it shows one. With ``status off`` it still takes the row.
- Copy mode: the pane scrolled ``oy`` rows into its history, ``[oy/history]`` at the pane's
  top right in ``mode-style`` (black on yellow), the selection in mode-style, a search/jump prompt
  on the pane's last row. tmate's message view (WRITE_COPY_MODE lines) is the same mode over an
  output-only screen holding the lines.
- The cursor is the active pane's (or copy mode's) cursor; hidden when the pane hides it, while a
  message is shown, or when it is outside the viewer's window area.

Output is incremental: the screen rows last sent to the viewer are kept as strings, and a frame
holds only the rows whose string changed, each repainted whole from an SGR reset at an absolute
position (``CSI row;col H``), then the cursor. Pane rows come from the pane's TerminalModel as
self-contained VT strings, fetched once per pane change (never cell by cell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.screen.width import char_width as _char_width
from relay.screen.width import display_width
from relay.tmux.options import flag as _flag
from relay.tmux.options import number as _number

__all__ = ["ViewerScreen", "parse_style", "Style", "failed_cmd_message", "display_width", "last_window"]

ESC = "\x1b"
RESET = "\x1b[0m"

# Border cell types (tmux's order) and the character drawn for each (a UTF-8 viewer's ACS).
_INSIDE, _LEFTRIGHT, _TOPBOTTOM, _TOPLEFT, _TOPRIGHT, _BOTTOMLEFT, _BOTTOMRIGHT = range(7)
_TOPJOIN, _BOTTOMJOIN, _LEFTJOIN, _RIGHTJOIN, _JOIN, _OUTSIDE = range(7, 13)
_BORDER_CHARS = " │─┌┐└┘┬┴├┤┼·"
# Which of the neighbours (left 8, right 4, top 2, bottom 1) are borders -> the cell's type.
_BORDER_TYPE = {
    15: _JOIN,
    14: _BOTTOMJOIN,
    13: _TOPJOIN,
    12: _TOPBOTTOM,
    11: _RIGHTJOIN,
    10: _BOTTOMRIGHT,
    9: _TOPRIGHT,
    7: _LEFTJOIN,
    6: _BOTTOMLEFT,
    5: _TOPLEFT,
    3: _LEFTRIGHT,
}

_U32 = 1 << 32


def failed_cmd_message(cause: str) -> str:
    """The status message the C server shows a viewer for FAILED_CMD: the cause, capitalised."""
    return cause[:1].upper() + cause[1:]


# ---------------------------------------------------------------------------- styles
_ATTRS = {
    "bright": 0x1,
    "bold": 0x1,
    "dim": 0x2,
    "underscore": 0x4,
    "blink": 0x8,
    "reverse": 0x10,
    "hidden": 0x20,
    "italics": 0x40,
}
_ATTR_SGR = ((0x1, "1"), (0x2, "2"), (0x4, "4"), (0x8, "5"), (0x10, "7"), (0x20, "8"), (0x40, "3"))
_NAMED = {
    "black": 0,
    "red": 1,
    "green": 2,
    "yellow": 3,
    "blue": 4,
    "magenta": 5,
    "cyan": 6,
    "white": 7,
    "default": 8,
}


@dataclass(frozen=True, slots=True)
class Style:
    """A cell style: fg/bg as SGR parameter strings ("39" = default), attrs as tmux bits."""

    fg: str = "39"
    bg: str = "49"
    attr: int = 0

    def sgr(self) -> str:
        p = ["0"]
        if self.fg != "39":
            p.append(self.fg)
        if self.bg != "49":
            p.append(self.bg)
        p += [code for bit, code in _ATTR_SGR if self.attr & bit]
        return "\x1b[" + ";".join(p) + "m"


DEFAULT_STYLE = Style()


def _colour(s: str):
    """tmux colour name -> ("n", 0-8 | 90-97) | ("256", n) | ("rgb", r, g, b) | None."""
    low = s.lower()
    if len(s) == 7 and s[0] == "#":
        try:
            v = int(s[1:], 16)
        except ValueError:
            return None
        return ("rgb", v >> 16, (v >> 8) & 0xFF, v & 0xFF)
    if low.startswith("colour"):
        n = low[6:]
        if n.isdigit() and int(n) <= 255:
            return ("256", int(n))
        return None
    if low in _NAMED:
        return ("n", _NAMED[low])
    if s.isdigit() and (int(s) <= 8 or 90 <= int(s) <= 97):
        return ("n", int(s))
    if low.startswith("bright") and low[6:] in _NAMED and low[6:] != "default":
        return ("n", 90 + _NAMED[low[6:]])
    return None


def _colour_sgr(c, bg: bool) -> str:
    kind = c[0]
    if kind == "n":
        n = c[1]
        return str(n + 10) if (bg and n >= 90) else str((40 if bg else 30) + n) if n < 8 else str(n)
    if kind == "256":
        return f"{48 if bg else 38};5;{c[1]}"
    return f"{48 if bg else 38};2;{c[1]};{c[2]};{c[3]}"


def _attrs(s: str) -> int | None:
    out = 0
    for part in s.split("|"):
        bit = _ATTRS.get(part.lower())
        if bit is None:
            return None
        out |= bit
    return out


def parse_style(text: str, current: Style = DEFAULT_STYLE, base: Style = DEFAULT_STYLE) -> Style | None:
    """Apply a tmux style string ("fg=red,bg=colour33,bright,noreverse", "default") on top of
    `current`; "default" and colour "default" mean `base`. None when the string is invalid
    (tmux then keeps the style it had)."""
    if not text:
        return current
    if text[-1] in " ,":
        return None
    fg, bg, attr = current.fg, current.bg, current.attr
    for tok in re.split(r"[ ,]+", text):
        if not tok:
            continue
        low = tok.lower()
        if len(tok) > 31:
            return None
        if low == "default":
            fg, bg, attr = base.fg, base.bg, base.attr
        elif len(tok) > 3 and low[1:3] == "g=" and low[0] in "fb":
            c = _colour(tok[3:])
            if c is None:
                return None
            if low[0] == "f":
                fg = base.fg if c == ("n", 8) else _colour_sgr(c, False)
            else:
                bg = base.bg if c == ("n", 8) else _colour_sgr(c, True)
        elif low == "none":
            attr = 0
        elif len(tok) > 2 and low.startswith("no"):
            a = _attrs(tok[2:])
            if a is None:
                return None
            attr &= ~a
        else:
            a = _attrs(tok)
            if a is None:
                return None
            attr |= a
    return Style(fg, bg, attr)


def _overlay(gc: Style, st: Style) -> Style:
    """tmux's style_apply_update: only the non-default parts of `st` change `gc`."""
    return Style(
        st.fg if st.fg != "39" else gc.fg, st.bg if st.bg != "49" else gc.bg, st.attr if st.attr else gc.attr
    )


def _option_style(session, name: str, default: str) -> Style:
    """A *-style option, with the legacy -fg/-bg/-attr options when only those were set."""
    explicit = session.option(name)
    st = parse_style(explicit if explicit is not None else default) or parse_style(default)
    if explicit is None:
        prefix = name[: -len("-style")]
        fg, bg, at = (
            session.option(prefix + "-fg"),
            session.option(prefix + "-bg"),
            session.option(prefix + "-attr"),
        )
        if fg is not None:
            st = parse_style(f"fg={fg}", st) or st
        if bg is not None:
            st = parse_style(f"bg={bg}", st) or st
        if at is not None:
            a = 0 if at in ("none", "default") else _attrs(at.replace(",", "|"))
            if a is not None:
                st = Style(st.fg, st.bg, a)
    return st


# ---------------------------------------------------------------------------- cell lines
class _Line:
    """A one-row cell buffer (status line, window list): (char, style) per column; a wide
    character's second column holds ''."""

    __slots__ = ("cells", "x")

    def __init__(self, width: int, style: Style):
        self.cells = [(" ", style)] * width
        self.x = 0

    def put(self, ch: str, w: int, style: Style) -> None:
        cells, x = self.cells, self.x
        n = len(cells)
        if x < 0 or x + w > n:
            self.x = x + w
            return
        if cells[x][0] == "" and x > 0:  # overwriting the right half of a wide char
            cells[x - 1] = (" ", cells[x - 1][1])
        end = x + w
        if end < n and cells[end][0] == "":  # overwriting the left half of a wide char
            cells[end] = (" ", cells[end][1])
        cells[x] = (ch, style)
        if w == 2:
            cells[x + 1] = ("", style)
        self.x = end

    def nputs(self, text: str, style: Style, maxlen: int = -1) -> int:
        """Plain text (no markup), at most maxlen columns (-1: no limit); returns columns used."""
        size = 0
        for ch in text:
            w = _char_width(ch)
            if w < 0:
                continue
            if w == 0:
                continue  # combining marks are not kept (rare in status text)
            if maxlen >= 0 and size + w > maxlen:
                while size < maxlen:  # a wide char that does not fit: pad
                    self.put(" ", 1, style)
                    size += 1
                break
            self.put(ch, w, style)
            size += w
        return size

    def cnputs(self, text: str, base: Style, maxlen: int = -1) -> int:
        """Text with #[style] markup relative to `base`, at most maxlen columns."""
        cur = base
        size = 0
        i, n = 0, len(text)
        while i < n:
            if text.startswith("#[", i):
                end = text.find("]", i + 2)
                if end < 0:
                    break
                cur = parse_style(text[i + 2 : end], cur, base) or cur
                i = end + 1
                continue
            j = text.find("#[", i)
            if j < 0:
                j = n
            size += self.nputs(text[i:j], cur, -1 if maxlen < 0 else maxlen - size)
            i = j
        return size

    def vt(self) -> str:
        out: list[str] = []
        last = None
        for ch, st in self.cells:
            if not ch:
                continue
            if st is not last:
                out.append(st.sgr())
                last = st
            out.append(ch)
        out.append(RESET)
        return "".join(out)


def _cstrlen(text: str) -> int:
    """Width of status text with #[...] markup removed (tmux's screen_write_cstrlen)."""
    if "#[" in text:
        text = re.sub(r"#\[[^\]]*\]?", "", text)
    return display_width(text)


# ---------------------------------------------------------------------------- formats
def _expand_format(fmt: str, vals: dict[str, str]) -> str:
    """The subset of tmux formats a window-status-format uses: #I #W #F ## #{name}
    #{?cond,then,else}. Unknown names expand to ''; #[...] is left for the style pass."""
    out: list[str] = []
    i, n = 0, len(fmt)
    short = {
        "I": "window_index",
        "W": "window_name",
        "F": "window_flags",
        "P": "pane_index",
        "S": "session_name",
    }
    while i < n:
        c = fmt[i]
        if c != "#" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        d = fmt[i + 1]
        if d == "#":
            out.append("#")
            i += 2
        elif d in short:
            out.append(vals.get(short[d], ""))
            i += 2
        elif d == "{":
            depth, j = 1, i + 2
            while j < n and depth:
                if fmt.startswith("#{", j):
                    depth += 1
                    j += 2
                    continue
                if fmt[j] == "}":
                    depth -= 1
                j += 1
            body = fmt[i + 2 : j - 1] if depth == 0 else fmt[i + 2 :]
            out.append(_expand_body(body, vals))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _split_top(body: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        if body.startswith("#{", i):
            depth += 1
            i += 2
            continue
        if body[i] == "}" and depth:
            depth -= 1
        elif body[i] == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return parts


def _expand_body(body: str, vals: dict[str, str]) -> str:
    if body.startswith("?"):
        parts = _split_top(body[1:])
        if len(parts) < 3:
            return ""
        cond = _expand_format(parts[0], vals) if "#" in parts[0] else vals.get(parts[0], "")
        pick = parts[1] if cond and cond != "0" else ",".join(parts[2:])
        return _expand_format(pick, vals)
    return vals.get(body, "")


# ---------------------------------------------------------------------------- VT clipping
_VT_TOKEN = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[^\[\]]")


def _clip_vt(s: str, width: int) -> str:
    """Keep the first `width` columns of a VT row (escape sequences kept, a wide character
    that would cross the edge becomes a space)."""
    if width <= 0:
        return ""
    out: list[str] = []
    col = 0
    pos = 0
    for m in _VT_TOKEN.finditer(s):
        if m.start() > pos:
            col = _clip_text(s[pos : m.start()], width, col, out)
            if col >= width:
                return "".join(out) + RESET
        out.append(m.group())
        pos = m.end()
    if pos < len(s):
        _clip_text(s[pos:], width, col, out)
    return "".join(out) + RESET


def _clip_text(text: str, width: int, col: int, out: list[str]) -> int:
    for ch in text:
        w = _char_width(ch)
        if w < 0:
            continue
        if col + w > width:
            if col < width:
                out.append(" " * (width - col))
            return width
        out.append(ch)
        col += w
    return col


def _columns(text: str, width: int) -> list[str]:
    """Plain row text -> one entry per column ('' for the second half of a wide char)."""
    cols: list[str] = []
    for ch in text:
        w = _char_width(ch)
        if w < 0:
            continue
        if w == 0:
            if cols:
                cols[-1] += ch
            continue
        cols.append(ch)
        if w == 2:
            cols.append("")
    if len(cols) < width:
        cols.extend(" " * (width - len(cols)))
    return cols[:width]


def _wrap_lines(lines, width: int) -> list[str]:
    """tmate's message view: each line written to a `width`-column screen, wrapping."""
    rows: list[str] = []
    for line in lines:
        cur: list[str] = []
        col = 0
        for ch in line:
            w = _char_width(ch)
            if w <= 0:
                if w == 0 and cur:
                    cur.append(ch)
                continue
            if col + w > width:
                rows.append("".join(cur))
                cur, col = [], 0
                if w > width:
                    continue
            cur.append(ch)
            col += w
        rows.append("".join(cur))
    return rows


# ---------------------------------------------------------------------------- borders
class _Geom:
    __slots__ = ("id", "xoff", "yoff", "sx", "sy")

    def __init__(self, pid, xoff, yoff, sx, sy):
        self.id, self.xoff, self.yoff, self.sx, self.sy = pid, xoff, yoff, sx, sy


def _border1(p: _Geom, px: int, py: int) -> int:
    """0 inside pane p, 1 on its border, -1 elsewhere."""
    if p.xoff <= px < p.xoff + p.sx and p.yoff <= py < p.yoff + p.sy:
        return 0
    if (p.yoff == 0 or py >= p.yoff - 1) and py <= p.yoff + p.sy:
        if (p.xoff != 0 and px == p.xoff - 1) or px == p.xoff + p.sx:
            return 1
    if (p.xoff == 0 or px >= p.xoff - 1) and px <= p.xoff + p.sx:
        if (p.yoff != 0 and py == p.yoff - 1) or py == p.yoff + p.sy:
            return 1
    return -1


class _BorderGrid:
    """Which cells are pane borders (tmux: the first pane, in window order, for which the cell is
    inside or on the border decides), painted once per layout instead of asked per cell."""

    __slots__ = ("rows", "w", "h")

    def __init__(self, panes, wsx: int, wsy: int):
        w, h = wsx + 2, wsy + 2
        self.w, self.h = w, h
        rows = [bytearray(w) for _ in range(h)]
        for p in reversed(panes):  # earlier panes overwrite later ones
            x0, x1 = max(p.xoff - 1, 0), min(p.xoff + p.sx, w - 1)
            y0, y1 = max(p.yoff - 1, 0), min(p.yoff + p.sy, h - 1)
            # left/right borders
            for y in range(y0, y1 + 1):
                if p.xoff != 0 and p.xoff - 1 < w:
                    rows[y][p.xoff - 1] = 1
                if p.xoff + p.sx < w:
                    rows[y][p.xoff + p.sx] = 1
            # top/bottom borders
            for y in ((p.yoff - 1,) if p.yoff != 0 else ()) + (p.yoff + p.sy,):
                if 0 <= y < h and x0 <= x1:
                    rows[y][x0 : x1 + 1] = b"\x01" * (x1 - x0 + 1)
            # inside
            ix1 = min(p.xoff + p.sx, w)
            for y in range(p.yoff, min(p.yoff + p.sy, h)):
                if p.xoff < ix1:
                    rows[y][p.xoff : ix1] = bytes(ix1 - p.xoff)
        self.rows = rows

    def __call__(self, px: int, py: int) -> bool:
        return 0 <= px < self.w and 0 <= py < self.h and self.rows[py][px] == 1


def _cell_type(panes, grid: _BorderGrid, wsx: int, wsy: int, px: int, py: int):
    if px > wsx or py > wsy:
        return _OUTSIDE, None
    for p in panes:
        if (
            (p.xoff != 0 and px < p.xoff - 1)
            or px > p.xoff + p.sx
            or (p.yoff != 0 and py < p.yoff - 1)
            or py > p.yoff + p.sy
        ):
            continue
        if not grid(px, py):
            return _INSIDE, p
        b = 0
        if px == 0 or grid(px - 1, py):
            b |= 8
        if px <= wsx and grid(px + 1, py):
            b |= 4
        if py == 0 or grid(px, py - 1):
            b |= 2
        if py <= wsy and grid(px, py + 1):
            b |= 1
        t = _BORDER_TYPE.get(b)
        if t is not None:
            return t, p
    return _OUTSIDE, None


def _active_border(px, py, typ, wsx, wsy, npanes, want: _Geom | None, wp: _Geom | None) -> bool:
    if want is None or _border1(want, px, py) != 1:
        return False
    if npanes != 2:
        return True
    if wp is None or typ in (_OUTSIDE, _INSIDE):
        return True
    if wp.xoff == 0 and wp.sx == wsx:  # full width: top or bottom pane
        if wp.yoff == 0:
            return px <= wp.sx // 2 if wp is want else px > wp.sx // 2
        return False
    if wp.yoff == 0 and wp.sy == wsy:  # full height: left or right pane
        if wp.xoff == 0:
            return py <= wp.sy // 2 if wp is want else py > wp.sy // 2
        return False
    return bool(typ)


def _border_rows(
    panes: list[_Geom],
    want: _Geom | None,
    npanes: int,
    wsx: int,
    wsy: int,
    cols: int,
    arows: int,
    status: int,
    top: int,
    other_sgr: str,
    active_sgr: str,
) -> list[str]:
    """Per window-area row, the positioned VT runs painting its border / outside cells and the
    size message. Rows are screen rows `top + y`."""
    # The size message of a viewer larger than the window (tty rows - status = arows).
    small = arows > wsy or cols > wsx
    msg, msgx, msgy = "", -1, -1
    if small:
        msg = f"(size {wsx}x{wsy} from a smaller client)"
        ml = len(msg)
        if arows - 1 > wsy and cols >= ml:
            msgx, msgy = cols - ml, arows - 1
        elif (cols - wsx) % _U32 > ml:
            msgx, msgy = cols - ml, arows - 1
        else:
            small = False
        if msgx < 0:
            msgx = _U32  # tmux's unsigned position: off screen, nothing skipped
    grid = _BorderGrid(panes, wsx, wsy)
    inside: list[bytearray] = []
    for y in range(arows):
        row = bytearray(cols)
        for p in panes:
            if p.yoff <= y < p.yoff + p.sy and p.xoff < cols:
                a, b = p.xoff, min(p.xoff + p.sx, cols)
                row[a:b] = b"\x01" * (b - a)
        inside.append(row)
    out: list[str] = []
    for y in range(arows):
        runs: list[str] = []
        run_x, run_sgr, run_chars = -1, None, []
        ins = inside[y]
        for x in range(cols):
            if ins[x]:
                typ, wp = _INSIDE, None
            elif x > wsx or y > wsy:
                typ, wp = _OUTSIDE, None
            else:
                typ, wp = _cell_type(panes, grid, wsx, wsy, x, y)
            if typ == _INSIDE or (typ == _OUTSIDE and small and x > msgx and y == msgy):
                if run_chars:
                    runs.append(f"\x1b[{top + y + 1};{run_x + 1}H{run_sgr}{''.join(run_chars)}")
                    run_chars = []
                continue
            sgr = active_sgr if _active_border(x, y, typ, wsx, wsy, npanes, want, wp) else other_sgr
            if run_chars and sgr == run_sgr:
                run_chars.append(_BORDER_CHARS[typ])
            else:
                if run_chars:
                    runs.append(f"\x1b[{top + y + 1};{run_x + 1}H{run_sgr}{''.join(run_chars)}")
                run_x, run_sgr, run_chars = x, sgr, [_BORDER_CHARS[typ]]
        if run_chars:
            runs.append(f"\x1b[{top + y + 1};{run_x + 1}H{run_sgr}{''.join(run_chars)}")
        if small and y == msgy and msgx < cols:
            runs.append(f"\x1b[{top + y + 1};{msgx + 1}H{RESET}{msg}")
        if runs:
            runs.append(RESET)
        out.append("".join(runs))
    return out


# ---------------------------------------------------------------------------- last window
def last_window(session) -> int | None:
    """The window tmux flags `-`: the session's last window (kept from the host's layouts)."""
    return session.last_window


# ---------------------------------------------------------------------------- the viewer
class ViewerScreen:
    """What one viewer's terminal shows, and the bytes that bring it up to date."""

    def __init__(self, cols: int, rows: int):
        self.cols = max(int(cols), 1)
        self.rows = max(int(rows), 1)
        self._lines: list[str | None] = [None] * self.rows
        self._full = True
        self._cursor: tuple[int, int, bool] | None = None
        self._layout_key = None
        self._layout_rows: list[str] = []
        self._status_key = None
        self._status_row = ""
        self._pane_cache: dict[int, tuple] = {}

    # ------------------------------------------------------------------ state
    def resize(self, cols: int, rows: int) -> None:
        self.cols = max(int(cols), 1)
        self.rows = max(int(rows), 1)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget what the viewer shows: the next frame repaints everything."""
        self._lines = [None] * self.rows
        self._full = True
        self._cursor = None
        self._layout_key = None
        self._status_key = None

    # ------------------------------------------------------------------ frame
    def frame(
        self,
        session,
        *,
        message: str | None = None,
        readonly: bool = False,
        prompt: tuple[str, int] | None = None,
    ) -> bytes:
        """Bytes that bring the viewer's terminal from what it last showed to `session` now;
        b"" when nothing changed. (`readonly` changes nothing drawn: tmux shows read-only
        clients the same screen.) `prompt` is a status-line prompt, (text, cursor column): drawn
        like a message, with the cursor shown at that column."""
        if prompt is not None:
            message = prompt[0]
        cols, rows = self.cols, self.rows
        status_on = _flag(session.option("status"), True)
        status = 1 if (status_on or message is not None) else 0
        status_top = status and (session.option("status-position") or "bottom") == "top"
        top = 1 if status_top else 0
        arows = rows - status
        if arows < 0:
            arows = 0

        window = session.current_window
        new_lines: list[str] = [""] * rows
        cursor: tuple[int, int, bool] = (0, 0, False)

        if window is not None and arows > 0:
            cursor = self._compose_window(session, window, new_lines, arows, status, top)
        if message is not None:
            cursor = (cursor[0], cursor[1], False)

        if status:
            srow = 0 if status_top else rows - 1
            if message is not None:
                new_lines[srow] = self._message_row(session, message, srow)
            else:
                new_lines[srow] = self._status_line(session, srow)
            if prompt is not None:
                cursor = (max(0, min(prompt[1], cols - 1)), srow, True)

        # ---- diff
        out: list[str] = []
        full = self._full
        if full:
            out.append("\x1b[0m\x1b[?25l\x1b[H\x1b[2J")
        lines = self._lines
        for y in range(rows):
            s = new_lines[y]
            if full:
                if s:
                    out.append(f"\x1b[{y + 1};1H{s}")
            elif s != lines[y]:
                out.append(f"\x1b[{y + 1};1H\x1b[0m\x1b[2K{s}")
        self._lines = new_lines
        self._full = False

        prev = self._cursor
        if out or cursor != prev:
            if out and not full and prev is not None and prev[2]:
                out.insert(0, "\x1b[?25l")
            x, y, vis = cursor
            out.append(f"\x1b[{y + 1};{x + 1}H")
            if vis:
                out.append("\x1b[?25h")
            elif prev is None or prev[2]:
                out.append("\x1b[?25l")
            self._cursor = cursor
        if not out:
            return b""
        return "".join(out).encode("utf-8", "replace")

    # ------------------------------------------------------------------ window area
    def _compose_window(self, session, window, new_lines, arows, status, top):
        cols = self.cols
        wsx, wsy = session.sx, session.sy
        panes = []
        for pid in window.pane_ids:
            p = session.panes.get(pid)
            if p is None or p.sx <= 0 or p.sy <= 0:
                continue
            if p.xoff >= wsx or p.yoff >= wsy or p.xoff + p.sx > wsx or p.yoff + p.sy > wsy:
                continue  # not visible (tmux's window_pane_visible)
            panes.append(p)
        ap = session.panes.get(window.active_pane)

        # Borders, outside cells and the size message: recomputed on layout / size changes.
        other = _option_style(session, "pane-border-style", "default").sgr()
        active = _option_style(session, "pane-active-border-style", "fg=green").sgr()
        geo = tuple((p.id, p.xoff, p.yoff, p.sx, p.sy) for p in panes)
        ageo = (ap.id, ap.xoff, ap.yoff, ap.sx, ap.sy) if ap is not None else None
        key = (cols, arows, status, top, wsx, wsy, geo, ageo, len(window.pane_ids), other, active)
        if key != self._layout_key:
            geoms = [_Geom(*g) for g in geo]
            want = next((g for g in geoms if ageo and g.id == ageo[0]), None)
            if want is None and ageo is not None:
                want = _Geom(*ageo)
            self._layout_rows = _border_rows(
                geoms, want, len(window.pane_ids), wsx, wsy, cols, arows, status, top, other, active
            )
            self._layout_key = key
            live = {p.id for p in panes}
            for pid in list(self._pane_cache):
                if pid not in live:
                    del self._pane_cache[pid]

        parts: list[list[str]] = [[b] if b else [] for b in self._layout_rows]
        mode_sgr = None
        for p in panes:
            if p.xoff >= cols or p.yoff >= arows:
                continue
            width = min(p.sx, cols - p.xoff)
            vt_rows, overlays = self._pane_rows(session, p, width)
            x1 = p.xoff + 1
            nrows = min(p.sy, arows - p.yoff)
            for i in range(nrows):
                y = p.yoff + i
                parts[y].append(f"\x1b[{top + y + 1};{x1}H\x1b[0m{vt_rows[i]}")
            if overlays:
                if mode_sgr is None:
                    mode_sgr = _option_style(session, "mode-style", "bg=yellow,fg=black").sgr()
                for i, x, text, sgr in overlays:
                    if i >= nrows or x >= width:
                        continue
                    y = p.yoff + i
                    parts[y].append(
                        f"\x1b[{top + y + 1};{p.xoff + x + 1}H{mode_sgr if sgr is None else sgr}{text}\x1b[0m"
                    )
        for y in range(arows):
            row = parts[y]
            new_lines[top + y] = row[0] if len(row) == 1 else "".join(row)

        # The cursor.
        if ap is None or not any(p is ap for p in panes):
            return (0, 0, False)
        if ap.in_mode:
            cm = ap.copy_mode
            cx, cy = (cm.cx, cm.cy) if cm is not None else (0, 0)
            vis = True
        else:
            cx, cy = ap.model.cursor
            vis = ap.model.cursor_visible
        x, y = ap.xoff + cx, ap.yoff + cy
        if not (0 <= x < cols and 0 <= y < arows):
            return (0, top, False)
        return (x, top + y, vis)

    def _pane_rows(self, session, p, width: int):
        """The pane's rows as VT strings clipped to `width` columns, and its overlays
        [(row, x, text, sgr or None for mode-style)] (copy mode header, selection, prompt)."""
        model = p.model
        if not p.in_mode:
            key = ("n", model.generation, width)
            cached = self._pane_cache.get(p.id)
            if cached is not None and cached[0] == key:
                return cached[1], None
            rows = model.screen_vt()
            if width < p.sx:
                rows = [_clip_vt(r, width) for r in rows]
            self._pane_cache[p.id] = (key, rows)
            return rows, None

        cm = p.copy_mode
        overlays: list[tuple] = []
        if p.message_view:
            lines = list(p.message_lines)
            key = (
                "m",
                session.generation,
                len(lines),
                lines[-1] if lines else None,
                p.sx,
                p.sy,
                cm.oy if cm is not None else None,
                width,
            )
            cached = self._pane_cache.get(p.id)
            if cached is not None and cached[0] == key:
                rows, hsize, oy = cached[1]
            else:
                wrapped = _wrap_lines(lines, p.sx)
                hsize = max(len(wrapped) - p.sy, 0)
                # Without a SYNC_COPY_MODE the view stays on the first lines (tmux keeps oy in
                # step with the history the new lines push out).
                oy = hsize if cm is None else min(max(cm.oy, 0), hsize)
                t = hsize - oy
                rows = [
                    (_clip_vt(r, width) if display_width(r) > width else r) for r in wrapped[t : t + p.sy]
                ]
                rows += [""] * (p.sy - len(rows))
                self._pane_cache[p.id] = (key, (rows, hsize, oy))
            text_rows = None
        else:
            hsize = model.history_size
            oy = min(max(cm.oy, 0), hsize)
            key = ("c", model.generation, oy, width)
            cached = self._pane_cache.get(p.id)
            if cached is not None and cached[0] == key:
                rows, text_rows = cached[1]
            else:
                rows = model.view_vt(oy)
                if width < p.sx:
                    rows = [_clip_vt(r, width) for r in rows]
                text_rows = None
                self._pane_cache[p.id] = (key, (rows, text_rows))
            if cm.selection is not None:
                if text_rows is None:
                    text_rows = model.view_text(oy)
                    self._pane_cache[p.id] = (key, (rows, text_rows))
                overlays += self._selection(session, p, cm, hsize, oy, text_rows)

        sx = p.sx
        # Position indicator at the top right.
        hdr = f"[{oy}/{hsize}]"
        if len(hdr) > sx:
            hdr = hdr[:sx]
        overlays.append((0, sx - len(hdr), hdr, None))
        if cm is not None and cm.prompt is not None and p.sy > 1:
            text = f"{cm.prompt.prompt}: {cm.prompt.text}"
            line = _Line(sx, DEFAULT_STYLE)
            line.nputs(text, DEFAULT_STYLE, sx)
            overlays.append((p.sy - 1, 0, "".join(c for c, _ in line.cells[: min(line.x, sx)]), None))
        if cm is not None and cm.cx == sx and 0 <= cm.cy < p.sy:
            overlays.append((cm.cy, sx - 1, "$", RESET))
        if width < sx:
            overlays = [(i, x, t[: max(width - x, 0)], s) for (i, x, t, s) in overlays]
        return rows, overlays

    @staticmethod
    def _selection(session, p, cm, hsize, oy, text_rows):
        """Selected cells per row, as overlays, following tmux's copy-mode selection rules."""
        sel = cm.selection
        sx, sy = p.sx, p.sy
        rect = bool(sel.flags)
        emacs = (session.option("mode-keys") or "emacs") != "vi"
        # The host sends the start row counted up from the bottom of the backing screen.
        abs_y = -sel.sely + hsize + sy - 1
        ty = hsize - oy
        ssx = sel.selx
        if abs_y < ty:
            if not rect:
                ssx = 0
            ssy = 0
        elif abs_y > ty + sy - 1:
            if not rect:
                ssx = sx - 1
            ssy = sy - 1
        else:
            ssy = abs_y - ty
        ex, ey = cm.cx, cm.cy
        out = []
        for py in range(max(min(ssy, ey), 0), min(max(ssy, ey), sy - 1) + 1):
            if rect:
                a, b = min(ssx, ex), max(ssx, ex)
            elif ssy < ey:
                a = ssx if py == ssy else 0
                b = ex if py == ey else sx - 1
            elif ssy > ey:
                a = ex if py == ey else 0
                xx = (ssx - 1) if emacs else ssx
                if xx < 0:
                    xx = _U32
                b = xx if py == ssy else sx - 1
            else:
                if ex < ssx:
                    xx = (ssx - 1) if emacs else ssx
                    a, b = ex, xx
                else:
                    a, b = ssx, ex
            a, b = max(a, 0), min(b, sx - 1)
            if a > b:
                continue
            cells = _columns(text_rows[py] if py < len(text_rows) else "", sx)
            seg = cells[a : b + 1]
            if seg[0] == "":
                seg[0] = " "  # starts on the right half of a wide char
            out.append((py, a, "".join(seg), None))
        return out

    # ------------------------------------------------------------------ status line
    def _message_row(self, session, message: str, srow: int) -> str:
        st = _option_style(session, "message-style", "bg=yellow,fg=black")
        line = _Line(self.cols, st)
        line.nputs(message, st, self.cols)
        return f"\x1b[{srow + 1};1H" + line.vt()

    def _status_line(self, session, srow: int) -> str:
        cols = self.cols
        last = last_window(session)
        opts = tuple(session.option(n) for n in _STATUS_OPTIONS)
        wins = tuple((w.idx, w.name) for w in sorted(session.windows.values(), key=lambda w: w.idx))
        key = (cols, self.rows, srow, session.status, wins, session.active_window, last, opts)
        if key == self._status_key:
            return self._status_row
        std = _option_style(session, "status-style", "bg=green,fg=black")
        line = _Line(cols, std)
        if self.rows > 1:
            self._draw_status(session, line, std, last)
        self._status_row = f"\x1b[{srow + 1};1H" + line.vt()
        self._status_key = key
        return self._status_row

    def _draw_status(self, session, line: _Line, std: Style, last) -> None:
        cols = self.cols
        left, right = session.status.left or "", session.status.right or ""
        llen = min(_cstrlen(left), _number(session.option("status-left-length"), 10))
        rlen = min(_cstrlen(right), _number(session.option("status-right-length"), 40))
        needed = llen + rlen
        if cols <= needed:
            return
        avail = cols - needed

        wstyle = _option_style(session, "window-status-style", "default")
        cstyle = _option_style(session, "window-status-current-style", "default")
        lstyle = _option_style(session, "window-status-last-style", "default")
        fmt = session.option("window-status-format", "#I:#W#{?window_flags,#{window_flags}, }")
        cfmt = session.option("window-status-current-format", "#I:#W#{?window_flags,#{window_flags}, }")
        sep = session.option("window-status-separator", " ")
        seplen = display_width(sep)
        entries = []
        wloffset = wlwidth = 0
        cur_width = 0
        for w in sorted(session.windows.values(), key=lambda w: w.idx):
            gc = _overlay(std, wstyle)
            f = fmt
            flags = ""
            if w.idx == session.active_window:
                gc = _overlay(gc, cstyle)
                f = cfmt
                flags = "*"
            elif w.idx == last:
                flags = "-"
            if w.idx == last:
                gc = _overlay(gc, lstyle)
            text = _expand_format(
                f,
                {
                    "window_index": str(w.idx),
                    "window_name": w.name,
                    "window_flags": flags,
                    "session_name": "0",
                },
            )
            width = _cstrlen(text)
            if w.idx == session.active_window:
                wloffset, cur_width = wlwidth, width
            entries.append((text, gc, width))
            wlwidth += width + seplen
        wl = _Line(wlwidth, std)
        for text, gc, _ in entries:
            wl.cnputs(text, gc)
            wl.nputs(sep, std)

        larrow = rarrow = False
        wlstart = 0
        if wlwidth > avail:
            if wloffset + cur_width < avail:
                rarrow = True
                avail -= 1
                wlwidth = avail
            else:
                larrow = True
                avail -= 1
                wlstart = wloffset + cur_width - avail
                if avail > 0 and wlwidth > wlstart + avail + 1:
                    rarrow = True
                    wlstart += 1
                    avail -= 1
                wlwidth = avail
            if wlwidth <= 0 or avail <= 0:
                return

        line.x = 0
        if llen:
            line.cnputs(left, std, llen)
        if larrow:
            line.put("<", 1, std)
        if rarrow:
            line.x = cols - rlen - 1
            line.put(">", 1, std)
        else:
            line.x = cols - rlen
        if rlen:
            line.cnputs(right, std, rlen)

        off = llen
        if wlwidth < avail:
            just = (session.option("status-justify") or "left").lower()
            if just in ("centre", "center", "1"):
                off += (avail - wlwidth) // 2
            elif just in ("right", "2"):
                off += avail - wlwidth
        if larrow:
            off += 1
        cells = line.cells
        for i in range(wlwidth):
            src = wlstart + i
            dst = off + i
            if 0 <= dst < cols and src < len(wl.cells):
                cells[dst] = wl.cells[src]
        # Do not leave half of a wide character at the copy's edges.
        if 0 <= off < cols and cells[off][0] == "":
            cells[off] = (" ", cells[off][1])
        end = off + wlwidth
        if 0 < end < cols and cells[end][0] == "":
            cells[end] = (" ", cells[end][1])


_STATUS_OPTIONS = (
    "status-style",
    "status-fg",
    "status-bg",
    "status-attr",
    "status-left-length",
    "status-right-length",
    "status-justify",
    "window-status-format",
    "window-status-current-format",
    "window-status-separator",
    "window-status-style",
    "window-status-current-style",
    "window-status-last-style",
    "window-status-fg",
    "window-status-bg",
    "window-status-attr",
    "window-status-current-fg",
    "window-status-current-bg",
    "window-status-current-attr",
    "window-status-last-fg",
    "window-status-last-bg",
    "window-status-last-attr",
)
