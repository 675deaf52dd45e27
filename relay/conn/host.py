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

import base64
import binascii
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from jail import set_process_title
from relay import control
from relay.conn import access, link
from relay.hostkeys import blob_fingerprint
from relay.input.dispatch import KeyDispatcher, Local, Notice
from relay.input.parser import InputParser, escape_time_for
from relay.input.prompt import Done, Failed, ViewerPrompt
from relay.screen.render import ViewerScreen, failed_cmd_message
from relay.tmate import messages as m
from relay.tmate.codec import HostDecoder, ProtocolError, encode
from relay.tmate.session import Session, SessionError
from relay.tmux import options
from relay.tmux.args import getopt
from relay.tmux.formats import expand_current

if TYPE_CHECKING:
    from relay.conn.process import Connection
    from relay.conn.ssh import Server

READ_CHUNK = 65536
HOST_READ_BUDGET = 1 << 20  # bytes of host data handled before serving viewers again
FRAME_INTERVAL = 1 / 60  # at most this many frames a second per viewer
MESSAGE_TIME = 3.0  # seconds a status-line message stays
DEFAULT_MAX_VIEWERS = 64  # viewers per session unless --max-viewers says otherwise
MAX_INPUT_RECORD = 64 * 1024

ENTER_TERMINAL = b"\x1b[?1049h\x1b[H\x1b[2J"  # alternate screen, as tmux does
LEAVE_TERMINAL = b"\x1b[0m\x1b[?25h\x1b[?1049l"
SERVER_EXITED = LEAVE_TERMINAL + b"[server exited]\r\n"
DETACHED = LEAVE_TERMINAL + b"[detached]\r\n"
RELAY_STOPPING = LEAVE_TERMINAL + b"[relay shutting down]\r\n"
SHUTDOWN_NOTICE = "relay shutting down"  # a NOTIFY: tmate shows it as "[tmate] relay shutting down"


@dataclass
class Viewer:
    id: int
    sock: socket.socket
    readonly: bool
    ip: str
    parser: InputParser  # escape-time follows the session's option, verase the viewer's terminal
    dispatcher: KeyDispatcher
    cols: int = 80
    rows: int = 24
    screen: ViewerScreen | None = None
    dirty: bool = True
    last_frame: float = 0.0
    message: str | None = None
    message_until: float = 0.0
    prompt: ViewerPrompt | None = None


class HostSession:
    def __init__(
        self, conn, chan: paramiko.Channel, session: Session, max_viewers: int = DEFAULT_MAX_VIEWERS
    ):
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

    # ------------------------------------------------------------------ host
    def send_host(self, msg) -> None:
        data = encode(msg, self.session.protocol or 6)
        self.chan.sendall(data)
        self.bytes_out += len(data)

    def _on_host_data(self) -> bool:
        """Handle what the host sent; False when the host is gone."""
        budget = HOST_READ_BUDGET
        while budget > 0:
            data = self.chan.recv(READ_CHUNK)
            if not data:
                return False
            budget -= len(data)
            self.bytes_in += len(data)
            for msg in self.decoder.feed(data):
                for out in self.session.handle(msg):
                    self.send_host(out)
                if isinstance(msg, m.FailedCmd):
                    v = self.viewers.get(msg.client_id)
                    if v is not None:
                        self._show(v, failed_cmd_message(msg.cause))
            if self.session.finished or not self.chan.recv_ready():
                break
        for v in self.viewers.values():
            v.dirty = True
        self._publish_access()
        if self.session.generation != self.sized_generation:
            self.sized_generation = self.session.generation
            self._update_host_size()  # an option such as `status` may have changed the size
        return not self.session.finished

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
            found = []
            for _type, b64 in keys:
                try:
                    found.append(blob_fingerprint(base64.b64decode(b64, validate=True)))
                except (binascii.Error, ValueError):
                    continue
            fps = sorted(set(found))
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

    # ------------------------------------------------------------------ viewers
    def _add_viewer(self, fd: int, readonly: bool, ip: str) -> None:
        sock = socket.socket(fileno=fd)
        limit = self.max_viewers
        if len(self.viewers) >= limit:
            self.log.warning(
                "connection refused",
                limit="max-viewers",
                reason=f"too many viewers (limit {limit})",
                viewer_ip=ip,
            )
            try:
                sock.send(link.EXIT + LEAVE_TERMINAL + b"Too many viewers in this session\r\n")
            finally:
                sock.close()
            return
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, link.SOCKET_BUFFER)
            except OSError:
                pass
        cid = self.next_client_id
        self.next_client_id += 1
        parser = InputParser(escape_time_for(self.session))
        dispatcher = KeyDispatcher(self.session, cid, readonly)
        v = Viewer(
            id=cid, sock=sock, readonly=readonly, ip=str(ip)[:64], parser=parser, dispatcher=dispatcher
        )
        self.viewers[cid] = v
        self.by_fd[sock.fileno()] = v
        self.log.info("viewer attached", client=cid, readonly=readonly, ip=v.ip, viewers=len(self.viewers))
        self._update_title()

    def _remove_viewer(self, v: Viewer, last: bytes | None = None) -> None:
        if self.viewers.pop(v.id, None) is None:
            return
        self.by_fd.pop(v.sock.fileno(), None)
        if last is not None:
            try:
                v.sock.send(link.EXIT + last)  # never waits: a stalled viewer just sees the end
            except OSError:
                pass
            _discard_unread(v.sock)
        v.sock.close()
        self.log.info("viewer detached", client=v.id, viewers=len(self.viewers))
        self._update_title()
        self._update_host_size()

    def _update_title(self) -> None:
        n = len(self.viewers)
        suffix = f" ({n} viewer{'s' if n != 1 else ''})" if n else ""
        set_process_title(f"pymate [{self.session.rw_token[:4]}...] host {self.conn.peer_ip}{suffix}")

    def _update_host_size(self) -> None:
        """RESIZE to the smallest read-write viewer, less its status line; -1,-1 for none."""
        if self.closing:
            return  # the session is over: the host gets nothing more
        sizes = [(v.cols, v.rows) for v in self.viewers.values() if not v.readonly and v.screen]
        if sizes:
            status = options.status_rows(self.session.option("status"))
            size = (min(c for c, _ in sizes), max(1, min(r for _, r in sizes) - status))
        else:
            size = (-1, -1)
        if size != self.host_size and (self.host_size is not None or size != (-1, -1)):
            self.host_size = size
            self.send_host(m.Resize(*size))

    def _show(self, v: Viewer, text: str) -> None:
        v.message = text
        v.message_until = time.monotonic() + MESSAGE_TIME
        v.dirty = True

    def _on_viewer_record(self, v: Viewer, now: float) -> None:
        try:
            record = v.sock.recv(MAX_INPUT_RECORD)
        except BlockingIOError:
            return
        except OSError:
            record = b""
        if not record:
            self._remove_viewer(v)
            return
        self.bytes_in += len(record)
        try:
            kind, payload = link.parse(record)
            if kind not in (link.RESIZE, link.INPUT, link.ERASE):
                raise link.LinkError(f"unexpected record {kind!r}")
        except link.LinkError as e:
            # A misbehaving viewer process loses its own link, never the session.
            self.log.warning("viewer dropped", client=v.id, reason=f"bad link record: {e}")
            self._remove_viewer(v)
            return
        if kind == link.RESIZE:
            cols, rows = payload
            cols, rows = max(1, cols), max(1, rows)
            if v.screen is None:
                v.screen = ViewerScreen(cols, rows)
                self._send_raw(v, ENTER_TERMINAL)
            elif (cols, rows) != (v.cols, v.rows):
                v.screen.resize(cols, rows)
            v.cols, v.rows = cols, rows
            v.dirty = True
            self._update_host_size()
        elif kind == link.ERASE:
            v.parser.verase = payload[0]  # the viewer's terminal's Backspace (from its pty-req)
        elif isinstance(payload, bytes):  # INPUT: the viewer's terminal input
            v.parser.escape_time = escape_time_for(self.session)  # the host may have changed it
            self._keys(v, v.parser.feed(payload, now), now)

    def _keys(self, v: Viewer, codes: list[int], now: float) -> None:
        for code in codes:
            if v.id not in self.viewers:
                return
            if v.prompt is not None:  # an open prompt takes every key
                self._prompt_key(v, code)
            else:
                self._act(v, v.dispatcher.key(code, now))

    def _act(self, v: Viewer, actions: list) -> None:
        for action in actions:
            if v.id not in self.viewers:
                return
            if isinstance(action, Local):
                self._local(v, action)
            elif isinstance(action, Notice):
                self._show(v, action.text)
            else:
                self.send_host(action)

    def _prompt_key(self, v: Viewer, code: int) -> None:
        if v.prompt is None:
            return
        outcome = v.prompt.key(code)
        v.dirty = True
        if outcome is None:
            return
        v.prompt = None
        if isinstance(outcome, Failed):
            self._show(v, outcome.message)
        elif isinstance(outcome, Done):
            for argv in outcome.commands:
                self._act(v, v.dispatcher.run_command(argv))

    def _local(self, v: Viewer, action: Local) -> None:
        """Commands that act on the viewer's own client rather than on the host."""
        name, argv = action.name, action.argv
        if name == "detach-client":
            self._remove_viewer(v, DETACHED)
        elif name in ("command-prompt", "confirm-before"):
            if v.prompt is None:
                make = (
                    ViewerPrompt.command_prompt if name == "command-prompt" else ViewerPrompt.confirm_before
                )
                v.prompt = make(argv, self.session)
                v.dirty = True
        elif name == "display-message":
            flags, words = getopt(argv[1:], "ctF")
            text = words[0] if words else flags.get("F")
            if isinstance(text, str) and text:
                self._show(v, expand_current(text, self.session))
        elif name == "refresh-client":
            if v.screen is not None:
                v.screen.invalidate()
            v.dirty = True
        elif name in ("suspend-client", "lock-client"):
            pass  # a remote viewer is never suspended or locked
        else:
            self._show(v, f"{name}: not available to viewers on this relay")

    def _send_raw(self, v: Viewer, data: bytes) -> bool:
        for record in link.output_records(data):
            try:
                self.bytes_out += v.sock.send(record)
            except BlockingIOError:
                if v.screen is not None:
                    v.screen.invalidate()  # the next frame repaints everything
                return False
            except OSError:
                self._remove_viewer(v)
                return False
        return True

    def _render(self, v: Viewer, now: float) -> None:
        if v.screen is None:
            return  # no size from the viewer yet
        prompt = v.prompt.display(v.cols) if v.prompt is not None else None
        frame = v.screen.frame(self.session, message=v.message, prompt=prompt)
        v.dirty = False
        v.last_frame = now
        if frame:
            self._send_raw(v, frame)

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
            timeout = self._timeout(now)
            wanted = [
                v.sock
                for v in self.viewers.values()
                if v.dirty and v.screen is not None and now >= v.last_frame + FRAME_INTERVAL
            ]
            readable, writable, _ = select.select(
                [self.chan, ctl, *(v.sock for v in self.viewers.values())], wanted, [], timeout
            )
            if self.chan in readable and not self._on_host_data():
                return "host finished the session" if self.session.finished else "host closed the connection"
            if ctl in readable:
                try:
                    new = ctl.receive_viewer()
                except control.MasterGone:
                    return "relay is shutting down"
                if new is not None:
                    self._add_viewer(new.fd, new.readonly, new.ip)
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

    def close(self, last: bytes) -> None:
        """Tell every viewer `last` and let it go. Never writes to the host (it may be gone: a
        killed host's channel is closed), and a viewer that cannot be told stops nobody else."""
        self.closing = True
        for v in list(self.viewers.values()):
            try:
                self._remove_viewer(v, last)
            except Exception as e:  # noqa: BLE001 - the other viewers must still be told
                self.log.warning("viewer not told", client=v.id, reason=f"{type(e).__name__}: {e}"[:200])


def _discard_unread(sock: socket.socket, limit: int = 256) -> None:
    """Read what the viewer sent and nobody will handle. Closing a unix socket with unread data
    resets the peer, whose next read then fails before it gets the farewell queued for it."""
    try:
        for _ in range(limit):
            if not sock.recv(MAX_INPUT_RECORD):
                return
    except OSError:
        pass


def run_host(conn: Connection, chan: paramiko.Channel, server: Server) -> int:
    rw_token, ro_token = conn.master.request_tokens()
    set_process_title(f"pymate [{rw_token[:4]}...] host {conn.peer_ip}")
    conn.log = conn.log.bind(session=rw_token[:4])
    conn.log.info("host session started", user=server.username, pubkey=server.pubkey)
    started = time.monotonic()
    session = Session(
        rw_token=rw_token, ro_token=ro_token, ssh_host=conn.cfg.ssh_host, ssh_port=conn.cfg.ssh_port
    )
    hs = HostSession(conn, chan, session, conn.cfg.max_viewers)
    hs.require_keys = conn.cfg.require_authorized_keys
    last = SERVER_EXITED
    code = 0
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
        try:
            hs.close(last)
        finally:
            session.close()  # frees every pane's terminal before the log line is made
            hs.report_stats(time.monotonic(), final=True)
    extra: dict[str, object] = {"limit": limit} if limit else {}
    extra.update(duration=round(time.monotonic() - started, 3), bytes_in=hs.bytes_in, bytes_out=hs.bytes_out)
    extra["viewers"] = hs.next_client_id - 1  # viewers seen over the session's life
    (conn.log.warning if code else conn.log.info)("host session ended", reason=reason, **extra)
    return code
