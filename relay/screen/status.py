"""The status line and its window list (tmux 2.4's status.c), and the message row.

``status-style`` (default ``bg=green,fg=black``) across the row; the host's status-left (at most
``status-left-length`` = 10 columns) at the left; the window list (``window-status-format`` =
``#I:#W#{?window_flags,#{window_flags}, }``, ``*`` current window, ``-`` last window, separated
by ``window-status-separator`` = one space), placed by ``status-justify``; the host's
status-right (at most ``status-right-length`` = 40 columns) right-aligned. ``#[fg=..,bg=..,
bright,..]`` markup in them is a style relative to status-style. A window list too wide gets
``<`` / ``>`` arrows and is scrolled so the current window shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.screen.cells import Line, cstrlen
from relay.screen.style import Style, option_style, overlay
from relay.screen.width import display_width
from relay.tmux import options
from relay.tmux.formats import expand, window_values

__all__ = ["StatusLine", "message_row", "STATUS_OPTIONS"]

DEFAULT_WINDOW_FORMAT = "#I:#W#{?window_flags,#{window_flags}, }"

# Every option the status line reads: a change to any of them redraws it.
STATUS_OPTIONS = (
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


def message_row(session, message: str, cols: int) -> str:
    """A message in place of the status line, in ``message-style`` (black on yellow); like every
    row of a frame, drawn from column 1 of a row the caller has placed the cursor on."""
    st = option_style(session, "message-style", "bg=yellow,fg=black")
    line = Line(cols, st)
    line.nputs(message, st, cols)
    return line.vt()


class StatusLine:
    """One viewer's status line, redrawn only when something it shows changed."""

    __slots__ = ("_key", "_row", "_fast")

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._row = ""
        self._fast: tuple | None = None  # (session, its generation, cols, rows) of _row

    def invalidate(self) -> None:
        self._key = None
        self._fast = None

    def row(self, session, cols: int, rows: int) -> str:
        """The status line of a `cols` x `rows` viewer (drawn from column 1 of the current row)."""
        # What it shows changes only with the session's generation (bumped on every change but
        # pane output): until it moves, not even the options are looked up again.
        fast = self._fast
        if fast is not None and fast[0] is session and fast[1:] == (session.generation, cols, rows):
            return self._row
        self._fast = (session, session.generation, cols, rows)
        opts = tuple(session.option(n) for n in STATUS_OPTIONS)
        wins = tuple((w.idx, w.name) for w in sorted(session.windows.values(), key=lambda w: w.idx))
        key = (cols, rows, session.status, wins, session.active_window, session.last_window, opts)
        if key != self._key:
            std = option_style(session, "status-style", "bg=green,fg=black")
            line = Line(cols, std)
            if rows > 1:
                _draw(session, line, std, cols)
            self._row = line.vt()
            self._key = key
        return self._row


@dataclass(slots=True)
class _WindowList:
    line: Line  # every entry drawn, one after the other
    width: int
    current_offset: int  # where the current window's entry starts
    current_width: int


def _window_list(session, std: Style) -> _WindowList:
    wstyle = option_style(session, "window-status-style", "default")
    cstyle = option_style(session, "window-status-current-style", "default")
    lstyle = option_style(session, "window-status-last-style", "default")
    fmt = session.option("window-status-format", DEFAULT_WINDOW_FORMAT)
    cfmt = session.option("window-status-current-format", DEFAULT_WINDOW_FORMAT)
    sep = session.option("window-status-separator", " ")
    seplen = display_width(sep)
    last = session.last_window
    entries = []
    width = offset = current_width = 0
    for w in sorted(session.windows.values(), key=lambda w: w.idx):
        gc = overlay(std, wstyle)
        current = w.idx == session.active_window
        if current:
            gc = overlay(gc, cstyle)
        if w.idx == last:
            gc = overlay(gc, lstyle)
        text = expand(cfmt if current else fmt, window_values(session, w))
        tw = cstrlen(text)
        if current:
            offset, current_width = width, tw
        entries.append((text, gc))
        width += tw + seplen
    line = Line(width, std)
    for text, gc in entries:
        line.cnputs(text, gc)
        line.nputs(sep, std)
    return _WindowList(line, width, offset, current_width)


@dataclass(slots=True)
class _Scroll:
    """The part of a too wide window list shown, and its arrows."""

    start: int
    width: int
    avail: int
    larrow: bool = False
    rarrow: bool = False


def _scroll(wl: _WindowList, avail: int) -> _Scroll | None:
    """Which columns of the window list fit in `avail`; None when none do."""
    s = _Scroll(0, wl.width, avail)
    if wl.width <= avail:
        return s
    if wl.current_offset + wl.current_width < avail:
        s.rarrow = True
        s.avail -= 1
    else:
        s.larrow = True
        s.avail -= 1
        s.start = wl.current_offset + wl.current_width - s.avail
        if s.avail > 0 and wl.width > s.start + s.avail + 1:
            s.rarrow = True
            s.start += 1
            s.avail -= 1
    s.width = s.avail
    if s.width <= 0 or s.avail <= 0:
        return None
    return s


def _draw(session, line: Line, std: Style, cols: int) -> None:
    left, right = session.status.left or "", session.status.right or ""
    llen = min(cstrlen(left), options.number(session.option("status-left-length"), 10))
    rlen = min(cstrlen(right), options.number(session.option("status-right-length"), 40))
    if cols <= llen + rlen:
        return
    wl = _window_list(session, std)
    s = _scroll(wl, cols - llen - rlen)
    if s is None:
        return
    line.x = 0
    if llen:
        line.cnputs(left, std, llen)
    if s.larrow:
        line.put("<", 1, std)
    line.x = cols - rlen - (1 if s.rarrow else 0)
    if s.rarrow:
        line.put(">", 1, std)
    if rlen:
        line.cnputs(right, std, rlen)
    off = llen
    if s.width < s.avail:
        just = options.justify(session.option("status-justify"))
        if just == "centre":
            off += (s.avail - s.width) // 2
        elif just == "right":
            off += s.avail - s.width
    if s.larrow:
        off += 1
    _copy(line, wl.line, off, s.start, s.width, cols)


def _copy(line: Line, wl: Line, off: int, start: int, width: int, cols: int) -> None:
    """Columns start.. of the window list into the status line at `off`."""
    cells = line.cells
    for i in range(width):
        src = start + i
        dst = off + i
        if 0 <= dst < cols and src < len(wl.cells):
            cells[dst] = wl.cells[src]
    # Do not leave half of a wide character at the copy's edges.
    if 0 <= off < cols and cells[off][0] == "":
        cells[off] = (" ", cells[off][1])
    end = off + width
    if 0 < end < cols and cells[end][0] == "":
        cells[end] = (" ", cells[end][1])
