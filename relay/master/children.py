"""The connections the master holds, and their end.

`Pending` is an accepted connection that has no process yet (relay.master.server holds it until
its client's first bytes arrive); `Child` is a jailed connection process, with what the master
knows of it (role, tokens, links, its reconnection state). `Children` (mixed into Master) ends
them: the grace period (every connection that has taken no role by `grace_period` seconds after
accept is closed or killed, a header wait and a held session each have their own deadline),
the kill (SIGKILL once, logged once), the forgetting of a child's tokens, links and control
socket (a lost host's session may be held instead, relay.master.reconnect), and the reaping.
"""

from __future__ import annotations

import heapq
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jail import JailedProcess, Jailer, standby
from relay import control
from relay.master import admission
from relay.master.admission import Refusal
from relay.master.intake import HeaderWait
from relay.master.messages import LOG_BURST
from relay.master.reconnect import ReconnectState

if TYPE_CHECKING:
    from relay.master.metrics import Metrics
    from relay.master.server import RelayConfig


@dataclass(eq=False)
class Pending:
    """An accepted connection whose client has sent nothing yet: no process, a socket."""

    sock: socket.socket
    ip: str
    accepted: float
    open: bool = True  # not yet handed to a process nor closed
    startup: bool = True  # counted as a startup (admission)
    web: bool = False  # accepted on the web listener: no banner, relay.conn.web runs it


@dataclass(eq=False)
class Child:
    proc: JailedProcess
    ip: str
    ctl: socket.socket
    started: float  # when its connection was accepted
    role: control.Role = control.NO_ROLE
    seen: set[str] = field(default_factory=set)  # once-only messages it has sent
    tokens: tuple[str, ...] = ()
    joinable: bool = False  # a host: ready, viewers may join
    authorized: frozenset[str] | None = None  # a host: key fingerprints viewers must hold, or None
    log_allowance: float = LOG_BURST
    log_stamp: float = 0.0
    logs_dropped: int = 0
    startup: bool = False  # counted as a startup (admission) until it takes a role or ends
    killed: bool = False  # SIGKILLed and logged; waits to be reaped
    asked_auth: bool = False  # its client got as far as authenticating
    viewers: set[int] = field(default_factory=set)  # a host: pids of the viewers linked to it
    session: Child | None = None  # a viewer: the session it is linked to
    rc: ReconnectState = field(default_factory=ReconnectState)  # relay.master.reconnect
    web: bool = False  # accepted on the web listener: a viewer of it is a web viewer


class Children:
    """The end of connections (mixed into Master first, so that nothing here is shadowed; what
    the other parts provide is only annotated)."""

    cfg: RelayConfig
    log: Any
    children: dict[int, Child]
    registry: dict[str, Child]
    deadlines: list[tuple[float, int, Pending | Child | HeaderWait]]
    sel: selectors.BaseSelector
    jailer: Jailer
    metrics: Metrics
    _refuse: Callable[..., None]  # Master
    _end_startup: Callable[[Pending | Child], None]  # Master
    _close_pending: Callable[..., None]  # Master
    _drain: Callable[[Child], None]  # relay.master.messages
    _header_expired: Callable[[HeaderWait], None]  # relay.master.intake
    _hold_session: Callable[[Child], bool]  # relay.master.reconnect
    _hold_expired: Callable[[Child], None]  # relay.master.reconnect
    _viewer_gone: Callable[[Child], None]  # relay.master.reconnect
    _other_exited: Callable[[int, int], None]  # relay.master.lifecycle

    def _expire(self) -> None:
        """Close every connection that has not taken a role by its grace period."""
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, conn = heapq.heappop(self.deadlines)
            if isinstance(conn, HeaderWait):
                self._header_expired(conn)
            elif isinstance(conn, Child) and conn.rc.held_until is not None:
                self._hold_expired(conn)
            elif isinstance(conn, Pending):
                if conn.open:
                    self._close_pending(
                        conn, "no role taken within the grace period (no bytes sent)", admission.GRACE_PERIOD
                    )
            elif (
                conn.role is control.NO_ROLE and not conn.killed and self.children.get(conn.proc.pid) is conn
            ):
                state = "authenticated, no session channel" if conn.asked_auth else "ssh handshake incomplete"
                state = "web: no viewer joined" if conn.web else state
                self._kill(conn, f"no role taken within the grace period ({state})", admission.GRACE_PERIOD)

    def _kill(self, child: Child, reason: str, limit: str | None = None) -> None:
        """SIGKILL a connection process, once: one kill, one log line (it is reaped later)."""
        if child.killed:
            return
        child.killed = True
        self._end_startup(child)
        try:
            os.kill(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._forget(child)  # what it said before it died is logged first
        if limit is None:
            self.log.warning("connection killed", pid=child.proc.pid, ip=child.ip, reason=reason)
        else:
            self._refuse(child.ip, Refusal(limit, reason), pid=child.proc.pid)

    def _forget(self, child: Child) -> None:
        """Drop the child's tokens, links and control socket, after logging what is still queued
        on it (the process is reaped separately)."""
        self._end_startup(child)
        if child.ctl.fileno() >= 0:
            try:
                self.sel.unregister(child.ctl)
            except (KeyError, ValueError):
                pass
            self._drain(child)
            child.ctl.close()
        # A host's session may be held for its host's return (relay.master.reconnect).
        held = child.role == control.HOST and (child.rc.held_until is not None or self._hold_session(child))
        for t in () if held else child.tokens:
            if self.registry.get(t) is child:
                del self.registry[t]
        child.tokens = child.tokens if held else ()
        self._viewer_gone(child)  # a viewer: off its session's books (relay.master.reconnect)

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
                if not standby.reaped(self.jailer, pid):
                    self._other_exited(pid, status)  # the metrics process
                continue
            self._forget(child)
            self.jailer.release(child.proc)
            self.metrics.forget(pid)
            code = os.waitstatus_to_exitcode(status)
            self.log.debug("connection process exited", pid=pid, ip=child.ip, role=child.role, code=code)
