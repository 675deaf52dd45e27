"""The master: the only unjailed process.

It owns the host keys and the listening socket, forks one jailed connection process per TCP
connection, hands out session tokens and keeps the registry (token -> session). It never parses
a byte a client sent; what connection processes tell it over their control sockets is checked
as untrusted input, against relay.control's table (relay.master.messages handles them).

It knows nothing of SSH: what runs in a connection process (`connection`) and the warm-up before
the first fork (`warm_up`) are handed to it by whoever starts it (relay.cli).

A connection costs no process until its client has sent something. On accept the master checks
the admission limits (relay.master.admission; a refusal is a close, before any byte is written),
writes the fixed SSH banner itself and keeps the socket in its selector; it forks the jailed
process only once the client's first bytes are waiting (it reads none of them: whether the
socket is readable, and a one-byte MSG_PEEK to tell data from end of stream, whose content it
never looks at). The connection process then speaks SSH from there on, without sending the
banner again (relay.conn.ssh). tmate's libssh sends its banner after ours, OpenSSH at once.

A connection that has sent nothing is not a startup for max-startups (it costs a socket, not a
process); when max-connections is reached, the one silent longest is closed to make room for the
new arrival (a real client sends its banner within a round trip of ours).

Every connection that has not taken a role (host or join) is closed by the master at exactly
`grace_period` seconds after accept, whatever it is doing: a timer in the select timeout.
Spawning happens a few at a time between selects, round-robin over source addresses, so a flood
of connections that do send bytes cannot hold up accepting or answering the others.

The records of connections (`Pending`, `Child`) and their end (the grace period, the kill, the
reaping) are relay.master.children; both records are importable from here too.
"""

from __future__ import annotations

import errno
import gc
import heapq
import itertools
import os
import resource
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from jail import JailConfig, Jailer, JailError, standby
from relay import control, log
from relay.master.admission import Admission, MaxStartups, Refusal
from relay.master.children import Child, Children, Pending
from relay.master.intake import HeaderWait, Intake
from relay.master.lifecycle import Lifecycle
from relay.master.messages import LOG_BURST, LOG_RATE, Messages
from relay.master.metrics import MetricsServer
from relay.master.reconnect import Reconnection
from relay.master.web import WebDoor

# connection(accepted TCP socket, control socket, peer ip, accept time on the monotonic clock)
# -> what the jailed process runs
ConnectionFactory = Callable[[socket.socket, socket.socket, str, float], Callable[[], int]]

ACCEPT_BATCH = 64  # connections accepted per turn of the loop
SPAWN_BATCH = 4  # connection processes forked per turn of the loop (each takes ~10-20 ms)
MAX_WAIT = 1.0  # seconds the loop sleeps at most
BANNER = (control.SSH_BANNER + "\r\n").encode()

__all__ = ["LOG_BURST", "LOG_RATE", "Child", "Master", "Pending", "RelayConfig"]


@dataclass
class RelayConfig:
    port: int = 22
    bind: str = "0.0.0.0"
    ssh_host: str = ""
    ssh_port: int = 0
    grace_period: float = 20.0  # seconds a connection has to take a role, from its accept
    jail: JailConfig = field(default_factory=JailConfig)
    backlog: int = 4096  # the kernel caps it at net.core.somaxconn; a flood overflows a short queue
    max_connections: int = 1000
    max_startups: MaxStartups = field(default_factory=MaxStartups)
    per_source_max_startups: int = 10
    per_source_rate: float = 20.0
    max_sessions: int = 1000
    max_viewers: int = 64
    metrics: tuple[str, int] | None = None  # --metrics: (address, port) of the endpoint, or off
    proxy_protocol: bool = False  # -x: a PROXY header (v1 or v2) before SSH (relay.master.intake)
    proxy_timeout: float = 5.0  # --proxy-timeout: seconds from accept to send the whole header
    reconnect_window: float = 600.0  # --reconnect-window: seconds a session waits for its lost host
    reconnect_key: str | None = None  # the reconnection key's file; None: a key for this run only
    api_keys: str | None = None  # --api-keys FILE: named sessions (relay.master.names), or off
    web_port: int | None = None  # --web-port: the web viewer's listener (relay.master.web), or off
    web_bind: str = "0.0.0.0"  # --web-bind
    web_trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()  # whose forwarded_for a join may give


def _tcp_keepalive(sock: socket.socket) -> None:
    """Notice a dead peer within about a minute."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _raise_fd_limit() -> None:
    """Every connection holds a descriptor in the master: take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class Master(Children, Intake, Lifecycle, Messages, WebDoor, Reconnection):
    def __init__(
        self,
        cfg: RelayConfig,
        connection: ConnectionFactory,
        warm_up: Callable[[], None] = lambda: None,
        jailer: Jailer | None = None,
        reload: Callable[[], object] | None = None,  # on SIGHUP (relay.cli: re-read the host keys)
        metrics_server: MetricsServer | None = None,  # the metrics process (relay.master.metrics)
        web_connection: ConnectionFactory | None = None,  # what a web connection runs (--web-port)
        # in a standby, before its connection exists: a ConnectionFactory with its work begun
        connection_ahead: Callable[[], ConnectionFactory] | None = None,
    ):
        self.cfg = cfg
        self.connection = connection
        self.web_connection = web_connection
        self.connection_ahead = connection_ahead
        self.web_listener: socket.socket | None = None
        self.warm_up = warm_up
        self.log = log.get_logger()
        self.jailer = jailer or Jailer(cfg.jail)
        self.children: dict[int, Child] = {}  # by pid
        self.registry: dict[str, Child] = {}  # token -> session
        self.admission = Admission(
            max_connections=cfg.max_connections,
            max_startups=cfg.max_startups,
            per_source_max_startups=cfg.per_source_max_startups,
            per_source_rate=cfg.per_source_rate,
        )
        self.refusals: dict[str, int] = self.admission.refusals  # limit name -> refusals so far
        self.pending: set[Pending] = set()  # accepted, not handed to a process yet
        self.silent: dict[Pending, None] = {}  # of those, the ones that sent nothing yet, oldest first
        self.ready: dict[str, deque[Pending]] = {}  # by source: first bytes waiting, to be forked
        self.deadlines: list[tuple[float, int, Pending | Child | HeaderWait]] = []  # a heap
        self._seq = itertools.count()
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        super().__init__()
        self._init_lifecycle(reload, metrics_server, cfg.metrics)
        self._init_reconnection()

    # ------------------------------------------------------------------ setup
    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.cfg.bind else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" serves IPv4 too
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((self.cfg.bind, self.cfg.port))
        s.listen(self.cfg.backlog)
        s.setblocking(False)
        self.listener = s
        return s

    # ------------------------------------------------------------------ loop
    def serve_forever(self) -> None:
        listener = self.listener or self.bind()
        _raise_fd_limit()
        self.warm_up()
        # Free the warm-up's garbage now: prepare() freezes the heap the children will share.
        gc.collect()
        self.jailer.prepare(learn=tuple(control.LEARN_KINDS))  # jail/hotcode.py
        self._log_heap()
        standby.keep(self.jailer, self._standby_ahead)
        self._install_signals()
        self._start_metrics()
        self._start_web()
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
                self.step()
        finally:
            self.shutdown()

    def _standby_ahead(self) -> standby.Factory:
        """In a standby, before its connection: what the connection factory starts ahead
        (`connection_ahead`), then how the connection handed over is given to it."""
        connection = self.connection_ahead() if self.connection_ahead is not None else self.connection
        return lambda fds, args: connection(*standby.sockets(fds), *args)

    def _log_heap(self) -> None:
        heap = self.jailer.heap
        if heap is None:
            return
        if heap.immortal:
            self.log.info(
                "immortal heap",
                objects=heap.objects,
                duration=round(heap.seconds, 3),
                filled=heap.filled,
                versions=heap.versions,
            )
        else:
            self.log.info(
                "running without an immortal heap",
                reason=heap.reason,
                filled=heap.filled,
                versions=heap.versions,
            )

    def step(self, max_wait: float = MAX_WAIT) -> None:
        """One turn of the loop: wait (at most `max_wait` s) for events or the next grace period,
        and handle them."""
        events = self.sel.select(timeout=self._wait(max_wait))
        woke = time.monotonic()
        for key, _ in events:
            if key.data == "accept":
                self._accept()
            elif key.data == "accept-web":
                self._accept(web=True)
            elif key.data == "wake":
                self._drain_wake()
            elif isinstance(key.data, Pending):
                self._on_first_bytes(key.data)
            elif isinstance(key.data, HeaderWait):
                self._on_header_bytes(key.data)
            elif callable(key.data):  # the metrics listener (relay.master.lifecycle)
                key.data()
            else:
                self._on_control(key.data)
        self._reap()
        self._expire()
        self._spawn_ready()
        busy = events or self.admission.startups > len(self.silent)  # a handshake is under way
        if not busy and (why := standby.refill(self.jailer)):
            self.log.error("jail failed", reason=f"standby: {why}")
        self._turn_done(woke)

    def _wait(self, max_wait: float) -> float:
        if self.ready:
            return 0.0
        max_wait = standby.wait(self.jailer, max_wait)
        if not self.deadlines:
            return max_wait
        return min(max_wait, max(0.0, self.deadlines[0][0] - time.monotonic()))

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ admission
    def _refuse(self, ip: str, refusal: Refusal, **fields: object) -> None:
        """Log a refusal by a named limit, with how many that limit has refused so far."""
        self.log.warning(
            "connection refused",
            ip=ip,
            limit=refusal.limit,
            reason=refusal.reason,
            count=self.admission.count(refusal.limit),
            **fields,
        )

    def _end_startup(self, conn: Pending | Child) -> None:
        if conn.startup:
            conn.startup = False
            self.admission.ended(conn.ip)

    def _accept(self, web: bool = False) -> None:
        listener = self.web_listener if web else self.listener
        assert listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("accept failed", reason=os.strerror(e.errno))
                    return
                raise
            self._intake(conn, addr[0], web)  # admission, after the PROXY header with -x (intake.py)

    def _hold(self, conn: socket.socket, ip: str, accepted: float | None = None, web: bool = False) -> None:
        """Write the banner (SSH only) and wait, without a process, for the client's first bytes
        (accepted at `accepted`, if not now: -x reads a header first)."""
        try:
            conn.setblocking(False)
            _tcp_keepalive(conn)
            sent = len(BANNER) if web else conn.send(BANNER)  # into an empty buffer: never short
        except OSError as e:
            conn.close()
            self.log.info("connection closed", ip=ip, reason=f"before the banner: {e.strerror or e}")
            return
        if sent != len(BANNER):
            conn.close()
            return
        p = Pending(conn, ip, time.monotonic() if accepted is None else accepted, web=web)
        self.admission.began(ip)
        self.pending.add(p)
        self.silent[p] = None
        self.sel.register(conn, selectors.EVENT_READ, p)
        heapq.heappush(self.deadlines, (p.accepted + self.cfg.grace_period, next(self._seq), p))
        # A client's banner often arrives before its connection is accepted (tmate sends it at
        # once): then it is ready now, not a turn of the loop later (~0.2-0.3 ms to tmate-ready).
        self._on_first_bytes(p)

    def _on_first_bytes(self, p: Pending) -> None:
        if not p.open:
            return
        try:
            data = p.sock.recv(1, socket.MSG_PEEK)  # data or end of stream; the byte is not looked at
        except BlockingIOError:
            return
        except OSError as e:
            self._close_pending(p, f"connection lost before it was served: {e.strerror or e}")
            return
        if not data:
            self._close_pending(p, "closed before sending a byte")
            return
        self.sel.unregister(p.sock)
        self.silent.pop(p, None)
        self.ready.setdefault(p.ip, deque()).append(p)

    def _close_pending(self, p: Pending, reason: str, limit: str | None = None) -> None:
        self._end_startup(p)
        p.open = False
        self.pending.discard(p)
        self.silent.pop(p, None)
        try:
            self.sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass  # already out of the selector: waiting to be forked
        p.sock.close()
        if limit is None:
            self.log.info("connection closed", ip=p.ip, reason=reason)
        else:
            self._refuse(p.ip, Refusal(limit, reason))

    def _spawn_ready(self) -> None:
        """Fork a few of the connections whose first bytes are waiting, one source at a time."""
        for _ in range(SPAWN_BATCH):
            if not self.ready:
                return
            ip = next(iter(self.ready))
            queue = self.ready.pop(ip)
            p = queue.popleft()
            if queue:
                self.ready[ip] = queue  # to the back: round robin over sources
            if not p.open:
                continue
            # max-startups again, now that it would cost a process (p itself not counted)
            refusal = self.admission.startup_refusal(self.admission.startups - len(self.silent) - 1)
            if refusal is not None:
                self._close_pending(p, refusal.reason, refusal.limit)
            else:
                self._spawn(p)

    def _spawn(self, p: Pending) -> None:
        p.open = False
        self.pending.discard(p)
        self.silent.pop(p, None)
        conn, ip = p.sock, p.ip
        conn.setblocking(True)
        ctl_master, ctl_child = control.socketpair()
        spawn_started = time.monotonic()
        factory = self.web_connection if p.web and self.web_connection is not None else self.connection
        title, fds = f"pymate [pending] {ip}", [conn.fileno(), ctl_child.fileno()]
        proc = None
        if factory is self.connection:  # a standby takes it, or the zygote forks it (jail/standby.py)
            proc = standby.take(self.jailer, fds, [ip, p.accepted], title)
            proc = proc or standby.spawn(self.jailer, fds, [ip, p.accepted], title)
        try:  # a spawn here when neither did
            if proc is None:
                proc = self.jailer.spawn(factory(conn, ctl_child, ip, p.accepted), keep_fds=fds, title=title)
        except JailError as e:
            self._end_startup(p)
            self.metrics.jail_failures.inc()
            self.log.error("jail failed", ip=ip, reason=f"connection refused: {e}")
            ctl_master.close()
            return
        finally:
            conn.close()
            ctl_child.close()
        ctl_master.setblocking(False)
        self.metrics.spawn_seconds.observe(time.monotonic() - spawn_started)
        self.metrics.spawned.inc()
        child = Child(
            proc=proc, ip=ip, ctl=ctl_master, started=p.accepted, log_stamp=time.monotonic(), web=p.web
        )
        child.startup, p.startup = p.startup, False  # the startup goes on, now as a process
        self.children[proc.pid] = child
        self.sel.register(ctl_master, selectors.EVENT_READ, child)
        heapq.heappush(self.deadlines, (p.accepted + self.cfg.grace_period, next(self._seq), child))
        self.log.info("connection accepted", ip=ip, pid=proc.pid, uid=proc.uid)
