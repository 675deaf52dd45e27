"""Styles and colours (tmux's style.c and colour.c): `fg=red,bg=colour33,bright` strings, the
#[...] markup of status text, and the *-style options with their legacy -fg/-bg/-attr forms."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Style", "DEFAULT_STYLE", "RESET", "parse_style", "overlay", "option_style"]

RESET = "\x1b[0m"

_ATTRS = {
    "bright": 0x1,
    "bold": 0x1,
    "dim": 0x2,
    "underscore": 0x4,
    "blink": 0x8,
    "reverse": 0x10,
    "hidden": 0x20,
    "italics": 0x40,
}
_ATTR_SGR = ((0x1, "1"), (0x2, "2"), (0x4, "4"), (0x8, "5"), (0x10, "7"), (0x20, "8"), (0x40, "3"))
_NAMED = {
    "black": 0,
    "red": 1,
    "green": 2,
    "yellow": 3,
    "blue": 4,
    "magenta": 5,
    "cyan": 6,
    "white": 7,
    "default": 8,
}


@dataclass(frozen=True, slots=True)
class Style:
    """A cell style: fg/bg as SGR parameter strings ("39" = default), attrs as tmux bits."""

    fg: str = "39"
    bg: str = "49"
    attr: int = 0

    def sgr(self) -> str:
        p = ["0"]
        if self.fg != "39":
            p.append(self.fg)
        if self.bg != "49":
            p.append(self.bg)
        p += [code for bit, code in _ATTR_SGR if self.attr & bit]
        return "\x1b[" + ";".join(p) + "m"


DEFAULT_STYLE = Style()


_Colour = tuple[str, int, int, int]


def _colour(s: str) -> _Colour | None:
    """tmux colour name -> ("n", 0-8 | 90-97, 0, 0) | ("256", n, 0, 0) | ("rgb", r, g, b) | None."""
    low = s.lower()
    if len(s) == 7 and s[0] == "#":
        try:
            v = int(s[1:], 16)
        except ValueError:
            return None
        return ("rgb", v >> 16, (v >> 8) & 0xFF, v & 0xFF)
    if low.startswith("colour"):
        n = low[6:]
        if n.isdigit() and int(n) <= 255:
            return ("256", int(n), 0, 0)
        return None
    if low in _NAMED:
        return ("n", _NAMED[low], 0, 0)
    if s.isdigit() and (int(s) <= 8 or 90 <= int(s) <= 97):
        return ("n", int(s), 0, 0)
    if low.startswith("bright") and low[6:] in _NAMED and low[6:] != "default":
        return ("n", 90 + _NAMED[low[6:]], 0, 0)
    return None


def _colour_sgr(c: _Colour, bg: bool) -> str:
    kind = c[0]
    if kind == "n":
        n = c[1]
        return str(n + 10) if (bg and n >= 90) else str((40 if bg else 30) + n) if n < 8 else str(n)
    if kind == "256":
        return f"{48 if bg else 38};5;{c[1]}"
    return f"{48 if bg else 38};2;{c[1]};{c[2]};{c[3]}"


def _attrs(s: str) -> int | None:
    out = 0
    for part in s.split("|"):
        bit = _ATTRS.get(part.lower())
        if bit is None:
            return None
        out |= bit
    return out


def parse_style(text: str, current: Style = DEFAULT_STYLE, base: Style = DEFAULT_STYLE) -> Style | None:
    """Apply a tmux style string ("fg=red,bg=colour33,bright,noreverse", "default") on top of
    `current`; "default" and colour "default" mean `base`. None when the string is invalid
    (tmux then keeps the style it had)."""
    if not text:
        return current
    if text[-1] in " ,":
        return None
    fg, bg, attr = current.fg, current.bg, current.attr
    for tok in re.split(r"[ ,]+", text):
        if not tok:
            continue
        low = tok.lower()
        if len(tok) > 31:
            return None
        if low == "default":
            fg, bg, attr = base.fg, base.bg, base.attr
        elif len(tok) > 3 and low[1:3] == "g=" and low[0] in "fb":
            c = _colour(tok[3:])
            if c is None:
                return None
            if low[0] == "f":
                fg = base.fg if c[:2] == ("n", 8) else _colour_sgr(c, False)
            else:
                bg = base.bg if c[:2] == ("n", 8) else _colour_sgr(c, True)
        elif low == "none":
            attr = 0
        elif len(tok) > 2 and low.startswith("no"):
            a = _attrs(tok[2:])
            if a is None:
                return None
            attr &= ~a
        else:
            a = _attrs(tok)
            if a is None:
                return None
            attr |= a
    return Style(fg, bg, attr)


def overlay(gc: Style, st: Style) -> Style:
    """tmux's style_apply_update: only the non-default parts of `st` change `gc`."""
    return Style(
        st.fg if st.fg != "39" else gc.fg, st.bg if st.bg != "49" else gc.bg, st.attr if st.attr else gc.attr
    )


def option_style(session, name: str, default: str) -> Style:
    """A *-style option, with the legacy -fg/-bg/-attr options when only those were set."""
    explicit = session.option(name)
    st = parse_style(explicit if explicit is not None else default) or parse_style(default) or DEFAULT_STYLE
    if explicit is None:
        prefix = name[: -len("-style")]
        fg, bg, at = (
            session.option(prefix + "-fg"),
            session.option(prefix + "-bg"),
            session.option(prefix + "-attr"),
        )
        if fg is not None:
            st = parse_style(f"fg={fg}", st) or st
        if bg is not None:
            st = parse_style(f"bg={bg}", st) or st
        if at is not None:
            a = 0 if at in ("none", "default") else _attrs(at.replace(",", "|"))
            if a is not None:
                st = Style(st.fg, st.bg, a)
    return st
