"""Admission control: whether the master takes a new TCP connection, before it costs a process.

Pure logic with its clock and random source injected (tests drive both); the master
(relay.master.server) asks `Admission.check` on every accept and reports when a connection stops
being a *startup* (one that has not taken a role yet: idle pre-fork sockets, handshakes, logins).
The limits, each refused with its name (`limit=` in the log line) and counted in `refusals`:

  max-connections          connections at once (pre-fork sockets and connection processes; the
                           master closes the connection silent longest to make room, if any)
  per-source-rate          new connections per second from one address: a token bucket of N a
                           second with a burst of BURST_SECONDS * N
  per-source-max-startups  startups from one address at once
  max-startups             startups that have sent bytes (so cost a process), at once, as
                           sshd's MaxStartups START:RATE:FULL: from START on a
                           new one is refused with probability RATE%, rising linearly to 100% at
                           FULL (random early drop, so that a flood cannot shut out everyone
                           deterministically while a real client retrying gets through)
The master itself enforces the others by name: grace-period, max-sessions, max-viewers.

Sources are whole addresses (IPv6 included: no prefix aggregation).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

GRACE_PERIOD = "grace-period"
MAX_STARTUPS = "max-startups"
PER_SOURCE_MAX_STARTUPS = "per-source-max-startups"
PER_SOURCE_RATE = "per-source-rate"
MAX_SESSIONS = "max-sessions"
MAX_VIEWERS = "max-viewers"
MAX_CONNECTIONS = "max-connections"
SESSION_MEMORY = "session-memory"
LIMIT_NAMES = frozenset(
    {
        GRACE_PERIOD,
        MAX_STARTUPS,
        PER_SOURCE_MAX_STARTUPS,
        PER_SOURCE_RATE,
        MAX_SESSIONS,
        MAX_VIEWERS,
        MAX_CONNECTIONS,
        SESSION_MEMORY,
    }
)

BURST_SECONDS = 5  # a source's bucket holds this many seconds of its rate
PRUNE_INTERVAL = 1.0  # seconds between sweeps of full (idle) buckets


@dataclass(frozen=True)
class MaxStartups:
    # The default: START above the per-source limit (10), so that one address alone never pushes
    # the others into early drop; FULL so that handshakes in progress (~4 MB private each, one
    # process apiece) stay near 250 MB whatever a many-address flood does.
    start: int = 20
    rate: int = 30  # percent
    full: int = 60

    @classmethod
    def parse(cls, text: str) -> MaxStartups:
        """`START:RATE:FULL` (or a bare `FULL`, refusing every startup beyond it, as sshd reads
        it); ValueError unless 0 <= START <= FULL, 1 <= FULL and 0 <= RATE <= 100."""
        parts = text.split(":")
        if len(parts) == 1:
            full = int(parts[0])
            start, rate = full, 100
        elif len(parts) == 3:
            start, rate, full = (int(p) for p in parts)
        else:
            raise ValueError("expected START:RATE:FULL")
        if full < 1 or not 0 <= start <= full or not 0 <= rate <= 100:
            raise ValueError("expected 0 <= START <= FULL, FULL >= 1 and RATE a percentage")
        return cls(start, rate, full)

    def drop_probability(self, startups: int) -> float:
        """The probability that a new connection is refused while `startups` others are."""
        if startups < self.start:
            return 0.0
        if startups >= self.full:
            return 1.0
        span = self.full - self.start  # > 0 here: start <= startups < full
        return (self.rate + (100 - self.rate) * (startups - self.start) / span) / 100


@dataclass(frozen=True)
class Refusal:
    limit: str
    reason: str


class Admission:
    """The startups (per source and in all) and the per-source token buckets."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        max_startups: MaxStartups = MaxStartups(),
        per_source_max_startups: int = 10,
        per_source_rate: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ):
        self.max_connections = max_connections
        self.max_startups = max_startups
        self.per_source_max_startups = per_source_max_startups
        self.per_source_rate = per_source_rate
        self.burst = BURST_SECONDS * per_source_rate
        self.clock = clock
        self.rand = rand
        self.startups = 0
        self.startups_by_source: Counter[str] = Counter()
        self.buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)
        self.refusals: dict[str, int] = {}  # limit name -> refusals so far
        self._pruned = clock()

    def check(self, ip: str, connections: int, silent: int = 0) -> Refusal | None:
        """Whether a new connection from `ip` is refused (while `connections` are served, of
        which `silent` have sent nothing yet: those count for per-source-max-startups but not for
        max-startups, which bounds what costs a process). A connection admitted here is a
        startup: call `began(ip)` for it."""
        if connections >= self.max_connections:
            return Refusal(MAX_CONNECTIONS, f"too many connections (limit {self.max_connections})")
        if not self._take_token(ip):
            return Refusal(
                PER_SOURCE_RATE,
                f"too many new connections from this address (limit {self.per_source_rate:g}/s)",
            )
        if self.startups_by_source[ip] >= self.per_source_max_startups:
            return Refusal(
                PER_SOURCE_MAX_STARTUPS,
                f"too many unauthenticated connections from this address (limit {self.per_source_max_startups})",
            )
        return self.startup_refusal(self.startups - silent)

    def startup_refusal(self, working: int) -> Refusal | None:
        """max-startups alone, while `working` other startups cost a process: asked on accept and
        again when a silent connection's first bytes arrive (a burst of silent connections that
        all send at once must not all get a process)."""
        p = self.max_startups.drop_probability(working)
        if p > 0 and self.rand() < p:
            ms = self.max_startups
            return Refusal(
                MAX_STARTUPS,
                f"too many unauthenticated connections ({working}, limit {ms.start}:{ms.rate}:{ms.full})",
            )
        return None

    def count(self, limit: str) -> int:
        """One more refusal by `limit`; how many so far."""
        n = self.refusals.get(limit, 0) + 1
        self.refusals[limit] = n
        return n

    def began(self, ip: str) -> None:
        self.startups += 1
        self.startups_by_source[ip] += 1

    def ended(self, ip: str) -> None:
        """A startup took a role, was refused or closed (call once per `began`)."""
        self.startups -= 1
        left = self.startups_by_source[ip] - 1
        if left > 0:
            self.startups_by_source[ip] = left
        else:
            del self.startups_by_source[ip]

    def _take_token(self, ip: str) -> bool:
        now = self.clock()
        if now - self._pruned >= PRUNE_INTERVAL:
            self._prune(now)
        tokens, when = self.buckets.get(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.per_source_rate)
        ok = tokens >= 1
        self.buckets[ip] = (tokens - 1 if ok else tokens, now)
        return ok

    def _prune(self, now: float) -> None:
        """Forget the buckets that have filled up again: they are as good as new ones."""
        self._pruned = now
        rate, burst = self.per_source_rate, self.burst
        full = [ip for ip, (t, w) in self.buckets.items() if t + (now - w) * rate >= burst]
        for ip in full:
            del self.buckets[ip]
