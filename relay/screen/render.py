"""Per-viewer screen composition: what a tmux 2.4 client of the viewer's size would show.

A viewer (``ssh TOKEN@relay``) sees the session's current window drawn at the *session's* size:
every pane at its layout geometry, the pane borders (relay.screen.borders), and the status line
(relay.screen.status) on the viewer's last row (or first, with ``status-position top``). The
rules follow tmux 2.4 (the base of tmate 2.4 and of the C server); they were read from its
drawing code, not copied:

- ``status off`` removes the status line (the window area gets the row).
- A message (``message``) replaces the status line, in ``message-style`` (black on yellow), and
  hides the cursor, as tmux does while it shows one. With ``status off`` it still takes the row.
- Panes in copy mode or tmate's message view: relay.screen.pane.
- The cursor is the active pane's (or copy mode's) cursor; hidden when the pane hides it, while a
  message is shown, or when it is outside the viewer's window area.

Output is incremental: the screen rows last sent to the viewer are kept as strings, and a frame
holds only the rows whose string changed, each repainted whole from an SGR reset at the start of
its row (``CSI row;1 H``; within a row, runs are placed by column alone, ``CSI col G``, so a
row's string does not depend on the row it is on), then the cursor. When rows moved up (a pane
that scrolled: a shell printing lines, a log), the frame first scrolls them on the viewer's
terminal (a scroll region, ``CSI top;bottom r``, and line feeds at its bottom) and repaints only
what the scroll did not bring: one new line instead of the whole pane.

What a viewer sees is a function of the session's state, the viewer's size and its own message
or prompt; the session's state is stamped by ``session.generation`` (bumped on every change but
pane output) and each pane's ``model.generation``. With ``frame(share=True)`` (the session
process's viewers) the last composition is kept with its stamp, and another viewer of that size
framing the same state takes it instead of composing it again (each still diffs it against
what it was sent, unless it was sent what the previous viewer was sent: then it takes that
viewer's frame too). The layout and the status line are recomputed only when the session's
generation moves.
"""

from __future__ import annotations

import weakref

from relay.screen.borders import Geom, border_rows
from relay.screen.pane import PaneRows
from relay.screen.status import StatusLine, message_row
from relay.screen.style import option_style
from relay.tmux import options

__all__ = ["ViewerScreen", "failed_cmd_message", "scroll_up"]

Cursor = tuple[int, int, bool]  # x, y, visible

# A scroll is used when it spares at least this many row repaints (it costs about a row's bytes).
MIN_SCROLL_GAIN = 3


def failed_cmd_message(cause: str) -> str:
    """The status message the C server shows a viewer for FAILED_CMD: the cause, capitalised."""
    return cause[:1].upper() + cause[1:]


def _visible_panes(session, window) -> list:
    """The window's panes that fit in the session's size (tmux's window_pane_visible)."""
    panes = []
    for pid in window.pane_ids:
        p = session.panes.get(pid)
        if p is None or p.sx <= 0 or p.sy <= 0:
            continue
        if p.xoff >= session.sx or p.yoff >= session.sy:
            continue
        if p.xoff + p.sx > session.sx or p.yoff + p.sy > session.sy:
            continue
        panes.append(p)
    return panes


# The session process's last composition: (the session, its stamp with the viewer's size,
# message and prompt, the rows, the cursor). One entry: viewers frame one after the other.
_last: tuple[weakref.ref, tuple, list[str], Cursor] | None = None
# And the last frame made from it: (what that viewer showed before, its cursor then, the
# composition, the frame). A viewer that showed the very same rows (the same list: viewers that
# were sent the same frames keep the composition they were sent, shared) gets the same bytes.
_last_frame: tuple[list, Cursor | None, list[str], bytes] | None = None


def _stamp(session, cols: int, rows: int, message: str | None, prompt) -> tuple:
    """Everything a composition depends on (see the module's docstring)."""
    gens = tuple(p.model.generation for p in session.panes.values())
    return (cols, rows, message, prompt, session.generation, gens)


def scroll_up(old: list[str], new: list[str]) -> tuple[int, int, int] | None:
    """(first row, last row, lines): the scroll region, and how far up to scroll it, that brings
    the most of the rows the viewer shows (`old`) to where `new` has them; None unless that spares
    MIN_SCROLL_GAIN row repaints. A scroll of k lines in rows t..b shows old rows t+k..b in rows
    t..b-k and blank rows ("") below them."""
    n = len(new)
    if len(old) != n:
        return None
    changed = [y for y in range(n) if new[y] != old[y]]
    if len(changed) < MIN_SCROLL_GAIN:
        return None
    rows_of: dict[str, list[int]] = {}
    for j, s in enumerate(old):
        if s:
            rows_of.setdefault(s, []).append(j)
    votes: dict[int, int] = {}  # how far up: how many changed rows it would bring
    for y in changed:
        for j in rows_of.get(new[y], ()):
            if j > y:
                votes[j - y] = votes.get(j - y, 0) + 1
    best: tuple[int, int, int, int] | None = None  # (rows spared, t, b, k)
    for k in sorted(votes, key=lambda d: (-votes[d], d))[:2]:
        # Rows t..e take old[y + k]: each spares a repaint where that matches and its own did
        # not, and costs one where its own matched; the best such run (Kadane), then its k rows
        # e+1..e+k, which the scroll blanks.
        gain = start = 0
        top = (0, 0, -1)  # (spared, t, e)
        for y in range(n - k):
            g = (new[y] == old[y + k]) - (new[y] == old[y])
            if gain <= 0:
                gain, start = g, y
            else:
                gain += g
            if gain > top[0]:
                top = (gain, start, y)
        spared, t, e = top
        if e < t:
            continue
        b = e + k
        spared += sum((new[y] == "") - (new[y] == old[y]) for y in range(e + 1, b + 1))
        if best is None or spared > best[0]:
            best = (spared, t, b, k)
    if best is None or best[0] < MIN_SCROLL_GAIN:
        return None
    return best[1], best[2], best[3]


class ViewerScreen:
    """What one viewer's terminal shows, and the bytes that bring it up to date."""

    def __init__(self, cols: int, rows: int):
        self.cols = max(int(cols), 1)
        self.rows = max(int(rows), 1)
        self._lines: list[str | None] = [None] * self.rows
        self._full = True
        self._cursor: Cursor | None = None
        self._layout_key: tuple | None = None
        self._layout_rows: list[str] = []
        self._status = StatusLine()
        self._panes = PaneRows()
        self._window: tuple | None = None  # (session, stamp, (panes, active pane, layout rows))

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
        self._window = None
        self._status.invalidate()

    # ------------------------------------------------------------------ frame
    def frame(
        self,
        session,
        *,
        message: str | None = None,
        prompt: tuple[str, int] | None = None,
        share: bool = False,
    ) -> bytes:
        """Bytes that bring the viewer's terminal from what it last showed to `session` now;
        b"" when nothing changed. `prompt` is a status-line prompt, (text, cursor column): drawn
        like a message, with the cursor shown at that column. (Read-only viewers get the same
        frames: tmux shows read-only clients the same screen.) `share`: take, and leave for the
        next viewer, the process's last composition when its stamp matches (the session
        process's viewers; see the module's docstring)."""
        global _last, _last_frame
        stamp = _stamp(session, self.cols, self.rows, message, prompt) if share else ()
        last = _last if share else None
        if last is not None and last[1] == stamp and last[0]() is session:
            new_lines, cursor = last[2], last[3]
        else:
            new_lines, cursor = self._compose(session, message, prompt)
            if share:
                _last = (weakref.ref(session), stamp, new_lines, cursor)
        full, shown, shown_cursor = self._full, self._lines, self._cursor
        made = _last_frame if share and not full else None
        if made is not None and made[0] is shown and made[2] is new_lines and made[1] == shown_cursor:
            self._lines, self._cursor = new_lines, cursor  # type: ignore[assignment]  # never changed
            return made[3]
        out = self._diff(new_lines)
        self._move_cursor(out, cursor, full)
        frame = "".join(out).encode("utf-8", "replace") if out else b""
        if share and not full:
            _last_frame = (shown, shown_cursor, new_lines, frame)
        return frame

    def _compose(
        self, session, message: str | None, prompt: tuple[str, int] | None
    ) -> tuple[list[str], Cursor]:
        """Every row of the screen (not diffed yet) and the cursor."""
        if prompt is not None:
            message = prompt[0]
        rows = self.rows
        status = 1 if message is not None else options.status_rows(session.option("status"))
        top = 1 if status and options.status_at_top(session.option("status-position")) else 0
        arows = max(rows - status, 0)

        new_lines: list[str] = [""] * rows
        cursor: Cursor = (0, 0, False)
        window = session.current_window
        if window is not None and arows > 0:
            cursor = self._compose_window(session, window, new_lines, arows, top)
        if status:
            srow = 0 if top else rows - 1
            if message is not None:
                new_lines[srow] = message_row(session, message, self.cols)
                cursor = (cursor[0], cursor[1], False)
            else:
                new_lines[srow] = self._status.row(session, self.cols, rows)
            if prompt is not None:
                cursor = (max(0, min(prompt[1], self.cols - 1)), srow, True)
        return new_lines, cursor

    def _diff(self, new_lines: list[str]) -> list[str]:
        """The rows that changed since the last frame (all of them after invalidate)."""
        out: list[str] = []
        full = self._full
        if full:
            out.append("\x1b[0m\x1b[?25l\x1b[H\x1b[2J")
        lines = self._lines
        if not full:
            scroll = scroll_up(lines, new_lines)  # type: ignore[arg-type]  # no None once drawn
            if scroll is not None:
                t, b, k = scroll
                # SGR reset first: the lines scrolled in take the current background.
                out.append(f"\x1b[0m\x1b[{t + 1};{b + 1}r\x1b[{b + 1};1H" + "\n" * k + "\x1b[r")
                lines = lines[:t] + lines[t + k : b + 1] + [""] * k + lines[b + 1 :]
        for y, s in enumerate(new_lines):
            if full:
                if s:
                    out.append(f"\x1b[{y + 1};1H{s}")
            elif s != lines[y]:
                out.append(f"\x1b[{y + 1};1H\x1b[0m\x1b[2K{s}")
        self._lines = new_lines  # type: ignore[assignment]  # kept, never changed: see frame()
        self._full = False
        return out

    def _move_cursor(self, out: list[str], cursor: Cursor, full: bool) -> None:
        """Place (and show or hide) the cursor after the rows in `out`, if anything changed."""
        prev = self._cursor
        if not out and cursor == prev:
            return
        if out and not full and prev is not None and prev[2]:
            out.insert(0, "\x1b[?25l")  # hidden while rows are repainted
        x, y, vis = cursor
        out.append(f"\x1b[{y + 1};{x + 1}H")
        if vis:
            out.append("\x1b[?25h")
        elif prev is None or prev[2]:
            out.append("\x1b[?25l")
        self._cursor = cursor

    # ------------------------------------------------------------------ window area
    def _compose_window(self, session, window, new_lines: list[str], arows: int, top: int) -> Cursor:
        """Draw the window's borders and panes into `new_lines`; the cursor."""
        stamp = (session.generation, window.idx, self.cols, arows, top)
        cached = self._window
        if cached is not None and cached[0] is session and cached[1] == stamp:
            panes, ap, layout = cached[2]
        else:  # the layout moved (or an option, a size): look again
            panes = _visible_panes(session, window)
            ap = session.panes.get(window.active_pane)
            layout = self._layout(session, window, panes, ap, arows)
            self._window = (session, stamp, (panes, ap, layout))
        parts: list[list[str]] = [[b] if b else [] for b in layout]
        self._draw_panes(session, panes, parts, arows)
        for y in range(arows):
            row = parts[y]
            new_lines[top + y] = row[0] if len(row) == 1 else "".join(row)
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
        if not (0 <= x < self.cols and 0 <= y < arows):
            return (0, top, False)
        return (x, top + y, vis)

    def _layout(self, session, window, panes: list, ap, arows: int) -> list[str]:
        """Borders, outside cells and the size message: recomputed on layout or size changes."""
        other = option_style(session, "pane-border-style", "default").sgr()
        active = option_style(session, "pane-active-border-style", "fg=green").sgr()
        geo = tuple((p.id, p.xoff, p.yoff, p.sx, p.sy) for p in panes)
        ageo = (ap.id, ap.xoff, ap.yoff, ap.sx, ap.sy) if ap is not None else None
        wsx, wsy = session.sx, session.sy
        key = (self.cols, arows, wsx, wsy, geo, ageo, len(window.pane_ids), other, active)
        if key != self._layout_key:
            geoms = [Geom(*g) for g in geo]
            want = next((g for g in geoms if ageo and g.id == ageo[0]), None)
            if want is None and ageo is not None:
                want = Geom(*ageo)
            npanes = len(window.pane_ids)
            self._layout_rows = border_rows(geoms, want, npanes, wsx, wsy, self.cols, arows, other, active)
            self._layout_key = key
            self._panes.keep_only(p.id for p in panes)
        return self._layout_rows

    def _draw_panes(self, session, panes: list, parts: list[list[str]], arows: int) -> None:
        """Each pane's rows and overlays, as positioned runs appended to `parts` (per row)."""
        cols = self.cols
        mode_sgr = None
        for p in panes:
            if p.xoff >= cols or p.yoff >= arows:
                continue
            width = min(p.sx, cols - p.xoff)
            vt_rows, overlays = self._panes.rows(session, p, width)
            nrows = min(p.sy, arows - p.yoff)
            for i in range(nrows):
                parts[p.yoff + i].append(f"\x1b[{p.xoff + 1}G\x1b[0m{vt_rows[i]}")
            if not overlays:
                continue
            if mode_sgr is None:
                mode_sgr = option_style(session, "mode-style", "bg=yellow,fg=black").sgr()
            for i, x, text, sgr in overlays:
                if i >= nrows or x >= width:
                    continue
                y = p.yoff + i
                sgr = mode_sgr if sgr is None else sgr
                parts[y].append(f"\x1b[{p.xoff + x + 1}G{sgr}{text}\x1b[0m")
