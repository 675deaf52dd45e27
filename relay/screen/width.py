"""Display width of characters and strings, in terminal columns."""

from __future__ import annotations

import unicodedata

_width_cache: dict[str, int] = {}


def char_width(ch: str) -> int:
    w = _width_cache.get(ch)
    if w is None:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0:
            w = -1  # control: dropped
        elif unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            w = 0
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            w = 2
        else:
            w = 1
        if len(_width_cache) < 65536:
            _width_cache[ch] = w
    return w


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal (control characters count 0)."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(w for w in map(char_width, text) if w > 0)
