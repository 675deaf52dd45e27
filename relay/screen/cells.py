"""Cell lines and VT rows: the one-row cell buffer the status line is drawn into, and clipping,
column splitting and wrapping of text by display width (relay.screen.width)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from relay.screen.style import RESET, Style, parse_style
from relay.screen.width import char_width, display_width

__all__ = ["Line", "cstrlen", "clip_vt", "cut", "columns", "wrap_lines"]


class Line:
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
            w = char_width(ch)
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


def cstrlen(text: str) -> int:
    """Width of status text with #[...] markup removed (tmux's screen_writecstrlen)."""
    if "#[" in text:
        text = re.sub(r"#\[[^\]]*\]?", "", text)
    return display_width(text)


_VT_TOKEN = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[^\[\]]")


def clip_vt(s: str, width: int) -> str:
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
        w = char_width(ch)
        if w < 0:
            continue
        if col + w > width:
            if col < width:
                out.append(" " * (width - col))
            return width
        out.append(ch)
        col += w
    return col


def cut(text: str, width: int) -> str:
    """The first `width` columns of plain text (a wide character crossing the edge becomes a
    space)."""
    if text.isascii() or width <= 0:
        return text[: max(width, 0)]
    out: list[str] = []
    _clip_text(text, width, 0, out)
    return "".join(out)


def columns(text: str, width: int) -> list[str]:
    """Plain row text -> one entry per column ('' for the second half of a wide char)."""
    cols: list[str] = []
    for ch in text:
        w = char_width(ch)
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


def wrap_lines(lines: Iterable[str], width: int) -> list[str]:
    """tmate's message view: each line written to a `width`-column screen, wrapping."""
    rows: list[str] = []
    for line in lines:
        cur: list[str] = []
        col = 0
        for ch in line:
            w = char_width(ch)
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
