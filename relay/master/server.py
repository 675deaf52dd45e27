"""The master: the only unjailed process.

It owns the host keys and the listening socket, forks one jailed connection process per TCP
connection, hands out session tokens and keeps the registry (token -> session). It never parses
a byte a client sent; what connection processes tell it over their control sockets is checked
as untrusted input, against relay.control's table.

It knows nothing of SSH: what runs in a connection process (`connection`) and the warm-up before
the first fork (`warm_up`) are handed to it by whoever starts it (relay.cli).
"""

from __future__ import annotations

import errno
import gc
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jail import JailConfig, JailedProcess, Jailer, JailError
from relay import control, log
from relay.master import tokens

# connection(accepted TCP socket, control socket, peer ip) -> what the jailed process runs
ConnectionFactory = Callable[[socket.socket, socket.socket, str], Callable[[], int]]

CONTROL_BACKSTOP = 5.0  # seconds past the grace period before the master kills a role-less child
SHUTDOWN_WAIT = 2.0
LOG_BURST = 200  # log events a connection may send at once ...
LOG_RATE = 20.0  # ... and per second after that; the excess is dropped and counted


@dataclass
class RelayConfig:
    port: int = 22
    bind: str = "0.0.0.0"
    ssh_host: str = ""
    ssh_port: int = 0
    grace_period: float = 20.0  # the connection's own limit; the master's is CONTROL_BACKSTOP later
    jail: JailConfig = field(default_factory=JailConfig)
    backlog: int = 128
    max_connections: int = 1000


@dataclass
class Child:
    proc: JailedProcess
    ip: str
    ctl: socket.socket
    started: float
    role: control.Role = control.NO_ROLE
    seen: set[str] = field(default_factory=set)  # once-only messages it has sent
    tokens: tuple[str, ...] = ()
    joinable: bool = False  # a host: ready, viewers may join
    authorized: frozenset[str] | None = None  # a host: key fingerprints viewers must hold, or None
    log_allowance: float = LOG_BURST
    log_stamp: float = 0.0
    logs_dropped: int = 0


def _tcp_keepalive(sock: socket.socket) -> None:
    """Notice a dead peer within about a minute."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Master:
    def __init__(
        self,
        cfg: RelayConfig,
        connection: ConnectionFactory,
        warm_up: Callable[[], None] = lambda: None,
        jailer: Jailer | None = None,
    ):
        self.cfg = cfg
        self.connection = connection
        self.warm_up = warm_up
        self.log = log.get_logger()
        self.jailer = jailer or Jailer(cfg.jail)
        self.children: dict[int, Child] = {}  # by pid
        self.registry: dict[str, Child] = {}  # token -> session
        # What each message of control.TO_MASTER does; the table says who may send it and how often.
        self.handlers: dict[str, Callable[..., None]] = {
            "log": self._on_log,
            "auth": self._on_auth,
            "host": self._on_host,
            "join": self._on_join,
            "access": self._on_access,
        }
        assert self.handlers.keys() == control.TO_MASTER.keys()
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
        listener = self.listener or self.bind()
        self.warm_up()
        # Free the warm-up's garbage now: prepare() freezes the heap the children will share.
        gc.collect()
        self.jailer.prepare()
        self._install_signals()
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.jailer.rootless:
            self.log.warning(
                "rootless mode: every session runs under the invoking uid "
                "(jailed in its own namespaces, but not under a distinct uid)"
            )
        addr = listener.getsockname()
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
        assert self.listener is not None
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
        try:
            proc = self.jailer.spawn(
                self.connection(conn, ctl_child, ip),
                keep_fds=[conn.fileno(), ctl_child.fileno()],
                title=f"pymate [pending] {ip}",
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
                data = child.ctl.recv(control.MAX_CONTROL_MESSAGE + 1)
            except BlockingIOError:
                return
            except OSError as e:
                self._kill(child, f"bad control message: {e}")
                return
            if not data:
                self._forget(child)
                return
            try:
                spec, args = self._admit(child, data)
            except control.ControlError as e:
                self._kill(child, f"bad control message: {e}"[:200])
                return
            try:
                self.handlers[spec.name](child, *args)
            except Exception as e:  # noqa: BLE001 - nothing a child sends may stop the master
                self._kill(child, f"control message failed: {type(e).__name__}: {e}"[:200])
                return
            if child.ctl.fileno() < 0:
                return

    def _admit(self, child: Child, data: bytes) -> tuple[control.Message, list]:
        """The message, if the table lets this child send it now; ControlError if not."""
        spec, args = control.decode(control.TO_MASTER, data)
        if spec.once and spec.name in child.seen:
            raise control.ControlError(f"{spec.name!r} sent twice")
        if child.role not in spec.roles:
            raise control.ControlError(f"{spec.name!r} from a connection with role {child.role or 'none'}")
        if spec.once:
            child.seen.add(spec.name)
        return spec, args

    # ------------------------------------------------------------------ messages (control.TO_MASTER)
    def _on_log(self, child: Child, level: str, event: str, fields: dict) -> None:
        if not self._log_allowed(child):
            return
        out = control.log_fields(fields)
        out.update(pid=child.proc.pid, ip=child.ip)
        method = level if level in control.LOG_LEVELS else "info"
        getattr(self.log, method)(event[: control.MAX_LOG_EVENT], **out)

    def _on_auth(self, child: Child, user: str, fp: str | None) -> None:
        self._send(child, "auth", self._may_log_in(user, fp))

    def _on_host(self, child: Child) -> None:
        rw, ro = tokens.new_token_pair()
        while rw in self.registry or ro in self.registry:
            rw, ro = tokens.new_token_pair()
        child.role = control.HOST
        child.tokens = (rw, ro)
        self.registry[rw] = child
        self.registry[ro] = child
        self._send(child, "tokens", rw, ro)

    def _on_join(self, child: Child, token: str, pubkey: str | None, fp: str | None) -> None:
        child.role = control.VIEWER
        self._join(child, token, pubkey, fp)

    def _on_access(self, child: Child, fps: list[str] | None) -> None:
        child.joinable = True
        child.authorized = None if fps is None else frozenset(fps)

    def _send(self, child: Child, name: str, *args: object) -> None:
        """A control message to a child; one that cannot take it (its buffer full) is killed."""
        try:
            child.ctl.send(control.encode(control.TO_CONNECTION, name, *args))
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
            data = control.encode(control.TO_CONNECTION, "viewer", readonly, viewer.ip, pubkey)
            control.send_with_fd(session.ctl, data, ends[0].fileno())
        except OSError as e:
            self.log.warning("viewer refused", ip=viewer.ip, reason=f"session did not take the viewer: {e}")
            self._send(viewer, "no-session")
            return
        finally:
            ends[0].close()
        try:
            data = control.encode(control.TO_CONNECTION, "joined", readonly)
            control.send_with_fd(viewer.ctl, data, ends[1].fileno())
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
            gone = self.children.pop(pid, None)
            if gone is not None:
                self._forget(gone)
                self.jailer.release(gone.proc)
        if self.listener is not None:
            self.listener.close()
        self.log.info("stopped")
