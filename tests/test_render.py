"""relay.screen.render.ViewerScreen: each frame is fed into a fresh headless terminal of the viewer's
size (what the viewer's terminal shows) and its screen is checked."""

from __future__ import annotations

from pathlib import Path

from relay.screen.cells import clip_vt
from relay.screen.render import ViewerScreen, failed_cmd_message, scroll_up
from relay.screen.style import DEFAULT_STYLE, Style, parse_style
from relay.screen.terminal import TerminalModel
from relay.tmate import messages as m
from relay.tmate.session import Session

from .test_session import recorded

FIXTURES = Path(__file__).parent / "fixtures"
GREEN_FG = "\x1b[38;5;2m"  # how the terminal model writes SGR 32 back
GREEN_BG = "48;5;2"
YELLOW_BG = "48;5;3"


# ---------------------------------------------------------------- helpers
def new_session() -> Session:
    s = Session(rw_token="A" * 25, ro_token="ro-" + "b" * 25, ssh_host="relay.example", ssh_port=22)
    s.handle(m.Header(6, "2.4.0"))
    return s


def layout(sx, sy, *windows, active=0):
    """layout(sx, sy, (idx, name, [(id, sx, sy, xoff, yoff), ...], active_pane), ...)"""
    return m.SyncLayout(
        sx,
        sy,
        tuple(m.Window(i, n, tuple(m.PaneGeom(*p) for p in ps), ap) for i, n, ps, ap in windows),
        active,
    )


def one_pane(sx=40, sy=10, name="bash"):
    s = new_session()
    s.handle(layout(sx, sy, (0, name, [(0, sx, sy, 0, 0)], 0)))
    return s


def vsplit(active=0, sx=41, sy=10):
    """Two panes side by side: 20 columns, the border at x=20, 20 columns."""
    s = new_session()
    s.handle(layout(sx, sy, (0, "bash", [(0, 20, sy, 0, 0), (1, sx - 21, sy, 21, 0)], active)))
    return s


class Viewer:
    """A ViewerScreen and the headless terminal its frames are written to."""

    def __init__(self, cols, rows):
        self.screen = ViewerScreen(cols, rows)
        self.term = TerminalModel(cols, rows)
        self.sizes: list[int] = []

    def update(self, session, **kw) -> bytes:
        out = self.screen.frame(session, **kw)
        self.sizes.append(len(out))
        self.term.feed(out)
        return out

    def resize(self, cols, rows):
        self.screen.resize(cols, rows)
        self.term.resize(cols, rows)

    @property
    def text(self) -> list[str]:
        return self.term.rows_text()

    def vt(self, y) -> str:
        return self.term.row_vt(y)

    def close(self):
        self.term.close()


def show(session, cols, rows, **kw) -> Viewer:
    v = Viewer(cols, rows)
    v.update(session, **kw)
    return v


def fresh_text(session, cols, rows, **kw):
    v = show(session, cols, rows, **kw)
    try:
        return v.text, [v.vt(y) for y in range(rows)], (v.term.cursor, v.term.cursor_visible)
    finally:
        v.close()


def col(text_rows, x):
    """The character in column x of each row (rows are plain text; ASCII/box chars only)."""
    return "".join(r[x] if len(r) > x else " " for r in text_rows)


# ---------------------------------------------------------------- panes and borders
def test_single_pane_text_and_cursor():
    s = one_pane()
    s.handle(m.PtyData(0, b"hello world\r\n$ "))
    v = show(s, 40, 11)
    assert v.text[0] == "hello world"
    assert v.text[1] == "$"
    assert all(r == "" for r in v.text[2:10])
    assert v.text[10].startswith("0:bash*")
    assert v.term.cursor == (2, 1) and v.term.cursor_visible
    # Nothing changed: nothing sent.
    assert v.screen.frame(s) == b""


def test_first_frame_resets_and_clears():
    s = one_pane()
    out = ViewerScreen(40, 11).frame(s)
    assert out.startswith(b"\x1b[0m") and b"\x1b[2J" in out[:20]
    assert b"\r\n" not in out


def test_vertical_split_border_column():
    s = vsplit()
    s.handle(m.PtyData(0, b"left side"))
    s.handle(m.PtyData(1, b"right side"))
    v = show(s, 41, 11)
    assert col(v.text[:10], 20) == "│" * 10
    assert v.text[0].startswith("left side")
    assert v.text[0][21:] == "right side"
    assert v.text[10].startswith("0:bash*")


def test_horizontal_split_border_row():
    s = new_session()
    s.handle(layout(40, 11, (0, "bash", [(0, 40, 5, 0, 0), (1, 40, 5, 0, 6)], 1)))
    s.handle(m.PtyData(0, b"top pane"))
    s.handle(m.PtyData(1, b"bottom pane"))
    v = show(s, 40, 12)
    assert v.text[0] == "top pane"
    assert v.text[5] == "─" * 40
    assert v.text[6] == "bottom pane"
    assert v.text[11].startswith("0:bash*")


def test_junctions_four_panes():
    s = new_session()
    s.handle(
        layout(
            41, 11, (0, "bash", [(0, 20, 5, 0, 0), (1, 20, 5, 21, 0), (2, 20, 5, 0, 6), (3, 20, 5, 21, 6)], 3)
        )
    )
    v = show(s, 41, 12)
    assert v.text[5] == "─" * 20 + "┼" + "─" * 20
    assert col(v.text[:11], 20) == "│" * 5 + "┼" + "│" * 5
    # Three panes: a T junction.
    s.handle(layout(41, 11, (0, "bash", [(0, 20, 11, 0, 0), (1, 20, 5, 21, 0), (2, 20, 5, 21, 6)], 1)))
    v2 = show(s, 41, 12)
    assert v2.text[5] == " " * 20 + "├" + "─" * 20


def test_active_border_green_two_panes_half_rule():
    # tmux 2.4: with two panes only the half of the shared border nearer the active pane is
    # coloured: the top half when the left pane is active, the bottom half for the right one.
    s = vsplit(active=0)
    v = show(s, 41, 11)
    assert GREEN_FG + "│" in v.vt(0)
    assert GREEN_FG + "│" in v.vt(5)  # py <= sy / 2
    assert GREEN_FG not in v.vt(6)
    s.handle(layout(41, 10, (0, "bash", [(0, 20, 10, 0, 0), (1, 20, 10, 21, 0)], 1)))
    v.update(s)
    assert GREEN_FG not in v.vt(0)
    assert GREEN_FG + "│" in v.vt(9)


def test_active_border_green_three_panes():
    s = new_session()
    s.handle(layout(41, 11, (0, "bash", [(0, 20, 11, 0, 0), (1, 20, 5, 21, 0), (2, 20, 5, 21, 6)], 2)))
    v = show(s, 41, 12)
    # Pane 2 (bottom right) is active: its left border and top border are green.
    for y in range(6, 11):
        assert GREEN_FG + "│" in v.vt(y), y
    assert GREEN_FG + "├" + "─" * 20 in v.vt(5)
    for y in range(0, 5):
        assert GREEN_FG not in v.vt(y)


def test_border_styles_from_options():
    s = vsplit(active=0)
    s.handle(m.ExecCmd(("set-option", "-g", "pane-active-border-style", "fg=colour200")))
    s.handle(m.ExecCmd(("set-option", "-g", "pane-border-style", "fg=blue")))
    v = show(s, 41, 11)
    assert "\x1b[38;5;200m│" in v.vt(0)
    assert "\x1b[38;5;4m│" in v.vt(9)


# ---------------------------------------------------------------- status line
def test_status_line_left_window_list_right():
    s = new_session()
    s.handle(
        layout(60, 10, (0, "bash", [(0, 60, 10, 0, 0)], 0), (1, "vim", [(1, 60, 10, 0, 0)], 1), active=1)
    )
    s.handle(m.Status("[tmate] ", "relay.example 12:00"))
    v = Viewer(60, 11)
    v.update(s)
    assert v.text[10] == "[tmate] 0:bash  1:vim*" + " " * 19 + "relay.example 12:00"
    s.handle(
        layout(60, 10, (0, "bash", [(0, 60, 10, 0, 0)], 0), (1, "vim", [(1, 60, 10, 0, 0)], 1), active=0)
    )
    v.update(s)
    status = v.text[10]
    assert status.startswith("[tmate] 0:bash* 1:vim-")
    assert status.endswith("relay.example 12:00") and len(status) == 60
    # Default status-style: black on green across the whole row.
    vt = v.vt(10)
    assert vt.startswith("\x1b[0m\x1b[38;5;0m\x1b[48;5;2m[tmate] 0:bash* 1:vim-")
    assert vt.count("\x1b[0m") == 2  # one style for the whole row, up to the end


def test_status_markup_and_lengths():
    s = one_pane(60, 10)
    s.handle(m.Status("#[fg=red,bright]LEFT#[default]-0123456789", "#[bg=colour33]R#[default]x"))
    v = show(s, 60, 11)
    status = v.text[10]
    # status-left-length 10: markup does not count, the rest is cut.
    assert status.startswith("LEFT-01234" + "0:bash*")
    assert status.endswith("Rx")
    vt = v.vt(10)
    # #[fg=red,bright] over the black-on-green base, #[default] back to the base.
    assert "\x1b[1m\x1b[38;5;1m\x1b[48;5;2mLEFT\x1b[0m\x1b[38;5;0m\x1b[48;5;2m-0123" in vt
    assert "\x1b[38;5;0m\x1b[48;5;33mR\x1b[0m\x1b[38;5;0m\x1b[48;5;2mx" in vt


def test_status_options_style_off_and_top():
    s = one_pane(40, 10)
    s.handle(m.PtyData(0, b"first"))
    s.handle(m.ExecCmd(("set-option", "-g", "status-style", "bg=blue,fg=white")))
    v = show(s, 40, 11)
    assert "48;5;4" in v.vt(10) and "38;5;7" in v.vt(10)
    s.handle(m.ExecCmd(("set-option", "-g", "status-position", "top")))
    v = show(s, 40, 11)
    assert v.text[0].startswith("0:bash*") and v.text[1] == "first"
    assert v.term.cursor == (5, 1)
    s.handle(m.ExecCmd(("set-option", "-g", "status", "off")))
    v = show(s, 40, 10)
    assert v.text[0] == "first"
    assert all("0:bash" not in r for r in v.text)


def test_status_window_list_too_wide_gets_arrow():
    s = new_session()
    wins = [(i, f"window{i}", [(i, 30, 5, 0, 0)], i) for i in range(6)]
    s.handle(layout(30, 5, *wins, active=5))
    v = show(s, 30, 6)
    status = v.text[5]
    assert status.startswith("<") and "5:window5*" in status and len(status) <= 30


def test_message_replaces_status_line():
    s = one_pane()
    s.handle(m.PtyData(0, b"$ "))
    v = show(s, 40, 11, message="Unknown command: foo")
    assert v.text[10] == "Unknown command: foo"
    vt = v.vt(10)
    assert YELLOW_BG in vt and "38;5;0" in vt
    assert not v.term.cursor_visible  # tmux hides the cursor while a message shows
    v.update(s)  # message gone: status line and cursor back
    assert v.text[10].startswith("0:bash*")
    assert v.term.cursor_visible and v.term.cursor == (2, 0)
    assert failed_cmd_message("unknown command: x") == "Unknown command: x"


def test_message_with_status_off_takes_last_row():
    s = one_pane(40, 11)
    s.handle(m.ExecCmd(("set-option", "-g", "status", "off")))
    s.handle(m.PtyData(0, b"\r\n" * 10 + b"last row"))
    v = show(s, 40, 11)
    assert v.text[10] == "last row"
    v.update(s, message="hello")
    assert v.text[10] == "hello"


# ---------------------------------------------------------------- viewer vs session size
def test_viewer_larger_than_session_dots_and_size_message():
    s = one_pane(30, 8)
    s.handle(m.PtyData(0, b"content"))
    v = show(s, 50, 14)
    t = v.text
    assert t[0] == "content" + " " * 23 + "│" + "·" * 19
    for y in range(8):
        assert t[y][30] == "│" and t[y][31:] == "·" * 19
    assert t[8] == "─" * 30 + "┘" + "·" * 19
    for y in range(9, 12):
        assert t[y] == "·" * 50
    assert t[12] == "·" * 17 + "(size 30x8 from a smaller client)"
    assert t[13].startswith("0:bash*")
    # The edge of the single (active) pane is drawn in the active border colour.
    assert GREEN_FG + "│" in v.vt(0)


def test_viewer_wider_only_message_in_dots():
    s = one_pane(30, 8)
    v = show(s, 70, 9)
    assert v.text[7].endswith("(size 30x8 from a smaller client)")
    assert v.text[7][30] == "│"
    # Not wide enough for the message beside the window: dots only.
    v2 = show(s, 50, 9)
    assert "size" not in "".join(v2.text)
    assert v2.text[7][31:] == "·" * 19


def test_viewer_smaller_than_session_sees_top_left():
    s = vsplit(sx=61, sy=20)
    s.handle(m.PtyData(0, b"".join(b"L%02d\r\n" % i for i in range(19)) + b"L19"))
    s.handle(m.PtyData(1, b"right pane text that is long"))
    v = show(s, 30, 8)
    t = v.text
    assert t[0] == "L00" + " " * 17 + "│right pan"
    assert [r[:3] for r in t[:7]] == [f"L{i:02d}" for i in range(7)]
    assert t[7].startswith("0:bash*")
    assert all(len(r) <= 30 for r in t)
    # The active (left) pane's cursor is on row 19: outside this viewer, hidden.
    assert not v.term.cursor_visible


def test_resize_viewer_repaints():
    s = one_pane(30, 8)
    s.handle(m.PtyData(0, b"abc"))
    v = show(s, 30, 9)
    v.resize(40, 10)
    v.update(s)
    assert v.text[0] == "abc" + " " * 27 + "│" + "·" * 9
    assert v.text[9].startswith("0:bash*")


# ---------------------------------------------------------------- copy mode, message view
def history_session():
    s = one_pane(40, 10)
    s.handle(m.PtyData(0, b"\r\n".join(b"line %02d" % i for i in range(50))))
    return s


def test_copy_mode_scrolled_into_history():
    s = history_session()
    pane = s.panes[0]
    hsize = pane.model.history_size
    assert hsize == 40
    s.handle(m.SyncCopyMode(0, m.CopyMode(1, 5, 3, 2, None, None)))
    v = show(s, 40, 11)
    t = v.text
    # Without copy mode the screen shows lines 40..49; scrolled 5 up: 35..44.
    assert t[0].startswith("line 35") and t[0].endswith("[5/40]")
    assert [r[:7] for r in t[1:10]] == [f"line {i}" for i in range(36, 45)]
    assert YELLOW_BG in v.vt(0)  # mode-style
    assert v.term.cursor == (3, 2) and v.term.cursor_visible
    # Leaving copy mode shows the live screen again.
    s.handle(m.SyncCopyMode(0, None))
    v.update(s)
    assert v.text[0] == "line 40" and v.text[9] == "line 49"
    assert "[" not in "".join(v.text[:10])


def test_copy_mode_selection_and_prompt():
    s = history_session()
    # Selection from column 2 of the top visible row to the cursor (5, 1); the host sends the
    # start row counted from the bottom of the backing screen (tmate protocol >= 2).
    hsize, sy, oy = 40, 10, 5
    top_abs = hsize - oy
    sely = -(top_abs) + hsize + sy - 1  # -> absolute row top_abs
    s.handle(
        m.SyncCopyMode(0, m.CopyMode(1, oy, 5, 1, m.Selection(2, sely, 0), m.Prompt(1, "Search Up", "foo")))
    )
    v = show(s, 40, 11)
    row0, row1 = v.vt(0), v.vt(1)
    assert "li\x1b[0m\x1b[38;5;0m\x1b[48;5;3mne 35" in row0
    assert "\x1b[38;5;0m\x1b[48;5;3mline 3" in row1 and "6" not in row1.split("48;5;3m")[1][:6]
    assert v.text[9].startswith("Search Up: foo")
    assert YELLOW_BG in v.vt(9)


def test_message_view_lines():
    s = one_pane(40, 10)
    tip = "Tip: if you wish to use tmate only for remote access, run: tmate -F"
    for line in (tip, "Press <q> or <ctrl-c> to continue", "-" * 20, "Connecting..."):
        s.handle(m.WriteCopyMode(0, line))
    s.handle(m.PtyData(0, b"hidden shell output"))
    v = show(s, 40, 11)
    t = v.text
    # The long line wraps at the pane width; the position indicator covers its top right.
    assert t[0] == tip[:35] + "[0/0]"
    assert t[1] == tip[40:]
    assert t[2] == "Press <q> or <ctrl-c> to continue"
    assert t[3] == "-" * 20 and t[4] == "Connecting..."
    assert "hidden" not in "".join(t)
    assert v.term.cursor == (0, 0)
    s.handle(m.SyncCopyMode(0, None))  # q pressed: the pane's screen
    v.update(s)
    assert v.text[0] == "hidden shell output"


def test_message_view_many_lines_stays_on_top():
    s = one_pane(40, 5)
    for i in range(12):
        s.handle(m.WriteCopyMode(0, f"message {i}"))
    v = show(s, 40, 6)
    assert v.text[0].startswith("message 0") and v.text[0].endswith("[7/7]")
    assert v.text[4] == "message 4"


def test_recorded_stream_start_and_end():
    path = FIXTURES / "host-stream-none_z1.bin"
    msgs = recorded(path)
    s = new_session()
    first_sync: list[str] | None = None
    v = Viewer(100, 30)
    for msg in msgs:
        if isinstance(msg, m.Header):
            continue
        s.handle(msg)
        if isinstance(msg, m.WriteCopyMode) and "Connecting" in msg.text:
            v.update(s)
            first_sync = list(v.text)
    assert first_sync is not None
    assert first_sync[0].startswith("Tip: if you wish to use tmate only for remote access")
    assert first_sync[0].endswith("[0/0]")
    assert first_sync[2] == "Press <q> or <ctrl-c> to continue"
    v.update(s)
    final = v.text
    assert final[29].startswith("0:bash- 1:bash*")
    assert any("UTC" in r for r in final)
    full, _, _ = fresh_text(s, 100, 30)
    assert final == full
    s.close()


# ---------------------------------------------------------------- incremental frames
def test_incremental_frame_small_and_correct():
    s = new_session()
    s.handle(layout(80, 23, (0, "bash", [(0, 80, 23, 0, 0)], 0)))
    s.handle(m.PtyData(0, b"\r\n".join(b"%02d " % i + b"x" * 70 for i in range(23))))
    v = Viewer(80, 24)
    full = len(v.update(s))
    s.handle(m.PtyData(0, b"\x1b[5;1Hchanged line\x1b[K"))
    inc = len(v.update(s))
    assert inc < full / 10
    assert v.text[4] == "changed line"
    expected, expected_vt, cur = fresh_text(s, 80, 24)
    assert v.text == expected
    assert [v.vt(y) for y in range(24)] == expected_vt
    assert (v.term.cursor, v.term.cursor_visible) == cur
    assert v.screen.frame(s) == b""


def test_incremental_sequence_matches_full_render():
    """Apply many kinds of changes; the incrementally updated viewer must always show exactly
    what a fresh full render shows."""
    s = vsplit(active=0, sx=61, sy=15)
    v = Viewer(70, 18)
    steps = [
        lambda: s.handle(m.PtyData(0, b"hello \x1b[31mred\x1b[0m\r\n" * 3)),
        lambda: s.handle(m.PtyData(1, "日本語 and emoji 😀\r\n".encode() * 20)),
        lambda: s.handle(m.Status("[tmate] ", "#[fg=yellow]right")),
        lambda: s.handle(
            layout(
                61,
                15,
                (0, "bash", [(0, 30, 15, 0, 0), (1, 30, 15, 31, 0)], 1),
                (1, "top", [(2, 61, 15, 0, 0)], 2),
                active=0,
            )
        ),
        lambda: s.handle(m.PtyData(0, b"\x1b[2J\x1b[H\x1b[44mblue bg\x1b[0m")),
        lambda: s.handle(m.SyncCopyMode(1, m.CopyMode(1, 3, 0, 0, None, None))),
        lambda: s.handle(
            layout(
                61,
                15,
                (0, "bash", [(0, 30, 15, 0, 0), (1, 30, 15, 31, 0)], 1),
                (1, "top", [(2, 61, 15, 0, 0)], 2),
                active=1,
            )
        ),
        lambda: s.handle(m.PtyData(2, b"\x1b[?1049h\x1b[Hfull screen app\x1b[?25l")),
        lambda: s.handle(
            layout(
                50,
                12,
                (0, "bash", [(0, 24, 12, 0, 0), (1, 25, 12, 25, 0)], 1),
                (1, "top", [(2, 50, 12, 0, 0)], 2),
                active=0,
            )
        ),
        lambda: s.handle(m.SyncCopyMode(1, None)),
        lambda: s.handle(m.ExecCmd(("set-option", "-g", "status", "off"))),
        lambda: v.resize(40, 10),
        lambda: s.handle(m.ExecCmd(("set-option", "-g", "status", "on"))),
    ]
    for i, step in enumerate(steps):
        step()
        msg = "Some message" if i == 6 else None
        v.update(s, message=msg)
        cols, rows = v.screen.cols, v.screen.rows
        expected, expected_vt, cur = fresh_text(s, cols, rows, message=msg)
        assert v.text == expected, i
        assert [v.vt(y) for y in range(rows)] == expected_vt, i
        assert (v.term.cursor, v.term.cursor_visible) == cur, i


def matches_fresh(v: Viewer, s, **kw) -> None:
    cols, rows = v.screen.cols, v.screen.rows
    expected, expected_vt, cur = fresh_text(s, cols, rows, **kw)
    assert v.text == expected
    assert [v.vt(y) for y in range(rows)] == expected_vt
    assert (v.term.cursor, v.term.cursor_visible) == cur


def test_a_scrolling_pane_is_scrolled_on_the_viewer_not_repainted():
    s = one_pane(80, 23)
    s.handle(m.PtyData(0, b"\r\n".join(b"\x1b[3%dmline-%d\x1b[0m" % (i % 8, i) for i in range(30))))
    v = Viewer(80, 24)
    full = len(v.update(s))
    for i in range(30, 60):  # one line at a time, as a shell printing a log
        s.handle(m.PtyData(0, b"\r\nline-%d \x1b[44mblue\x1b[0m" % i))
        out = v.update(s)
        assert b"\x1b[1;23r" in out and out.count(b"\x1b[2K") == 1, out  # the new row alone
        assert len(out) < full / 5
        matches_fresh(v, s)
    s.handle(m.PtyData(0, b"\r\n" * 5 + b"five blank lines later"))
    v.update(s)
    matches_fresh(v, s)


def test_a_scroll_stays_within_the_pane_that_scrolled():
    s = new_session()  # two panes, one above the other; the status line on top
    s.handle(layout(40, 13, (0, "bash", [(0, 40, 6, 0, 0), (1, 40, 6, 0, 7)], 1)))
    s.handle(m.ExecCmd(("set-option", "-g", "status-position", "top")))
    s.handle(m.PtyData(0, b"\r\n".join(b"top-%d" % i for i in range(6))))
    s.handle(m.PtyData(1, b"\r\n".join(b"bottom-%d" % i for i in range(6))))
    v = Viewer(40, 14)
    v.update(s)
    matches_fresh(v, s)
    for i in range(6, 12):
        s.handle(m.PtyData(1, b"\r\nbottom-%d" % i))
        out = v.update(s)
        assert b"\x1b[9;14r" in out, out  # the lower pane's rows, below the status line and the top pane
        matches_fresh(v, s)
    for i in range(6, 9):
        s.handle(m.PtyData(0, b"\r\ntop-%d" % i))
        v.update(s)
        matches_fresh(v, s)
    assert v.text[1:7] == [f"top-{i}" for i in range(3, 9)]


def test_scroll_up_picks_the_region_and_the_distance():
    old = ["a", "b", "c", "d", "e", "f", "status"]
    assert scroll_up(old, ["c", "d", "e", "f", "x", "y", "status"]) == (0, 5, 2)
    assert scroll_up(old, ["a", "c", "d", "e", "f", "x", "status"]) == (1, 5, 1)
    assert scroll_up(old, ["a", "b", "c", "d", "e", "x", "status"]) is None  # one row: repaint it
    assert scroll_up(old, ["f", "e", "d", "c", "b", "a", "status"]) is None  # nothing moved up whole
    assert scroll_up(old, old) is None


# ---------------------------------------------------------------- characters and colours
def test_wide_characters_at_pane_edges_keep_border():
    s = vsplit(active=1, sx=41, sy=6)
    # 19 columns of ASCII + a wide char: it cannot fit in the 20th column and wraps in the pane.
    s.handle(
        m.PtyData(0, b"a" * 19 + "日本語".encode() + b"\r\n" + "😀".encode() * 10 + b"\r\n" + "é日x".encode())
    )
    s.handle(m.PtyData(1, "日本語".encode() * 10))
    v = show(s, 41, 7)
    t = v.text
    assert t[0] == "a" * 19 + " │日本語日本語日本語日"
    assert t[1] == "日本語" + " " * 14 + "│本語日本語日本語日本"
    assert t[2] == "😀" * 10 + "│語日本語日本語日本語"
    assert t[3].startswith("é日x")
    for y in range(6):
        assert "│" in t[y]
    # A viewer cutting through a wide character: clipped, the status line intact.
    v2 = show(s, 30, 7)
    assert v2.text[0] == "a" * 19 + " │日本語日"  # 9 columns: the 5th wide char is cut
    assert v2.text[2] == "😀" * 10 + "│語日本語"
    assert v2.text[6].startswith("0:bash*")


def test_colours_survive_end_to_end():
    s = one_pane(40, 5)
    s.handle(
        m.PtyData(
            0,
            b"\x1b[38;5;200mpal\x1b[0m \x1b[48;2;10;20;30mrgb\x1b[0m "
            b"\x1b[1;4;31mbold\x1b[0m \x1b[7minv\x1b[0m",
        )
    )
    v = show(s, 40, 6)
    vt = v.vt(0)
    assert v.text[0] == "pal rgb bold inv"
    assert "38;5;200" in vt and "48;2;10;20;30" in vt and "38;5;1" in vt
    assert "\x1b[1m" in vt and "\x1b[4m" in vt and "\x1b[7m" in vt
    # Rows start from a reset: garbage SGR state in the viewer's terminal does not leak.
    t = TerminalModel(40, 6)
    t.feed(b"\x1b[41;1;4m")
    t.feed(ViewerScreen(40, 6).frame(s))
    assert t.row_vt(1) == "" and t.row_vt(0) == vt


def style(text: str, current: Style = DEFAULT_STYLE, base: Style = DEFAULT_STYLE) -> Style:
    """parse_style of a valid style string."""
    st = parse_style(text, current, base)
    assert st is not None, text
    return st


def test_clip_vt_and_styles_units():
    assert clip_vt("\x1b[31mab日c\x1b[0m", 3) == "\x1b[31mab \x1b[0m"
    assert clip_vt("abc", 5) == "abc\x1b[0m"
    st = style("bg=green,fg=black")
    assert st.sgr() == "\x1b[0;30;42m"
    base = st
    assert style("fg=red,bright", base, base).sgr() == "\x1b[0;31;42;1m"
    assert style("default", style("fg=red", base, base), base) == base
    assert style("fg=default", style("fg=red", base, base), base).fg == "30"
    assert style("fg=#ff0000").fg == "38;2;255;0;0"
    assert style("bg=brightred").bg == "101"
    assert parse_style("fg=nonsense") is None
    assert style("reverse,noreverse").attr == 0
    assert Style().sgr() == "\x1b[0m"


def test_no_window_yet_draws_status_only():
    s = new_session()
    v = show(s, 20, 5)
    assert v.text[:4] == [""] * 4
    assert not v.term.cursor_visible


# ---------------------------------------------------------------- the session process's shortcuts
def test_options_reach_a_viewer_between_frames():
    """The layout and status line are kept until the session's generation moves: an option set
    between two frames of one viewer still shows in the second."""
    s = vsplit(active=0)
    v = show(s, 41, 11)
    s.handle(m.PtyData(0, b"out"))  # pane output: the kept layout and status line are reused
    v.update(s)
    s.handle(m.ExecCmd(("set-option", "-g", "pane-active-border-style", "fg=colour200")))
    s.handle(m.ExecCmd(("set-option", "-g", "status-style", "bg=blue,fg=white")))
    v.update(s)
    assert "\x1b[38;5;200m│" in v.vt(0)
    assert "48;5;4" in v.vt(10)
    assert v.text == fresh_text(s, 41, 11)[0]
    v.close()


class SharedViewer(Viewer):
    def update(self, session, **kw) -> bytes:
        return super().update(session, share=True, **kw)


def test_shared_composition_matches_each_viewers_own(monkeypatch):
    """Viewers that share the session process's last composition (frame(share=True)) show
    exactly what a viewer composing alone shows, through output, a message for one of them,
    a layout change and a resize; and viewers of one size compose once per change."""
    import relay.screen.render as render

    composed: list[int] = []
    own = ViewerScreen._compose

    def counting(self, *a, **kw):
        composed.append(self.cols)
        return own(self, *a, **kw)

    monkeypatch.setattr(render.ViewerScreen, "_compose", counting)
    s = vsplit(active=0, sx=61, sy=15)
    a, b, c = SharedViewer(61, 16), SharedViewer(61, 16), SharedViewer(50, 13)
    steps = [
        lambda: s.handle(m.PtyData(0, b"hello \x1b[31mred\x1b[0m\r\n" * 30)),
        lambda: s.handle(m.PtyData(1, b"right pane\r\n")),
        lambda: s.handle(m.Status("[tmate] ", "#[fg=yellow]right")),
        lambda: s.handle(layout(61, 15, (0, "bash", [(0, 30, 15, 0, 0), (1, 30, 15, 31, 0)], 1))),
        lambda: s.handle(m.PtyData(1, b"\x1b[2J\x1b[Hcleared")),
        lambda: b.resize(61, 16),  # b repaints from scratch; a does not
        lambda: s.handle(m.ExecCmd(("set-option", "-g", "status", "off"))),
    ]
    for i, step in enumerate(steps):
        step()
        composed.clear()
        msg = "for b only" if i == 2 else None
        for v in (a, b, c):
            v.update(s, message=msg if v is b else None)
        assert composed.count(61) == (2 if msg else 1), i
        for v in (a, b, c):
            cols, rows = v.screen.cols, v.screen.rows
            kw = {"message": msg} if v is b else {}
            monkeypatch.setattr(render.ViewerScreen, "_compose", own)
            expected, expected_vt, cur = fresh_text(s, cols, rows, **kw)
            monkeypatch.setattr(render.ViewerScreen, "_compose", counting)
            assert v.text == expected, i
            assert [v.vt(y) for y in range(rows)] == expected_vt, i
            assert (v.term.cursor, v.term.cursor_visible) == cur, i
    for v in (a, b, c):
        v.close()


def test_viewers_sent_the_same_rows_share_the_frame_and_one_that_skipped_does_not(monkeypatch):
    """Two viewers of one size that were sent the same frames get the same bytes, diffed once; a
    third that skipped frames (a slow link) gets its own diff, and all three show the session."""
    import relay.screen.render as render

    diffed: list[int] = []
    own = ViewerScreen._diff

    def counting(self, *a, **kw):
        diffed.append(id(self))
        return own(self, *a, **kw)

    monkeypatch.setattr(render.ViewerScreen, "_diff", counting)
    s = vsplit(active=0, sx=61, sy=15)
    a, b, slow = SharedViewer(61, 16), SharedViewer(61, 16), SharedViewer(61, 16)
    for v in (a, b, slow):
        v.update(s)  # the first frames are full repaints: each its own
    for i in range(12):
        s.handle(m.PtyData(i % 2, f"line {i} \x1b[3{i % 8}mcolour\x1b[0m\r\n".encode()))
        diffed.clear()
        frames = [a.update(s), b.update(s)]
        assert frames[0] == frames[1] and frames[0], i
        assert diffed == [id(a.screen)], i
        if i % 3 == 2:
            slow.update(s)
            assert id(slow.screen) in diffed, i
    slow.update(s)
    for v in (a, b, slow):
        expected, expected_vt, cur = fresh_text(s, 61, 16)
        assert v.text == expected
        assert [v.vt(y) for y in range(16)] == expected_vt
        assert (v.term.cursor, v.term.cursor_visible) == cur
        v.close()
