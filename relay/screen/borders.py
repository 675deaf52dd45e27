"""Pane borders and junctions (tmux 2.4's screen-redraw), drawn per window-area row.

- A cell is a border cell when it is just outside a pane's rectangle (the column left of / right
  of it, the row above / below it). Its character comes from which of its four neighbours are
  border cells too (``│ ─ ┌ ┐ └ ┘ ┬ ┴ ├ ┤ ┼``); cells further right or lower than the window
  (x > sx or y > sy) are "outside" and drawn as ``·``. So a viewer larger than the session sees a
  ``│`` column at x = sx, a ``─`` row at y = sy with ``┘`` at the corner, and dots beyond.
- Colours: ``pane-border-style`` (default: terminal default) and ``pane-active-border-style``
  (default ``fg=green``) for cells on the active pane's border. With exactly two panes in the
  window, only the half of the shared border nearer the active pane is coloured (tmux 2.x's
  split-border rule).
- A viewer larger than the session also gets ``(size WxH from a smaller client)`` at the right end
  of the last row above the status line, when it fits.

The rows change only with the layout, the viewer's size and the border styles, so the viewer's
screen computes them once per such change.
"""

from __future__ import annotations

from relay.screen.style import RESET

__all__ = ["Geom", "border_rows"]

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

_U32 = 1 << 32  # tmux's unsigned arithmetic


class Geom:
    """A pane's place in the window: id, offset and size."""

    __slots__ = ("id", "xoff", "yoff", "sx", "sy")

    def __init__(self, pid: int, xoff: int, yoff: int, sx: int, sy: int):
        self.id, self.xoff, self.yoff, self.sx, self.sy = pid, xoff, yoff, sx, sy


def _border1(p: Geom, px: int, py: int) -> int:
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

    def __init__(self, panes: list[Geom], wsx: int, wsy: int):
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


def _cell_type(
    panes: list[Geom], grid: _BorderGrid, wsx: int, wsy: int, px: int, py: int
) -> tuple[int, Geom | None]:
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


def _active_border(
    px: int, py: int, typ: int, wsx: int, wsy: int, npanes: int, want: Geom | None, wp: Geom | None
) -> bool:
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


def _size_message(wsx: int, wsy: int, cols: int, arows: int) -> tuple[str, int, int]:
    """The size note of a viewer larger than the window (tty rows - status = arows): its text
    and position, or ("", -1, -1) when there is none or it does not fit."""
    if not (arows > wsy or cols > wsx):
        return "", -1, -1
    msg = f"(size {wsx}x{wsy} from a smaller client)"
    ml = len(msg)
    if arows - 1 > wsy and cols >= ml:
        return msg, cols - ml, arows - 1
    if (cols - wsx) % _U32 > ml:
        # tmux's unsigned position: a negative x is off screen, nothing skipped
        return msg, cols - ml if cols >= ml else _U32, arows - 1
    return "", -1, -1


def _inside_rows(panes: list[Geom], cols: int, arows: int) -> list[bytearray]:
    """Per row, 1 for each column inside a pane."""
    inside: list[bytearray] = []
    for y in range(arows):
        row = bytearray(cols)
        for p in panes:
            if p.yoff <= y < p.yoff + p.sy and p.xoff < cols:
                a, b = p.xoff, min(p.xoff + p.sx, cols)
                row[a:b] = b"\x01" * (b - a)
        inside.append(row)
    return inside


class _Runs:
    """The runs of one row, each placed at its column: border characters of one colour in a row
    are one run."""

    __slots__ = ("out", "x", "sgr", "chars")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.x, self.sgr, self.chars = -1, "", ""

    def add(self, x: int, sgr: str, ch: str) -> None:
        if self.chars and sgr == self.sgr and x == self.x + len(self.chars):
            self.chars += ch
            return
        self.end()
        self.x, self.sgr, self.chars = x, sgr, ch

    def end(self) -> None:
        if self.chars:
            self.out.append(f"\x1b[{self.x + 1}G{self.sgr}{self.chars}")
            self.chars = ""


def border_rows(
    panes: list[Geom],
    want: Geom | None,
    npanes: int,
    wsx: int,
    wsy: int,
    cols: int,
    arows: int,
    other_sgr: str,
    active_sgr: str,
) -> list[str]:
    """Per window-area row, the VT runs painting its border / outside cells and the size message,
    each placed at its column (CHA) on a row the caller has placed the cursor on; `want` is the
    active pane."""
    msg, msgx, msgy = _size_message(wsx, wsy, cols, arows)
    grid = _BorderGrid(panes, wsx, wsy)
    inside = _inside_rows(panes, cols, arows)
    out: list[str] = []
    for y in range(arows):
        runs = _Runs()
        ins = inside[y]
        for x in range(cols):
            if ins[x]:
                continue
            if x > wsx or y > wsy:
                typ, wp = _OUTSIDE, None
            else:
                typ, wp = _cell_type(panes, grid, wsx, wsy, x, y)
            if typ == _INSIDE or (typ == _OUTSIDE and msg and x > msgx and y == msgy):
                runs.end()
                continue
            active = _active_border(x, y, typ, wsx, wsy, npanes, want, wp)
            runs.add(x, active_sgr if active else other_sgr, _BORDER_CHARS[typ])
        runs.end()
        if msg and y == msgy and msgx < cols:
            runs.out.append(f"\x1b[{msgx + 1}G{RESET}{msg}")
        if runs.out:
            runs.out.append(RESET)
        out.append("".join(runs.out))
    return out
