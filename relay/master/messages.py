"""The master's side of the control sockets: what each message a connection process sends does.

`Messages` is the part of `relay.master.server.Master` that reads control sockets, checks every
message against relay.control's table (untrusted input: one that fails kills its sender, and only
its sender) and answers it: auth look-ups, tokens for a host (or a refusal by max-sessions), the
link between a viewer and its session (or a refusal by max-viewers), a host's access list, and
the children's log events (rate-limited; a dead child's last ones are drained before its socket
is closed). The rest of the master (accepting, spawning, the grace period, reaping) is in
server.py.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay import control, log
from relay.master import admission, tokens
from relay.master.admission import Refusal
from relay.master.names import ApiKeys, Naming
from relay.master.web import SSH_ONLY

if TYPE_CHECKING:
    from relay.master.admission import Admission
    from relay.master.metrics import Metrics
    from relay.master.server import Child, RelayConfig

LOG_BURST = 200  # log events a connection may send at once ...
LOG_RATE = 20.0  # ... and per second after that; the excess is dropped and counted
CONTROL_BATCH = 64  # messages read from one control socket per turn of the loop
DRAIN_LIMIT = 256  # messages read from a dead child's control socket before it is closed
RELAY_FULL = "Relay full: too many sessions"
TOO_MANY_VIEWERS = "Too many viewers in this session"


class Messages(Naming):
    """Control-message handling of the master (mixed into Master, which provides the state)."""

    cfg: RelayConfig
    log: Any
    children: dict[int, Child]
    registry: dict[str, Child]
    admission: Admission
    metrics: Metrics
    jailer: Any  # jail.Jailer, or a test's stand-in

    # Provided by relay.master.reconnect (annotations only: nothing here may shadow them).
    _on_resume: Callable[..., None]
    _on_rdata: Callable[..., None]
    _on_end: Callable[..., None]
    _relink: Callable[[Child], None]
    _join_waiting: Callable[..., bool]

    def __init__(self) -> None:
        # What each message of control.TO_MASTER does; the table says who may send it and how often.
        self.handlers: dict[str, Callable[..., None]] = {
            "log": self._on_log,
            "auth": self._on_auth,
            "host": self._on_host,
            "join": self._on_join,
            "access": self._on_access,
            "name": self._on_name,  # relay.master.names
            "stats": self._on_stats,
            "resume": self._on_resume,  # relay.master.reconnect
            "rdata": self._on_rdata,
            "end": self._on_end,
            "hot": self._on_hot,
        }
        assert self.handlers.keys() == control.TO_MASTER.keys()
        self.api_keys = ApiKeys(self.cfg.api_keys)  # --api-keys, read before the first fork
        # What the master itself knows of a connection that took a role, added to every event it
        # logs for it (its own and the ones it sends): role (host, viewer, ro-viewer) and session
        # (the first characters of the session's read-write token, for viewers too).
        self.log_context: weakref.WeakKeyDictionary[Child, dict[str, str]] = weakref.WeakKeyDictionary()

    # Provided by Master.
    def _kill(self, child: Child, reason: str, limit: str | None = None) -> None:
        raise NotImplementedError

    def _refuse(self, ip: str, refusal: Refusal, **fields: object) -> None:
        raise NotImplementedError

    def _end_startup(self, conn: Child) -> None:
        raise NotImplementedError

    def _forget(self, child: Child) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ reading
    def _on_control(self, child: Child) -> None:
        for _ in range(CONTROL_BATCH):
            if child.ctl.fileno() < 0:
                return  # closed earlier in this turn of the loop
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

    def _drain(self, child: Child) -> None:
        """Log what a child that is gone (or going) still has queued: its last words. Only log
        events; bounded; stops at the first malformed message."""
        for _ in range(DRAIN_LIMIT):
            try:
                data = child.ctl.recv(control.MAX_CONTROL_MESSAGE + 1, socket.MSG_DONTWAIT)
            except OSError:
                return
            if not data:
                return
            try:
                spec, args = control.decode(control.TO_MASTER, data)
            except control.ControlError:
                return
            if spec.name == "log":
                self._on_log(child, *args)
            elif spec.name == "end" and child.role == control.HOST:
                child.rc.end = args[0]  # how its session ended (relay.master.reconnect)

    # ------------------------------------------------------------------ messages (control.TO_MASTER)
    def _on_log(self, child: Child, level: str, event: str, fields: dict) -> None:
        if not self._log_allowed(child):
            return
        out = control.log_fields(fields)
        limit = out.get("limit")
        if event == "connection refused" and isinstance(limit, str) and limit in admission.LIMIT_NAMES:
            out["count"] = self.admission.count(limit)  # a limit the connection process enforces
        out.update(pid=child.proc.pid, ip=child.ip, **self.log_context.get(child, {}))
        method = level if level in control.LOG_LEVELS else "info"
        getattr(self.log, method)(event[: control.MAX_LOG_EVENT], **out)

    def _on_auth(self, child: Child, user: str, fp: str | None) -> None:
        child.asked_auth = True
        self._send(child, "auth", self._may_log_in(user, fp))

    def _on_host(self, child: Child) -> None:
        self._end_startup(child)
        child.role = control.HOST
        self.log_context[child] = {"role": "host"}
        if len(self.registry) // 2 >= self.cfg.max_sessions:  # two tokens per session
            limit = self.cfg.max_sessions
            self._refuse(
                child.ip,
                Refusal(admission.MAX_SESSIONS, f"too many sessions (limit {limit})"),
                pid=child.proc.pid,
                role="host",
            )
            self._send(child, "refused", RELAY_FULL)
            return
        rw, ro = tokens.new_token_pair()
        while rw in self.registry or ro in self.registry:
            rw, ro = tokens.new_token_pair()
        child.tokens = (rw, ro)
        self.registry[rw] = child
        self.registry[ro] = child
        self.metrics.sessions_started.inc()
        self.log_context[child]["session"] = rw[: log.SHOWN]
        self.log.info("role taken", ip=child.ip, pid=child.proc.pid, **self.log_context[child])
        self._send(child, "tokens", rw, ro)

    def _on_join(
        self, child: Child, token: str, pubkey: str | None, fp: str | None, forwarded_for: str | None = None
    ) -> None:
        self._end_startup(child)  # per-source startups are the peer's: counted before the address changes
        self._take_forwarded(child, forwarded_for)
        child.role = control.VIEWER
        role = "web" if child.web else "viewer"  # the master's web listener took it (relay.master.web)
        named = self.registry.get(token)  # a read-only session name has no ro- prefix
        readonly = token.startswith(tokens.RO_PREFIX) or (named is not None and named.tokens[1:] == (token,))
        self.log_context[child] = {"role": f"ro-{role}" if readonly else role}
        self.log.info("role taken", ip=child.ip, pid=child.proc.pid, **self.log_context[child])
        self._join(child, token, pubkey, fp)

    def _take_forwarded(self, child: Child, forwarded_for: str | None) -> None:
        """A web viewer's client address, as its trusted proxy named it (X-Forwarded-For): its ip
        from now on (logs, the session's `viewer` message), only when the connection's peer is in
        --web-trusted-proxy; otherwise ignored, and logged why."""
        if forwarded_for is None:
            return
        reason = None
        if not child.web:
            reason = "not a web connection"
        elif not trusted_proxy(child.ip, self.cfg.web_trusted_proxies):
            reason = "its peer is not a --web-trusted-proxy"
        elif not _is_address(forwarded_for):
            reason = "not an IP address"
        if reason is not None:
            self.log.warning("forwarded address ignored", ip=child.ip, pid=child.proc.pid, reason=reason)
            return
        self.log.info("forwarded address taken", ip=forwarded_for, proxy=child.ip, pid=child.proc.pid)
        child.ip = forwarded_for

    def _on_access(self, child: Child, fps: list[str] | None) -> None:
        child.joinable = True
        child.authorized = None if fps is None else frozenset(fps)
        if child.rc.resumed:
            self._relink(child)  # viewers that waited for this host's reconnection, and who left

    def _on_stats(self, child: Child, bytes_in: int, bytes_out: int) -> None:
        self.metrics.stats(child.proc.pid, bytes_in, bytes_out)

    def _on_hot(self, child: Child, kind: str, code: list[int]) -> None:
        """The code a connection process ran (jail/hotcode.py): the first report of each kind
        has the master copy it next to each other for the processes it forks from then on; a
        kind that is not its role's, or learnt already, is ignored."""
        if control.LEARN_KINDS.get(kind) != child.role:
            return
        t0 = time.perf_counter()
        pack = getattr(self.jailer, "pack_hot", None)  # a test's stand-in jailer has none
        copied = pack(kind, code) if pack is not None else None
        if copied is not None:
            self.log.info(
                "code packed",
                kind=kind,
                reported=len(code),
                copied=copied,
                duration=round(time.perf_counter() - t0, 3),
            )

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
                    limit="log-rate",
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
        # Whether it is ssh only (tmate -a) is known once its host is ready, and while it is held;
        # a resumed session process before its `access` has its held session's keys (ssh only
        # when it had some); one that had none may still get some: no web viewer waits for it
        # (it is refused as a session not ready, for the few ms it lasts).
        keys_known = session is not None and (
            session.joinable or session.rc.held_until is not None or session.authorized is not None
        )
        if viewer.web and session is not None and keys_known and session.authorized is not None:
            reason = "web viewer of an ssh-only session (tmate -a)"
            self.log.info("viewer refused", ip=viewer.ip, reason=reason, **self.log_context.get(viewer, {}))
            self._send(viewer, "refused", SSH_ONLY)
            return
        if session is not None and (keys_known or not viewer.web):
            if self._join_waiting(viewer, session, token, pubkey, fp):
                return  # its host is reconnecting: it waits with the others (relay.master.reconnect)
        if session is None or not session.joinable or not self._may_log_in(token, fp):
            if session is None:
                reason = "no session for this token"
            elif not session.joinable:
                reason = "session not ready for viewers yet"
            else:
                reason = "key not among the session's authorized keys"
            context = self.log_context.get(viewer, {})
            self.log.info("token look-up failed", ip=viewer.ip, pid=viewer.proc.pid, reason=reason, **context)
            self._send(viewer, "no-session")
            return
        context = self.log_context.setdefault(viewer, {})
        context["session"] = session.tokens[0][: log.SHOWN]
        if len(session.viewers) >= self.cfg.max_viewers:
            reason = f"too many viewers (limit {self.cfg.max_viewers})"
            self._refuse(
                viewer.ip,
                Refusal(admission.MAX_VIEWERS, reason),
                pid=viewer.proc.pid,
                session_pid=session.proc.pid,
                **context,
            )
            self._send(viewer, "refused", TOO_MANY_VIEWERS)
            return
        readonly = token == session.tokens[1]  # ro-TOKEN, or a read-only session name
        since = int(time.time())  # its first link: a relink after a reconnection keeps it
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            data = control.encode(
                control.TO_CONNECTION, "viewer", readonly, viewer.ip, pubkey, False, since, viewer.web
            )
            control.send_with_fd(session.ctl, data, ends[0].fileno())
        except OSError as e:
            self.log.warning(
                "viewer refused", ip=viewer.ip, reason=f"session did not take the viewer: {e}", **context
            )
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
        session.viewers.add(viewer.proc.pid)
        viewer.session = session
        # What it joined with, to relink it after a reconnection (and check its key again then)
        viewer.rc.readonly, viewer.rc.pubkey, viewer.rc.fp = readonly, pubkey, fp
        viewer.rc.since = since
        self.metrics.viewers_linked.inc()
        self.log.info(
            "viewer linked",
            ip=viewer.ip,
            pid=viewer.proc.pid,
            session_pid=session.proc.pid,
            readonly=readonly,
            **context,
        )


def trusted_proxy(ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether `ip` (a connection's peer, after any PROXY header) is in one of `networks`."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in networks)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
