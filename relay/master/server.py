"""The master: the only unjailed process.

It owns the host keys and the listening socket, forks one jailed connection process per TCP
connection, hands out session tokens and keeps the registry (token -> session). It never parses
a byte a client sent; what connection processes tell it over their control sockets is checked
as untrusted input.
"""

from __future__ import annotations

import errno
import gc
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field

import paramiko

from jail import JailConfig, JailedProcess, Jailer, JailError
from relay import control, log
from relay.conn.host import MAX_AUTHORIZED_KEYS
from relay.conn.process import Connection, ConnectionConfig
from relay.conn.warmup import warm_up
from relay.master import tokens

CONTROL_BACKSTOP = 5.0  # seconds past the grace period before the master kills a role-less child
SHUTDOWN_WAIT = 2.0
LOG_BURST = 200  # log events a connection may send at once ...
LOG_RATE = 20.0  # ... and per second after that; the excess is dropped and counted


@dataclass
class RelayConfig:
    host_keys: tuple[paramiko.PKey, ...]
    port: int = 22
    bind: str = "0.0.0.0"
    ssh_host: str = ""
    ssh_port: int = 0
    grace_period: float = 20.0
    verbose: bool = False
    jail: JailConfig = field(default_factory=JailConfig)
    backlog: int = 128
    max_connections: int = 1000


@dataclass
class Child:
    proc: JailedProcess
    ip: str
    ctl: socket.socket
    started: float
    role: str | None = None
    tokens: tuple[str, ...] = ()
    joinable: bool = False  # a host: ready, viewers may join
    authorized: frozenset[str] | None = None  # a host: key fingerprints viewers must hold, or None
    log_allowance: float = LOG_BURST
    log_stamp: float = 0.0
    logs_dropped: int = 0


def _fingerprints(value) -> bool:
    """None, or a bounded list of SHA256 key fingerprints (as a session reports them)."""
    return value is None or (
        isinstance(value, list)
        and len(value) <= MAX_AUTHORIZED_KEYS
        and all(isinstance(x, str) and x.startswith("SHA256:") and len(x) <= 64 for x in value)
    )


def _tcp_keepalive(sock: socket.socket) -> None:
    """Notice a dead peer within about a minute."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Master:
    def __init__(self, cfg: RelayConfig, jailer: Jailer | None = None):
        self.cfg = cfg
        self.log = log.get_logger()
        self.jailer = jailer or Jailer(cfg.jail)
        self.children: dict[int, Child] = {}  # by pid
        self.registry: dict[str, Child] = {}  # token -> session
        self.conn_cfg = ConnectionConfig(
            host_keys=cfg.host_keys,
            ssh_host=cfg.ssh_host,
            ssh_port=cfg.ssh_port,
            grace_period=cfg.grace_period,
            verbose=cfg.verbose,
        )
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()

    # ------------------------------------------------------------------ setup
    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.cfg.bind else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.cfg.bind, self.cfg.port))
        s.listen(self.cfg.backlog)
        s.setblocking(False)
        self.listener = s
        return s

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def _on_stop(self, signum, _frame):
        self._stopping = True

    # ------------------------------------------------------------------ loop
    def serve_forever(self) -> None:
        if self.listener is None:
            self.bind()
        warm_up(self.cfg.host_keys)
        # Free the warm-up's garbage now: prepare() freezes the heap the children will share.
        gc.collect()
        self.jailer.prepare()
        self._install_signals()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.jailer.rootless:
            self.log.warning(
                "rootless mode: every session runs under the invoking uid "
                "(jailed in its own namespaces, but not under a distinct uid)"
            )
        addr = self.listener.getsockname()
        self.log.info(
            "listening", address=addr[0], port=addr[1], ssh_host=self.cfg.ssh_host, ssh_port=self.cfg.ssh_port
        )
        try:
            while not self._stopping:
                for key, _ in self.sel.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._on_control(key.data)
                self._reap()
                self._enforce_grace()
        finally:
            self.shutdown()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ connections
    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("accept failed", reason=os.strerror(e.errno))
                    return
                raise
            if len(self.children) >= self.cfg.max_connections:
                self.log.warning(
                    "connection refused",
                    ip=addr[0],
                    reason=f"too many connections (limit {self.cfg.max_connections})",
                )
                conn.close()
                continue
            self._spawn(conn, addr[0])

    def _spawn(self, conn: socket.socket, ip: str) -> None:
        conn.setblocking(True)
        try:
            _tcp_keepalive(conn)
        except OSError:
            pass
        ctl_master, ctl_child = control.socketpair()
        connection = Connection(conn, ctl_child, ip, self.conn_cfg)
        try:
            proc = self.jailer.spawn(
                connection.run, keep_fds=[conn.fileno(), ctl_child.fileno()], title=f"pymate [pending] {ip}"
            )
        except JailError as e:
            self.log.error("connection refused", ip=ip, reason=f"jail failed: {e}")
            ctl_master.close()
            return
        finally:
            conn.close()
            ctl_child.close()
        ctl_master.setblocking(False)
        now = time.monotonic()
        child = Child(proc=proc, ip=ip, ctl=ctl_master, started=now, log_stamp=now)
        self.children[proc.pid] = child
        self.sel.register(ctl_master, selectors.EVENT_READ, child)
        self.log.debug("connection accepted", ip=ip, pid=proc.pid, uid=proc.uid)

    def _on_control(self, child: Child) -> None:
        for _ in range(64):
            try:
                msg = control.recv(child.ctl)
            except BlockingIOError:
                return
            except (OSError, control.ControlError) as e:
                self._kill(child, f"bad control message: {e}")
                return
            if msg is None:
                self._forget(child)
                return
            try:
                self._handle(child, msg)
            except Exception as e:  # noqa: BLE001 - nothing a child sends may stop the master
                self._kill(child, f"control message failed: {type(e).__name__}: {e}"[:200])
                return
            if child.ctl.fileno() < 0:
                return

    def _handle(self, child: Child, msg: list) -> None:
        kind = msg[0]
        if kind == "log" and len(msg) == 4 and isinstance(msg[1], str) and isinstance(msg[2], str):
            if not self._log_allowed(child):
                return
            level = msg[1] if msg[1] in control.LOG_LEVELS else "info"
            fields = control.log_fields(msg[3])
            fields.update(pid=child.proc.pid, ip=child.ip)
            getattr(self.log, level)(msg[2][:512], **fields)
        elif kind == "host" and child.role is None:
            rw, ro = tokens.new_token_pair()
            while rw in self.registry or ro in self.registry:
                rw, ro = tokens.new_token_pair()
            child.role = "host"
            child.tokens = (rw, ro)
            self.registry[rw] = child
            self.registry[ro] = child
            self._send(child, "tokens", rw, ro)
        elif (
            kind == "viewer"
            and child.role is None
            and len(msg) == 4
            and isinstance(msg[1], str)
            and all(x is None or isinstance(x, str) for x in msg[2:])
        ):
            child.role = "viewer"
            self._join(child, msg[1][:128], msg[2], msg[3])
        elif (
            kind == "auth"
            and child.role is None
            and len(msg) == 3
            and isinstance(msg[1], str)
            and (msg[2] is None or isinstance(msg[2], str))
        ):
            self._send(child, "auth", self._may_log_in(msg[1][:128], msg[2]))
        elif kind == "access" and child.role == "host" and len(msg) == 2 and _fingerprints(msg[1]):
            child.joinable = True
            child.authorized = None if msg[1] is None else frozenset(msg[1])
        else:
            self._kill(child, f"unexpected control message {kind[:32]!r}")

    def _send(self, child: Child, *msg) -> None:
        """A control message to a child; one that cannot take it (its buffer full) is killed."""
        try:
            child.ctl.send(control.pack(*msg))
        except OSError as e:
            self._kill(child, f"control socket not writable: {e}")

    def _log_allowed(self, child: Child) -> bool:
        """A token bucket per connection, so no process can flood the relay's log."""
        now = time.monotonic()
        child.log_allowance = min(LOG_BURST, child.log_allowance + (now - child.log_stamp) * LOG_RATE)
        child.log_stamp = now
        if child.log_allowance >= 1:
            child.log_allowance -= 1
            if child.logs_dropped:
                self.log.warning(
                    "log events dropped",
                    pid=child.proc.pid,
                    ip=child.ip,
                    count=child.logs_dropped,
                    reason="connection logged too fast",
                )
                child.logs_dropped = 0
            return True
        child.logs_dropped += 1
        return False

    def _may_log_in(self, token: str, fp: str | None) -> bool:
        """SSH auth for a user name: denied only when it names a session that restricts its
        viewers to authorized keys and `fp` is not one of them (so auth reveals nothing about
        tokens that match no session)."""
        session = self.registry.get(token)
        if session is None or session.authorized is None:
            return True
        return fp is not None and fp in session.authorized

    def _join(self, viewer: Child, token: str, pubkey: str | None, fp: str | None) -> None:
        """Link a viewer to the session its token names, then step out of the data path."""
        session = self.registry.get(token)
        if session is None or not session.joinable or not self._may_log_in(token, fp):
            self._send(viewer, "no-session")
            return
        readonly = token.startswith(tokens.RO_PREFIX)
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            control.send_with_fd(
                session.ctl, control.pack("viewer", readonly, viewer.ip, pubkey), ends[0].fileno()
            )
        except OSError as e:
            self.log.warning("viewer refused", ip=viewer.ip, reason=f"session did not take the viewer: {e}")
            self._send(viewer, "no-session")
            return
        finally:
            ends[0].close()
        try:
            control.send_with_fd(viewer.ctl, control.pack("joined", readonly), ends[1].fileno())
        except OSError as e:
            self._kill(viewer, f"cannot hand the link to the viewer: {e}")
            return
        finally:
            ends[1].close()
        self.log.info(
            "viewer linked",
            ip=viewer.ip,
            pid=viewer.proc.pid,
            session_pid=session.proc.pid,
            readonly=readonly,
        )

    def _enforce_grace(self) -> None:
        limit = time.monotonic() - self.cfg.grace_period - CONTROL_BACKSTOP
        for child in list(self.children.values()):
            if child.role is None and child.started < limit:
                self._kill(child, "no role taken within the grace period")

    def _kill(self, child: Child, reason: str) -> None:
        self.log.warning("connection killed", pid=child.proc.pid, ip=child.ip, reason=reason)
        try:
            os.kill(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._forget(child)

    def _forget(self, child: Child) -> None:
        """Drop the child's tokens and control socket (the process is reaped separately)."""
        for t in child.tokens:
            if self.registry.get(t) is child:
                del self.registry[t]
        child.tokens = ()
        if child.ctl.fileno() >= 0:
            try:
                self.sel.unregister(child.ctl)
            except (KeyError, ValueError):
                pass
            child.ctl.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._forget(child)
            self.jailer.release(child.proc)
            code = os.waitstatus_to_exitcode(status)
            self.log.debug("connection process exited", pid=pid, ip=child.ip, role=child.role, code=code)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        for child in list(self.children.values()):
            try:
                os.kill(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        for child in list(self.children.values()):
            try:
                os.kill(child.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            child = self.children.pop(pid, None)
            if child is not None:
                self._forget(child)
                self.jailer.release(child.proc)
        if self.listener is not None:
            self.listener.close()
        self.log.info("stopped")
