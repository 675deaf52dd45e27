"""relay.input.ttymodes: an ssh viewer's pty-req terminal modes (RFC 4254 section 8), bounded."""

from __future__ import annotations

import random
import struct

import pytest

from relay.input.ttymodes import MAX_MODES_BYTES, TTY_OP_END, VERASE, erase_char, parse_modes


def modes(*pairs: tuple[int, int], end: bool = True) -> bytes:
    return b"".join(struct.pack("!BI", op, value) for op, value in pairs) + (b"\x00" if end else b"")


# What OpenSSH's client sends for a typical Linux terminal (a few of its ~50 modes): VINTR ^C,
# VQUIT ^\, VERASE, VKILL ^U, VEOF ^D, ..., ICRNL 1, ECHO 1, TTY_OP_ISPEED/OSPEED 38400.
def openssh_like(verase: int) -> bytes:
    return modes(
        (1, 3), (2, 0x1C), (VERASE, verase), (4, 0x15), (5, 4), (36, 1), (53, 1), (128, 38400), (129, 38400)
    )


def test_openssh_modes():
    assert parse_modes(openssh_like(0x7F)) == {
        1: 3,
        2: 0x1C,
        VERASE: 0x7F,
        4: 0x15,
        5: 4,
        36: 1,
        53: 1,
        128: 38400,
        129: 38400,
    }
    assert erase_char(openssh_like(0x7F)) == 0x7F
    assert erase_char(openssh_like(0x08)) == 0x08  # stty erase ^H


def test_no_modes_name_no_erase_char():
    assert parse_modes(b"") == {} and erase_char(b"") is None
    assert parse_modes(b"\x00") == {} and erase_char(b"\x00") is None
    assert erase_char(modes((1, 3))) is None


def test_end_stops_parsing():
    assert parse_modes(modes((1, 3)) + modes((VERASE, 8))) == {1: 3}


def test_truncated():
    blob = modes((1, 3), (VERASE, 8), end=False)
    for cut in range(len(blob)):
        got = parse_modes(blob[:cut])
        assert got == {k: v for k, v in ((1, 3), (VERASE, 8))[: cut // 5]}, cut
    assert erase_char(blob[:9]) is None  # VERASE's value cut short
    assert erase_char(blob) == 8  # no TTY_OP_END at all: what was read stands


def test_undefined_opcode_stops_parsing():
    # Opcodes 160-255 have no defined argument: nothing after one can be read.
    assert parse_modes(modes((1, 3)) + b"\xa0" + modes((VERASE, 8))) == {1: 3}
    assert parse_modes(b"\xff" + modes((VERASE, 8))) == {}


def test_later_value_wins():
    assert erase_char(modes((VERASE, 0x7F), (VERASE, 0x08))) == 0x08


@pytest.mark.parametrize("value", [0, 0x1B, 0x80, 0xFF, 0x100, 0xFFFFFFFF])
def test_unusable_erase_chars(value):
    # Disabled (0; 255 on BSD), ESC (starts every escape sequence), beyond ASCII or a byte.
    assert erase_char(modes((VERASE, value))) is None


def test_huge_modes_are_read_only_so_far():
    blob = modes(*((1 + i % 159, i) for i in range(100_000)), end=False)
    got = parse_modes(blob)
    assert len(got) <= 159
    assert got == parse_modes(blob[:MAX_MODES_BYTES])
    # A VERASE past the bound is not seen.
    assert erase_char(modes(*((1, 0),) * 1000, (VERASE, 8))) is None
    assert erase_char(modes(*((1, 0),) * 10, (VERASE, 8))) == 8


def test_garbage_never_raises():
    rng = random.Random(4254)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        got = parse_modes(blob)
        assert all(0 < op < 160 and 0 <= v < 2**32 for op, v in got.items())
        e = erase_char(blob)
        assert e is None or (0 < e < 0x80 and e != 0x1B)


def test_not_bytes():
    assert parse_modes(None) == {}  # type: ignore[arg-type]  # paramiko hands over what it read
    assert erase_char("\x03\x00\x00\x00\x08") is None  # type: ignore[arg-type]
    assert TTY_OP_END == 0 and VERASE == 3
