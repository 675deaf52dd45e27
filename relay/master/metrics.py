"""The master's metrics (`--metrics [ADDR:]PORT`): counters in the master, HTTP in a jailed process.

The master keeps a prometheus-client registry of its own (no default collectors): gauges read from
its state when a scrape is served (sessions, sessions held for their host's reconnection, viewers,
connections by state, refusals by limit), and counters and histograms it updates as things happen
(bytes in and out from the session processes' `stats` messages, connections spawned,
reconnections by outcome, jail spawn time, the time a turn of its loop spends handling events).

The master parses no HTTP. It binds the metrics listener (loopback unless told otherwise) and
starts one jailed **metrics process** with its own Jailer, like a connection process. When a
scraper connects, the master accepts the socket (its bytes unread), renders the registry with
`generate_latest` and hands both to the metrics process in one message over a socketpair (the
text, and the socket as SCM_RIGHTS). The metrics process (relay.conn.metrics_http) reads the
request, answers `/metrics` with that text and `/healthz` with `ok`, and closes. It sends the
master nothing. A scraper costs the master an accept and a render (at most once per
RENDER_INTERVAL); when the metrics process's queue is full the scrape is closed unanswered.

No thread: prometheus-client's `start_http_server` would start one in a process that forks.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jail import JailedProcess, Jailer, JailError

DEFAULT_ADDRESS = "127.0.0.1"
ACCEPT_BATCH = 8  # scrapes accepted per turn of the loop
RENDER_INTERVAL = 0.1  # seconds a rendered snapshot is reused
MAX_SNAPSHOT = 128 * 1024  # bytes; a larger rendering is not sent (it would not fit the socket)
FEED_BUFFER = 1 << 20  # the metrics process's queue of scrapes (bytes of snapshots in flight)
RESPAWN_INTERVAL = 5.0  # seconds between restarts of a metrics process that died
SPAWN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# metrics process factory: (its end of the feed socketpair) -> what the jailed process runs
MetricsServer = Callable[[socket.socket], Callable[[], int]]


def parse_address(text: str) -> tuple[str, int]:
    """`PORT`, `ADDR:PORT` or `[IPV6]:PORT` -> (address, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_ADDRESS, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [::1]:PORT")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    if not host:
        host = DEFAULT_ADDRESS
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {host!r}") from None
    return host, int(port)


@dataclass(frozen=True)
class State:
    """What the gauges read from the master when a scrape is rendered."""

    sessions: int = 0
    viewers: int = 0
    connections: Mapping[str, int] = field(default_factory=dict)  # state -> connections
    refusals: Mapping[str, int] = field(default_factory=dict)  # limit -> refusals so far
    web_viewers: int = 0  # of the viewers, those that joined through the web listener
    held: int = 0  # sessions whose host's connection was lost, waiting for it (relay.master.reconnect)


CONNECTION_STATES = ("pending", "handshake", "host", "viewer")
# pymate_reconnections_total's outcomes: the host took its session over, its datum was refused
# (forged: not this relay's MAC; malformed: unreadable or of another version; expired; stale: an
# older generation; taken: another session holds the tokens), or a held session's window ended.
RECONNECT_OUTCOMES = ("taken_over", "forged", "malformed", "expired", "stale", "taken", "window_expired")


class _StateCollector:
    def __init__(self, state: Callable[[], State]):
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # no fixed description: collected each time

    def collect(self) -> Iterator[Metric]:
        s = self.state()
        yield GaugeMetricFamily(
            "pymate_sessions", "Host sessions now (tokens issued, not ended).", s.sessions
        )
        yield GaugeMetricFamily(
            "pymate_sessions_held",
            "Sessions waiting for their host to reconnect now (tokens reserved, no process).",
            s.held,
        )
        yield GaugeMetricFamily("pymate_viewers", "Viewers linked to a session now.", s.viewers)
        by_role = GaugeMetricFamily(
            "pymate_viewers_by_role", "Viewers linked to a session now, by role: ssh or web.", labels=["role"]
        )
        by_role.add_metric(["ssh"], max(0, s.viewers - s.web_viewers))
        by_role.add_metric(["web"], s.web_viewers)
        yield by_role
        conns = GaugeMetricFamily(
            "pymate_connections",
            "Connections now by state: pending (no process yet), handshake (no role yet), host, viewer.",
            labels=["state"],
        )
        for name in CONNECTION_STATES:
            conns.add_metric([name], s.connections.get(name, 0))
        yield conns
        refused = CounterMetricFamily(
            "pymate_refusals",
            "Connections refused or closed by a named limit, by the limit.",
            labels=["limit"],
        )
        for limit, n in sorted(s.refusals.items()):
            refused.add_metric([limit], n)
        yield refused


class Metrics:
    """The master's registry; `render()` is the Prometheus text format."""

    def __init__(self, state: Callable[[], State] = State):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(state))
        r = self.registry
        self.bytes_in = Counter(
            "pymate_bytes_in", "Bytes the session processes read from their hosts.", registry=r
        )
        self.bytes_out = Counter(
            "pymate_bytes_out", "Bytes the session processes wrote to their hosts and viewers.", registry=r
        )
        self.spawned = Counter("pymate_connections_spawned", "Connection processes started.", registry=r)
        self.sessions_started = Counter("pymate_sessions_started", "Host sessions given tokens.", registry=r)
        self.viewers_linked = Counter("pymate_viewers_linked", "Viewers linked to a session.", registry=r)
        self.jail_failures = Counter("pymate_jail_failures", "Jails that could not be set up.", registry=r)
        self.reconnections = Counter(
            "pymate_reconnections",
            "Hosts' reconnections by outcome: taken_over; refused as forged, malformed, expired, stale or "
            "taken (another session holds the tokens); window_expired (the host did not come back).",
            labelnames=["outcome"],
            registry=r,
        )
        for outcome in RECONNECT_OUTCOMES:
            self.reconnections.labels(outcome)  # every outcome is exported from the start, at 0
        self.spawn_seconds = Histogram(
            "pymate_jail_spawn_seconds",
            "Time to fork and jail one process.",
            buckets=SPAWN_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "pymate_master_loop_lag_seconds",
            "Time one turn of the master's loop spends handling events: the most a new event waits.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._reported: dict[int, tuple[int, int]] = {}  # session pid -> (bytes in, bytes out) so far
        self._text = b""
        self._rendered = float("-inf")

    def stats(self, pid: int, bytes_in: int, bytes_out: int) -> None:
        """A session process's running totals: the counters move by what is new (never back)."""
        old_in, old_out = self._reported.get(pid, (0, 0))
        self.bytes_in.inc(max(0, bytes_in - old_in))
        self.bytes_out.inc(max(0, bytes_out - old_out))
        self._reported[pid] = (max(old_in, bytes_in), max(old_out, bytes_out))

    def forget(self, pid: int) -> None:
        self._reported.pop(pid, None)

    def render(self) -> bytes:
        now = time.monotonic()
        if now - self._rendered >= RENDER_INTERVAL:
            self._text = generate_latest(self.registry)
            self._rendered = now
        return self._text


class Endpoint:
    """The metrics listener and its jailed metrics process (started once the jailer is ready)."""

    def __init__(self, address: str, port: int, server: MetricsServer, metrics: Metrics, log: Any):
        self.address = address
        self.port = port
        self.server = server
        self.metrics = metrics
        self.log = log
        self.listener: socket.socket | None = None
        self.feed: socket.socket | None = None
        self.proc: JailedProcess | None = None
        self.jailer: Jailer | None = None
        self._last_start = float("-inf")
        self.dropped = 0  # scrapes closed unanswered (the metrics process was busy or gone)

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.address, self.port))
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        return s

    def start(self, jailer: Jailer) -> None:
        """Start the metrics process (the jailer is prepared); JailError if it cannot be jailed."""
        self.jailer = jailer
        self._last_start = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FEED_BUFFER)
            self.proc = jailer.spawn(self.server(theirs), keep_fds=[theirs.fileno()], title="pymate metrics")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.feed = ours
        addr = self.listener.getsockname() if self.listener is not None else (self.address, self.port)
        self.log.info("metrics listening", address=addr[0], port=addr[1], pid=self.proc.pid)

    def on_accept(self) -> None:
        """A scraper connected: hand it, with a fresh snapshot, to the metrics process."""
        if self.listener is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log.error("metrics accept failed", reason=str(e))
                return
            try:
                self._hand_over(conn)
            finally:
                conn.close()

    def _hand_over(self, conn: socket.socket) -> None:
        if self.feed is None:
            self._respawn()
        text = self.metrics.render()
        if self.feed is None or len(text) > MAX_SNAPSHOT:
            self.dropped += 1
            return
        try:
            socket.send_fds(self.feed, [text], [conn.fileno()])
        except OSError:  # its queue is full, or it is gone: this scrape goes unanswered
            self.dropped += 1

    def _respawn(self) -> None:
        if self.jailer is None or time.monotonic() - self._last_start < RESPAWN_INTERVAL:
            return
        try:
            self.start(self.jailer)
        except JailError as e:
            self.log.error("metrics process not started", reason=f"jail failed: {e}")

    def exited(self, pid: int, code: int) -> bool:
        """Whether `pid` was the metrics process (reaped): it is restarted on the next scrape."""
        if self.proc is None or pid != self.proc.pid:
            return False
        if self.jailer is not None:
            self.jailer.release(self.proc)
        self.proc = None
        if self.feed is not None:
            self.feed.close()
            self.feed = None
            self.log.error("metrics process exited", pid=pid, code=code)
        return True

    def stop_accepting(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        """Stop: the metrics process sees end of stream on its feed and exits."""
        self.stop_accepting()
        if self.feed is not None:
            self.feed.close()
            self.feed = None
