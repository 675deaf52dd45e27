"""The host role: this connection process *is* the session.

It decodes the host's messages into the session state (one terminal model per pane), and serves
the session's viewers, each linked to it by a socketpair the master handed over: their input
becomes keys and commands for the host, and each gets frames rendered at its own size.

Scheduling: the host's output is never throttled by rendering. Host data is consumed as it
comes; a viewer gets a frame when something changed, its link can take it, and its previous
frame is at least FRAME_INTERVAL old (bursts coalesce: a viewer never needs every intermediate
state). A stalled viewer's link fills up; it then gets no frames until it drains, and the next
frame it gets is a diff against what it last received, so it catches up in one step.
"""

from __future__ import annotations

import hashlib
import select
import time
from typing import TYPE_CHECKING

import paramiko

from jail import hotcode, set_process_title
from relay import control
from relay.conn import access, link, presence
from relay.conn.reconnect import HostReconnection, connection_lost
from relay.conn.viewers import (
    DEFAULT_MAX_VIEWERS,
    FRAME_INTERVAL,
    LEAVE_TERMINAL,
    Viewer,
    ViewerHandling,
)
from relay.hostkeys import b64_fingerprint
from relay.screen.render import failed_cmd_message
from relay.tmate import messages as m
from relay.tmate.codec import HostDecoder, ProtocolError, encode
from relay.tmate.session import Session, SessionError

if TYPE_CHECKING:
    from relay.conn.process import Connection
    from relay.conn.ssh import Server
    from relay.conn.wire import Channel, Wire

READ_CHUNK = 65536
HOST_READ_BUDGET = 1 << 20  # bytes of host data handled before serving viewers again
SERVER_EXITED = LEAVE_TERMINAL + b"[server exited]\r\n"
RELAY_STOPPING = LEAVE_TERMINAL + b"[relay shutting down]\r\n"
SHUTDOWN_NOTICE = "relay shutting down"  # a NOTIFY: tmate shows it as "[tmate] relay shutting down"


class HostSession(ViewerHandling):
    """The session loop: the host's channel, the control socket and every viewer's link."""

    def __init__(self, conn, chan: Channel, session: Session, max_viewers: int = DEFAULT_MAX_VIEWERS):
        self.conn = conn
        self.require_keys = False  # -A: viewers only with the host's `tmate -a` keys (run_host sets it)
        self.unjoinable = False  # -A refused this session (relay.conn.access): never joinable
        self.max_viewers = max_viewers  # the master refuses first (--max-viewers); this holds if it raced
        self.chan = chan
        self.session = session
        self.decoder = HostDecoder()
        self.viewers: dict[int, Viewer] = {}
        self.by_fd: dict[int, Viewer] = {}
        self.next_client_id = 1
        self.host_size: tuple[int, int] | None = None  # last RESIZE sent
        self.access_sent: tuple | None = None  # last access state told to the master
        self.access_generation: int | None = None  # session.generation it was computed at
        self.sized_generation: int | None = None  # session.generation the host size was checked at
        self.closing = False  # close() has begun: nothing more is sent to the host
        self.log = conn.log
        self.stats_sent = (0, 0)  # (bytes in, bytes out) last reported to the master
        self.stats_due = 0.0  # when the next stats message may go
        self.bytes_in = self.bytes_out = 0  # tmate messages and link records from / to host and viewers
        self.recon = HostReconnection(self)  # reconnection data, RECONNECT (relay.conn.reconnect)
        # When to tell the master the code this process ran (jail/hotcode.py), per kind it
        # still wanted at the fork (control.LEARN_KINDS): LEARN_AFTER seconds after the host's
        # READY (host) and after its first viewer joined (host-viewed); 0.0: not started yet.
        self.learn_due: dict[str, float] = {k: 0.0 for k in ("host", "host-viewed") if hotcode.wanted(k)}

    # ------------------------------------------------------------------ host
    def send_host(self, msg) -> None:
        data = encode(msg, self.session.protocol or 6)
        self.chan.sendall(data)
        self.bytes_out += len(data)

    def _on_host_data(self) -> bool:
        """Handle what the host sent; False when the host is gone."""
        if not self.chan.poll():
            return True  # half a packet, or no data in it (a window adjustment, a keepalive)
        budget = HOST_READ_BUDGET
        while budget > 0:
            data = self.chan.recv(READ_CHUNK)
            if not data:
                return False
            budget -= len(data)
            self.bytes_in += len(data)
            for msg in self.decoder.feed(data):
                ready = self.session.host_ready
                for out in self.recon.replies(msg, self.session.handle(msg)):
                    self.send_host(out)
                if self.session.names_wanted is not None:
                    self._name_session()
                if isinstance(msg, m.HostReady) and not ready and not self.session.resumed:
                    presence.ready(self)  # a resumed one hears from the master (presence.back)
                self.recon.after(time.monotonic())
                presence.maybe_kick(self, msg, ready)
                if isinstance(msg, m.FailedCmd):
                    v = self.viewers.get(msg.client_id)
                    if v is not None:
                        self._show(v, failed_cmd_message(msg.cause))
            if self.session.finished or not self.chan.recv_ready():
                break
        for out in self.recon.flush():  # a HEADER alone: its replies wait no longer
            self.send_host(out)
        for v in self.viewers.values():
            v.dirty = True
        self._publish_access()
        if self.session.generation != self.sized_generation:
            self.sized_generation = self.session.generation
            self._update_host_size()  # an option such as `status` may have changed the size
        return not self.session.finished

    def _name_session(self) -> None:
        """The host asked for a named session (at its READY): the master's answer, then the lines."""
        wanted = self.session.names_wanted
        assert wanted is not None
        key = hashlib.sha256(wanted.api_key.encode()).hexdigest() if wanted.api_key else None  # not the key
        rw, ro, notice = self.conn.master.request_names(wanted.rw, wanted.ro, key)
        for out in self.session.names_given(rw, ro, notice):
            self.send_host(out)
        self.conn.log = self.log = self.conn.log.bind(session=rw[:4])  # as the master logs it
        self._update_title()

    def _publish_access(self) -> None:
        """Tell the master once the host is ready (viewers may join from then on, as with the C
        server, so `tmate -a` keys are loaded first), and which keys viewers must hold, if any."""
        if not self.session.host_ready or self.session.generation == self.access_generation:
            return  # pane output changes nothing here
        self.access_generation = self.session.generation
        keys = self.session.authorized_keys
        if self.unjoinable or (self.require_keys and not keys):
            if not self.unjoinable:
                self.unjoinable = access.refuse_without_keys(self.send_host, self.log)
            return
        fps = None
        if keys is not None:
            fps = sorted({fp for _type, b64 in keys if (fp := b64_fingerprint(b64)) is not None})
            if len(fps) > control.MAX_AUTHORIZED_KEYS:
                self.log.warning(
                    "authorized keys cut",
                    limit="authorized-keys",
                    reason=f"more than {control.MAX_AUTHORIZED_KEYS} keys",
                    keys=len(fps),
                )
                fps = fps[: control.MAX_AUTHORIZED_KEYS]
        state = (True, tuple(fps) if fps is not None else None)
        if state == self.access_sent:
            return
        self.conn.master.publish_access(fps)
        if fps is not None:
            self.log.info("viewer access restricted to authorized keys", keys=len(fps))
        self.access_sent = state

    # ------------------------------------------------------------------ loop
    def _timeout(self, now: float) -> float | None:
        deadlines = []
        for v in self.viewers.values():
            # A frame that is due waits for the link to be writable (select's write set),
            # not for a timeout: a stalled viewer must not make this loop spin.
            if v.dirty and v.screen is not None and v.last_frame + FRAME_INTERVAL > now:
                deadlines.append(v.last_frame + FRAME_INTERVAL)
            if v.message is not None:
                deadlines.append(v.message_until)
            for pending in (v.parser.pending_timeout(now), v.dispatcher.pending_timeout(now)):
                if pending is not None:
                    deadlines.append(now + pending)
        if (self.bytes_in, self.bytes_out) != self.stats_sent:
            deadlines.append(self.stats_due)
        if self.recon.due is not None:
            deadlines.append(self.recon.due)
        deadlines.extend(due for due in self.learn_due.values() if due)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def report_stats(self, now: float, final: bool = False) -> None:
        """The running byte totals to the master (its metrics), at most every STATS_INTERVAL."""
        totals = (self.bytes_in, self.bytes_out)
        if totals != self.stats_sent and (final or now >= self.stats_due):
            self.conn.master.report_stats(*totals)
            self.stats_sent = totals
            self.stats_due = now + control.STATS_INTERVAL

    def run(self) -> str:
        ctl = self.conn.master
        while True:
            now = time.monotonic()
            timeout = 0.0 if self.chan.recv_ready() else self._timeout(now)
            wanted = [
                v.sock
                for v in self.viewers.values()
                if v.dirty and v.screen is not None and now >= v.last_frame + FRAME_INTERVAL
            ]
            readable, writable, _ = select.select(
                [self.chan, ctl, *(v.sock for v in self.viewers.values())], wanted, [], timeout
            )
            if (self.chan in readable or self.chan.recv_ready()) and not self._on_host_data():
                return "host finished the session" if self.session.finished else "host closed the connection"
            if ctl in readable:
                try:
                    new = ctl.receive_viewer()
                except control.MasterGone:
                    return "relay is shutting down"
                if isinstance(new, control.ReconnectionData):
                    self.recon.datum(new.data)
                elif isinstance(new, control.Relinked):
                    presence.back(self, new.left, new.more)
                elif new is not None:
                    self._learn_before_viewers()
                    self._add_viewer(
                        new.fd, new.readonly, new.ip, new.pubkey, new.relinked, new.since, new.web
                    )
            now = time.monotonic()
            for sock in readable:
                v = self.by_fd.get(sock.fileno()) if sock not in (self.chan, ctl) else None
                if v is not None:
                    self._on_viewer_record(v, now)
            for v in list(self.viewers.values()):
                flushed = v.parser.flush(now)
                if flushed:
                    self._keys(v, flushed, now)
                if v.id in self.viewers and v.dispatcher.expire(now):
                    v.dirty = True
            for v in list(self.viewers.values()):
                if v.message is not None and now >= v.message_until:
                    v.message = None
                    v.dirty = True
                if v.dirty and v.sock in writable and v.id in self.viewers:
                    self._render(v, now)
            self.report_stats(now)
            self.recon.tick(now)
            self._learn(now)

    def _learn_before_viewers(self) -> None:
        """The host report goes before the first viewer's code runs, LEARN_AFTER or not: the
        master packs it first, the viewers' code (the host-viewed report) after it, apart, so a
        session nobody views writes into the pages of what it runs, not of what a viewer would."""
        if self.learn_due.get("host") and not self.viewers:
            self._report_hot("host")

    def _learn(self, now: float) -> None:
        """The code this process ran, to the master, once per kind (jail/hotcode.py)."""
        for kind, due in list(self.learn_due.items()):
            if not due:
                started = self.session.host_ready if kind == "host" else bool(self.viewers)
                if started:
                    self.learn_due[kind] = now + control.LEARN_AFTER
            elif now >= due:
                self._report_hot(kind)

    def _report_hot(self, kind: str) -> None:
        del self.learn_due[kind]
        self.conn.master.report_hot(kind, hotcode.ran())

    def close(self, last: bytes | None) -> None:
        """Tell every viewer `last` (None: nothing, they wait for the host's return) and let it go. Never writes to the host (it may be gone: a
        killed host's channel is closed), and a viewer that cannot be told stops nobody else."""
        self.closing = True
        for v in list(self.viewers.values()):
            try:
                self._remove_viewer(v, last)
            except Exception as e:  # noqa: BLE001 - the other viewers must still be told
                self.log.warning("viewer not told", client=v.id, reason=f"{type(e).__name__}: {e}"[:200])


def run_host(conn: Connection, chan: Wire, server: Server) -> int:
    rw_token, ro_token = conn.master.request_tokens()
    set_process_title(f"pymate [{rw_token[:4]}...] host {conn.peer_ip}")
    conn.log = conn.log.bind(session=rw_token[:4])
    conn.log.info("host session started", user=server.username, pubkey=server.pubkey)
    started = time.monotonic()
    session = Session(
        rw_token=rw_token,
        ro_token=ro_token,
        ssh_host=conn.cfg.ssh_host,
        ssh_port=conn.cfg.ssh_port,
        named_sessions=conn.cfg.named_sessions,  # --api-keys: names come from the master
        web_url=None if conn.cfg.require_authorized_keys else conn.cfg.web_url,  # -A: ssh only
    )
    hs = HostSession(conn, chan, session, conn.cfg.max_viewers)
    hs.require_keys = conn.cfg.require_authorized_keys
    last = SERVER_EXITED
    code = 0
    reason, keep = "", False  # keep: the host's connection was lost (relay.conn.reconnect)
    limit: str | None = None  # the limit that ended the session, if one did
    try:
        reason = hs.run()
        if reason == "relay is shutting down":
            last = RELAY_STOPPING
            try:  # the host's status line and show-messages; it then sees the connection close
                hs.send_host(m.Notify(SHUTDOWN_NOTICE))
            except (OSError, EOFError, paramiko.SSHException):
                pass
    except (ProtocolError, SessionError, link.LinkError) as e:
        reason = f"protocol violation: {e}"
        code = 1
    except (OSError, EOFError, paramiko.SSHException) as e:
        reason = f"connection lost: {e or type(e).__name__}"
    except MemoryError as e:  # the jail's cap (--session-memory): Python's or the terminal engine's
        reason = f"memory limit reached: {e or 'an allocation failed'}"
        code, limit = 1, "session-memory"
    finally:
        if limit is not None:
            # What follows allocates (the master's message is packed into a new buffer): the
            # terminals' memory goes back first, or that allocation fails too under the cap.
            session.close()
        lost = reason == "host closed the connection" or reason.startswith("connection lost")
        how = connection_lost(chan) if code == 0 and lost else None
        reason, keep = how or reason, how is not None
        try:
            hs.close(None if keep else last)
            conn.master.end_session(keep)
        finally:
            session.close()  # frees every pane's terminal before the log line is made
            hs.report_stats(time.monotonic(), final=True)
    extra: dict[str, object] = {"limit": limit} if limit else {}
    extra.update(duration=round(time.monotonic() - started, 3), bytes_in=hs.bytes_in, bytes_out=hs.bytes_out)
    extra["viewers"] = hs.next_client_id - 1  # viewers seen over the session's life
    extra["ssh"] = chan.mode  # who moved the channel's bytes (relay.conn.wire)
    if keep:
        extra["held"] = conn.cfg.reconnect_window  # seconds the master holds it for the host
    (conn.log.warning if code else conn.log.info)("host session ended", reason=reason, **extra)
    return code
