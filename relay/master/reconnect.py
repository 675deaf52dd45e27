"""Reconnection, the master's side: the datum a host gets, and a session held for its host.

The datum (SET_ENV `tmate_reconnection_data`) is `PAYLOAD.MAC`: PAYLOAD is base64url of a JSON
array [version, session id, rw token, ro token, generation, issue time (Unix seconds)], MAC the
base64url HMAC-SHA256 of PAYLOAD's text under the relay's reconnection key. The master checks the
MAC (constant-time) before it decodes anything, so the only client bytes it looks at unverified
are a bounded ASCII string split at one dot; what it then decodes, it wrote itself.

A datum is good for RECONNECT_REFRESH + the reconnect window after its issue: a session process
asks for a fresh one every RECONNECT_REFRESH, so a host that loses its connection holds one at
most that old, and it is good for the whole window (and after a restart of the relay, whose key
is on disk). The generation goes up by one on every takeover: an older datum is stale.

The key (32 bytes, `keys/reconnect.key`, 0600) is read straight into a bytearray, handed to
OpenSSL's one-shot HMAC without a copy, and wiped in every forked child (os.register_at_fork), so
it never leaves the master: a jailed connection process holds no copy of it.

`Reconnection` is the part of `relay.master.server.Master` that answers `resume`, `rdata` and
`end`, holds a session whose host is gone (its tokens reserved, its viewers waiting unlinked),
relinks the waiting viewers to the host's new session process once it is ready (`access`), and
ends a held session after the window (`ended` to its viewers).

A viewer the host had that leaves while its host is away cannot be announced then: nobody is
there to tell. The master keeps its address (at most control.MAX_LEFT, the rest counted) with the
session and hands them to the new session process after the relinks (`relinked`), which tells
the host in tmate.io's words and publishes the count and list as they are now.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay import control, log
from relay.master.web import SSH_ONLY

if TYPE_CHECKING:
    from relay.master.server import Child, RelayConfig

KEY_BYTES = 32
DATA_VERSION = 1
CLOCK_SKEW = 60  # seconds an issue time may lie in the future (the clock stepped back)
SERVER_EXITED = "[server exited]"
# The last line of a viewer that waited for a host which, back, admits only its authorized keys
NOT_AUTHORIZED = "[this session admits only its host's authorized keys]"
HOST_GONE = "host did not reconnect within the reconnect window"

__all__ = ["Datum", "HmacKey", "ReconnectState", "Reconnection", "check_datum", "make_datum", "outcome_of"]
# A refusal's reason (as check_datum and the takeover rule word it) -> its metrics outcome.
_OUTCOMES = (
    ("forged ", "forged"),
    ("malformed ", "malformed"),
    ("reconnection data of another version", "malformed"),
    ("expired ", "expired"),
    ("stale ", "stale"),
    ("another session holds", "taken"),
)


class HmacKey:
    """The reconnection key: in the master only (wiped in forked children)."""

    def __init__(self, buf: bytearray):
        self._buf = buf
        os.register_at_fork(after_in_child=self.wipe)

    @classmethod
    def load(cls, path: str) -> HmacKey:
        """Read the key file into a fresh buffer (no intermediate bytes object)."""
        buf = bytearray(KEY_BYTES)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            n = os.readv(fd, [buf])
            extra = os.read(fd, 1)
        finally:
            os.close(fd)
        if n != KEY_BYTES or extra:
            buf[:] = bytes(KEY_BYTES)
            raise ValueError(f"{path}: a reconnection key has exactly {KEY_BYTES} bytes")
        return cls(buf)

    @classmethod
    def ephemeral(cls) -> HmacKey:
        """A key for this run only (no key file): reconnections work, a restart forgets them."""
        buf = bytearray(KEY_BYTES)  # read straight into it: no bytes object left in the heap
        with open("/dev/urandom", "rb", buffering=0) as f:
            f.readinto(buf)
        return cls(buf)

    def mac(self, text: str) -> str:
        digest = hmac.digest(self._buf, text.encode("ascii"), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def wipe(self) -> None:
        self._buf[:] = bytes(len(self._buf))


@dataclass(eq=False)
class ReconnectState:
    """What the master keeps for reconnection on each connection (relay.master.server.Child.rc)."""

    sid: str = ""  # a host: the session's identity, kept over reconnections
    generation: int = 0  # a host: takeovers so far
    end: bool | None = None  # a host: how it said its session ended (True: host lost, hold it)
    held_until: float | None = None  # a host held for its host's return until then (monotonic)
    heirloom: set[int] = field(default_factory=set)  # a resumed host: viewers to relink when ready
    resumed: bool = False  # a resumed host not ready yet: its relinks (and `relinked`) are due
    left: list[str] = field(default_factory=list)  # a host away: addresses of viewers it had that left
    left_more: int = 0  # ... and how many more than control.MAX_LEFT
    readonly: bool = False  # a viewer: joined read-only (relinked as such)
    pubkey: str | None = None  # a viewer: its key, as it joined
    fp: str | None = None  # a viewer: that key's fingerprint (checked again at its relink)
    since: int = 0  # a viewer: when a session process first took it (Unix seconds); 0: not yet


@dataclass(frozen=True)
class Datum:
    sid: str  # the session's identity, kept over reconnections
    rw: str
    ro: str
    generation: int
    issued: int  # Unix seconds


def make_datum(key: HmacKey, d: Datum) -> str:
    body = json.dumps([DATA_VERSION, d.sid, d.rw, d.ro, d.generation, d.issued], separators=(",", ":"))
    payload = base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode("ascii")
    return f"{payload}.{key.mac(payload)}"


def check_datum(key: HmacKey, data: str, now: float, lifetime: float) -> Datum | str:
    """The datum, or why it is refused (the host is told)."""
    if len(data) > control.MAX_RECONNECT_DATA or not data.isascii() or data.count(".") != 1:
        return "malformed reconnection data"
    payload, mac = data.split(".")
    if not hmac.compare_digest(key.mac(payload), mac):
        return "forged reconnection data (not made by this relay's key)"
    try:  # authenticated: the master wrote this itself
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        version, sid, rw, ro, generation, issued = fields
    except (ValueError, TypeError, binascii.Error):
        return "malformed reconnection data"
    if version != DATA_VERSION:
        return "reconnection data of another version"
    if issued > now + CLOCK_SKEW or now > issued + lifetime:
        return "expired reconnection data"
    return Datum(sid, rw, ro, generation, issued)


def outcome_of(reason: str) -> str:
    """The class of a refused datum, for pymate_reconnections_total (relay.master.metrics)."""
    return next((outcome for prefix, outcome in _OUTCOMES if reason.startswith(prefix)), "malformed")


class Reconnection:
    """Reconnection handling of the master (mixed into Master, which provides the state)."""

    cfg: RelayConfig
    log: Any
    metrics: Any  # relay.master.metrics.Metrics
    children: dict[int, Child]
    registry: dict[str, Child]
    deadlines: list
    _seq: Any
    _stopping: bool
    log_context: Any

    def _send(self, child: Child, name: str, *args: object) -> None:
        raise NotImplementedError

    def _init_reconnection(self) -> None:
        path = self.cfg.reconnect_key
        self.hmac_key = HmacKey.ephemeral()
        if path:
            try:
                self.hmac_key = HmacKey.load(path)
            except (OSError, ValueError) as e:
                reason = f"{path}: {e.strerror if isinstance(e, OSError) else e}"
                self.log.warning(
                    "reconnection key unusable", reason=f"{reason}; a restart forgets reconnections"
                )

    @property
    def _lifetime(self) -> float:
        return self.cfg.reconnect_window + control.RECONNECT_REFRESH

    # ------------------------------------------------------------------ messages
    def _on_rdata(self, child: Child) -> None:
        if len(child.tokens) != 2:
            raise ValueError("rdata before the session has tokens")
        if not child.rc.sid:
            child.rc.sid = secrets.token_hex(8)
        rw, ro = child.tokens
        datum = Datum(child.rc.sid, rw, ro, child.rc.generation, int(time.time()))
        self._send(child, "rdata", make_datum(self.hmac_key, datum))

    def _on_end(self, child: Child, keep: bool) -> None:
        child.rc.end = keep

    def _on_resume(self, child: Child, data: str) -> None:
        if len(child.tokens) != 2 or "resume" in child.seen:
            raise ValueError("resume before the session has tokens, or twice")
        child.seen.add("resume")
        d = check_datum(self.hmac_key, data, time.time(), self._lifetime)
        reason = d if isinstance(d, str) else self._takeover_refusal(child, d)
        context = self.log_context.get(child, {})
        if reason is not None:
            self.log.info("reconnection refused", ip=child.ip, pid=child.proc.pid, reason=reason, **context)
            self.metrics.reconnections.labels(outcome_of(reason)).inc()
            self._send(child, "resumed", *child.tokens, reason)
            return
        assert isinstance(d, Datum)
        old = self.registry.get(d.rw)
        for t in child.tokens:
            if self.registry.get(t) is child:
                del self.registry[t]
        child.tokens, child.rc.sid, child.rc.generation = (d.rw, d.ro), d.sid, d.generation + 1
        self.registry[d.rw] = self.registry[d.ro] = child
        context["session"] = d.rw[: log.SHOWN]
        state = "unknown to this relay (restarted?)"
        if old is not None:
            state = "held" if old.rc.held_until is not None else "live"
            child.rc.heirloom, old.viewers = old.viewers, set()
            child.rc.left, child.rc.left_more = old.rc.left, old.rc.left_more  # who left while away
            old.rc.left, old.rc.left_more = [], 0
            for pid in child.rc.heirloom:  # they wait for this process now (_viewer_gone)
                if (v := self.children.get(pid)) is not None:
                    v.session = child
            old.rc.held_until = None
            old.tokens = ()
            # Until the new process's `access` says which keys its viewers need (tmate -a), the
            # old session's hold: a viewer arriving in between is checked against those.
            child.authorized = old.authorized
            if state == "live":  # the relay had not noticed the old connection die yet
                self._kill(old, "superseded: its host reconnected")
        self.log.info(
            "host reconnected",
            ip=child.ip,
            pid=child.proc.pid,
            generation=child.rc.generation,
            session_was=state,
            viewers=len(child.rc.heirloom),
            **context,
        )
        self.metrics.reconnections.labels("taken_over").inc()
        child.rc.resumed = True
        self._send(child, "resumed", d.rw, d.ro, None)

    def _kill(self, child: Child, reason: str, limit: str | None = None) -> None:
        raise NotImplementedError

    def _takeover_refusal(self, child: Child, d: Datum) -> str | None:
        """Why this datum may not take over its tokens, or None."""
        holders = {h for h in (self.registry.get(d.rw), self.registry.get(d.ro)) if h not in (None, child)}
        if not holders:
            return None  # free: a relay restarted, or a window long passed
        old = holders.pop()
        assert old is not None
        if holders or old.tokens != (d.rw, d.ro) or old.rc.sid != d.sid:
            return "another session holds these tokens now"
        if d.generation < old.rc.generation:
            return f"stale reconnection data (generation {d.generation}, now {old.rc.generation})"
        return None

    # ------------------------------------------------------------------ holding
    def _hold_session(self, child: Child) -> bool:
        """A host's session process is gone: hold its session for the window (True), or let
        its viewers go (False)."""
        child.viewers |= child.rc.heirloom
        child.rc.heirloom = set()
        # Only a host that was given a datum (its sid) can come back for its session.
        if (
            self._stopping
            or child.killed
            or child.rc.end is False
            or not child.rc.sid
            or len(child.tokens) != 2
        ):
            if self._stopping or child.rc.end is False:  # its viewers were told, or the stop tells them
                child.viewers = set()
            self._release_viewers(child)
            return False
        window = self.cfg.reconnect_window
        child.joinable = False
        child.rc.held_until = time.monotonic() + window
        heapq.heappush(self.deadlines, (child.rc.held_until, next(self._seq), child))
        reason = "host connection lost" if child.rc.end else "session process died"
        self.log.info(
            "session held for reconnection",
            pid=child.proc.pid,
            ip=child.ip,
            reason=reason,
            window=window,
            viewers=len(child.viewers),
            **self.log_context.get(child, {}),
        )
        return True

    def _hold_expired(self, child: Child) -> None:
        if child.rc.held_until is None or child.rc.held_until > time.monotonic():
            return  # taken over, or a later hold
        child.rc.held_until = None
        child.rc.left, child.rc.left_more = [], 0
        for t in child.tokens:
            if self.registry.get(t) is child:
                del self.registry[t]
        child.tokens = ()
        self.metrics.reconnections.labels("window_expired").inc()
        self.log.info(
            "host session ended",
            pid=child.proc.pid,
            ip=child.ip,
            reason=HOST_GONE,
            limit="reconnect-window",
            viewers=len(child.viewers),
            **self.log_context.get(child, {}),
        )
        self._release_viewers(child)

    def _release_viewers(self, child: Child) -> None:
        """Viewers still counted with a session that is over: a last line (a viewer waiting
        for its host shows it; one already told by the session process is on its way out)."""
        data = control.encode(control.TO_CONNECTION, "ended", SERVER_EXITED)
        for pid in child.viewers:
            v = self.children.get(pid)
            if v is not None and v.ctl.fileno() >= 0:
                try:
                    v.ctl.send(data)
                except OSError:
                    pass
            if v is not None:
                v.session = None
        child.viewers = set()

    def _may_log_in(self, token: str, fp: str | None) -> bool:
        raise NotImplementedError

    def _join_waiting(
        self, viewer: Child, session: Child, token: str, pubkey: str | None, fp: str | None
    ) -> bool:
        """A viewer joins a session whose host is reconnecting (held, or resumed and not ready
        yet): it gets a link whose other end is closed at once, so it waits, as the viewers that
        were there, for its relink. False when the session is not reconnecting (or the viewer may
        not join it: the ordinary refusal follows)."""
        waiting = self._waiting(session)
        if session.rc.held_until is None and not waiting:
            return False
        if not self._may_log_in(token, fp) or len(waiting) >= self.cfg.max_viewers:
            return False
        readonly = token == session.tokens[1]
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            msg = control.encode(control.TO_CONNECTION, "joined", readonly)
            control.send_with_fd(viewer.ctl, msg, ends[1].fileno())
        except OSError as e:
            self._kill(viewer, f"cannot hand the link to the viewer: {e}")
            return True
        finally:
            ends[0].close()
            ends[1].close()
        waiting.add(viewer.proc.pid)
        viewer.session = session
        viewer.rc.readonly, viewer.rc.pubkey, viewer.rc.fp = readonly, pubkey, fp
        context = self.log_context.setdefault(viewer, {})
        context["session"] = session.tokens[0][: log.SHOWN]
        self.log.info(
            "viewer waiting for its host", ip=viewer.ip, pid=viewer.proc.pid, readonly=readonly, **context
        )
        return True

    @staticmethod
    def _waiting(session: Child) -> set[int]:
        """The viewers waiting for the host of `session`: all of a held session's (its relinks
        were merged into them when it was held), a resumed one's not relinked yet."""
        return session.viewers if session.rc.held_until is not None else session.rc.heirloom

    def _viewer_gone(self, viewer: Child) -> None:
        """A viewer's connection ended: off its session's books. One its host had (linked before
        the host went away: `since`) that was waiting for the host's return is remembered for the
        host (`relinked`)."""
        session, pid = viewer.session, viewer.proc.pid
        if session is None:
            return
        viewer.session = None
        waiting = pid in self._waiting(session)
        session.viewers.discard(pid)
        session.rc.heirloom.discard(pid)
        if not waiting or not viewer.rc.since:
            return
        if len(session.rc.left) < control.MAX_LEFT:
            session.rc.left.append(viewer.ip)
        else:
            session.rc.left_more += 1
        self.log.info(
            "viewer left while its host was away",
            ip=viewer.ip,
            pid=pid,
            **self.log_context.get(viewer, {}),
        )

    @staticmethod
    def _not_admitted(session: Child, v: Child) -> tuple[str, str] | None:
        """Why a waiting viewer may not be linked to the resumed session, now that its keys are
        known (its `access`), and the viewer's last line; None when it may."""
        if session.authorized is None:
            return None
        if v.web:
            return "web viewer of an ssh-only session (tmate -a)", SSH_ONLY
        if v.rc.fp is None or v.rc.fp not in session.authorized:
            return "key not among the session's authorized keys", NOT_AUTHORIZED
        return None

    def _relink(self, session: Child) -> None:
        """The resumed session is ready: link the viewers that waited for it, those its host had
        first (the ones that joined meanwhile are announced with the count as it will be), then
        tell it who left while its host was away (`relinked`)."""
        session.rc.resumed = False
        waiting, session.rc.heirloom = session.rc.heirloom, set()
        children = [v for pid in waiting if (v := self.children.get(pid)) is not None]
        for v in sorted(children, key=lambda v: v.rc.since or float("inf")):
            pid = v.proc.pid
            if v.killed or v.ctl.fileno() < 0:
                continue
            refusal = self._not_admitted(session, v)
            if refusal is not None:  # the resumed host's keys (tmate -a) leave this one out
                self.log.info("viewer refused", pid=pid, ip=v.ip, reason=refusal[0])
                self._send(v, "ended", refusal[1])
                v.session = None  # it is on nobody's books: its exit counts for no session
                continue
            # One that joined while its host was away is new to the host: announced, from now.
            relinked, v.rc.since = v.rc.since > 0, v.rc.since or int(time.time())
            ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                args = (v.rc.readonly, v.ip, v.rc.pubkey, relinked, v.rc.since, v.web)
                msg = control.encode(control.TO_CONNECTION, "viewer", *args)
                control.send_with_fd(session.ctl, msg, ends[0].fileno())
                msg = control.encode(control.TO_CONNECTION, "relink", v.rc.readonly)
                control.send_with_fd(v.ctl, msg, ends[1].fileno())
            except OSError as e:
                self.log.warning("viewer not relinked", pid=pid, reason=str(e)[:200])
                continue
            finally:
                ends[0].close()
                ends[1].close()
            session.viewers.add(pid)
            v.session = session
            self.log.info("viewer relinked", pid=pid, ip=v.ip, session_pid=session.proc.pid)
        self._send(session, "relinked", session.rc.left, session.rc.left_more)
        session.rc.left, session.rc.left_more = [], 0
