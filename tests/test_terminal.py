"""relay.screen.terminal.TerminalModel: the pane screen model over libghostty-vt."""

from __future__ import annotations

import pytest

from relay.screen.terminal import TerminalError, TerminalModel, history_cap_bytes

ESC = b"\x1b"


@pytest.fixture
def term():
    m = TerminalModel(20, 5)
    yield m
    m.close()


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(b"line %d\r\n" % i for i in range(start, start + n))


def test_text_cursor_and_size(term):
    term.feed(b"hello\r\nworld")
    assert term.size == (20, 5)
    assert term.rows_text() == ["hello", "world", "", "", ""]
    assert term.cursor == (5, 1)
    term.feed(b"\x1b[3;7H")  # CUP is 1-based
    assert term.cursor == (6, 2)
    assert term.cursor_visible
    term.feed(b"\x1b[?25l")
    assert not term.cursor_visible


def test_wrap_and_scroll(term):
    term.feed(b"A" * 25)  # 20 columns: wraps after 20
    assert term.rows_text()[:2] == ["A" * 20, "A" * 5]
    assert term.cursor == (5, 1)
    term.feed(b"\r\n" + lines(6))
    assert term.history_size >= 1
    assert term.rows_text()[-2:] == ["line 5", ""]


def test_alternate_screen(term):
    term.feed(b"primary\r\n")
    assert not term.alt_screen
    term.feed(b"\x1b[?1049h\x1b[Hfull-screen app")
    assert term.alt_screen
    assert term.mode(1049)
    assert term.rows_text()[0] == "full-screen app"
    assert "primary" not in term.rows_text()
    term.feed(b"\x1b[?1049l")
    assert not term.alt_screen
    assert term.rows_text()[0] == "primary"


def test_modes(term):
    assert not term.mode(2004)
    term.feed(b"\x1b[?2004h")  # bracketed paste, as bash sends it
    assert term.mode(2004)
    term.feed(b"\x1b[4h")  # ANSI insert mode
    assert term.mode(4, ansi=True)


def test_utf8_and_wide_chars(term):
    term.feed("é中文😀|".encode())
    # é is one cell, each CJK ideograph and the emoji two cells: 1 + 2 + 2 + 2 + 1
    assert term.cursor == (8, 0)
    assert term.rows_text()[0] == "é中文😀|"
    assert term.screen_vt()[0] == "é中文😀|"
    # A wide char that does not fit at the end of the row moves to the next row whole.
    term.feed(b"\r\n" + b"x" * 19 + "中".encode())
    assert term.rows_text()[1:3] == ["x" * 19, "中"]
    assert term.cursor == (2, 2)


def test_utf8_split_across_feeds(term):
    data = "中文".encode()
    term.feed(data[:1])
    term.feed(data[1:4])
    term.feed(data[4:])
    assert term.rows_text()[0] == "中文"


def test_vt_formatting_keeps_styles(term):
    term.feed(
        b"\x1b[1;31mred\x1b[0m \x1b[38;5;123mx256\x1b[0m\r\n"
        b"\x1b[38;2;1;2;3mrgb\x1b[0m \x1b[48;2;200;100;50mbg\x1b[0m\r\n"
        b"\x1b[4mul\x1b[0m \x1b[7minv\x1b[0m \x1b[3mit\x1b[0m\r\n" + "\x1b[32m中\x1b[0m".encode()
    )
    rows = term.screen_vt()
    assert len(rows) == 5
    assert "\x1b[1m" in rows[0] and "\x1b[38;5;1m" in rows[0] and "red" in rows[0]
    assert "\x1b[38;5;123mx256" in rows[0]
    assert "\x1b[38;2;1;2;3mrgb" in rows[1]
    assert "\x1b[48;2;200;100;50mbg" in rows[1]
    assert "\x1b[4mul" in rows[2] and "\x1b[7minv" in rows[2] and "\x1b[3mit" in rows[2]
    assert "\x1b[38;5;2m中" in rows[3]
    assert rows[4] == ""
    assert term.row_vt(1) == rows[1]
    # Each row is self-contained: it ends in the default style.
    for r in rows[:4]:
        assert r.endswith("\x1b[0m")


def test_vt_row_starts_fresh_when_style_spans_rows(term):
    term.feed(b"\x1b[41mAB\r\nCD\x1b[0m")
    rows = term.screen_vt()
    assert rows[0].endswith("\x1b[0m") and "\x1b[48;5;1mAB" in rows[0]
    assert "\x1b[48;5;1mCD" in rows[1]


def test_vt_background_only_rows(term):
    # A row erased with a background colour has no text; it must still paint its colour.
    term.feed(b"x\r\n\x1b[44m\x1b[K\x1b[0m\r\n\x1b[48;2;9;8;7m\x1b[K\x1b[0m\r\n\x1b[10C\x1b[45m\x1b[K\x1b[0m")
    rows = term.screen_vt()
    assert rows[1] == "\x1b[0m\x1b[48;5;4m" + " " * 20 + "\x1b[0m"
    assert rows[2] == "\x1b[0m\x1b[48;2;9;8;7m" + " " * 20 + "\x1b[0m"
    assert rows[3] == " " * 10 + "\x1b[0m\x1b[48;5;5m" + " " * 10 + "\x1b[0m"
    assert term.rows_text()[1:4] == ["", "", ""]


def test_resize(term):
    term.feed(b"hello\r\nworld")
    term.resize(40, 10)
    assert term.size == (40, 10)
    assert term.rows_text()[:2] == ["hello", "world"]
    assert len(term.rows_text()) == 10
    gen = term.generation
    term.resize(40, 10)  # no change, no bump
    assert term.generation == gen
    term.resize(3, 2)
    assert term.size == (3, 2)
    assert len(term.screen_vt()) == 2
    with pytest.raises(TerminalError):
        term.resize(0, 5)


def test_dirty_and_generation(term):
    assert term.dirty
    term.clear_dirty()
    assert not term.dirty
    g = term.generation
    term.feed(b"")
    assert not term.dirty and term.generation == g
    term.feed(b"x")
    assert term.dirty and term.generation == g + 1
    term.clear_dirty()
    term.resize(30, 5)
    assert term.dirty


@pytest.mark.parametrize("cols", [80, 200])
def test_history_keeps_2000_rows_and_is_bounded(cols):
    m = TerminalModel(cols, 50)
    try:
        counts = []
        for start in range(0, 20000, 1000):
            m.feed(b"\x1b[3%dm" % (start // 1000 % 8) + lines(1000, start) + b"\x1b[0m")
            counts.append(m.history_size)
        # Pruning frees whole pages: the count swings, but never below the 2000 rows tmate keeps.
        assert min(counts[3:]) >= 2000
        assert max(counts) < 20000  # capped, not growing with the input
        bound = max(counts[3:])
        m.feed(lines(20000, 20000))
        assert 2000 <= m.history_size <= bound
        # The newest history row is the line just above the visible screen.
        hist = m.history_text(3)
        first_visible = m.rows_text()[0]
        assert hist[-1] == f"line {int(first_visible.split()[1]) - 1}"
        # Copy mode scrolled to the top of the 2000 rows tmate keeps.
        top = m.view_text(2000)
        assert top[0] == f"line {int(first_visible.split()[1]) - 2000}"
        assert m.view_text(0) == m.rows_text()
        assert len(m.view_vt(10**9)) == 50  # clamped to the history kept
    finally:
        m.close()


def test_history_cap_recomputed_on_resize():
    m = TerminalModel(80, 24)
    try:
        small = m.history_cap
        assert small == history_cap_bytes(80, 24, 2000)
        m.resize(250, 24)
        assert m.history_cap == history_cap_bytes(250, 24, 2000) > small
        m.feed(lines(6000))
        assert m.history_size >= 2000
    finally:
        m.close()


def test_history_vt_and_alt_screen_history(term):
    term.feed(b"\x1b[35m" + lines(10) + b"\x1b[0m")
    hv = term.history_vt(2)
    assert len(hv) == 2 and "\x1b[38;5;5m" in hv[0]
    assert term.history_text(2) == ["line 4", "line 5"]
    assert term.history_text(0) == []
    term.feed(b"\x1b[?1049h")
    assert term.history_size == 0  # the alternate screen has no history
    assert term.history_text() == []


def test_replies_are_discarded_and_odd_input_does_not_crash(term):
    # DSR, DA1/DA2, XTVERSION, OSC colour queries, ENQ, DECRQM, kitty keyboard query...
    term.feed(
        b"\x1b[6n\x1b[5n\x1b[c\x1b[>c\x1b[>q\x1b]10;?\x07\x1b]11;?\x1b\\\x05"
        b"\x1b[?2004$p\x1b[?u\x1b[14t\x1b[18t\x1bP+q544e\x1b\\"
    )
    # Malformed and truncated sequences, invalid UTF-8, huge parameters, a lone ESC at the end.
    term.feed(b"\xff\xfe\xc3(\x1b[99999999999999999999;9999999999Habc\x1b[?999999h\x1b")
    term.feed(b"[31mafter\x1b[0m")
    assert any(r.endswith("after") for r in term.rows_text())
    term.feed(bytes(range(256)) * 4)
    assert len(term.rows_text()) == 5


def test_close_is_idempotent():
    m = TerminalModel(10, 3)
    m.close()
    m.close()
    assert m.closed
