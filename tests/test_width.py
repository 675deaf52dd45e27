"""relay.screen.width against the terminal engine: a character takes as many columns in the relay's
own drawing (status line, prompts, clipping, wrapping) as the pane's terminal model gives it.

`python -m tests.test_width` prints the width table of relay/screen/width.py from the engine
(to paste there when the engine changes; the full sweep below fails until then)."""

from __future__ import annotations

import pytest

from relay.screen.terminal import TerminalModel
from relay.screen.width import char_width, display_width

FIRST = 0xA0  # below it: ASCII and the C0/C1 controls, decided in code


@pytest.fixture(scope="module")
def term():
    t = TerminalModel(12, 2)
    yield t
    t.close()


def advance(t: TerminalModel, text: str, graphemes: bool = False) -> int:
    """Columns the engine's cursor moves writing `text` at the start of a cleared row."""
    t.reset()
    t.feed(b"\x1b[?2027h" if graphemes else b"")
    t.feed(b"\x1b[H" + text.encode("utf-8"))
    return t.cursor[0]


def _code_points():
    for o in range(FIRST, 0x110000):
        if not 0xD800 <= o < 0xE000:
            yield o


def engine_width_runs() -> list[tuple[int, int, int]]:
    """(first, last, width) runs over every code point from U+00A0, as the engine places each
    one after an 'a' (surrogates, which cannot be fed, count as width 1)."""
    t = TerminalModel(12, 2)
    runs: list[list[int]] = []
    for o in range(FIRST, 0x110000):
        if 0xD800 <= o < 0xE000:
            w = 1
        else:
            t.feed(b"\x1b[H\x1b[2Ka" + chr(o).encode("utf-8"))
            w = t.cursor[0] - 1
        if runs and runs[-1][2] == w and runs[-1][1] == o - 1:
            runs[-1][1] = o
        else:
            runs.append([o, o, w])
    t.close()
    return [(a, b, w) for a, b, w in runs]


def test_every_code_point_agrees_with_the_engine():
    t = TerminalModel(12, 2)
    wrong = []
    for o in _code_points():
        t.feed(b"\x1b[H\x1b[2Ka" + chr(o).encode("utf-8"))
        if t.cursor[0] - 1 != char_width(chr(o)):
            wrong.append(hex(o))
    t.close()
    assert not wrong, f"{len(wrong)} code points disagree, first {wrong[:20]}"


def test_ascii_and_controls():
    assert [char_width(c) for c in "a Z~"] == [1, 1, 1, 1]
    for o in list(range(0x20)) + list(range(0x7F, 0xA0)):
        assert char_width(chr(o)) == -1, hex(o)  # dropped: the relay never draws a control
    assert display_width("a\x1b\tb\x7f\x85") == 2


# Text, and the columns both the engine and display_width give it (the engine's default mode:
# each code point takes its own width, as in tmux 2.4; no grapheme clustering).
CASES = [
    ("CJK", "\u4e2d\u6587", 4),
    ("Hangul syllable", "\ud55c", 2),
    ("Hangul jamo L+V", "\u1100\u1161", 2),  # the vowel joins the leading consonant: 0
    ("Hangul filler", "\u115f\u3164", 0),
    ("fullwidth forms", "\uff21\uff01\u3000", 6),
    ("halfwidth katakana", "\uff71", 1),
    ("U+1F600", "\U0001f600", 2),
    ("U+1F680", "\U0001f680", 2),
    ("U+2764 alone", "\u2764", 1),
    ("U+2764 VS16", "\u2764\ufe0f", 1),  # VS16 does not widen it
    ("U+2764 VS15", "\u2764\ufe0e", 1),
    ("skin tone", "\U0001f44d\U0001f3fd", 4),  # the modifier is a wide character of its own
    ("skin tone alone", "\U0001f3fd", 2),
    ("ZWJ family", "\U0001f468\u200d\U0001f469\u200d\U0001f467", 6),
    ("flag", "\U0001f1eb\U0001f1f7", 4),  # regional indicators are wide one by one
    ("tag flag", "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", 2),
    ("keycap", "1\ufe0f\u20e3", 1),
    ("combining acute", "e\u0301", 1),
    ("combining on wide", "\u4e2d\u0301", 2),
    ("Devanagari", "\u0915\u094d\u0937", 2),
    ("zero-width", "a\u200b\u200c\u200d\u2060\ufeff\u200e", 1),
    ("soft hyphen", "\u00ad", 1),  # drawn by the engine, unlike wcwidth's 0
    ("Arabic number sign", "\u0600", 1),
    ("line separator", "\u2028", 0),
    ("trigram", "\u2630", 2),  # wide in the engine's newer Unicode
    ("Unicode 15 combining", "a\u1acf", 1),
    ("private use", "\ue000", 1),
]


@pytest.mark.parametrize("what,text,cols", CASES, ids=[c[0] for c in CASES])
def test_sequences_agree_with_the_engine(term, what, text, cols):
    assert advance(term, text) == cols
    assert display_width(text) == cols


# With grapheme clustering (DEC mode 2027, which a pane's program may turn on) the engine gives a
# whole emoji sequence two columns. A per-code-point width cannot know that: these disagree.
CLUSTERED = [
    ("U+2764 VS16", "\u2764\ufe0f", 1),
    ("skin tone", "\U0001f44d\U0001f3fd", 4),
    ("ZWJ family", "\U0001f468\u200d\U0001f469\u200d\U0001f467", 6),
    ("flag", "\U0001f1eb\U0001f1f7", 4),
    ("keycap", "1\ufe0f\u20e3", 1),
]


@pytest.mark.parametrize("what,text,cols", CLUSTERED, ids=[c[0] for c in CLUSTERED])
def test_clustered_sequences_are_what_cannot_agree(term, what, text, cols):
    assert advance(term, text, graphemes=True) == 2
    assert display_width(text) == cols


@pytest.mark.parametrize("text", ["\u4e2d", "\U0001f600", "e\u0301", "\uff21", "a\u200b"])
def test_single_characters_agree_in_both_modes(term, text):
    assert advance(term, text, graphemes=True) == advance(term, text) == display_width(text)


def _table_text() -> str:
    runs = engine_width_runs()
    out = []
    for name, w in (("_ZERO", 0), ("_WIDE", 2)):
        items = [f"{a:X}" if a == b else f"{a:X}-{b:X}" for a, b, e in runs if e == w]
        lines, cur = [], ""
        for it in items:
            if cur and len(cur) + len(it) + 1 > 94:
                lines.append(cur)
                cur = ""
            cur = f"{cur} {it}" if cur else it
        lines.append(cur)
        out.append(f"{name} = (\n" + "\n".join(f'    "{line} "' for line in lines) + "\n)")
    others = sorted({e for _, _, e in runs} - {0, 1, 2})
    assert not others, others
    return "\n".join(out)


if __name__ == "__main__":
    print(_table_text())
