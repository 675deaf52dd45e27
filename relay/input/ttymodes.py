"""A viewer's terminal modes, from its SSH `pty-req` (RFC 4254 section 8), sans-IO.

The encoded modes are a byte string of (opcode byte, value) pairs: opcode 0 (TTY_OP_END) ends
the list, opcodes 1-159 take a uint32 value, opcodes 160-255 are undefined and stop parsing (their
arguments are unknown). A client sends anything here, so reading is bounded and never raises.

tmux treats its client's VERASE character as BSpace; the relay does the same with the VERASE
mode of an ssh viewer's terminal (see `erase_char`).
"""

from __future__ import annotations

import struct

TTY_OP_END = 0
VERASE = 3
_LAST_WITH_VALUE = 159
MAX_MODES_BYTES = 4096  # more than every defined mode, each once (5 bytes each)
_VALUE = struct.Struct("!I")


def parse_modes(blob: bytes) -> dict[int, int]:
    """opcode -> value of the encoded terminal modes (a later value for an opcode wins).

    Stops at TTY_OP_END, at an undefined opcode, at a value cut short and after
    MAX_MODES_BYTES; what was read until then stands."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        return {}
    data = bytes(blob[:MAX_MODES_BYTES])
    modes: dict[int, int] = {}
    i = 0
    while i < len(data):
        opcode = data[i]
        if opcode == TTY_OP_END or opcode > _LAST_WITH_VALUE or i + 1 + _VALUE.size > len(data):
            break
        (modes[opcode],) = _VALUE.unpack_from(data, i + 1)
        i += 1 + _VALUE.size
    return modes


def erase_char(blob: bytes) -> int | None:
    """The byte the viewer's terminal sends for Backspace (its VERASE mode), or None when the modes
    name none that can be told apart from other keys: VERASE absent, disabled (0, or 255 on BSD),
    beyond ASCII (a UTF-8 lead byte) or ESC (the start of every escape sequence)."""
    value = parse_modes(blob).get(VERASE)
    if value is None or not 0 < value < 0x80 or value == 0x1B:
        return None
    return value
