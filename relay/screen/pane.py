"""A pane's rows as a viewer's screen draws them, and the overlays of copy mode.

Copy mode: the pane scrolled ``oy`` rows into its history, ``[oy/history]`` at the pane's top
right in ``mode-style`` (black on yellow), the selection in mode-style, a search/jump prompt on
the pane's last row. tmate's message view (WRITE_COPY_MODE lines) is the same mode over an
output-only screen holding the lines.

Pane rows come from the pane's TerminalModel as self-contained VT strings, fetched once per pane
change (never cell by cell) and kept until the pane changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from relay.screen.cells import Line, clip_vt, columns, cut, wrap_lines
from relay.screen.style import DEFAULT_STYLE, RESET
from relay.screen.width import display_width
from relay.tmux import options

__all__ = ["Overlay", "PaneRows"]

# (row in the pane, column, text, SGR to draw it in or None for mode-style)
Overlay = tuple[int, int, str, str | None]

_U32 = 1 << 32  # tmux's unsigned arithmetic


class PaneRows:
    """Per pane, its rows clipped to the viewer's width, kept with what they were made from."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple, object]] = {}

    def keep_only(self, live: Iterable[int]) -> None:
        """Forget the panes not in `live`."""
        live = set(live)
        for pid in [pid for pid in self._cache if pid not in live]:
            del self._cache[pid]

    def rows(self, session, p, width: int) -> tuple[list[str], list[Overlay] | None]:
        """The pane's rows as VT strings clipped to `width` columns, and its overlays (copy mode
        header, selection, prompt); None when the pane is not in a mode."""
        if not p.in_mode:
            return self._screen(p, width), None
        cm = p.copy_mode
        overlays: list[Overlay] = []
        if p.message_view:
            rows, hsize, oy = self._message_view(session, p, width)
        else:
            rows, hsize, oy, text_rows = self._copy_view(p, cm, width)
            if cm.selection is not None:
                overlays += selection(session, p, cm, hsize, oy, text_rows)
        overlays += _mode_overlays(p, cm, hsize, oy)
        if width < p.sx:
            overlays = [(i, x, cut(t, width - x), s) for (i, x, t, s) in overlays]
        return rows, overlays

    def _cached(self, pid: int, key: tuple):
        cached = self._cache.get(pid)
        return cached[1] if cached is not None and cached[0] == key else None

    def _screen(self, p, width: int) -> list[str]:
        key = ("n", p.model.generation, width)
        rows = self._cached(p.id, key)
        if rows is None:
            rows = p.model.screen_vt()
            if width < p.sx:
                rows = [clip_vt(r, width) for r in rows]
            self._cache[p.id] = (key, rows)
        return rows

    def _message_view(self, session, p, width: int) -> tuple[list[str], int, int]:
        cm = p.copy_mode
        lines = list(p.message_lines)
        last = lines[-1] if lines else None
        key = ("m", session.generation, len(lines), last, p.sx, p.sy, cm.oy if cm else None, width)
        got = self._cached(p.id, key)
        if got is not None:
            return got
        wrapped = wrap_lines(lines, p.sx)
        hsize = max(len(wrapped) - p.sy, 0)
        # Without a SYNC_COPY_MODE the view stays on the first lines (tmux keeps oy in step with
        # the history the new lines push out).
        oy = hsize if cm is None else min(max(cm.oy, 0), hsize)
        t = hsize - oy
        rows = [(clip_vt(r, width) if display_width(r) > width else r) for r in wrapped[t : t + p.sy]]
        rows += [""] * (p.sy - len(rows))
        self._cache[p.id] = (key, (rows, hsize, oy))
        return rows, hsize, oy

    def _copy_view(self, p, cm, width: int) -> tuple[list[str], int, int, list[str]]:
        """Rows of the pane's screen scrolled into its history; the plain text rows too when a
        selection needs them (else [])."""
        model = p.model
        hsize = model.history_size
        oy = min(max(cm.oy, 0), hsize)
        key = ("c", model.generation, oy, width)
        got = self._cached(p.id, key)
        if got is not None:
            rows, text_rows = got
        else:
            rows = model.view_vt(oy)
            if width < p.sx:
                rows = [clip_vt(r, width) for r in rows]
            text_rows = None
        if text_rows is None and cm.selection is not None:
            text_rows = model.view_text(oy)
        self._cache[p.id] = (key, (rows, text_rows))
        return rows, hsize, oy, text_rows or []


def _mode_overlays(p, cm, hsize: int, oy: int) -> list[Overlay]:
    """The position indicator at the top right, the prompt, the '$' past the right edge."""
    sx = p.sx
    hdr = f"[{oy}/{hsize}]"[:sx]
    out: list[Overlay] = [(0, sx - len(hdr), hdr, None)]
    if cm is not None and cm.prompt is not None and p.sy > 1:
        text = f"{cm.prompt.prompt}: {cm.prompt.text}"
        line = Line(sx, DEFAULT_STYLE)
        line.nputs(text, DEFAULT_STYLE, sx)
        out.append((p.sy - 1, 0, "".join(c for c, _ in line.cells[: min(line.x, sx)]), None))
    if cm is not None and cm.cx == sx and 0 <= cm.cy < p.sy:
        out.append((cm.cy, sx - 1, "$", RESET))
    return out


def _selection_start(sel, rect: bool, hsize: int, oy: int, sx: int, sy: int) -> tuple[int, int]:
    """Where the selection starts on the view, clamped to its top or bottom row."""
    # The host sends the start row counted up from the bottom of the backing screen.
    abs_y = -sel.sely + hsize + sy - 1
    ty = hsize - oy
    if abs_y < ty:
        return (sel.selx if rect else 0), 0
    if abs_y > ty + sy - 1:
        return (sel.selx if rect else sx - 1), sy - 1
    return sel.selx, abs_y - ty


def _span(py: int, start: tuple[int, int], end: tuple[int, int], rect: bool, emacs: bool, sx: int):
    """The first and last selected column of view row `py`."""
    (ssx, ssy), (ex, ey) = start, end
    if rect:
        return min(ssx, ex), max(ssx, ex)
    if ssy < ey:
        return (ssx if py == ssy else 0), (ex if py == ey else sx - 1)
    xx = (ssx - 1) if emacs else ssx
    if ssy > ey:
        if xx < 0:
            xx = _U32
        return (ex if py == ey else 0), (xx if py == ssy else sx - 1)
    return (ex, xx) if ex < ssx else (ssx, ex)


def selection(session, p, cm, hsize: int, oy: int, text_rows: list[str]) -> list[Overlay]:
    """Selected cells per row, as overlays, following tmux's copy-mode selection rules."""
    sel = cm.selection
    sx, sy = p.sx, p.sy
    rect = bool(sel.flags)
    emacs = not options.vi_keys(session.option("mode-keys"))
    start = _selection_start(sel, rect, hsize, oy, sx, sy)
    end = (cm.cx, cm.cy)
    out: list[Overlay] = []
    for py in range(max(min(start[1], end[1]), 0), min(max(start[1], end[1]), sy - 1) + 1):
        a, b = _span(py, start, end, rect, emacs, sx)
        a, b = max(a, 0), min(b, sx - 1)
        if a > b:
            continue
        seg = columns(text_rows[py] if py < len(text_rows) else "", sx)[a : b + 1]
        if seg[0] == "":
            seg[0] = " "  # starts on the right half of a wide char
        out.append((py, a, "".join(seg), None))
    return out
