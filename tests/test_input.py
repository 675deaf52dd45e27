"""relay.input.keys: viewer terminal bytes -> tmux key codes -> messages for the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.input import keys as ki
from relay.input.keys import (
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
    KEYC_F10,
    KEYC_F11,
    KEYC_F12,
    KEYC_HOME,
    KEYC_IC,
    KEYC_KP_ENTER,
    KEYC_KP_FIVE,
    KEYC_KP_PERIOD,
    KEYC_KP_SLASH,
    KEYC_KP_ZERO,
    KEYC_LEFT,
    KEYC_MOUSE,
    KEYC_NONE,
    KEYC_NPAGE,
    KEYC_PPAGE,
    KEYC_RIGHT,
    KEYC_SHIFT,
    KEYC_UP,
    InputParser,
    KeyDispatcher,
    Local,
    Notice,
    key_from_name,
    key_to_name,
)
from relay.tmate import messages as m
from relay.tmate.codec import HostDecoder, encode
from relay.tmate.session import Session

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- constants vs tmate 2.4 tmux.h
def test_constants_match_tmux_h():
    # tmux.h (tmate 2.4.0): KEYC_BASE and the modifier bits.
    assert KEYC_BASE == 0x100000000000
    assert ki.KEYC_ESCAPE == 0x200000000000
    assert ki.KEYC_CTRL == 0x400000000000
    assert ki.KEYC_SHIFT == 0x800000000000
    assert ki.KEYC_NONE == 0xFFFF00000000 and ki.KEYC_UNKNOWN == 0xFFFE00000000
    # enum: FOCUS_IN (0), FOCUS_OUT (1), MOUSE (2), 14 mouse events x 3 places (3..44),
    # BSPACE is enum position 45, F1 46 .. F12 57, IC 58, DC 59, HOME 60, END 61, NPAGE 62,
    # PPAGE 63, BTAB 64, UP 65, DOWN 66, LEFT 67, RIGHT 68, KP_SLASH 69 .. KP_PERIOD 84.
    assert ki.KEYC_FOCUS_IN == KEYC_BASE and KEYC_MOUSE == KEYC_BASE + 2
    assert KEYC_BSPACE == KEYC_BASE + 45
    assert KEYC_F1 == KEYC_BASE + 46 and KEYC_F12 == KEYC_BASE + 57
    assert (KEYC_IC, KEYC_DC, KEYC_HOME, KEYC_END) == tuple(KEYC_BASE + n for n in (58, 59, 60, 61))
    assert (KEYC_NPAGE, KEYC_PPAGE, KEYC_BTAB) == tuple(KEYC_BASE + n for n in (62, 63, 64))
    assert (KEYC_UP, KEYC_DOWN, KEYC_LEFT, KEYC_RIGHT) == tuple(KEYC_BASE + n for n in range(65, 69))
    assert KEYC_KP_SLASH == KEYC_BASE + 69 and KEYC_KP_PERIOD == KEYC_BASE + 84
    assert key_from_name("MouseDown1Pane") == KEYC_BASE + 3
    assert key_from_name("WheelDownBorder") == KEYC_BASE + 44
    assert ki.is_mouse_key(KEYC_BASE + 44) and not ki.is_mouse_key(KEYC_BSPACE)


# ---------------------------------------------------------------- key names
NAMES = {
    "C-b": 0x02,
    "^B": 0x02,
    "^b": 0x02,
    "C-a": 0x01,
    "C-z": 26,
    "C-Space": 0x00,
    "C-@": 0x00,
    "C-[": 0x1B,
    "C-\\": 0x1C,
    "C-_": 0x1F,
    "M-x": ord("x") | KEYC_ESCAPE,
    "M-C-b": 0x02 | KEYC_ESCAPE,
    "C-M-b": 0x02 | KEYC_ESCAPE,
    "C-M-Up": KEYC_UP | KEYC_CTRL | KEYC_ESCAPE,
    "S-F5": KEYC_F5 | KEYC_SHIFT,
    "C-Up": KEYC_UP | KEYC_CTRL,
    "M-Up": KEYC_UP | KEYC_ESCAPE,
    "M-1": ord("1") | KEYC_ESCAPE,
    "Space": 0x20,
    "Enter": 0x0D,
    "Escape": 0x1B,
    "Tab": 0x09,
    "BTab": KEYC_BTAB,
    "BSpace": KEYC_BSPACE,
    "DC": KEYC_DC,
    "IC": KEYC_IC,
    "Home": KEYC_HOME,
    "End": KEYC_END,
    "NPage": KEYC_NPAGE,
    "PageDown": KEYC_NPAGE,
    "PgDn": KEYC_NPAGE,
    "PPage": KEYC_PPAGE,
    "PageUp": KEYC_PPAGE,
    "PgUp": KEYC_PPAGE,
    "pgup": KEYC_PPAGE,
    "Up": KEYC_UP,
    "Down": KEYC_DOWN,
    "Left": KEYC_LEFT,
    "Right": KEYC_RIGHT,
    "F1": KEYC_F1,
    "F12": KEYC_F12,
    "KP0": KEYC_KP_ZERO,
    "KP5": KEYC_KP_FIVE,
    "KP/": KEYC_KP_SLASH,
    "KP.": KEYC_KP_PERIOD,
    "KPEnter": KEYC_KP_ENTER,
    '"': ord('"'),
    "%": ord("%"),
    "a": ord("a"),
    "~": ord("~"),
    "-": ord("-"),
    "é": 0xE9,
    "日": 0x65E5,
    "😀": 0x1F600,
    "M-é": 0xE9 | KEYC_ESCAPE,
    # Characters that keep an explicit CTRL bit (key-string.c's list), and C-Enter / C-Tab.
    "C-1": ord("1") | KEYC_CTRL,
    "C-?": ord("?") | KEYC_CTRL,
    "C-Enter": 0x0D | KEYC_CTRL,
    "C-Tab": 0x09 | KEYC_CTRL,
    "None": KEYC_NONE,
    "none": KEYC_NONE,
    "0x41": 0x41,
    "0x1b": 0x1B,
}


@pytest.mark.parametrize("name,code", NAMES.items())
def test_key_from_name(name, code):
    assert key_from_name(name) == code


@pytest.mark.parametrize(
    "name", ["", "C-", "xyz", "C-Escape", "C-é1", "日本", "\x01", "\x7f", "0x", "0x12345", "Invalid", "F13"]
)
def test_key_from_name_rejects(name):
    assert key_from_name(name) is None


def test_key_names_round_trip():
    canonical = [
        "C-b",
        "C-a",
        "C-Space",
        "M-x",
        "C-M-Up",
        "S-F5",
        "C-S-Left",
        "M-C-b",
        "Space",
        "Enter",
        "Escape",
        "Tab",
        "BTab",
        "BSpace",
        "DC",
        "IC",
        "Home",
        "End",
        "NPage",
        "PPage",
        "Up",
        "Down",
        "Left",
        "Right",
        *(f"F{i}" for i in range(1, 13)),
        *(f"KP{i}" for i in range(10)),
        "KP/",
        "KP*",
        "KP-",
        "KP+",
        "KP.",
        "KPEnter",
        '"',
        "%",
        "~",
        "é",
        "日",
        "😀",
        "M-é",
        "C-1",
        "C-Enter",
        "None",
        "MouseDown1Pane",
        "WheelUpStatus",
        "MouseDragEnd3Border",
    ]
    for name in canonical:
        code = key_from_name(name)
        assert code is not None, name
        assert key_to_name(code) == name
    # Aliases print as tmux's first name for the code.
    assert key_to_name(key_from_name("PageDown")) == "NPage"
    assert key_to_name(key_from_name("^B")) == "C-b"
    assert key_to_name(key_from_name("C-@")) == "C-Space"
    assert key_to_name(0x1C) == "C-\\" and key_to_name(0x7F) == "Invalid#7f"
    assert key_to_name(ki.KEYC_UNKNOWN) == "Unknown" and key_to_name(KEYC_MOUSE) == "Mouse"
    # Every code in 0x00..0x7e and every special key prints to a name that reads back the same.
    for code in [*range(0, 0x7F), *range(KEYC_BSPACE, KEYC_KP_PERIOD + 1)]:
        for mods in (0, KEYC_ESCAPE):
            assert key_from_name(key_to_name(code | mods)) == code | mods, hex(code | mods)


def test_session_fixture_names_all_parse():
    s = _session()
    for table in s.key_tables.values():
        for name in table:
            assert key_from_name(name) is not None, name


# ---------------------------------------------------------------- parser
def parse(data: bytes, **kw) -> list[int]:
    p = InputParser(**kw)
    out = p.feed(data, 0.0)
    out += p.flush(1.0)
    return out


SEQUENCES = {
    # plain characters and control keys: the byte itself (C-b is 0x02, not 'b'|CTRL)
    b"a": [ord("a")],
    b"Z~ ": [ord("Z"), ord("~"), 0x20],
    b"\x02": [0x02],
    b"\x00": [0x00],
    b"\t": [0x09],
    b"\r": [0x0D],
    b"\n": [0x0A],
    b"\x7f": [KEYC_BSPACE],
    b"\x08": [0x08],
    # xterm cursor keys, normal and application mode
    b"\x1b[A": [KEYC_UP],
    b"\x1b[B": [KEYC_DOWN],
    b"\x1b[C": [KEYC_RIGHT],
    b"\x1b[D": [KEYC_LEFT],
    b"\x1bOA": [KEYC_UP],
    b"\x1bOD": [KEYC_LEFT],
    b"\x1b[H": [KEYC_HOME],
    b"\x1b[F": [KEYC_END],
    b"\x1bOH": [KEYC_HOME],
    b"\x1bOF": [KEYC_END],
    # vt220 / screen / linux console / rxvt editing keys
    b"\x1b[1~": [KEYC_HOME],
    b"\x1b[4~": [KEYC_END],
    b"\x1b[7~": [KEYC_HOME],
    b"\x1b[8~": [KEYC_END],
    b"\x1b[2~": [KEYC_IC],
    b"\x1b[3~": [KEYC_DC],
    b"\x1b[5~": [KEYC_PPAGE],
    b"\x1b[6~": [KEYC_NPAGE],
    # function keys: xterm, vt220/rxvt, linux console
    b"\x1bOP": [KEYC_F1],
    b"\x1bOS": [KEYC_F4],
    b"\x1b[11~": [KEYC_F1],
    b"\x1b[14~": [KEYC_F4],
    b"\x1b[15~": [KEYC_F5],
    b"\x1b[17~": [KEYC_F6],
    b"\x1b[21~": [KEYC_F10],
    b"\x1b[23~": [KEYC_F11],
    b"\x1b[24~": [KEYC_F12],
    b"\x1b[[A": [KEYC_F1],
    b"\x1b[[E": [KEYC_F5],
    # xterm modifier parameters
    b"\x1b[1;5A": [KEYC_UP | KEYC_CTRL],
    b"\x1b[1;2B": [KEYC_DOWN | KEYC_SHIFT],
    b"\x1b[1;3D": [KEYC_LEFT | KEYC_ESCAPE],
    b"\x1b[1;8C": [KEYC_RIGHT | KEYC_SHIFT | KEYC_ESCAPE | KEYC_CTRL],
    b"\x1b[1;5H": [KEYC_HOME | KEYC_CTRL],
    b"\x1b[15;2~": [KEYC_F5 | KEYC_SHIFT],
    b"\x1b[3;5~": [KEYC_DC | KEYC_CTRL],
    b"\x1b[6;3~": [KEYC_NPAGE | KEYC_ESCAPE],
    b"\x1b[1;2P": [KEYC_F1 | KEYC_SHIFT],
    b"\x1bO5Q": [KEYC_F2 | KEYC_CTRL],
    b"\x1bO1;2R": [KEYC_F3 | KEYC_SHIFT],
    b"\x1b[24;6~": [KEYC_F12 | KEYC_SHIFT | KEYC_CTRL],
    b"\x1b[1;10A": [KEYC_UP | KEYC_SHIFT | KEYC_ESCAPE],
    # rxvt modifier forms
    b"\x1bOa": [KEYC_UP | KEYC_CTRL],
    b"\x1b[d": [KEYC_LEFT | KEYC_SHIFT],
    b"\x1b[5^": [KEYC_PPAGE | KEYC_CTRL],
    b"\x1b[3$": [KEYC_DC | KEYC_SHIFT],
    b"\x1b[11@": [KEYC_F1 | KEYC_CTRL | KEYC_SHIFT],
    # Shift-Tab
    b"\x1b[Z": [KEYC_BTAB],
    # keypad in application mode
    b"\x1bOp": [KEYC_KP_ZERO],
    b"\x1bOu": [KEYC_KP_FIVE],
    b"\x1bOo": [KEYC_KP_SLASH],
    b"\x1bOM": [KEYC_KP_ENTER],
    b"\x1bOn": [KEYC_KP_PERIOD],
    # xterm modifyOtherKeys and CSI u
    b"\x1b[27;5;9~": [0x09 | KEYC_CTRL],
    b"\x1b[27;2;13~": [0x0D | KEYC_SHIFT],
    b"\x1b[27;5;97~": [0x01],
    b"\x1b[27;3;97~": [ord("a") | KEYC_ESCAPE],
    b"\x1b[27;2;33~": [ord("!")],
    b"\x1b[97;5u": [0x01],
    b"\x1b[127u": [KEYC_BSPACE],
    # Meta as ESC prefix
    b"\x1bx": [ord("x") | KEYC_ESCAPE],
    b"\x1b\x02": [0x02 | KEYC_ESCAPE],
    b"\x1b\x7f": [KEYC_BSPACE | KEYC_ESCAPE],
    b"\x1b\r": [0x0D | KEYC_ESCAPE],
    b"\x1b\x1b[A": [KEYC_UP | KEYC_ESCAPE],
    b"\x1b\xc3\xa9": [0xE9 | KEYC_ESCAPE],
    # UTF-8
    "é".encode(): [0xE9],
    "日本".encode(): [0x65E5, 0x672C],
    "😀".encode(): [0x1F600],
    # dropped whole: focus, mouse (X10, SGR, urxvt), unknown and private sequences
    b"\x1b[I": [],
    b"\x1b[O": [],
    b"\x1b[M !!": [],
    b"\x1b[<0;12;5M": [],
    b"\x1b[<0;12;5m": [],
    b"\x1b[32;12;5M": [],
    b"\x1b[99x": [],
    b"\x1b[12;40R": [],
    b"\x1b[?1;2c": [],
    b"\x1b[E": [],
    b"\x1bOX": [],
    b"\x1b[1 q": [],
    b"\x1b[201~": [],
}


@pytest.mark.parametrize("data,codes", SEQUENCES.items(), ids=repr)
def test_parse(data, codes):
    assert parse(data) == codes
    # ... with text around it, nothing leaks and nothing is lost
    assert parse(b"a" + data + b"b") == [ord("a"), *codes, ord("b")]


@pytest.mark.parametrize("data,codes", SEQUENCES.items(), ids=repr)
def test_parse_byte_by_byte(data, codes):
    p = InputParser()
    out: list[int] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1], 0.001 * i / 10)  # well within escape-time
    out += p.flush(10.0)
    assert out == codes


def test_lone_escape_waits_for_escape_time():
    p = InputParser(escape_time=0.010)
    assert p.pending_timeout(0.0) is None
    assert p.feed(b"\x1b", 100.0) == []
    assert p.pending_timeout(100.0) == pytest.approx(0.010)
    assert p.pending_timeout(100.004) == pytest.approx(0.006)
    assert p.flush(100.005) == []  # too early: still waiting
    assert p.flush(100.010) == [0x1B]
    assert p.pending_timeout(100.011) is None
    assert p.flush(100.02) == []


def test_escape_then_key_within_escape_time_is_meta():
    p = InputParser(escape_time=0.010)
    assert p.feed(b"\x1b", 0.0) == []
    assert p.feed(b"x", 0.005) == [ord("x") | KEYC_ESCAPE]
    assert p.pending_timeout(0.005) is None


def test_escape_then_key_after_escape_time_is_two_keys():
    p = InputParser(escape_time=0.010)
    assert p.feed(b"\x1b", 0.0) == []
    # The caller missed the timer: the late byte does not join the expired ESC.
    assert p.feed(b"x", 0.5) == [0x1B, ord("x")]


def test_escape_time_deadline_is_not_extended_by_partial_bytes():
    p = InputParser(escape_time=0.010)
    p.feed(b"\x1b", 0.0)
    p.feed(b"[", 0.008)
    assert p.pending_timeout(0.008) == pytest.approx(0.002)
    # ESC [ cut short: Meta-[ (Alt+[), as tmux does.
    assert p.flush(0.010) == [ord("[") | KEYC_ESCAPE]


def test_cut_short_sequences_on_expiry():
    assert parse(b"\x1bO") == [ord("O") | KEYC_ESCAPE]
    assert parse(b"\x1b\x1b") == [0x1B, 0x1B]
    assert parse(b"\x1b[1;5") == []  # a sequence cut short is dropped
    assert parse(b"\x1b[M!") == []  # so is a cut-short mouse report
    assert parse(b"\x1b\x1bx") == [0x1B, ord("x") | KEYC_ESCAPE]


def test_zero_escape_time_waits_one_millisecond():
    p = InputParser(escape_time=0)
    assert p.feed(b"a\x1b", 0.0) == [ord("a")]
    assert p.pending_timeout(0.0) == pytest.approx(0.001)
    assert p.flush(0.001) == [0x1B]


def test_escape_bracket_followed_by_non_sequence_is_meta_bracket():
    assert parse(b"\x1b[\x01") == [ord("[") | KEYC_ESCAPE, 0x01]


def test_garbage_sequence_dropped_whole():
    junk = b"\x1b[" + b"1;" * 100 + b"A"
    assert parse(junk + b"b") == [ord("b")]
    p = InputParser()
    out = []
    for i in range(0, len(junk), 7):  # overlong, and split across reads
        out += p.feed(junk[i : i + 7], 0.0)
    out += p.feed(b"b", 0.0) + p.flush(1.0)
    assert out == [ord("b")]


def test_invalid_utf8_dropped_without_crash():
    assert parse(b"\xff\xfeA") == [ord("A")]
    assert parse(b"\xc3A") == [ord("A")]  # lead byte then ASCII
    assert parse(b"\x80\xbfA") == [ord("A")]  # stray continuation bytes
    assert parse(b"\xc0\xafA") == [ord("A")]  # overlong '/'
    assert parse(b"\xed\xa0\x80A") == [ord("A")]  # UTF-16 surrogate
    assert parse(b"\xf4\x90\x80\x80A") == [ord("A")]  # above U+10FFFF
    assert parse(b"\xe6\x97") == []  # cut short, then expired
    import random

    rnd = random.Random(1)
    for _ in range(300):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        codes = parse(data)
        assert all(isinstance(c, int) and c >= 0 for c in codes)


def test_utf8_split_across_feeds():
    p = InputParser()
    data = "é日😀".encode()
    out = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1], 0.0)
    assert out == [0xE9, 0x65E5, 0x1F600]


def test_verase_backspace():
    assert parse(b"\x08\x7f", verase=0x08) == [KEYC_BSPACE, 0x7F]
    assert parse(b"\x7f", verase=None) == [0x7F]


def test_bracketed_paste():
    pasted = "ls -la\r\necho é 日本 😀\n\x02d\x1b[A\ttab"
    data = b"x\x1b[200~" + pasted.encode() + b"\x1b[201~y"
    expect = [
        ord("x"),
        KEY_PASTE_START,
        *b"ls -la",
        0x0D,
        *map(ord, "echo é 日本 😀"),
        0x0D,
        0x02,
        ord("d"),
        0x1B,
        ord("["),
        ord("A"),
        0x09,
        *b"tab",
        KEY_PASTE_END,
        ord("y"),
    ]
    assert parse(data) == expect
    # byte by byte, with long gaps inside the paste: nothing in a paste times out
    p = InputParser()
    out = p.feed(data[:7], 0.0)
    assert out == [ord("x"), KEY_PASTE_START] and p.in_paste
    for i in range(7, len(data)):
        out += p.feed(data[i : i + 1], float(i))
        if p.in_paste:
            assert p.pending_timeout(float(i)) is None
        out += p.flush(float(i) + 0.5)
    assert out == expect


def test_bracketed_paste_end_marker_split():
    p = InputParser()
    assert p.feed(b"\x1b[200~ab\x1b[2", 0.0) == [KEY_PASTE_START, ord("a"), ord("b")]
    assert p.flush(5.0, force=True) == []
    assert p.feed(b"01~c", 6.0) == [KEY_PASTE_END, ord("c")]
    assert not p.in_paste


def test_paste_with_lone_cr_lf():
    assert parse(b"\x1b[200~a\rb\nc\r\n\x1b[201~") == [
        KEY_PASTE_START,
        ord("a"),
        0x0D,
        ord("b"),
        0x0D,
        ord("c"),
        0x0D,
        KEY_PASTE_END,
    ]


# ---------------------------------------------------------------- encoding for the host
def test_encode_key_protocol_6():
    assert ki.encode_key(KEYC_UP | KEYC_CTRL, 6) == [m.PaneKey(-1, KEYC_UP | KEYC_CTRL)]
    assert ki.encode_key(0xE9, 6) == [m.PaneKey(-1, 0xE9)]
    assert ki.encode_key(KEYC_NONE, 6) == []
    assert ki.encode_key(key_from_name("MouseDown1Pane"), 6) == []
    assert ki.encode_key(KEY_PASTE_START, 6) == []
    assert encode(m.PaneKey(-1, KEYC_UP | KEYC_CTRL | KEYC_SHIFT))  # fits the codec


def test_encode_key_protocol_5_shift():
    # tmate 2.2.0 (protocol 5) has no MouseDragEnd keys: special keys from BSpace on are 9 lower.
    assert ki.encode_key(KEYC_UP, 5) == [m.PaneKey(-1, KEYC_UP - 9)]
    assert ki.encode_key(KEYC_BSPACE, 5) == [m.PaneKey(-1, KEYC_BASE + 36)]
    assert ki.encode_key(KEYC_F1 | KEYC_SHIFT, 5) == [m.PaneKey(-1, (KEYC_F1 - 9) | KEYC_SHIFT)]
    assert ki.encode_key(ord("a"), 5) == [m.PaneKey(-1, ord("a"))]
    assert ki.encode_key(ord("a") | KEYC_ESCAPE, 5) == [m.PaneKey(-1, ord("a") | KEYC_ESCAPE)]


def test_encode_key_legacy():
    L = m.LegacyPaneKey
    assert ki.encode_key(ord("a"), 4) == [L(ord("a"))]
    assert ki.encode_key(0x02, 4) == [L(0x02)]
    assert ki.encode_key(KEYC_BSPACE, 4) == [L(0x1001)]
    assert ki.encode_key(KEYC_F1, 4) == [L(0x1002)]
    assert ki.encode_key(KEYC_F12, 4) == [L(0x100D)]
    assert ki.encode_key(KEYC_IC, 3) == [L(0x1016)]  # after F13-F20
    assert ki.encode_key(KEYC_UP | KEYC_CTRL, 4) == [L(0x4000 | 0x101D)]
    assert ki.encode_key(KEYC_KP_PERIOD, 4) == [L(0x1030)]
    assert ki.encode_key(ord("x") | KEYC_ESCAPE, 4) == [L(0x2000 | ord("x"))]
    # UTF-8: one key per byte, modifiers on the first
    assert ki.encode_key(0xE9 | KEYC_ESCAPE, 4) == [L(0x2000 | 0xC3), L(0xA9)]
    assert all(encode(x, 4) for x in ki.encode_key(0x1F600, 4))


def test_encode_command():
    assert ki.encode_command(("split-window", "-h"), 6, 7) == m.ViewerExecCmd(7, ("split-window", "-h"))
    s = ki.encode_command(("rename-window", 'a "b" $HOME \\x', "-t=;"), 5, 7)
    assert s == m.ViewerExecCmdStr(7, '"rename-window" "a \\"b\\" \\$HOME \\\\x" "-t=\\\\;"')


def test_split_commands():
    assert ki.split_commands(("select-pane", "-t=;", "send-keys", "-M")) == [
        ("select-pane", "-t="),
        ("send-keys", "-M"),
    ]
    assert ki.split_commands(("a", ";", "b")) == [("a",), ("b",)]
    assert ki.split_commands(("send-keys", "\\;")) == [("send-keys", ";")]
    assert ki.split_commands(("split-window",)) == [("split-window",)]


def test_canonical_command():
    assert ki.canonical_command("splitw") == "split-window"
    assert ki.canonical_command("split-w") == "split-window"
    assert ki.canonical_command("if") == "if-shell"
    assert ki.canonical_command("detach") == "detach-client"
    assert ki.canonical_command("list-") is None  # ambiguous
    assert ki.canonical_command("nope") is None


# ---------------------------------------------------------------- dispatcher
def _session(fixture="host-stream-none_z0.bin") -> Session:
    s = Session(
        rw_token="ABCDEFGHJKLMNPQRSTUVWXYZa",
        ro_token="ro-bcdefghjkmnpqrstuvwxyz2",
        ssh_host="relay.example",
        ssh_port=22,
    )
    for msg in HostDecoder().feed((FIXTURES / fixture).read_bytes()):
        s.handle(msg)
    return s


@pytest.fixture
def sess():
    s = _session()
    yield s
    s.close()


_clock = [1000.0]


def press(d: KeyDispatcher, keys) -> list:
    """Keys one second apart (no repeat window, no assume-paste)."""
    out = []
    for k in keys:
        _clock[0] += 1.0
        out += d.key(k, _clock[0])
    return out


def test_fixture_replicated_default_bindings(sess):
    assert sess.protocol == 6
    assert sess.key_tables["prefix"]['"'].command == ("split-window",)


def test_plain_keys_go_to_the_pane(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("l"), ord("s"), 0x0D, KEYC_UP]) == [
        m.PaneKey(-1, ord("l")),
        m.PaneKey(-1, ord("s")),
        m.PaneKey(-1, 0x0D),
        m.PaneKey(-1, KEYC_UP),
    ]


def test_prefix_then_split(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert d.key(0x02, 100.0) == []
    assert d.table == "prefix"
    assert d.key(ord('"'), 101.0) == [m.ViewerExecCmd(3, ("split-window",))]
    assert d.table == "root"
    assert d.key(ord("a"), 102.0) == [m.PaneKey(-1, ord("a"))]


def test_prefix_from_parsed_bytes(sess):
    p = InputParser()
    d = KeyDispatcher(sess, 3, readonly=False)
    out = d.keys(p.feed(b"\x02", 0.0), 0.0) + d.keys(p.feed(b"%", 1.0), 1.0)
    assert out == [m.ViewerExecCmd(3, ("split-window", "-h"))]


def test_prefix_detach_is_local(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("d")]) == [Local("detach-client", ("detach-client",))]


def test_prefix_twice_sends_prefix_to_pane(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, 0x02]) == [m.PaneKey(-1, 0x02)]
    assert d.table == "root"


def test_unbound_prefix_key_dropped(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("Q")]) == []
    assert d.table == "root"
    assert press(d, [ord("Q")]) == [m.PaneKey(-1, ord("Q"))]


def test_ui_commands_are_local(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord(":")]) == [Local("command-prompt", ("command-prompt",))]
    assert press(d, [0x02, ord("x")]) == [
        Local("confirm-before", ("confirm-before", "-pkill-pane #P? (y/n)", "kill-pane"))
    ]
    assert press(d, [0x02, ord("?")]) == [Local("list-keys", ("list-keys",))]
    assert press(d, [0x02, ord("s")]) == [Local("choose-tree", ("choose-tree",))]
    # switch-client (C-b L) acts on this viewer: never sent to the host
    assert press(d, [0x02, ord("L")]) == [Local("switch-client", ("switch-client", "-l"))]


def test_repeat_binding(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    up = [m.ViewerExecCmd(3, ("select-pane", "-U"))]
    assert d.key(0x02, 10.0) == []
    assert d.key(KEYC_UP, 10.1) == up  # bind -r Up
    assert d.repeating and d.pending_timeout(10.1) == pytest.approx(0.5)
    assert d.key(KEYC_UP, 10.4) == up  # within repeat-time: no prefix
    assert d.key(KEYC_UP, 10.8) == up  # window restarted at 10.4
    # A non-repeating key ends the repeat and is looked up from the root table.
    assert d.key(ord("n"), 11.0) == [m.PaneKey(-1, ord("n"))]
    assert not d.repeating and d.table == "root"
    # After repeat-time the key goes to the pane.
    assert d.key(0x02, 20.0) == [] and d.key(KEYC_UP, 20.1) == up
    assert d.expire(20.7) and d.table == "root"
    assert d.key(KEYC_UP, 20.8) == [m.PaneKey(-1, KEYC_UP)]


def test_compound_binding(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    sess.handle(
        m.ExecCmd(("bind-key", "X", "select-pane", "-t=;", "display-message", "hi", ";", "send-keys", "a\\;"))
    )
    assert press(d, [0x02, ord("X")]) == [
        m.ViewerExecCmd(3, ("select-pane", "-t=")),
        Local("display-message", ("display-message", "hi")),
        m.ViewerExecCmd(3, ("send-keys", "a;")),
    ]


def test_custom_prefix(sess):
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix", "C-a")))
    sess.handle(m.ExecCmd(("unbind-key", "C-b")))
    sess.handle(m.ExecCmd(("bind-key", "C-a", "send-prefix")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02]) == [m.PaneKey(-1, 0x02)]  # C-b is an ordinary key now
    assert press(d, [0x01, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    assert press(d, [0x01, 0x01]) == [m.PaneKey(-1, 0x01)]  # send-prefix sends C-a


def test_prefix2(sess):
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix2", "M-a")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("a") | KEYC_ESCAPE, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix2", "None")))
    assert press(d, [ord("a") | KEYC_ESCAPE]) == [m.PaneKey(-1, ord("a") | KEYC_ESCAPE)]


def test_root_table_binding(sess):
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-h", "select-pane", "-L")))
    sess.handle(m.ExecCmd(("bind-key", "-n", "F2", "new-window")))
    d = KeyDispatcher(sess, 3, readonly=False)
    p = InputParser()
    assert d.keys(p.feed(b"\x1bh", 1.0), 1.0) == [m.ViewerExecCmd(3, ("select-pane", "-L"))]
    assert d.keys(p.feed(b"\x1bOQ", 2.0), 2.0) == [m.ViewerExecCmd(3, ("new-window",))]
    # a root binding takes precedence over the prefix key itself
    sess.handle(m.ExecCmd(("bind-key", "-n", "C-b", "next-window")))
    assert press(d, [0x02]) == [m.ViewerExecCmd(3, ("next-window",))]
    sess.handle(m.ExecCmd(("unbind-key", "-n", "C-b")))
    assert press(d, [0x02, ord("n")]) == [m.ViewerExecCmd(3, ("next-window",))]


def test_custom_key_table(sess):
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-w", "switch-client", "-T", "mine")))
    sess.handle(m.ExecCmd(("bind-key", "-T", "mine", "x", "kill-pane")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("w") | KEYC_ESCAPE]) == [] and d.table == "mine"
    assert press(d, [ord("x")]) == [m.ViewerExecCmd(3, ("kill-pane",))]
    assert d.table == "root"
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-q", "switch-client", "-Tnope")))
    assert press(d, [ord("q") | KEYC_ESCAPE]) == [Notice("table nope doesn't exist")]


def test_readonly_viewer(sess):
    d = KeyDispatcher(sess, 4, readonly=True)
    assert press(d, [ord("a"), 0x0D, KEYC_UP]) == []
    assert press(d, [0x02, ord('"')]) == [Notice("client is read-only")]
    assert press(d, [0x02, 0x02]) == [Notice("client is read-only")]  # send-prefix too
    assert press(d, [0x02, ord("Q")]) == []
    # detach-client is a read-only command: C-b d still detaches a read-only viewer
    assert press(d, [0x02, ord("d")]) == [Local("detach-client", ("detach-client",))]
    assert d.run_command(("kill-server",)) == [Notice("client is read-only")]
    assert d.keys([KEY_PASTE_START, ord("a"), KEY_PASTE_END], 200.0) == []


def test_paste_bypasses_bindings(sess):
    pane = sess.panes[sess.current_window.active_pane]
    pane.model.feed(b"\x1b[?2004l")  # the recorded shell had turned bracketed paste on
    d = KeyDispatcher(sess, 3, readonly=False)
    out = d.keys([KEY_PASTE_START, 0x02, ord("d"), KEY_PASTE_END], 100.0)
    # the pane does not want bracketed paste: no wrapper
    assert out == [m.PaneKey(-1, 0x02), m.PaneKey(-1, ord("d"))]
    assert d.table == "root"


def test_paste_wrapped_when_pane_wants_it(sess):
    pane = sess.panes[sess.current_window.active_pane]
    pane.model.feed(b"\x1b[?2004h")
    assert not pane.in_mode
    d = KeyDispatcher(sess, 3, readonly=False)
    p = InputParser()
    keys = p.feed(b"\x1b[200~hi\n\x1b[201~", 0.0)
    out = d.keys(keys, 100.0)
    open_ = [m.PaneKey(-1, ord("[") | KEYC_ESCAPE)] + [m.PaneKey(-1, c) for c in b"200~"]
    close = [m.PaneKey(-1, ord("[") | KEYC_ESCAPE)] + [m.PaneKey(-1, c) for c in b"201~"]
    assert out == open_ + [m.PaneKey(-1, ord("h")), m.PaneKey(-1, ord("i")), m.PaneKey(-1, 0x0D)] + close


def test_assume_paste_time(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    # Keys in one burst: the first two are looked up normally, later ones go to the pane.
    out = d.keys([ord("a"), ord("b"), 0x02, ord("c")], 5.0)
    assert out == [m.PaneKey(-1, c) for c in (ord("a"), ord("b"), 0x02, ord("c"))]
    sess.handle(m.ExecCmd(("set-option", "-g", "assume-paste-time", "0")))
    assert d.keys([ord("a"), ord("b"), 0x02, ord("c")], 6.0) == [
        m.PaneKey(-1, ord("a")),
        m.PaneKey(-1, ord("b")),
        m.ViewerExecCmd(3, ("new-window",)),
    ]


def test_protocol_5_and_4(sess):
    for proto, key_msgs, cmd in [
        (5, [m.PaneKey(-1, 0x02), m.PaneKey(-1, KEYC_UP - 9)], m.ViewerExecCmdStr(3, '"split-window"')),
        (4, [m.LegacyPaneKey(0x02), m.LegacyPaneKey(0x101D)], m.ViewerExecCmdStr(3, '"split-window"')),
    ]:
        sess.protocol = proto
        d = KeyDispatcher(sess, 3, readonly=False)
        assert press(d, [0x02, 0x02, KEYC_UP]) == key_msgs
        assert press(d, [0x02, ord('"')]) == [cmd]
        for msg in key_msgs + [cmd]:
            assert encode(msg, proto)


def test_bindings_follow_session_changes(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    sess.handle(m.ExecCmd(("bind-key", "c", "new-window", "-c", "#{pane_current_path}")))
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window", "-c", "#{pane_current_path}"))]
    sess.handle(m.ExecCmd(("unbind-key", "c")))
    assert press(d, [0x02, ord("c")]) == []


def test_escape_time_for(sess):
    assert ki.escape_time_for(sess) == ki.DEFAULT_ESCAPE_TIME
    sess.handle(m.ExecCmd(("set-option", "-s", "escape-time", "0")))
    assert ki.escape_time_for(sess) == 0
    sess.handle(m.ExecCmd(("set-option", "-s", "escape-time", "50")))
    assert ki.escape_time_for(sess) == 0.05
