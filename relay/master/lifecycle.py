"""The master's life around its loop: signals, reload (SIGHUP), metrics, and a clean stop.

`Lifecycle` is the part of `relay.master.server.Master` that starts and stops it (mixed in, like
relay.master.messages).

SIGTERM or SIGINT: the loop ends and `shutdown` runs, within SHUTDOWN_TOTAL seconds:
  1. stop accepting (listener and metrics listener closed), close connections with no process;
  2. half-close every session process's control socket: it sees the master gone, sends its host
     the NOTIFY `[tmate] relay shutting down`, tells its viewers `[relay shutting down]` and
     exits; connection processes with no role yet get SIGTERM. What they log meanwhile is still
     read (the other direction stays open);
  3. at SHUTDOWN_HOSTS (or once no session process is left) the viewers' control sockets are
     half-closed too and session processes still there get SIGTERM;
  4. at SHUTDOWN_HOSTS + SHUTDOWN_TERM whatever is left is SIGKILLed; everything is reaped, the
     metrics process too, and the jail's empty root is removed.
SIGHUP: the next turn of the loop calls the `reload` callable the master was handed (relay.cli:
re-read the host keys; the master knows nothing of SSH), logging its failure if it raises.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jail import standby
from relay import control
from relay.master.metrics import Endpoint, Metrics, MetricsServer, State

if TYPE_CHECKING:
    from jail import Jailer
    from relay.master.names import ApiKeys
    from relay.master.server import Child, Pending, RelayConfig

SHUTDOWN_HOSTS = 2.5  # seconds session processes have to tell their host and viewers, and end
SHUTDOWN_TERM = 1.0  # then SIGTERM for what is left, for this long, then SIGKILL
SHUTDOWN_TOTAL = 5.0  # the promise: the relay is gone this long after SIGTERM
SHUTDOWN_TICK = 0.05


class Lifecycle:
    """Signals, reload, metrics and shutdown of the master (mixed into Master)."""

    cfg: RelayConfig
    log: Any
    children: dict[int, Child]
    registry: dict[str, Child]
    refusals: dict[str, int]
    pending: set[Pending]
    silent: dict[Pending, None]
    ready: dict
    sel: selectors.BaseSelector
    listener: socket.socket | None
    jailer: Jailer
    api_keys: ApiKeys  # relay.master.names: --api-keys, re-read on SIGHUP
    _stopping: bool
    _wake_r: int
    _wake_w: int

    def _init_lifecycle(
        self,
        reload: Callable[[], object] | None,
        metrics_server: MetricsServer | None,
        metrics_address: tuple[str, int] | None,
    ) -> None:
        self.reload = reload
        self._reload_asked = False
        self.metrics = Metrics(self._metrics_state)
        self.endpoint: Endpoint | None = None
        if metrics_address is not None and metrics_server is not None:
            self.endpoint = Endpoint(*metrics_address, metrics_server, self.metrics, self.log)

    # Provided by Master and its other parts (annotations only: nothing here may shadow them).
    _reap: Callable[[], None]
    _forget: Callable[[Child], None]
    _on_control: Callable[[Child], None]
    _drain_wake: Callable[[], None]
    _close_awaiting: Callable[[], None]  # relay.master.intake: connections still sending a PROXY header
    _close_web: Callable[[], None]  # relay.master.web: the web listener

    # ------------------------------------------------------------------ start
    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum, _frame):
        self._stopping = True

    def _on_reload(self, signum, _frame):
        self._reload_asked = True

    def bind_metrics(self) -> None:
        """Bind the metrics listener (before the loop, like the main listener); OSError if not."""
        if self.endpoint is not None:
            self.endpoint.bind()

    def _start_metrics(self) -> None:
        """After the jailer is prepared: start the metrics process and serve its listener."""
        if self.endpoint is None:
            return
        listener = self.endpoint.listener or self.endpoint.bind()
        self.endpoint.start(self.jailer)
        self.sel.register(listener, selectors.EVENT_READ, self.endpoint.on_accept)

    # ------------------------------------------------------------------ between turns
    def _turn_done(self, woke: float) -> None:
        """After one turn of the loop (`woke`: when its select returned)."""
        self.metrics.loop_lag.observe(time.monotonic() - woke)
        if self._reload_asked:
            self._reload_asked = False
            self._do_reload()

    def _do_reload(self) -> None:
        self.api_keys.reload()  # does nothing without --api-keys; a broken file keeps the old keys
        if self.reload is None:
            self.log.info("reload ignored", reason="nothing to reload")
            return
        self.log.info("reloading", reason="SIGHUP")
        try:
            self.reload()
            standby.flush(self.jailer)  # standbys hold the keys of before (jail/standby.py)
        except Exception as e:  # noqa: BLE001 - a failed reload keeps the relay as it was
            self.log.error("reload failed", reason=f"{type(e).__name__}: {e}"[:300])

    def _other_exited(self, pid: int, status: int) -> None:
        """A reaped process that is no connection process: the metrics process, if it is."""
        if self.endpoint is not None:
            self.endpoint.exited(pid, os.waitstatus_to_exitcode(status))

    def _metrics_state(self) -> State:
        counts = dict.fromkeys(("pending", "handshake", "host", "viewer"), 0)
        counts["pending"] = len(self.pending)
        sessions = viewers = web_viewers = 0
        for child in self.children.values():
            if child.killed:
                continue
            if child.role == control.HOST:
                counts["host"] += 1
                if child.tokens:
                    sessions += 1
                    viewers += len(child.viewers)
            elif child.role == control.VIEWER:
                counts["viewer"] += 1
                web_viewers += child.web and child.session is not None
            else:
                counts["handshake"] += 1
        return State(
            sessions=sessions,
            viewers=viewers,
            connections=counts,
            refusals=dict(self.refusals),
            web_viewers=web_viewers,
            held=len({c for c in self.registry.values() if c.rc.held_until is not None}),
        )

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        started = time.monotonic()
        self._close_web()
        if self.listener is not None:
            self._unregister(self.listener)
            self.listener.close()
        if self.endpoint is not None:
            if self.endpoint.listener is not None:
                self._unregister(self.endpoint.listener)
            self.endpoint.close()
        self._close_awaiting()
        for p in list(self.pending):
            p.open = False
            self._unregister(p.sock)
            p.sock.close()
        self.pending.clear()
        self.silent.clear()
        self.ready.clear()
        hosts = [c for c in self.children.values() if c.role == control.HOST]
        self.log.info("shutting down", sessions=len(hosts), connections=len(self.children))
        for child in list(self.children.values()):
            if child.role == control.HOST:
                _half_close(child.ctl)
            elif child.role is control.NO_ROLE:
                _signal(child, signal.SIGTERM)
        self._wind_down(started + SHUTDOWN_HOSTS, self._hosts_left)
        for child in list(self.children.values()):
            if child.role == control.HOST:
                _signal(child, signal.SIGTERM)
            else:
                _half_close(child.ctl)
        self._wind_down(started + SHUTDOWN_HOSTS + SHUTDOWN_TERM, lambda: bool(self.children))
        self._kill_the_rest()
        self.jailer.close()
        self.log.info("stopped", duration=round(time.monotonic() - started, 3))

    def _hosts_left(self) -> bool:
        return any(c.role == control.HOST for c in self.children.values())

    def _wind_down(self, deadline: float, waiting: Callable[[], bool]) -> None:
        """Read the children's last messages and reap them until `waiting()` is false or the
        deadline."""
        while waiting():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.sel.select(timeout=min(SHUTDOWN_TICK, left)):
                if key.data == "wake":
                    self._drain_wake()
                elif hasattr(key.data, "ctl"):  # a child's control socket (nothing else is left)
                    self._on_control(key.data)
            self._reap()

    def _kill_the_rest(self) -> None:
        for child in list(self.children.values()):
            _signal(child, signal.SIGKILL)
        if self.endpoint is not None and self.endpoint.proc is not None:
            try:
                os.kill(self.endpoint.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.children or (self.endpoint is not None and self.endpoint.proc is not None):
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            gone = self.children.pop(pid, None)
            if gone is not None:
                self._forget(gone)
                self.jailer.release(gone.proc)
            else:
                self._other_exited(pid, status)

    def _unregister(self, sock: socket.socket) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass


def _half_close(sock: socket.socket) -> None:
    """The connection process reads end of stream (the master is going); what it still sends
    reaches the master."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _signal(child: Child, sig: int) -> None:
    try:
        os.kill(child.proc.pid, sig)
    except ProcessLookupError:
        pass
