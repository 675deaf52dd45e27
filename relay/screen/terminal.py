"""The screen model of one pane: a narrow interface of our own over libghostty-vt (pyghostty).

Everything the rest of the relay needs from a terminal engine goes through `TerminalModel`, so the
engine could be swapped. The relay is not the pane's pty: replies the terminal would write back
(DSR, DA, ...) are discarded.

Reading the screen never walks cells from Python in the common case: text and styled (VT) rows
come from libghostty's formatter in one call per request. The one exception is a row with no text
at all but a background colour (an erase with a coloured background), which the formatter drops:
for a row the formatter leaves empty, its two end cells are read; if either is coloured, nine
samples that agree are taken as a uniformly coloured row (what ED/EL produce), otherwise that row
alone is scanned cell by cell.

History is capped in bytes, not lines (pruning by line count is ~8x slower in libghostty, see
docs/architecture.md section 6). `history_cap_bytes()` sizes the cap so that at least `history_lines`
rows of ordinary text (plain or SGR-coloured) survive at the pane's width; content that needs more
memory per row (an RGB colour per cell, combining marks in every cell) keeps fewer rows: memory
stays bounded rather than the row count. A session sets each pane's `history_budget` (its share
of the session's history bytes, relay/tmate/wire.py SESSION_HISTORY_BYTES): the cap is then the
smaller of the two.

The native terminal is allocated lazily, on the first call that needs it (output, a read): a pane
costs memory in proportion to what is used, not to its declared size. libghostty-vt reserves
~1.5 MiB of address space per terminal (and as much again for the alternate screen) plus ~10 bytes
per cell, so a layout of many panes nobody writes to or looks at costs nothing. An allocation the
engine cannot make (the jail's memory cap) raises `TerminalMemoryError`, a MemoryError.
"""

from __future__ import annotations

import math

from pyghostty import ffi, lib
from pyghostty._ffi import union_fn

__all__ = ["TerminalModel", "TerminalError", "TerminalMemoryError", "history_cap_bytes"]


class TerminalError(RuntimeError):
    pass


class TerminalMemoryError(TerminalError, MemoryError):
    """The engine could not allocate (the process's memory cap): the session cannot go on."""


# ------------------------------------------------------------------------- history byte cap
# Measured with pyghostty 0.1.3 (bench/terminal_ingest.py and the tests): a row of a standard
# page costs 9 bytes per cell plus ~16 bytes (200 cols: 1800 B/row, 500 cols: 4510 B/row), and
# the pruner frees whole pages (~400 KiB, 90-570 rows depending on the width), so the retained
# count swings by one page. SGR-coloured text (ls --color) costs up to ~12% more at narrow widths.
BYTES_PER_CELL = 9
BYTES_PER_ROW_OVERHEAD = 16
STYLE_MARGIN = 1.15  # styled text pages are up to ~12% bigger than plain ones
PAGE_SLACK_BYTES = 2 * 512 * 1024  # one page pruned at a time + the partially used last page


def history_cap_bytes(cols: int, rows: int, history_lines: int) -> int:
    """Scrollback byte cap that keeps >= `history_lines` rows of ordinary text at `cols` width."""
    per_row = BYTES_PER_CELL * max(cols, 1) + BYTES_PER_ROW_OVERHEAD
    return int(math.ceil((history_lines + rows) * per_row * STYLE_MARGIN)) + PAGE_SLACK_BYTES


# ------------------------------------------------------------------------- ffi helpers

_grid_ref_fn = None


def _grid_ref_call():
    global _grid_ref_fn
    if _grid_ref_fn is None:
        _grid_ref_fn = union_fn(
            "ghostty_terminal_grid_ref", "GhosttyResult(*)(GhosttyTerminal, GhosttyPointS, GhosttyGridRef*)"
        )
    return _grid_ref_fn


def _check(res: int, what: str) -> None:
    if res:
        if res == lib.GHOSTTY_OUT_OF_MEMORY:
            raise TerminalMemoryError(f"{what} failed: out of memory")
        raise TerminalError(f"{what} failed: {res}")


_TAG_ACTIVE = lib.GHOSTTY_POINT_TAG_ACTIVE
_TAG_SCREEN = lib.GHOSTTY_POINT_TAG_SCREEN
_FMT_PLAIN = lib.GHOSTTY_FORMATTER_FORMAT_PLAIN
_FMT_VT = lib.GHOSTTY_FORMATTER_FORMAT_VT


class TerminalModel:
    """One pane's terminal: feed it the pane's pty bytes, read its screen and history back."""

    __slots__ = (
        "_t",
        "_closed",
        "history_budget",
        "_cols",
        "_rows",
        "history_lines",
        "generation",
        "_dirty",
        "_pt",
        "_ref",
        "_ref2",
        "_sel",
        "_fopts",
        "_fmt",
        "_nout",
        "_buf",
        "_cell",
        "_u16",
        "_u8",
        "_sz",
        "_modecfg",
        "_cap",
        "_ctag",
        "_rgb",
        "_bool",
    )

    def __init__(self, cols: int, rows: int, history_lines: int = 2000, history_budget: int | None = None):
        cols, rows = self._check_size(cols, rows)
        self._t = None  # the native terminal, allocated by _term() on first use
        self._closed = False
        self._cols, self._rows = cols, rows
        self.history_lines = history_lines
        self.history_budget = history_budget  # bytes this pane's history may take, or None
        self.generation = 0
        self._dirty = True
        # Reused scratch structures: no allocation per call in the read paths.
        self._pt = ffi.new("GhosttyPointS*")
        self._ref = ffi.new("GhosttyGridRef*")
        self._ref.size = ffi.sizeof("GhosttyGridRef")
        self._ref2 = ffi.new("GhosttyGridRef*")
        self._ref2.size = ffi.sizeof("GhosttyGridRef")
        self._sel = ffi.new("GhosttySelection*")
        self._sel.size = ffi.sizeof("GhosttySelection")
        self._sel.start.size = self._sel.end.size = ffi.sizeof("GhosttyGridRef")
        self._fopts = ffi.new("GhosttyFormatterTerminalOptions*")
        self._fopts.size = ffi.sizeof("GhosttyFormatterTerminalOptions")
        self._fopts.extra.size = ffi.sizeof("GhosttyFormatterTerminalExtra")
        self._fopts.extra.screen.size = ffi.sizeof("GhosttyFormatterScreenExtra")
        self._fopts.trim = True
        self._fopts.unwrap = False
        self._fopts.selection = self._sel
        self._fmt = ffi.new("GhosttyFormatter*")
        self._nout = ffi.new("size_t*")
        self._buf = ffi.new("uint8_t[]", 16384)
        self._cell = ffi.new("GhosttyCell*")
        self._u16 = ffi.new("uint16_t*")
        self._u8 = ffi.new("uint8_t*")
        self._sz = ffi.new("size_t*")
        self._modecfg = ffi.new("GhosttyTerminalModeConfig*")
        self._ctag = ffi.new("GhosttyCellContentTag*")
        self._rgb = ffi.new("GhosttyColorRgb*")
        self._bool = ffi.new("bool*")
        self._cap = self._wanted_cap()

    def _term(self):
        """The native terminal, allocated (at the current size, with the history cap) on first use."""
        t = self._t
        if t is None:
            if self._closed:
                raise TerminalError("terminal is closed")
            t = ffi.new("GhosttyTerminal*")
            _check(lib.ghostty_terminal_new(ffi.NULL, t, self._cols, self._rows), "terminal_new")
            self._t = t
            try:
                self._set_cap(self._cap)
            except BaseException:
                self.close()
                raise
        return t[0]

    @property
    def allocated(self) -> bool:
        """Whether the native terminal exists (it is made on the first output or read)."""
        return self._t is not None

    @staticmethod
    def _check_size(cols: int, rows: int) -> tuple[int, int]:
        if not (1 <= cols <= 0xFFFF and 1 <= rows <= 0xFFFF):
            raise TerminalError(f"bad terminal size {cols}x{rows}")
        return int(cols), int(rows)

    def _wanted_cap(self) -> int:
        cap = history_cap_bytes(self._cols, self._rows, self.history_lines)
        return cap if self.history_budget is None else min(cap, max(self.history_budget, 0))

    def _set_cap(self, cap: int) -> None:
        assert self._t is not None
        _check(
            lib.ghostty_terminal_set(
                self._t[0], lib.GHOSTTY_TERMINAL_OPT_SCROLLBACK_MAX_BYTES, ffi.new("size_t*", cap)
            ),
            "set scrollback_max_bytes",
        )

    def _apply_history_cap(self) -> None:
        cap = self._wanted_cap()
        if cap != self._cap:
            if self._t is not None:
                self._set_cap(cap)
            self._cap = cap

    def set_history_budget(self, budget: int | None) -> None:
        """This pane's share of the session's history bytes (None: only the per-pane cap)."""
        if budget != self.history_budget:
            self.history_budget = budget
            self._apply_history_cap()

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> None:
        """Parse the pane's output. Replies the terminal would send are dropped."""
        if data:
            t = self._t
            lib.ghostty_terminal_vt_write(t[0] if t is not None else self._term(), data, len(data))
            self.generation += 1
            self._dirty = True

    def resize(self, cols: int, rows: int) -> None:
        cols, rows = self._check_size(cols, rows)
        if (cols, rows) == (self._cols, self._rows):
            return
        if self._t is not None:  # an unallocated terminal is simply made at the new size
            _check(lib.ghostty_terminal_resize(self._t[0], cols, rows, 8, 16), "resize")
        self._cols, self._rows = cols, rows
        self._apply_history_cap()
        self.generation += 1
        self._dirty = True

    def reset(self) -> None:
        """Full reset (RIS): empty screen and history, default modes."""
        if self._t is not None:  # a terminal never used is as reset as it gets
            lib.ghostty_terminal_reset(self._t[0])
        self.generation += 1
        self._dirty = True

    # ------------------------------------------------------------------ state
    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    @property
    def history_cap(self) -> int:
        """The scrollback byte cap in force."""
        return self._cap

    def _get(self, key: int, out):
        _check(lib.ghostty_terminal_get(self._term(), key, out), "terminal_get")
        return out[0]

    @property
    def cursor(self) -> tuple[int, int]:
        return (
            self._get(lib.GHOSTTY_TERMINAL_DATA_CURSOR_X, self._u16),
            self._get(lib.GHOSTTY_TERMINAL_DATA_CURSOR_Y, self._u16),
        )

    @property
    def cursor_visible(self) -> bool:
        return bool(self._get(lib.GHOSTTY_TERMINAL_DATA_CURSOR_VISIBLE, self._bool))

    @property
    def alt_screen(self) -> bool:
        out = ffi.new("GhosttyTerminalScreen*")
        return (
            self._get(lib.GHOSTTY_TERMINAL_DATA_ACTIVE_SCREEN, out) == lib.GHOSTTY_TERMINAL_SCREEN_ALTERNATE
        )

    def mode(self, n: int, ansi: bool = False) -> bool:
        """Whether DEC private mode `n` (or ANSI mode `n` with ansi=True) is set."""
        c = self._modecfg
        c.mode = (n & 0x7FFF) | (int(bool(ansi)) << 15)
        _check(lib.ghostty_terminal_get(self._term(), lib.GHOSTTY_TERMINAL_DATA_MODE, c), f"mode {n}")
        return bool(c.value)

    @property
    def history_size(self) -> int:
        """Rows of scrollback currently kept (0 on the alternate screen)."""
        return self._get(lib.GHOSTTY_TERMINAL_DATA_SCROLLBACK_ROWS, self._sz)

    @property
    def dirty(self) -> bool:
        """True when fed or resized since the last `clear_dirty()`. (`generation` counts changes.)"""
        return self._dirty

    def clear_dirty(self) -> None:
        self._dirty = False

    # ------------------------------------------------------------------ reading
    def _point_ref(self, ref, tag: int, x: int, y: int) -> bool:
        pt = self._pt
        pt.tag = tag
        pt.value.x, pt.value.y = x, y
        return _grid_ref_call()(self._term(), pt[0], ref) == 0

    def _format(self, tag: int, y0: int, y1: int, emit: int) -> str:
        """Rows y0..y1 (inclusive, coordinates of `tag`) through the formatter, as one string."""
        if not (
            self._point_ref(self._ref, tag, 0, y0) and self._point_ref(self._ref2, tag, self._cols - 1, y1)
        ):
            raise TerminalError(f"rows {y0}..{y1} out of range")
        sel = self._sel
        sel.start = self._ref[0]
        sel.end = self._ref2[0]
        self._fopts.emit = emit
        _check(
            lib.ghostty_formatter_terminal_new(ffi.NULL, self._fmt, self._term(), self._fopts[0]),
            "formatter_new",
        )
        f = self._fmt[0]
        try:
            res = lib.ghostty_formatter_format_buf(f, self._buf, len(self._buf), self._nout)
            if res == lib.GHOSTTY_OUT_OF_SPACE:
                self._buf = ffi.new("uint8_t[]", max(self._nout[0], 2 * len(self._buf)))
                res = lib.ghostty_formatter_format_buf(f, self._buf, len(self._buf), self._nout)
            _check(res, "formatter_format")
            return ffi.buffer(self._buf, self._nout[0])[:].decode("utf-8", "replace")
        finally:
            lib.ghostty_formatter_free(f)

    def _read_rows(self, tag: int, y0: int, count: int, emit: int) -> list[str]:
        if count <= 0:
            return []
        sep = "\r\n" if emit == _FMT_VT else "\n"
        out = self._format(tag, y0, y0 + count - 1, emit).split(sep)
        if len(out) < count:  # trailing blank rows are not emitted
            out.extend([""] * (count - len(out)))
        if emit == _FMT_VT:
            for i, row in enumerate(out):
                if not row:
                    bg = self._bg_only_row(tag, y0 + i)
                    if bg:
                        out[i] = bg
        return out

    def rows_text(self) -> list[str]:
        """The visible rows as plain text (trailing blanks trimmed; a wide char appears once)."""
        return self._read_rows(_TAG_ACTIVE, 0, self._rows, _FMT_PLAIN)

    def screen_vt(self) -> list[str]:
        """The visible rows as VT text: SGR styles (palette, 256 and RGB colours, bold, underline,
        inverse, ...), wide characters once each. Each row is self-contained (starts from the
        default style, ends with it) and paints from column 0; blank trailing cells are omitted,
        so a renderer clears the rest of the row itself."""
        return self._read_rows(_TAG_ACTIVE, 0, self._rows, _FMT_VT)

    def row_vt(self, y: int) -> str:
        """One visible row as VT text (see `screen_vt`)."""
        if not 0 <= y < self._rows:
            raise IndexError(y)
        return self._read_rows(_TAG_ACTIVE, y, 1, _FMT_VT)[0]

    def view_vt(self, oy: int = 0) -> list[str]:
        """The rows shown when scrolled up `oy` lines into history (tmux copy mode's oy):
        oy=0 is the visible screen; oy is clamped to the history kept."""
        top = self._view_top(oy)
        return self._read_rows(_TAG_SCREEN, top, self._rows, _FMT_VT)

    def view_text(self, oy: int = 0) -> list[str]:
        """Plain-text counterpart of `view_vt`."""
        top = self._view_top(oy)
        return self._read_rows(_TAG_SCREEN, top, self._rows, _FMT_PLAIN)

    def _view_top(self, oy: int) -> int:
        h = self.history_size
        return h - min(max(oy, 0), h)

    def history_text(self, n: int | None = None) -> list[str]:
        """The last `n` rows of history (all of it when None), oldest first, as plain text."""
        h = self.history_size
        n = h if n is None else min(max(n, 0), h)
        return self._read_rows(_TAG_SCREEN, h - n, n, _FMT_PLAIN)

    def history_vt(self, n: int | None = None) -> list[str]:
        """The last `n` rows of history as VT text (see `screen_vt`)."""
        h = self.history_size
        n = h if n is None else min(max(n, 0), h)
        return self._read_rows(_TAG_SCREEN, h - n, n, _FMT_VT)

    # A row made only of erased cells with a background colour has no text, and the formatter
    # emits nothing for it. Sample its two end cells; only if one is coloured, scan the row.
    def _cell_bg(self, tag: int, x: int, y: int) -> str | None:
        if not self._point_ref(self._ref, tag, x, y):
            return None
        if lib.ghostty_grid_ref_cell(self._ref, self._cell):
            return None
        cell = self._cell[0]
        ctag = self._ctag
        if lib.ghostty_cell_get(cell, lib.GHOSTTY_CELL_DATA_CONTENT_TAG, ctag):
            return None
        if ctag[0] == lib.GHOSTTY_CELL_CONTENT_BG_COLOR_PALETTE:
            if lib.ghostty_cell_get(cell, lib.GHOSTTY_CELL_DATA_COLOR_PALETTE, self._u8):
                return None
            return f"48;5;{self._u8[0]}"
        if ctag[0] == lib.GHOSTTY_CELL_CONTENT_BG_COLOR_RGB:
            rgb = self._rgb
            if lib.ghostty_cell_get(cell, lib.GHOSTTY_CELL_DATA_COLOR_RGB, rgb):
                return None
            return f"48;2;{rgb.r};{rgb.g};{rgb.b}"
        return None

    def _bg_only_row(self, tag: int, y: int) -> str:
        cols = self._cols
        first, last = self._cell_bg(tag, 0, y), self._cell_bg(tag, cols - 1, y)
        if first is None and last is None:
            return ""
        if first == last and all(self._cell_bg(tag, (cols * k) // 8, y) == first for k in range(1, 8)):
            # The common case, a whole row erased with one colour (ED/EL): 9 samples agree.
            return f"\x1b[0m\x1b[{first}m" + " " * cols + "\x1b[0m"
        parts: list[str] = []
        run_bg, run_len = None, 0
        for x in range(cols + 1):
            bg = self._cell_bg(tag, x, y) if x < cols else object()
            if bg == run_bg:
                run_len += 1
                continue
            if run_len:
                parts.append(
                    f"\x1b[0m\x1b[{run_bg}m" + " " * run_len + "\x1b[0m" if run_bg else " " * run_len
                )
            run_bg, run_len = bg, 1
        row = "".join(parts)
        return row.rstrip(" ")

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the native terminal. Further calls raise."""
        self._closed = True
        if self._t is not None:
            lib.ghostty_terminal_free(self._t[0])
            self._t = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<TerminalModel {self._cols}x{self._rows} gen={self.generation}>"
