"""The control channel between the master and one connection process.

A SOCK_SEQPACKET socketpair: every send is one message, a msgpack array whose first element
names it. The master treats everything it receives as untrusted (a connection process parses
client bytes and could be compromised): sizes are bounded and shapes are checked.

Connection -> master:
  ["log", level, event, {key: value}]      a log event, re-emitted by the master
  ["host"]                                   this connection is a tmate host: allocate tokens
  ["viewer", token, pubkey or nil]           this connection wants to join the session `token`
Master -> connection:
  ["tokens", rw_token, ro_token]
  ["joined", readonly] + link fd             to a viewer: the session was found
  ["no-session"]                             to a viewer: no session has that token
  ["viewer", readonly, ip, pubkey] + link fd to a session: a viewer joins
Connection processes never send file descriptors; the master reads with plain recv(), which
discards (and closes) any that a compromised process would try to pass.
"""

from __future__ import annotations

import os
import socket

import msgpack

MAX_CONTROL_MESSAGE = 8192
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
RESERVED_LOG_KEYS = frozenset({"event", "level", "timestamp", "pid", "ip", "self"})


class ControlError(Exception):
    pass


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(master end, connection end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def pack(*items) -> bytes:
    data = msgpack.packb(list(items), use_bin_type=True)
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    return data


def unpack(data: bytes) -> list:
    """Decode one control message; ControlError if it is not a non-empty array led by a str."""
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    try:
        msg = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ControlError(f"undecodable control message: {type(e).__name__}") from None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ControlError("control message is not a named array")
    return msg


def recv(sock: socket.socket) -> list | None:
    """One message, or None at end of stream."""
    data = sock.recv(MAX_CONTROL_MESSAGE + 1)
    if not data:
        return None
    return unpack(data)


def log_fields(fields) -> dict[str, str | int | float | bool | None]:
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


def send_with_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    socket.send_fds(sock, [data], [fd])


def recv_with_fds(sock: socket.socket) -> tuple[list | None, list[int]]:
    """One message and the file descriptors that came with it (connection processes only)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_CONTROL_MESSAGE + 1, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        return unpack(data), fds
    except ControlError:
        for fd in fds:
            os.close(fd)
        raise
