"""A reconnecting host's SNAPSHOT pane as VT bytes that repaint a fresh terminal model.

The lines carry tmux 2.x packed grid cells (docs/architecture.md section 6): one value per used cell,
``flags << 24 | attr << 16 | bg << 8 | fg``; RGB colours did not survive the packing.
"""

from __future__ import annotations

from relay.tmate.messages import SnapshotLine, SnapshotPane

__all__ = ["snapshot_vt"]

_FLAG_FG256, _FLAG_BG256, _FLAG_PADDING, _FLAG_FGRGB, _FLAG_BGRGB = 0x1, 0x2, 0x4, 0x10, 0x20
_ATTR_SGR = ((0x1, "1"), (0x2, "2"), (0x4, "4"), (0x8, "5"), (0x10, "7"), (0x20, "8"), (0x40, "3"))
_ATTR_CHARSET = 0x80
_MODE_CURSOR = 0x1


def snapshot_vt(sp: SnapshotPane) -> bytes:
    """VT bytes that repaint a SNAPSHOT pane: history and screen lines, then the cursor. With a
    saved grid the pane was on the alternate screen: the saved grid is the normal screen."""
    out: list[str] = []
    if sp.saved is not None:
        _grid_vt(out, sp.saved.lines, sp.saved.cursor_x, sp.saved.cursor_y)
        out.append("\x1b[?1049h\x1b[H")
    _grid_vt(out, sp.lines, sp.cursor_x, sp.cursor_y)
    if not sp.mode & _MODE_CURSOR:
        out.append("\x1b[?25l")
    return "".join(out).encode("utf-8", "replace")


def _colour_sgr(value: int, is256: bool, rgb: bool, base: int) -> str | None:
    if rgb:
        return None  # the packing keeps only one byte of an RGB colour
    if is256:
        return f"{base + 8};5;{value}"
    if value < 8:
        return str(base + value)
    if 90 <= value <= 97:  # aixterm bright colours
        return str(value + (base - 30))
    return None  # 8: default


def _cell_sgr(flags: int, attr: int, bg: int, fg: int) -> str:
    """The SGR and charset selection of one packed cell, from a reset."""
    sgr = ["0"] + [code for bit, code in _ATTR_SGR if attr & bit]
    f = _colour_sgr(fg, bool(flags & _FLAG_FG256), bool(flags & _FLAG_FGRGB), 30)
    b = _colour_sgr(bg, bool(flags & _FLAG_BG256), bool(flags & _FLAG_BGRGB), 40)
    sgr += [c for c in (f, b) if c]
    return "\x1b[" + ";".join(sgr) + "m" + ("\x1b(0" if attr & _ATTR_CHARSET else "\x1b(B")


def _grid_vt(out: list[str], lines: tuple[SnapshotLine, ...], cursor_x: int, cursor_y: int) -> None:
    for n, line in enumerate(lines):
        if n:
            out.append("\r\n")
        chars = list(line.text)
        attrs = line.attrs
        # A line whose text is shorter than its cells has no character for padding cells.
        skip_padding = len(chars) < len(attrs)
        ci = 0
        last = None
        for a in attrs:
            cell = (a >> 24) & 0xFF, (a >> 16) & 0xFF, (a >> 8) & 0xFF, a & 0xFF
            if cell[0] & _FLAG_PADDING:
                if not skip_padding:
                    ci += 1
                continue
            if ci >= len(chars):
                break
            if cell != last:
                out.append(_cell_sgr(*cell))
                last = cell
            out.append(chars[ci])
            ci += 1
        out.append("\x1b[0m\x1b(B")
    out.append(f"\x1b[{cursor_y + 1};{cursor_x + 1}H")
