"""relay.input.keycodes: tmux 2.4's key codes and key names."""

from __future__ import annotations

import pytest

from relay.input import keycodes as kc
from relay.input.keycodes import (
    KEYC_BASE,
    KEYC_BSPACE,
    KEYC_BTAB,
    KEYC_CTRL,
    KEYC_DC,
    KEYC_DOWN,
    KEYC_END,
    KEYC_ESCAPE,
    KEYC_F1,
    KEYC_F5,
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
    key_from_name,
    key_to_name,
)
from tests.test_dispatch import _session


def _key(name: str) -> int:
    """key_from_name for a name that must parse."""
    code = key_from_name(name)
    assert code is not None, name
    return code


# ---------------------------------------------------------------- constants vs tmate 2.4 tmux.h
def test_constants_match_tmux_h():
    # tmux.h (tmate 2.4.0): KEYC_BASE and the modifier bits.
    assert KEYC_BASE == 0x100000000000
    assert kc.KEYC_ESCAPE == 0x200000000000
    assert kc.KEYC_CTRL == 0x400000000000
    assert kc.KEYC_SHIFT == 0x800000000000
    assert kc.KEYC_NONE == 0xFFFF00000000 and kc.KEYC_UNKNOWN == 0xFFFE00000000
    # enum: FOCUS_IN (0), FOCUS_OUT (1), MOUSE (2), 14 mouse events x 3 places (3..44),
    # BSPACE is enum position 45, F1 46 .. F12 57, IC 58, DC 59, HOME 60, END 61, NPAGE 62,
    # PPAGE 63, BTAB 64, UP 65, DOWN 66, LEFT 67, RIGHT 68, KP_SLASH 69 .. KP_PERIOD 84.
    assert kc.KEYC_FOCUS_IN == KEYC_BASE and KEYC_MOUSE == KEYC_BASE + 2
    assert KEYC_BSPACE == KEYC_BASE + 45
    assert KEYC_F1 == KEYC_BASE + 46 and KEYC_F12 == KEYC_BASE + 57
    assert (KEYC_IC, KEYC_DC, KEYC_HOME, KEYC_END) == tuple(KEYC_BASE + n for n in (58, 59, 60, 61))
    assert (KEYC_NPAGE, KEYC_PPAGE, KEYC_BTAB) == tuple(KEYC_BASE + n for n in (62, 63, 64))
    assert (KEYC_UP, KEYC_DOWN, KEYC_LEFT, KEYC_RIGHT) == tuple(KEYC_BASE + n for n in range(65, 69))
    assert KEYC_KP_SLASH == KEYC_BASE + 69 and KEYC_KP_PERIOD == KEYC_BASE + 84
    assert key_from_name("MouseDown1Pane") == KEYC_BASE + 3
    assert key_from_name("WheelDownBorder") == KEYC_BASE + 44
    assert kc.is_mouse_key(KEYC_BASE + 44) and not kc.is_mouse_key(KEYC_BSPACE)


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
    assert key_to_name(_key("PageDown")) == "NPage"
    assert key_to_name(_key("^B")) == "C-b"
    assert key_to_name(_key("C-@")) == "C-Space"
    assert key_to_name(0x1C) == "C-\\" and key_to_name(0x7F) == "Invalid#7f"
    assert key_to_name(kc.KEYC_UNKNOWN) == "Unknown" and key_to_name(KEYC_MOUSE) == "Mouse"
    # Every code in 0x00..0x7e and every special key prints to a name that reads back the same.
    for code in [*range(0, 0x7F), *range(KEYC_BSPACE, KEYC_KP_PERIOD + 1)]:
        for mods in (0, KEYC_ESCAPE):
            assert key_from_name(key_to_name(code | mods)) == code | mods, hex(code | mods)


def test_session_fixture_names_all_parse():
    s = _session()
    for table in s.key_tables.values():
        for name in table:
            assert key_from_name(name) is not None, name
