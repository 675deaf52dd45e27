"""The connection process's end of the control socket: `Client`, one method per message it sends
or receives (relay.control describes them).
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from relay.control.codec import decode, encode, log_fields
from relay.control.table import (
    ANSWER_TIMEOUT,
    KEY_SHA256,
    MAX_CONTROL_MESSAGE,
    MAX_COUNT,
    MAX_HOT_CODE,
    MAX_IP,
    MAX_LOG_EVENT,
    MAX_NAME_FIELD,
    MAX_PUBKEY,
    MAX_RECONNECT_DATA,
    MAX_USER,
    TO_CONNECTION,
    TO_MASTER,
    ControlError,
    Message,
    is_fingerprint,
)


class MasterGone(ControlError):
    """The master closed the control socket (it is shutting down)."""


class Refused(Exception):
    """The master refused this connection's request for a role (a limit); str(e) is the line to
    show the client."""


# ---------------------------------------------------------------------- connection side
@dataclass(frozen=True)
class NewViewer:
    """A viewer the master linked to this session: the session's end of the link is `fd`."""

    readonly: bool
    ip: str
    pubkey: str | None
    fd: int
    relinked: bool = False  # linked again after its host reconnected: the host knows it already
    since: int = 0  # when it first joined this session (Unix seconds, the master's clock)
    web: bool = False  # a browser's page (the master's web listener took it), not an ssh client


@dataclass(frozen=True)
class ReconnectionData:
    """The master's answer to `rdata`: the datum for the host's SET_ENV."""

    data: str


@dataclass(frozen=True)
class Relinked:
    """A resumed session's viewers that waited are relinked (their `viewer`s came first); `left`:
    the addresses of those the host had that left while it was away, `more`: how many others."""

    left: tuple[str, ...]
    more: int


class Client:
    """The connection process's end of the control socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def _send(self, name: str, *args: object) -> None:
        self.sock.send(encode(TO_MASTER, name, *args))

    def _receive(self) -> tuple[Message, list, list[int]]:
        data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_CONTROL_MESSAGE + 1, 4)
        if not data:
            _close_all(fds)
            raise MasterGone("the master closed the control socket")
        try:
            spec, args = decode(TO_CONNECTION, data)
            if len(fds) != int(spec.fd):
                raise ControlError(f"{spec.name}: {len(fds)} file descriptors, expected {int(spec.fd)}")
        except ControlError:
            _close_all(fds)
            raise
        return spec, args, fds

    def _receive_one_of(self, *names: str) -> tuple[str, list, list[int]] | None:
        """The next message when it is one of `names`; None for a bad or another one (its file
        descriptors closed); MasterGone at end of stream."""
        try:
            spec, args, fds = self._receive()
        except MasterGone:
            raise
        except ControlError:
            return None
        if spec.name not in names:
            _close_all(fds)
            return None
        return spec.name, args, fds

    def _ask(self, name: str, *args: object, answers: tuple[str, ...]) -> tuple[str, list, list[int]]:
        self._send(name, *args)
        if not select.select([self.sock], [], [], ANSWER_TIMEOUT)[0]:
            raise ConnectionError("the master did not answer")
        spec, reply, fds = self._receive()
        if spec.name not in answers:
            _close_all(fds)
            raise ConnectionError(f"unexpected answer from the master: {spec.name!r}")
        return spec.name, reply, fds

    def log(self, level: str, event: str, fields: Mapping[str, object]) -> None:
        """Never fails: a log event that cannot be sent is dropped."""
        try:
            self._send("log", level[:16], event[:MAX_LOG_EVENT], log_fields(dict(fields)))
        except (OSError, ControlError):
            pass

    def authorize(self, user: str, fp: str | None) -> bool:
        """May `user` log in with key `fp`? Fails closed (runs on paramiko's thread)."""
        if fp is not None and not is_fingerprint(fp):
            fp = None  # not a key the master could know: asked as a keyless login
        try:
            _, reply, _ = self._ask("auth", str(user)[:MAX_USER], fp, answers=("auth",))
        except (OSError, ConnectionError, ControlError):
            return False
        return reply[0] is True

    def request_tokens(self) -> tuple[str, str]:
        """This connection is a tmate host: its (read-write, read-only) tokens; Refused when the
        relay takes no more sessions."""
        name, reply, _ = self._ask("host", answers=("tokens", "refused"))
        if name == "refused":
            raise Refused(reply[0])
        return reply[0], reply[1]

    def request_names(self, rw: str | None, ro: str | None, key: str | None) -> tuple[str, str, str | None]:
        """(rw, ro, None) with the names, (the random tokens, why) without; fields cut to bound."""
        fields = ((rw, MAX_NAME_FIELD), (ro, MAX_NAME_FIELD), (key, KEY_SHA256))
        _, reply, _ = self._ask("name", *(v and v[:n] for v, n in fields), answers=("named",))
        return reply[0], reply[1], reply[2]

    def join(
        self, token: str, pubkey: str | None, fp: str | None, forwarded_for: str | None = None
    ) -> tuple[bool, int] | None:
        """This connection is a viewer of the session `token` names: (readonly, link fd), or
        None when no session takes it; Refused when the session has all the viewers it may.
        `forwarded_for`: the client a web viewer's trusted proxy named (dropped past MAX_IP)."""
        if pubkey is not None and len(pubkey) > MAX_PUBKEY:
            pubkey = None
        if fp is not None and not is_fingerprint(fp):
            fp = None
        if forwarded_for is not None and len(forwarded_for) > MAX_IP:
            forwarded_for = None
        answers = ("joined", "no-session", "refused")
        name, reply, fds = self._ask("join", token, pubkey, fp, forwarded_for, answers=answers)
        if name == "no-session":
            return None
        if name == "refused":
            raise Refused(reply[0])
        return reply[0], fds[0]

    def publish_access(self, fps: list[str] | None) -> None:
        """The host is ready; viewers must hold one of `fps` (None: any key)."""
        self._send("access", fps)

    def report_stats(self, bytes_in: int, bytes_out: int) -> None:
        """The session's running byte totals, for the master's metrics; never fails."""
        try:
            self._send("stats", min(bytes_in, MAX_COUNT), min(bytes_out, MAX_COUNT))
        except (OSError, ControlError):
            pass

    def report_hot(self, kind: str, code: list[int]) -> None:
        """The code objects this process ran in the state `kind` names (control.LEARN_KINDS,
        jail/hotcode.py); never fails."""
        try:
            self._send("hot", kind, code[:MAX_HOT_CODE])
        except (OSError, ControlError):
            pass

    def receive_viewer(self) -> NewViewer | ReconnectionData | Relinked | None:
        """The session's next message from the master: a viewer, a reconnection datum (the answer
        to `rdata`), the end of a resumed session's relinks, or None for anything else (ignored);
        MasterGone when the master closed the socket."""
        got = self._receive_one_of("rdata", "viewer", "relinked")
        if got is None:
            return None
        name, args, fds = got
        if name == "rdata":
            return ReconnectionData(args[0])
        if name == "relinked":
            return Relinked(tuple(args[0]), args[1])
        return NewViewer(args[0], args[1], args[2], fds[0], relinked=args[3], since=args[4], web=args[5])

    def resume(self, data: str) -> tuple[str, str, str | None]:
        """The host sent RECONNECT `data`: (rw, ro, None) when the session took over its old
        tokens, (rw, ro, reason) when the datum was refused and these are the new tokens."""
        _, reply, _ = self._ask("resume", data[:MAX_RECONNECT_DATA], answers=("resumed",))
        return reply[0], reply[1], reply[2]

    def ask_reconnection_data(self) -> None:
        """Ask for a fresh datum; it comes back through receive_session (the loop's own read)."""
        self._send("rdata")

    def end_session(self, keep: bool) -> None:
        """The session process ends: keep the session for the host's reconnection, or not."""
        try:
            self._send("end", keep)
        except (OSError, ControlError):
            pass

    def viewer_event(self) -> tuple[str, bool | str, int | None] | None:
        """A viewer's next message from the master: ("relink", readonly, fd), ("ended", line,
        None) or None (ignored); MasterGone at end of stream."""
        got = self._receive_one_of("relink", "ended")
        if got is None:
            return None
        name, args, fds = got
        if name == "relink":
            return "relink", args[0], fds[0]
        return "ended", args[0], None

    def master_gone(self) -> bool:
        """Read one message (an ssh viewer connection expects none); True at end of stream."""
        try:
            self._receive_one_of()
        except MasterGone:
            return True
        return False


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
