"""One connection process: runs inside its jail, speaks SSH with paramiko, takes a role.

Everything here runs after the jail is in place (no filesystem, no network namespace, an
unprivileged uid). Its only ways out are the accepted TCP socket and the control socket to the
master. The role follows from the first channel request (the policy is relay.conn.ssh.Server):
  - `subsystem tmate`: a tmate host; this process becomes the session (relay.conn.host).
  - `shell` (after `pty-req`): a viewer; the SSH user name is the token (relay.conn.viewer).
  - `exec` and anything else: refused.

The master accepted the connection and wrote our SSH banner before forking this process (it
forks once the client's first bytes are waiting), so paramiko does not write it again
(relay.conn.ssh.QuickAckSocket). The grace period counts from that accept: the master kills a
connection without a role at exactly `grace_period`; this process's own timeouts are a backstop
GRACE_BACKSTOP later, so that the two never race to log the same end.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import paramiko

from relay import control, log
from relay.conn.host import run_host
from relay.conn.ssh import SSH_BANNER, QuickAckSocket, Server
from relay.conn.viewer import run_viewer
from relay.conn.wire import Gate, Wire
from relay.tmate import messages as m
from relay.tmate.codec import encode

GRACE_BACKSTOP = 0.5  # seconds after the grace period before this process gives up by itself
ROLE_POLL_INTERVAL = 5.0  # seconds between paramiko's idle checks once a role is taken
LOW_FD = 256  # select() takes no descriptor above 1023; the master's go past that under load


@dataclass(frozen=True)
class ConnectionConfig:
    host_keys: tuple[paramiko.PKey, ...]
    ssh_host: str  # advertised host in the ssh command lines
    ssh_port: int  # advertised port
    grace_period: float = 20.0  # seconds to take a role, from the accept
    verbose: bool = False
    max_viewers: int = 64  # viewers per session (the master refuses first; the session too)
    require_authorized_keys: bool = False  # -A: a host without `tmate -a` keys is not joinable
    named_sessions: bool = False  # --api-keys: hosts may ask the master for names (never the keys)
    web_url: str | None = None  # --web-port's links (URL/t/TOKEN) for the host's lines, or none
    reconnect_window: float = 600.0  # --reconnect-window: how long a viewer waits for a lost host


def _renumbered(sock: socket.socket) -> socket.socket:
    """The same socket on a low descriptor (the jail closed all others, so the lowest free one
    is small): the inherited numbers are the master's, and the loops here use select()."""
    if sock.fileno() < LOW_FD:
        return sock
    low = sock.dup()
    sock.close()
    return low


class Connection:
    """What the jail runs for one accepted TCP connection (`run`)."""

    def __init__(
        self,
        sock: socket.socket,
        ctl: socket.socket,
        peer_ip: str,
        cfg: ConnectionConfig,
        accepted: float | None = None,
    ):
        self.sock = sock
        self.master = control.Client(ctl)
        self.peer_ip = peer_ip
        self.cfg = cfg
        self.accepted = time.monotonic() if accepted is None else accepted  # the monotonic clock
        self.log = log.get_logger()

    def run(self) -> int:
        self.sock = _renumbered(self.sock)
        self.master = control.Client(_renumbered(self.master.sock))
        log.configure_child(self.master.log, self.cfg.verbose)
        self.log = log.get_logger()
        deadline = self.accepted + self.cfg.grace_period
        left = max(0.0, deadline + GRACE_BACKSTOP - time.monotonic())
        transport = paramiko.Transport(QuickAckSocket(self.sock, banner_sent=True))
        transport.local_version = SSH_BANNER
        transport.banner_timeout = left
        transport.auth_timeout = left
        for key in self.cfg.host_keys:
            transport.add_server_key(key)
        server = Server(authorize=self.master.authorize)
        gate = Gate(transport, lambda: server.role is not None)  # paramiko's thread stops at the role
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
            deadline += GRACE_BACKSTOP
            chan = transport.accept(timeout=max(0.0, deadline - time.monotonic()))
            if (
                chan is None
                or not server.role_event.wait(max(0.0, deadline - time.monotonic()))
                or server.role is None
            ):
                reason = server.refusal or "no role taken within the grace period"
                self.log.info("connection refused", reason=reason, user=server.username)
                return 0
            # paramiko's transport thread wakes at its socket's timeout (0.1 s) to see whether
            # it was closed; an idle session or viewer then costs ~0.5 ms of CPU a second
            # (2,000 idle sessions: a core). With a role it has nothing to time out (this
            # process ends with os._exit), so it wakes rarely (bench/many_sessions.py).
            self.sock.settimeout(ROLE_POLL_INTERVAL)
            wire = Wire(transport, chan, server, gate)  # the channel's bytes, moved by this thread
            if server.role == "host":
                try:
                    return run_host(self, wire, server)
                except control.Refused as e:  # the master logged it, with the limit
                    _tell_host(wire, str(e))
                    return 0
            return run_viewer(self, wire, server)
        except Exception as e:  # noqa: BLE001 - the last word of a connection is a logged reason
            self.log.error("connection failed", reason=f"{type(e).__name__}: {e}"[:300])
            return 1
        finally:
            transport.close()


def _tell_host(chan: Wire, line: str) -> None:
    """A line on the host's status bar (a tmate NOTIFY) before the connection closes. Sent before
    the host's HEADER is read, so encoded as for the oldest protocol (str16, not str8, for
    32-255 bytes), which every version decodes."""
    try:
        chan.sendall(encode(m.Notify(line), 4))
    except (OSError, EOFError, paramiko.SSHException):
        pass
