"""The viewer role: a mate's `ssh TOKEN@relay` inside its own jailed connection process.

This process only moves bytes: the viewer's terminal input goes to the session process over the
link, and the frames the session renders for this viewer go back to the SSH channel. It learns
nothing about a session but through the master's look-up, and a refusal looks the same (delay
and text) whether the token never existed, expired or belongs to a session that just ended.

When its session's host loses its connection, the session process lets the link go without a
last line: this process then draws `The host is reconnecting...` on the bottom row itself,
drops what is typed, and waits for the master: `relink` (a new link, to the session process of
the host's new connection: it sends its erase character and size again and is drawn from
scratch) or `ended` (the last line), at most the reconnect window + WAIT_MARGIN by itself.
"""

from __future__ import annotations

import random
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paramiko

from jail import hotcode, set_process_title
from relay import control
from relay.conn import link

if TYPE_CHECKING:
    from relay.conn.process import Connection
    from relay.conn.ssh import Server
    from relay.conn.wire import Wire

INVALID_TOKEN = b"Invalid session token\r\n"
EXPIRED_TOKEN = b"Invalid or expired session token\r\n"
REFUSAL_DELAY = (0.050, 0.200)  # seconds, drawn uniformly for every "expired" refusal
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/")
MAX_TOKEN_LENGTH = 96  # a named session's USER/NAME: 32 + 1 + 50 (relay.master.names)
READ_CHUNK = 16384
HOST_AWAY = " The host is reconnecting... (this session waits for it)"
WAIT_MARGIN = 5.0  # seconds past the reconnect window a viewer waits for the master's word
DEFAULT_SIZE = (80, 24)  # a viewer whose size is not known yet
LEAVE_TERMINAL = b"\x1b[0m\x1b[?25h\x1b[?1049l"  # as relay.conn.viewers: the alternate screen ends


def token_is_valid(token: str) -> bool:
    """The C server's shape check: more than 2 characters, all from [A-Za-z0-9-_/]."""
    return 2 < len(token) <= MAX_TOKEN_LENGTH and all(c in _TOKEN_CHARS for c in token)


def refusal_delay() -> float:
    return random.SystemRandom().uniform(*REFUSAL_DELAY)


def wait_refusal(since: float) -> None:
    """Sleep until a drawn refusal delay has passed since `since` (time.monotonic() when the
    request came): the master's look-up lies inside the delay, so how long it took shows
    nowhere, and a busy master does not stretch a refusal past REFUSAL_DELAY's upper end."""
    time.sleep(max(0.0, since + refusal_delay() - time.monotonic()))


def run_viewer(conn: Connection, chan: Wire, server: Server) -> int:
    asked_at = time.monotonic()
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
        wait_refusal(asked_at)
        chan.sendall(EXPIRED_TOKEN)  # the master logged the failed look-up, with its reason
        return 0
    readonly, fd = joined
    role = "ro-viewer" if readonly else "viewer"
    shown = token[3:] if token.startswith("ro-") else token
    set_process_title(f"pymate [{shown[:4]}...] {role} {conn.peer_ip}")
    if not readonly:  # a read-only token's first characters name nothing
        log = log.bind(session=shown[:4])
    log.info("viewer joined", readonly=readonly, pubkey=server.pubkey)
    joined_at = time.monotonic()
    lk = Link(
        socket.socket(fileno=fd), server.erase, lambda: server.size, conn.cfg.reconnect_window + WAIT_MARGIN
    )
    server.on_resize = lk.send_size
    lk.greet()
    try:
        reason = _move_bytes(chan, lk, conn.master, log)
    except (OSError, EOFError, paramiko.SSHException, link.LinkError) as e:
        reason = f"connection lost: {e or type(e).__name__}"
    finally:
        server.on_resize = None
        lk.close()
    log.info("viewer left", reason=reason, duration=round(time.monotonic() - joined_at, 3), ssh=chan.mode)
    return 0


def host_away_notice(cols: int, rows: int) -> bytes:
    """What a viewer process draws on its terminal's bottom row while its host is away."""
    text = HOST_AWAY[: max(cols, 1)].ljust(cols)
    return f"\x1b7\x1b[{rows};1H\x1b[0;7m{text}\x1b[0m\x1b8".encode()


class Link:
    """A viewer process's link to the session process (ssh: relay.conn.viewer, web:
    relay.conn.web_viewer), swapped when the master relinks this viewer to the session process
    of its host's new connection (relay.master.reconnect); None while the host is away."""

    def __init__(
        self, sock: socket.socket, erase: int | None, size: Callable[[], tuple[int, int] | None], wait: float
    ):
        self.sock: socket.socket | None = sock
        self.erase = erase  # the viewer terminal's erase character, if it told one
        self.size = size  # the viewer's size now (None: not known yet)
        self.wait = wait  # seconds to wait for a relink at most (the master ends it first)
        self.waiting_since = 0.0
        self.ended: str | None = None  # the master's last line: the session is over

    def send(self, record: bytes) -> None:
        """A record to the session; while the host is away, it goes nowhere."""
        if self.sock is not None:
            try:
                self.sock.send(record)
            except OSError:
                pass

    def send_size(self, cols: int, rows: int) -> None:
        self.send(link.resize(cols, rows))

    def greet(self) -> None:
        """The erase character before any input (the session maps it to BSpace), then the size."""
        if self.erase is not None:
            self.send(link.erase(self.erase))
        size = self.size()
        if size is not None:
            self.send_size(*size)

    def lost(self) -> None:
        """The session process let this viewer go without a last line: its host is away."""
        self.close()
        self.waiting_since = time.monotonic()

    def relink(self, fd: int) -> None:
        self.close()
        self.sock = socket.socket(fileno=fd)
        self.greet()  # the new session draws this viewer from scratch at its size

    def on_master(self, event: tuple | None, log: Any) -> bool:
        """The master's word for this viewer: `relink` (the new link) or `ended` (the last line).
        True when the viewer looks again before reading on: after a relink, and for an end that
        comes while still linked (the session's own last line, if it sends one, first)."""
        if event is not None and event[0] == "relink" and isinstance(event[2], int):
            self.relink(event[2])
            log.info("viewer relinked", reason="its host reconnected")
            return True
        if event is not None and event[0] == "ended":
            self.ended = str(event[1])
            return self.sock is not None
        return False

    def timeout(self) -> float | None:
        if self.sock is not None:
            return None
        return max(0.0, self.waiting_since + self.wait - time.monotonic())

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _move_bytes(chan: Wire, lk: Link, master: control.Client, log) -> str:
    """The viewer's input to the session, the session's output to the viewer, until one ends;
    why it ended. The master's messages first: a relink is queued before the old link ends."""
    # Once, LEARN_AFTER seconds in: the code this process ran, to the master (jail/hotcode.py).
    learn_due = time.monotonic() + control.LEARN_AFTER if hotcode.wanted("viewer") else None
    while True:
        watched: list[Any] = [chan, master] + ([lk.sock] if lk.sock is not None else [])
        timeout = 0.0 if chan.recv_ready() else lk.timeout()
        if learn_due is not None:
            left = max(0.0, learn_due - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        readable, _, _ = select.select(watched, [], [], timeout)
        if learn_due is not None and time.monotonic() >= learn_due:
            learn_due = None
            master.report_hot("viewer", hotcode.ran())
        if master in readable:
            try:
                event = master.viewer_event()
            except control.MasterGone:
                if lk.sock is None:
                    chan.sendall(LEAVE_TERMINAL + b"[relay shutting down]\r\n")
                return "relay is shutting down"
            if lk.on_master(event, log):
                continue
        if lk.sock is None and lk.ended is not None:
            chan.sendall(LEAVE_TERMINAL + lk.ended.encode() + b"\r\n")
            return "session ended while its host was away"
        if lk.sock is None and lk.timeout() == 0.0:
            chan.sendall(LEAVE_TERMINAL + b"[server exited]\r\n")
            return "its host did not come back"
        if (chan in readable or chan.recv_ready()) and chan.poll():
            data = chan.recv(READ_CHUNK)
            if not data:
                return "viewer left"
            lk.send(link.INPUT + data)  # while the host is away, keys go nowhere
        if lk.sock is not None and lk.sock in readable:
            try:
                record = lk.sock.recv(link.MAX_RECORD)
            except OSError:  # a peer gone with our records unread resets the link: the same end
                record = b""
            if not record:
                lk.lost()
                chan.sendall(host_away_notice(*(lk.size() or DEFAULT_SIZE)))
                log.info("viewer waiting", reason="its session let it go without a last line")
                continue
            kind, payload = link.parse(record)
            if kind in (link.OUTPUT, link.EXIT) and isinstance(payload, bytes):
                chan.sendall(payload)
            if kind == link.EXIT:
                return "session closed the viewer"
