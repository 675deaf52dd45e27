"""One connection process: runs inside its jail, speaks SSH with paramiko, takes a role.

Everything here runs after the jail is in place (no filesystem, no network namespace, an
unprivileged uid). Its only ways out are the accepted TCP socket and the control socket to the
master. The role follows from the first channel request (the policy is relay.conn.ssh.Server):
  - `subsystem tmate`: a tmate host; this process becomes the session (relay.conn.host).
  - `shell` (after `pty-req`): a viewer; the SSH user name is the token (relay.conn.viewer).
  - `exec` and anything else: refused.

The master accepted the connection and wrote our SSH banner before handing it to this process
(it does once the client's first bytes are waiting), so paramiko does not write it again
(relay.conn.ssh.QuickAckSocket). The grace period counts from that accept: the master kills a
connection without a role at exactly `grace_period`; this process's own timeouts are a backstop
GRACE_BACKSTOP later, so that the two never race to log the same end.

paramiko's side of the handshake (`Handshake`: its Transport, the host keys, its thread, up to
the read of the client's banner) is started before the connection exists, in a standby
(jail/standby.py, `ahead`): what a connection process did first, after the hand-over, took
1-3 ms of the path from the client's first bytes to our KEXINIT, on a machine the tmate client
is busy starting on too.
"""

from __future__ import annotations

import socket
import threading
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


class Handshake:
    """paramiko's server side of one connection, started before its socket is given (`attach`).

    Its thread begins at once: it writes our banner (swallowed: the master sent it) and waits
    for the socket to read the client's. Reads wait for the socket without a timeout of their
    own; the master's grace period bounds them (it kills a connection process without a role).
    """

    def __init__(self, cfg: ConnectionConfig):
        self.sock = QuickAckSocket(None, banner_sent=True)
        self.transport = paramiko.Transport(self.sock)
        self.transport.local_version = SSH_BANNER
        self.transport.banner_timeout = cfg.grace_period + GRACE_BACKSTOP
        # paramiko bounds the key exchange with a thread of its own per connection (a
        # threading.Timer, started once the client's banner is read, cancelled at NEWKEYS): the
        # master's grace period bounds it already, so it is not started (measured, 3.13, 30 host
        # connections each way: first bytes -> role taken 7.0-7.9 -> 6.4-6.6 ms median).
        self.transport.packetizer.start_handshake = lambda timeout: None
        for key in cfg.host_keys:
            self.transport.add_server_key(key)
        self.server = Server()  # its authorize is the master's, once there is a master to ask
        self.gate = Gate(self.transport, lambda: self.server.role is not None)  # stops at the role
        self.negotiated = threading.Event()
        self.transport.start_server(event=self.negotiated, server=self.server)

    def attach(self, sock: socket.socket, master: control.Client) -> None:
        self.server.authorize = master.authorize
        self.sock.attach(sock)

    def wait(self, timeout: float) -> None:
        """Until the key exchange is done (start_server's own checks): SSHException or EOFError
        when it failed, TimeoutError when it did not end in time."""
        if not self.negotiated.wait(timeout):
            raise TimeoutError("ssh handshake incomplete")
        if not self.transport.is_active():
            raise self.transport.get_exception() or paramiko.SSHException("negotiation failed")


class Connection:
    """What the jail runs for one accepted TCP connection (`run`)."""

    def __init__(
        self,
        sock: socket.socket,
        ctl: socket.socket,
        peer_ip: str,
        cfg: ConnectionConfig,
        accepted: float | None = None,
        handshake: Handshake | None = None,  # started ahead, in a standby; else at `run`
    ):
        self.sock = sock
        self.master = control.Client(ctl)
        self.peer_ip = peer_ip
        self.cfg = cfg
        self.accepted = time.monotonic() if accepted is None else accepted  # the monotonic clock
        self.handshake = handshake
        self.log = log.get_logger()

    @staticmethod
    def ahead(cfg: ConnectionConfig):
        """In a standby, before its connection: the handshake started, and what serves the
        connection once it is handed over (the master's ConnectionFactory)."""
        handshake = Handshake(cfg)

        def connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
            return Connection(sock, ctl, ip, cfg, accepted, handshake).run

        return connection

    def run(self) -> int:
        self.sock = _renumbered(self.sock)
        self.master = control.Client(_renumbered(self.master.sock))
        log.configure_child(self.master.log, self.cfg.verbose)
        self.log = log.get_logger()
        hs = self.handshake or Handshake(self.cfg)
        hs.attach(self.sock, self.master)
        deadline = self.accepted + self.cfg.grace_period
        transport, server, gate = hs.transport, hs.server, hs.gate
        try:
            try:
                hs.wait(max(0.0, deadline + GRACE_BACKSTOP - time.monotonic()))
            except (paramiko.SSHException, EOFError, OSError) as e:  # TimeoutError is an OSError
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
