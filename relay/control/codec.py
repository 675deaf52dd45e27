"""Packing and unpacking control messages against a table (relay.control.table), the
socketpair they travel on, and the reduction of a connection's log fields. Nothing else in relay
packs a control message.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import msgpack

from relay.control.table import MAX_CONTROL_MESSAGE, RESERVED_LOG_KEYS, ControlError, Message


# ---------------------------------------------------------------------- codec
def encode(table: Mapping[str, Message], name: str, *args: object) -> bytes:
    """One message of `table`, checked as the receiving side will check it."""
    spec = table.get(name)
    if spec is None:
        raise ControlError(f"no control message {name!r}")
    spec.check(list(args))
    data = msgpack.packb([name, *args], use_bin_type=True)
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    return data


def decode(table: Mapping[str, Message], data: bytes) -> tuple[Message, list]:
    """(its table entry, its fields); ControlError unless it is a well-formed message of `table`."""
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    try:
        msg = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ControlError(f"undecodable control message: {type(e).__name__}") from None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ControlError("control message is not a named array")
    spec = table.get(msg[0])
    if spec is None:
        raise ControlError(f"unexpected control message {msg[0][:32]!r}")
    spec.check(msg[1:])
    return spec, msg[1:]


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(master end, connection end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_with_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    socket.send_fds(sock, [data], [fd])


def log_fields(fields: object) -> dict[str, str | int | float | bool | None]:
    """Log fields from a connection process, reduced to short scalars."""
    if not isinstance(fields, dict):
        return {}
    out: dict[str, str | int | float | bool | None] = {}
    for k, v in list(fields.items())[:32]:
        if not isinstance(k, str) or not k.isidentifier() or len(k) > 64 or k in RESERVED_LOG_KEYS:
            continue
        if isinstance(v, (int, float, bool)) or v is None:
            out[k] = v
        else:
            out[k] = str(v)[:1024]
    return out
