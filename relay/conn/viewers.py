"""The session process's viewers: each linked by a socketpair the master handed over.

`ViewerHandling` is the viewer half of `relay.conn.host.HostSession`: a viewer joining and leaving,
its link records (size, erase character, input), its keys through the input parser, the key
dispatcher and prompts into keys and commands for the host or local actions, and its frames. It
uses the session's `session`, `log`, `send_host`, `closing`, `max_viewers` and byte counters.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from jail import set_process_title
from relay.conn import link, presence
from relay.input.dispatch import KeyDispatcher, Local, Notice
from relay.input.parser import InputParser, escape_time_for
from relay.input.prompt import Done, Failed, ViewerPrompt
from relay.screen.render import ViewerScreen
from relay.tmate import messages as m
from relay.tmate.session import Session
from relay.tmux import options
from relay.tmux.args import getopt
from relay.tmux.formats import expand_current

FRAME_INTERVAL = 1 / 60  # at most this many frames a second per viewer
MESSAGE_TIME = 3.0  # seconds a status-line message stays
DEFAULT_MAX_VIEWERS = 64  # viewers per session unless --max-viewers says otherwise
MAX_INPUT_RECORD = 64 * 1024

ENTER_TERMINAL = b"\x1b[?1049h\x1b[H\x1b[2J"  # alternate screen, as tmux does
LEAVE_TERMINAL = b"\x1b[0m\x1b[?25h\x1b[?1049l"
DETACHED = LEAVE_TERMINAL + b"[detached]\r\n"


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
    since: float = 0.0  # when it first joined the session (Unix seconds), for the host's #{tmate_clients}
    fingerprint: str | None = None  # its key's, when it authenticated with one
    web: bool = False  # a browser's page: named so in the host's notices and #{tmate_clients}


class ViewerHandling:
    """The viewer half of the session loop (mixed into HostSession, which sets these)."""

    session: Session
    viewers: dict[int, Viewer]
    by_fd: dict[int, Viewer]
    next_client_id: int
    max_viewers: int
    host_size: tuple[int, int] | None
    closing: bool
    bytes_in: int
    bytes_out: int
    conn: Any  # relay.conn.process.Connection
    log: Any  # a structlog logger

    def send_host(self, msg) -> None:
        raise NotImplementedError

    def _add_viewer(
        self,
        fd: int,
        readonly: bool,
        ip: str,
        pubkey: str | None = None,
        relinked: bool = False,
        since: int = 0,
        web: bool = False,
    ) -> None:
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
            id=cid,
            sock=sock,
            readonly=readonly,
            ip=str(ip)[:64],
            parser=parser,
            dispatcher=dispatcher,
            web=web,
        )
        self.viewers[cid] = v
        self.by_fd[sock.fileno()] = v
        self.log.info(
            "viewer attached", client=cid, readonly=readonly, web=web, ip=v.ip, viewers=len(self.viewers)
        )
        self._update_title()
        presence.joined(self, v, pubkey, relinked, since)

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
        presence.left(self, v)
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
                    v.screen.invalidate()  # the next frame repaints everything,
                    v.dirty = True  # as soon as the link is writable, output or not
                return False
            except OSError:
                self._remove_viewer(v)
                return False
        return True

    def _render(self, v: Viewer, now: float) -> None:
        if v.screen is None:
            return  # no size from the viewer yet
        prompt = v.prompt.display(v.cols) if v.prompt is not None else None
        frame = v.screen.frame(self.session, message=v.message, prompt=prompt, share=True)
        v.dirty = False
        v.last_frame = now
        if frame:
            self._send_raw(v, frame)


def _discard_unread(sock: socket.socket, limit: int = 256) -> None:
    """Read what the viewer sent and nobody will handle. Closing a unix socket with unread data
    resets the peer, whose next read then fails before it gets the farewell queued for it."""
    try:
        for _ in range(limit):
            if not sock.recv(MAX_INPUT_RECORD):
                return
    except OSError:
        pass
