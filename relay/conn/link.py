"""The link between a session process and one viewer process.

A SOCK_SEQPACKET socketpair made by the master and handed to both ends (SCM_RIGHTS). Each packet
is one record: a one-byte kind, then its payload.

viewer -> session:  b"I" + terminal input bytes
                    b"R" + cols, rows (two big-endian uint16)
                    b"E" + the byte the viewer's terminal sends for Backspace (its VERASE mode)
session -> viewer:  b"O" + bytes for the viewer's terminal
                    b"X" + a last line for the viewer; the session is done with it
"""

from __future__ import annotations

import struct

INPUT = b"I"
RESIZE = b"R"
ERASE = b"E"
OUTPUT = b"O"
EXIT = b"X"
MAX_RECORD = 256 * 1024  # a frame larger than this is split into several OUTPUT records
SOCKET_BUFFER = 1024 * 1024
_SIZE = struct.Struct("!HH")


class LinkError(Exception):
    pass


def resize(cols: int, rows: int) -> bytes:
    return RESIZE + _SIZE.pack(max(0, min(cols, 0xFFFF)), max(0, min(rows, 0xFFFF)))


def erase(char: int) -> bytes:
    return ERASE + bytes([char])


def parse(record: bytes) -> tuple[bytes, bytes | tuple[int, int]]:
    """(kind, payload); a RESIZE payload is (cols, rows), an ERASE payload exactly one byte."""
    kind, payload = record[:1], record[1:]
    if kind == RESIZE:
        if len(payload) != _SIZE.size:
            raise LinkError("malformed resize record")
        return kind, _SIZE.unpack(payload)
    if kind == ERASE and len(payload) != 1:
        raise LinkError("malformed erase record")
    if kind not in (INPUT, OUTPUT, EXIT, ERASE):
        raise LinkError(f"unknown link record {kind!r}")
    return kind, payload


def output_records(data: bytes) -> list[bytes]:
    return [OUTPUT + data[i : i + MAX_RECORD - 1] for i in range(0, len(data), MAX_RECORD - 1)]
