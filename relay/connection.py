"""One connection process: runs inside its jail, speaks SSH with paramiko, takes a role.

Everything here runs after the jail is in place (no filesystem, no network namespace, an
unprivileged uid). Its only ways out are the accepted TCP socket and the control socket to the
master. The role follows from the first channel request:
  - `subsystem tmate`: a tmate host; this process becomes the session.
  - anything else is refused for now (viewers: issue 3; exec: later work).
"""
from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass

import paramiko

from jail import set_process_title
from relay import control, log
from relay.protocol import HostDecoder, ProtocolError, encode
from relay.session import Session, SessionError

SSH_BANNER = "SSH-2.0-tmate"
HOST_SUBSYSTEM = "tmate"
READ_CHUNK = 65536


@dataclass(frozen=True)
class ConnectionConfig:
    host_keys: tuple[paramiko.PKey, ...]
    ssh_host: str           # advertised host in the ssh command lines
    ssh_port: int           # advertised port
    grace_period: float = 20.0   # seconds to take a role
    verbose: bool = False


class _Server(paramiko.ServerInterface):
    """Auth and channel policy. Runs on paramiko's transport thread."""

    def __init__(self):
        self.role_event = threading.Event()
        self.role: str | None = None
        self.channel_id: int | None = None
        self.username: str | None = None
        self.pubkey: str | None = None
        self.refusal: str | None = None

    # --- auth: like the C server, `none` is accepted; a key, when offered, is recorded.
    def get_allowed_auths(self, username):
        return "none,publickey"

    def check_auth_none(self, username):
        self.username = username
        return paramiko.AUTH_SUCCESSFUL

    def check_auth_publickey(self, username, key):
        self.username = username
        self.pubkey = f"{key.get_name()} {key.get_base64()}"
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
        return self._refuse("viewer sessions are not supported yet")

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        return False

    def check_port_forward_request(self, address, port):
        return False

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg):
        return False


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

    def _request(self, *msg, expect: str, timeout: float = 5.0) -> list:
        self.ctl.send(control.pack(*msg))
        r, _, _ = select.select([self.ctl], [], [], timeout)
        if not r:
            raise ConnectionError("the master did not answer")
        reply = control.recv(self.ctl)
        if reply is None or reply[0] != expect:
            raise ConnectionError(f"unexpected answer from the master: {reply and reply[0]!r}")
        return reply

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        log.configure_child(self._send_log, self.cfg.verbose)
        self.log = log.get_logger()
        deadline = time.monotonic() + self.cfg.grace_period
        transport = paramiko.Transport(self.sock)
        transport.local_version = SSH_BANNER
        transport.banner_timeout = self.cfg.grace_period
        transport.auth_timeout = self.cfg.grace_period
        for key in self.cfg.host_keys:
            transport.add_server_key(key)
        server = _Server()
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
            if chan is None or not server.role_event.wait(max(0.0, deadline - time.monotonic())) \
                    or server.role is None:
                reason = server.refusal or "no role taken within the grace period"
                self.log.info("connection refused", reason=reason, user=server.username)
                return 0
            if server.role == "host":
                return self.run_host(transport, chan, server)
            return 0
        finally:
            transport.close()

    def run_host(self, transport: paramiko.Transport, chan: paramiko.Channel, server: _Server) -> int:
        _, rw_token, ro_token = self._request("host", expect="tokens")
        set_process_title(f"pymate [{rw_token[:4]}...] host {self.peer_ip}")
        self.log = self.log.bind(session=rw_token[:4])
        self.log.info("host session started", user=server.username, pubkey=server.pubkey)
        session = Session(rw_token=rw_token, ro_token=ro_token,
                          ssh_host=self.cfg.ssh_host, ssh_port=self.cfg.ssh_port)
        decoder = HostDecoder()
        reason = "host closed the connection"
        try:
            while True:
                readable, _, _ = select.select([chan, self.ctl], [], [])
                if self.ctl in readable:
                    if control.recv(self.ctl) is None:
                        reason = "relay is shutting down"
                        break
                if chan in readable:
                    data = chan.recv(READ_CHUNK)
                    if not data:
                        break
                    for msg in decoder.feed(data):
                        for out in session.handle(msg):
                            chan.sendall(encode(out))
                    if session.finished:
                        reason = "host finished the session"
                        break
        except (ProtocolError, SessionError) as e:
            reason = f"protocol violation: {e}"
            self.log.warning("host session ended", reason=reason)
            return 1
        except (OSError, EOFError, paramiko.SSHException) as e:
            reason = f"connection lost: {e or type(e).__name__}"
        self.log.info("host session ended", reason=reason)
        return 0
