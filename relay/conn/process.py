"""One connection process: runs inside its jail, speaks SSH with paramiko, takes a role.

Everything here runs after the jail is in place (no filesystem, no network namespace, an
unprivileged uid). Its only ways out are the accepted TCP socket and the control socket to the
master. The role follows from the first channel request:
  - `subsystem tmate`: a tmate host; this process becomes the session (relay.conn.host).
  - `shell` (after `pty-req`): a viewer; the SSH user name is the token (relay.conn.viewer).
  - `exec` and anything else: refused.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from dataclasses import dataclass

import paramiko

from relay import control, log

SSH_BANNER = "SSH-2.0-tmate"
HOST_SUBSYSTEM = "tmate"


@dataclass(frozen=True)
class ConnectionConfig:
    host_keys: tuple[paramiko.PKey, ...]
    ssh_host: str  # advertised host in the ssh command lines
    ssh_port: int  # advertised port
    grace_period: float = 20.0  # seconds to take a role
    verbose: bool = False


MAX_TERMINAL_DIMENSION = 1000


def _dimension(value: int, default: int) -> int:
    """A terminal size from the client, bounded; 0 (unknown) becomes the default."""
    if not isinstance(value, int) or value <= 0:
        return default
    return min(value, MAX_TERMINAL_DIMENSION)


class _Server(paramiko.ServerInterface):
    """Auth and channel policy. Runs on paramiko's transport thread."""

    def __init__(self, authorize=None):
        # authorize(user, key fingerprint or None) -> bool: may this user (a token, for a viewer)
        # log in with this key? Asked of the master; None allows everything (warm-up).
        self.authorize = authorize
        self.fingerprint: str | None = None
        self.size = (80, 24)  # the viewer's terminal, from pty-req / window-change
        self.term = "xterm"
        self.on_resize = None  # set by the viewer loop once it is linked to a session
        self.role_event = threading.Event()
        self.role: str | None = None
        self.channel_id: int | None = None
        self.username: str | None = None
        self.pubkey: str | None = None
        self.refusal: str | None = None

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
        self.term = term.decode("ascii", "replace")[:64] if isinstance(term, bytes) else str(term)[:64]
        self.size = (_dimension(width, 80), _dimension(height, 24))
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
    """The accepted TCP socket, acknowledging every segment at once.

    An OpenSSH client sends small packets back to back during the handshake, before it turns
    Nagle off; each then waits for our ACK, which Linux delays by up to 40 ms. Measured here:
    two such stalls made joining take ~70 ms instead of ~20. TCP_QUICKACK is not sticky, so it
    is set again before every read.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def recv(self, n: int) -> bytes:
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return self._sock.recv(n)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Connection:
    def __init__(self, sock: socket.socket, ctl: socket.socket, peer_ip: str, cfg: ConnectionConfig):
        self.sock = sock
        self.ctl = ctl
        self.peer_ip = peer_ip
        self.cfg = cfg
        self.log = log.get_logger()

    # ------------------------------------------------------------------ control channel
    def _send_log(self, level, event, fields):
        try:
            self.ctl.send(control.pack("log", level, event, control.log_fields(fields)))
        except (OSError, control.ControlError):
            pass

    def request_with_fds(self, *msg, expect: tuple[str, ...], timeout: float = 5.0) -> tuple[list, list[int]]:
        """Ask the master and wait for its answer (and any file descriptors with it)."""
        self.ctl.send(control.pack(*msg))
        r, _, _ = select.select([self.ctl], [], [], timeout)
        if not r:
            raise ConnectionError("the master did not answer")
        reply, fds = control.recv_with_fds(self.ctl)
        if reply is None or reply[0] not in expect:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"unexpected answer from the master: {reply and reply[0]!r}")
        return reply, fds

    def authorize(self, user: str, fp: str | None) -> bool:
        """Ask the master whether `user` may log in with key `fp` (runs on paramiko's thread
        while the main thread waits for a role; fails closed)."""
        try:
            reply = self.request("auth", str(user)[:128], fp, expect="auth")
        except (OSError, ConnectionError, control.ControlError):
            return False
        return len(reply) == 2 and reply[1] is True

    def request(self, *msg, expect: str, timeout: float = 5.0) -> list:
        reply, fds = self.request_with_fds(*msg, expect=(expect,), timeout=timeout)
        for fd in fds:
            os.close(fd)
        return reply

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        log.configure_child(self._send_log, self.cfg.verbose)
        self.log = log.get_logger()
        deadline = time.monotonic() + self.cfg.grace_period
        transport = paramiko.Transport(QuickAckSocket(self.sock))
        transport.local_version = SSH_BANNER
        transport.banner_timeout = self.cfg.grace_period
        transport.auth_timeout = self.cfg.grace_period
        for key in self.cfg.host_keys:
            transport.add_server_key(key)
        server = _Server(authorize=self.authorize)
        try:
            try:
                transport.start_server(server=server)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if time.monotonic() >= deadline:
                    reason = "no role taken within the grace period (ssh handshake incomplete)"
                else:
                    reason = f"ssh handshake failed: {e or type(e).__name__}"
                self.log.info("connection refused", reason=reason)
                return 0
            chan = transport.accept(timeout=max(0.0, deadline - time.monotonic()))
            if (
                chan is None
                or not server.role_event.wait(max(0.0, deadline - time.monotonic()))
                or server.role is None
            ):
                reason = server.refusal or "no role taken within the grace period"
                self.log.info("connection refused", reason=reason, user=server.username)
                return 0
            if server.role == "host":
                return run_host(self, transport, chan, server)
            return run_viewer(self, transport, chan, server)
        except Exception as e:  # noqa: BLE001 - the last word of a connection is a logged reason
            self.log.error("connection failed", reason=f"{type(e).__name__}: {e}"[:300])
            return 1
        finally:
            transport.close()


# Imported last: both modules use this one's names.
from relay.conn.host import run_host  # noqa: E402
from relay.conn.viewer import run_viewer  # noqa: E402
