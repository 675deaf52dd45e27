"""One connection process: runs inside its jail, speaks SSH with paramiko, takes a role.

Everything here runs after the jail is in place (no filesystem, no network namespace, an
unprivileged uid). Its only ways out are the accepted TCP socket and the control socket to the
master. The role follows from the first channel request (the policy is relay.conn.ssh.Server):
  - `subsystem tmate`: a tmate host; this process becomes the session (relay.conn.host).
  - `shell` (after `pty-req`): a viewer; the SSH user name is the token (relay.conn.viewer).
  - `exec` and anything else: refused.
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


@dataclass(frozen=True)
class ConnectionConfig:
    host_keys: tuple[paramiko.PKey, ...]
    ssh_host: str  # advertised host in the ssh command lines
    ssh_port: int  # advertised port
    grace_period: float = 20.0  # seconds to take a role
    verbose: bool = False


class Connection:
    """What the jail runs for one accepted TCP connection (`run`)."""

    def __init__(self, sock: socket.socket, ctl: socket.socket, peer_ip: str, cfg: ConnectionConfig):
        self.sock = sock
        self.master = control.Client(ctl)
        self.peer_ip = peer_ip
        self.cfg = cfg
        self.log = log.get_logger()

    def run(self) -> int:
        log.configure_child(self.master.log, self.cfg.verbose)
        self.log = log.get_logger()
        deadline = time.monotonic() + self.cfg.grace_period
        transport = paramiko.Transport(QuickAckSocket(self.sock))
        transport.local_version = SSH_BANNER
        transport.banner_timeout = self.cfg.grace_period
        transport.auth_timeout = self.cfg.grace_period
        for key in self.cfg.host_keys:
            transport.add_server_key(key)
        server = Server(authorize=self.master.authorize)
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
                return run_host(self, chan, server)
            return run_viewer(self, chan, server)
        except Exception as e:  # noqa: BLE001 - the last word of a connection is a logged reason
            self.log.error("connection failed", reason=f"{type(e).__name__}: {e}"[:300])
            return 1
        finally:
            transport.close()
