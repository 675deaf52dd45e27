"""relay.input.parser: viewer terminal bytes -> tmux key codes."""

from __future__ import annotations

import pytest

from relay.input import parser
from relay.input.keycodes import (
    KEY_PASTE_END,
    KEY_PASTE_START,
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
    KEYC_NPAGE,
    KEYC_PPAGE,
    KEYC_RIGHT,
    KEYC_SHIFT,
    KEYC_UP,
)
from relay.input.parser import InputParser
from relay.tmate import messages as m
from tests.test_dispatch import _session


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


# ---------------------------------------------------------------- escape-time from the host


def test_escape_time_for(sess):
    assert parser.escape_time_for(sess) == parser.DEFAULT_ESCAPE_TIME
    sess.handle(m.ExecCmd(("set-option", "-s", "escape-time", "0")))
    assert parser.escape_time_for(sess) == 0
    sess.handle(m.ExecCmd(("set-option", "-s", "escape-time", "50")))
    assert parser.escape_time_for(sess) == 0.05


@pytest.fixture
def sess():
    s = _session()
    yield s
    s.close()


def set_escape_time(sess, value: str) -> None:
    sess.handle(m.ExecCmd(("set-option", "-g", "escape-time", value)))


def test_escape_time_500_from_the_host(sess):
    set_escape_time(sess, "500")
    p = InputParser(parser.escape_time_for(sess))
    assert p.feed(b"\x1b", 10.0) == []
    assert p.pending_timeout(10.0) == pytest.approx(0.5)
    assert p.flush(10.4) == []  # not a key before escape-time
    assert p.flush(10.5) == [0x1B]  # a key after it
    assert p.feed(b"\x1b", 20.0) == []
    assert p.feed(b"x", 20.45) == [ord("x") | KEYC_ESCAPE]  # within escape-time: Meta-x


def test_escape_time_0_from_the_host(sess):
    set_escape_time(sess, "0")
    p = InputParser(parser.escape_time_for(sess))
    assert p.feed(b"\x1b", 10.0) == []
    assert p.flush(10.0005) == []
    assert p.flush(10.001) == [0x1B]  # at once (bytes already on their way may still join)


def test_escape_time_change_applies_to_an_existing_parser(sess):
    p = InputParser(parser.escape_time_for(sess))
    assert p.escape_time == parser.DEFAULT_ESCAPE_TIME
    set_escape_time(sess, "500")
    p.escape_time = parser.escape_time_for(sess)
    p.feed(b"\x1b", 0.0)
    assert p.flush(0.2) == [] and p.flush(0.5) == [0x1B]
    set_escape_time(sess, "0")
    p.escape_time = parser.escape_time_for(sess)
    p.feed(b"\x1b", 1.0)
    assert p.flush(1.001) == [0x1B]


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("abc", parser.DEFAULT_ESCAPE_TIME),
        ("-1", parser.DEFAULT_ESCAPE_TIME),
        ("", parser.DEFAULT_ESCAPE_TIME),
        ("5000", 5.0),
        ("99999999", parser.MAX_ESCAPE_TIME),
        ("2147483648", parser.DEFAULT_ESCAPE_TIME),
    ],
)
def test_escape_time_values_a_host_may_send(sess, value, seconds):
    set_escape_time(sess, value)
    assert parser.escape_time_for(sess) == seconds
