"""The viewer role: a mate's `ssh TOKEN@relay` inside its own jailed connection process.

This process only moves bytes: the viewer's terminal input goes to the session process over the
link, and the frames the session renders for this viewer go back to the SSH channel. It learns
nothing about a session but through the master's look-up, and a refusal looks the same (delay
and text) whether the token never existed, expired or belongs to a session that just ended.
"""

from __future__ import annotations

import random
import select
import socket
import time
from typing import TYPE_CHECKING

import paramiko

from jail import set_process_title
from relay import control
from relay.conn import link

if TYPE_CHECKING:
    from relay.conn.process import Connection
    from relay.conn.ssh import Server

INVALID_TOKEN = b"Invalid session token\r\n"
EXPIRED_TOKEN = b"Invalid or expired session token\r\n"
REFUSAL_DELAY = (0.050, 0.200)  # seconds, drawn uniformly for every "expired" refusal
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/")
MAX_TOKEN_LENGTH = 96  # a named session's USER/NAME: 32 + 1 + 50 (relay.master.names)
READ_CHUNK = 16384


def token_is_valid(token: str) -> bool:
    """The C server's shape check: more than 2 characters, all from [A-Za-z0-9-_/]."""
    return 2 < len(token) <= MAX_TOKEN_LENGTH and all(c in _TOKEN_CHARS for c in token)


def refusal_delay() -> float:
    return random.SystemRandom().uniform(*REFUSAL_DELAY)


def run_viewer(conn: Connection, chan: paramiko.Channel, server: Server) -> int:
    token = server.username or ""
    log = conn.log
    if not token_is_valid(token):
        chan.sendall(INVALID_TOKEN)
        log.info("token look-up failed", reason="malformed token")
        return 0
    try:
        joined = conn.master.join(token, server.pubkey, server.fingerprint)
    except control.Refused as e:  # the session is full; the master logged it, with the limit
        chan.sendall(str(e).encode() + b"\r\n")
        return 0
    if joined is None:
        time.sleep(refusal_delay())
        chan.sendall(EXPIRED_TOKEN)  # the master logged the failed look-up, with its reason
        return 0
    readonly, fd = joined
    lk = socket.socket(fileno=fd)
    role = "ro-viewer" if readonly else "viewer"
    shown = token[3:] if token.startswith("ro-") else token
    set_process_title(f"pymate [{shown[:4]}...] {role} {conn.peer_ip}")
    if not readonly:  # a read-only token's first characters name nothing
        log = log.bind(session=shown[:4])
    log.info("viewer joined", readonly=readonly, pubkey=server.pubkey)
    joined_at = time.monotonic()

    def send_size(cols: int, rows: int) -> None:
        try:
            lk.send(link.resize(cols, rows))
        except OSError:
            pass

    server.on_resize = send_size
    if server.erase is not None:  # before any input, so that the session maps it to BSpace
        try:
            lk.send(link.erase(server.erase))
        except OSError:
            pass
    send_size(*server.size)
    try:
        reason = _move_bytes(chan, lk, conn.master)
    except (OSError, EOFError, paramiko.SSHException, link.LinkError) as e:
        reason = f"connection lost: {e or type(e).__name__}"
    finally:
        server.on_resize = None
        lk.close()
    log.info("viewer left", reason=reason, duration=round(time.monotonic() - joined_at, 3))
    return 0


def _move_bytes(chan: paramiko.Channel, lk: socket.socket, master: control.Client) -> str:
    """The viewer's input to the session, the session's output to the viewer, until one ends;
    why it ended."""
    while True:
        readable, _, _ = select.select([chan, lk, master], [], [])
        if chan in readable:
            data = chan.recv(READ_CHUNK)
            if not data:
                return "viewer left"
            lk.send(link.INPUT + data)
        if lk in readable:
            record = lk.recv(link.MAX_RECORD)
            if not record:
                return "session ended"
            kind, payload = link.parse(record)
            if kind == link.OUTPUT:
                chan.sendall(payload)
            elif kind == link.EXIT:
                chan.sendall(payload)
                return "session closed the viewer"
        if master in readable and master.master_gone():
            return "relay is shutting down"
