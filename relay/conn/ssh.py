"""The SSH policy of a connection process: what paramiko's server side may accept.

`Server` is the paramiko ServerInterface (auth, the one session channel, the role it takes and
the viewer's terminal size); `QuickAckSocket` wraps the accepted TCP socket. Both run in the
jailed connection process (relay.conn.process) and in the master's in-process warm-up
(relay.conn.warmup), which imports this module and not the connection process itself.
"""

from __future__ import annotations

import socket
import threading

import paramiko

from relay import control
from relay.input.ttymodes import erase_char

SSH_BANNER = control.SSH_BANNER
_BANNER_LINE = (SSH_BANNER + "\r\n").encode()
HOST_SUBSYSTEM = "tmate"


MAX_TERMINAL_DIMENSION = 1000


def _dimension(value: int, default: int) -> int:
    """A terminal size from the client, bounded; 0 (unknown) becomes the default."""
    if not isinstance(value, int) or value <= 0:
        return default
    return min(value, MAX_TERMINAL_DIMENSION)


class Server(paramiko.ServerInterface):
    """Auth and channel policy. Runs on paramiko's transport thread."""

    def __init__(self, authorize=None):
        # authorize(user, key fingerprint or None) -> bool: may this user (a token, for a viewer)
        # log in with this key? Asked of the master; None allows everything (warm-up).
        self.authorize = authorize
        self.fingerprint: str | None = None
        self.size = (80, 24)  # the viewer's terminal, from pty-req / window-change
        self.on_resize = None  # set by the viewer loop once it is linked to a session
        self.role_event = threading.Event()
        self.role: str | None = None
        self.channel_id: int | None = None
        self.username: str | None = None
        self.pubkey: str | None = None
        self.refusal: str | None = None
        self.erase: int | None = None  # the viewer terminal's Backspace byte (pty-req VERASE)

    # --- auth: like the C server, `none` is accepted and a key, when offered, is recorded;
    # unless the session the user name (token) names restricts its viewers to the host's
    # authorized keys (`tmate -a`): then `none` and unlisted keys are denied, and the client
    # goes on to its next key. A token that matches no session is never denied here.
    def get_allowed_auths(self, username):
        return "none,publickey"

    def _allowed(self, username, fp) -> bool:
        return self.authorize is None or self.authorize(username, fp)

    def check_auth_none(self, username):
        if not self._allowed(username, None):
            return paramiko.AUTH_FAILED
        self.username = username
        return paramiko.AUTH_SUCCESSFUL

    def check_auth_publickey(self, username, key):
        fp = key.fingerprint
        if not self._allowed(username, fp):
            return paramiko.AUTH_FAILED
        self.username = username
        self.pubkey = f"{key.get_name()} {key.get_base64()}"
        self.fingerprint = fp
        return paramiko.AUTH_SUCCESSFUL

    # --- channels: one session channel, one role.
    def check_channel_request(self, kind, chanid):
        if kind != "session" or self.channel_id is not None:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.channel_id = chanid
        return paramiko.OPEN_SUCCEEDED

    def _take_role(self, role: str) -> bool:
        if self.role is not None:
            return False
        self.role = role
        self.role_event.set()
        return True

    def _refuse(self, reason: str) -> bool:
        """Refuse the request and end the connection (the main thread wakes up and logs it)."""
        if self.role is None:
            self.refusal = reason
            self.role_event.set()
        return False

    def check_channel_subsystem_request(self, channel, name):
        if name != HOST_SUBSYSTEM:
            return self._refuse(f"unknown subsystem {name[:40]!r}")
        return self._take_role("host")

    def check_channel_exec_request(self, channel, command):
        return self._refuse("exec requests are not supported")

    def check_channel_shell_request(self, channel):
        return self._take_role("viewer")

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        if self.role is not None:
            return False
        self.size = (_dimension(width, 80), _dimension(height, 24))
        self.erase = erase_char(modes)
        return True

    def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight):
        self.size = (_dimension(width, 80), _dimension(height, 24))
        callback = self.on_resize
        if callback is not None:
            callback(*self.size)
        return True

    def check_port_forward_request(self, address, port):
        return False

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg):
        return False


class QuickAckSocket:
    """The accepted TCP socket, acknowledging every segment at once, and without our banner.

    An OpenSSH client sends small packets back to back during the handshake, before it turns
    Nagle off; each then waits for our ACK, which Linux delays by up to 40 ms. Measured here:
    two such stalls made joining take ~70 ms instead of ~20. TCP_QUICKACK is not sticky, so it
    is set again before every read.

    `banner_sent`: the master already wrote our identification line (it does so on accept, so
    that a client that sends nothing costs no process: relay.master.server). paramiko always
    begins by writing that same line, and a second one would be a protocol error for the
    client (it would read it as the first packet); so the first write, when it is exactly that
    line, is swallowed and reported as sent. Anything else goes out untouched.

    `sock` may be None: the socket is `attach`ed later (a standby starts paramiko's side of
    the handshake before its connection exists, relay.conn.process.Handshake). Until then,
    reads and writes wait for it and a timeout set is kept for it.
    """

    def __init__(self, sock: socket.socket | None, banner_sent: bool = False):
        self._sock = sock
        self._swallow_banner = banner_sent
        self._attached = threading.Event()
        self._timeout: float | None = None
        if sock is not None:
            self._attached.set()

    def attach(self, sock: socket.socket) -> None:
        """The connection's socket, for the reads and writes waiting for it."""
        if self._timeout is not None:
            sock.settimeout(self._timeout)
        self._sock = sock
        self._attached.set()

    def settimeout(self, timeout: float | None) -> None:
        if self._sock is None:
            self._timeout = timeout
        else:
            self._sock.settimeout(timeout)

    def send(self, data: bytes) -> int:
        if self._swallow_banner:
            self._swallow_banner = False
            if bytes(data) == _BANNER_LINE:
                return len(data)
        self._attached.wait()
        return self._sock.send(data)  # type: ignore[union-attr]

    def recv(self, n: int) -> bytes:
        self._attached.wait()
        sock: socket.socket = self._sock  # type: ignore[assignment]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return sock.recv(n)

    def __getattr__(self, name):
        return getattr(self._sock, name)
