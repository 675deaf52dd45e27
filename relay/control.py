"""The control channel between the master and one connection process: its one table of messages.

A SOCK_SEQPACKET socketpair: every send is one message, a msgpack array whose first element
names it, at most MAX_CONTROL_MESSAGE bytes. `TO_MASTER` and `TO_CONNECTION` below are the whole
interface; every message is encoded (`encode`) and decoded (`decode`) against them, so a field of
the wrong type or past its bound is refused on either side, and nothing else packs a control
message. The master treats what it receives as untrusted (a connection process parses client
bytes and could be compromised): it dispatches through `TO_MASTER`, and a message that fails the
check (unknown, malformed, from a role that may not send it, or a second instance of a once-only
message) gets the sender killed, and only the sender.

A connection process starts with no role; its first `host` or `join` gives it one.

Connection -> master (`TO_MASTER`):
  log     level, event, fields      any role, repeatable. A log event the master re-emits with
                                    the connection's pid and ip (rate-limited; fields reduced to
                                    32 short scalars, reserved keys dropped; an unknown level is
                                    logged as info; the event is cut to 512 characters).
  auth    user, fingerprint|nil     no role yet, repeatable (paramiko allows a few attempts). May
                                    this SSH user (a token) log in with this key? Answer: auth.
  host    (no fields)               no role yet, once: the connection becomes a session process
                                    (a tmate host). Answer: tokens.
  join    token, pubkey|nil,        no role yet, once: the connection becomes an ssh viewer
          fingerprint|nil           connection of the session `token` names. Answer: joined (with
                                    the link's fd) or no-session.
  access  [fingerprint]|nil         host only, repeatable: the host is ready, viewers may join
                                    from now on; nil lets any key in, a list (at most
                                    MAX_AUTHORIZED_KEYS) only those keys.
  stats   bytes_in, bytes_out       host only, repeatable (at most every STATS_INTERVAL): the
                                    session's running totals of bytes received and sent (the
                                    master's metrics move by what is new, never back).
  name    rw|nil, ro|nil, key|nil   host only, once, at READY: the names its host asked for
                                    (tmate -n/-r) and its key's SHA-256 (-k). Answer: named.
  resume  data                      host only, once (a second kills it): the host sent RECONNECT
                                    with this datum (at most MAX_RECONNECT_DATA). Answer: resumed.
  rdata   (no fields)               host only, repeatable (the session asks after its lines and
                                    every RECONNECT_REFRESH): a fresh datum. Answer: rdata.
  end     keep                      host only, as it ends: keep, its host was lost (hold the
                                    session); not, it is over. Dying without it also holds.
Master -> connection (`TO_CONNECTION`):
  auth        allowed               to a connection with no role yet, per auth.
  tokens      rw_token, ro_token    to a host, once.
  joined      readonly  + fd        to a viewer, once: its end of the link to the session.
  no-session  (no fields)           to a viewer, once: no joinable session has that token (or the
                                    key is not one the session allows).
  refused     line                  to a connection that asked for the host role (max-sessions)
                                    or to join (max-viewers), once, instead of tokens or joined:
                                    the line to show its client before the connection closes.
  viewer      readonly, ip, pubkey, to a session process, repeatable: a viewer joins on the fd (relinked:
              relinked, since + fd  back after its host reconnected, not announced; since: first joined).
  named       rw, ro, notice|nil    to a host, once, per name: its tokens from now on (USER/NAME
                                    if named) or its random ones and the notice that says why.
  resumed     rw, ro, reason|nil    to a host, per resume: nil, it took over these, its old
                                    tokens; a reason (forged, expired, stale): its new tokens.
  rdata       data                  to a host, per rdata: for SET_ENV tmate_reconnection_data.
  relink      readonly  + fd        to a viewer, repeatable: its new link (its host is back).
  ended       line                  to a viewer waiting for its host, once: the session is over.
Only the master passes file descriptors. It reads with plain recv(), which discards (and closes)
any that a compromised connection process would try to pass.

`Client` is the connection side: one wrapper per message (`request_tokens`, `join`, `authorize`,
`publish_access`, `report_stats`, `log`, `receive_viewer`, `master_gone`, `resume`,
`ask_reconnection_data`, `end_session`, `viewer_event`); `refused` reaches it as `Refused`.

`SSH_BANNER` is here because both sides need it: the master writes it to every connection it
accepts (before forking anything), and the connection process's SSH server must not write it
again (relay.conn.ssh).
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack

SSH_BANNER = "SSH-2.0-tmate"  # the relay's SSH identification string (RFC 4253 4.2), without CRLF
MAX_CONTROL_MESSAGE = 8192
MAX_AUTHORIZED_KEYS = 100  # key fingerprints (`tmate -a`) a session may restrict its viewers to
MAX_USER = 128  # an SSH user name (a token, for a viewer)
MAX_FINGERPRINT = 64  # "SHA256:" and 43 base64 characters, with room
MAX_PUBKEY = 4096  # "type base64" of a viewer's key (a 16384-bit RSA key is ~2.8 KB)
MAX_IP = 64
MAX_LOG_EVENT = 512
MAX_REFUSAL = 200  # the line a refused connection shows its client
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
RESERVED_LOG_KEYS = frozenset({"event", "level", "timestamp", "pid", "ip", "self"})
ANSWER_TIMEOUT = 5.0  # seconds a connection waits for the master's answer
STATS_INTERVAL = 1.0  # seconds between a session process's stats messages
MAX_COUNT = 1 << 62  # a byte count in stats
MAX_NAME_FIELD = 128  # a session name a host asks for (the master allows 50: a longer one is refused)
KEY_SHA256 = 64  # the SHA-256 (hex) of an api key a host presents: the key never reaches the master
MAX_RECONNECT_DATA = 1024  # a reconnection datum (relay.master.reconnect makes ~300 characters)
MAX_REASON = 200  # why a reconnection datum was refused, as the host is told
RECONNECT_REFRESH = 300.0  # seconds between a session's fresh reconnection data

# Roles of a connection process, as the master knows them.
NO_ROLE = None
HOST = "host"
VIEWER = "viewer"
Role = str | None


class ControlError(Exception):
    pass


class MasterGone(ControlError):
    """The master closed the control socket (it is shutting down)."""


class Refused(Exception):
    """The master refused this connection's request for a role (a limit); str(e) is the line to
    show the client."""


# ---------------------------------------------------------------------- field types
@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # what the docstring and errors call it
    check: Callable[[object], bool]


def _text(limit: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, str) and len(v) <= limit


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or check(v)


def _fingerprint(v: object) -> bool:
    return isinstance(v, str) and v.startswith("SHA256:") and len(v) <= MAX_FINGERPRINT


def _fingerprints(v: object) -> bool:
    return isinstance(v, list) and len(v) <= MAX_AUTHORIZED_KEYS and all(_fingerprint(x) for x in v)


def _bool(v: object) -> bool:
    return isinstance(v, bool)


def _map(v: object) -> bool:
    return isinstance(v, dict)


def text(name: str, limit: int) -> Field:
    return Field(name, f"str <= {limit}", _text(limit))


def optional_text(name: str, limit: int) -> Field:
    return Field(name, f"str <= {limit} | nil", _optional(_text(limit)))


def flag(name: str) -> Field:
    return Field(name, "bool", _bool)


def count(name: str) -> Field:
    return Field(name, f"int 0..{MAX_COUNT}", lambda v: type(v) is int and 0 <= v <= MAX_COUNT)


def optional_fingerprint(name: str) -> Field:
    return Field(name, "SHA256 fingerprint | nil", _optional(_fingerprint))


# ---------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Message:
    name: str
    fields: tuple[Field, ...]
    roles: frozenset[Role]  # to the master: roles that may send it; to a connection: recipients
    once: bool = False  # at most one per connection
    fd: bool = False  # carries one file descriptor (master -> connection only)

    def check(self, args: list) -> None:
        if len(args) != len(self.fields):
            raise ControlError(f"{self.name}: {len(args)} fields, expected {len(self.fields)}")
        for f, v in zip(self.fields, args, strict=True):
            if not f.check(v):
                raise ControlError(f"{self.name}: {f.name} is not {f.kind}")


ANY_ROLE: frozenset[Role] = frozenset({NO_ROLE, HOST, VIEWER})
FIRST: frozenset[Role] = frozenset({NO_ROLE})


def _table(*messages: Message) -> Mapping[str, Message]:
    return {msg.name: msg for msg in messages}


TO_MASTER = _table(
    Message(
        "log",
        (text("level", 16), text("event", MAX_CONTROL_MESSAGE), Field("fields", "map", _map)),
        ANY_ROLE,
    ),
    Message("auth", (text("user", MAX_USER), optional_fingerprint("fp")), FIRST),
    Message("host", (), FIRST, once=True),
    Message(
        "join",
        (
            text("token", MAX_USER),
            optional_text("pubkey", MAX_PUBKEY),
            optional_fingerprint("fp"),
        ),
        FIRST,
        once=True,
    ),
    Message(
        "access", (Field("fps", "[SHA256 fingerprint] | nil", _optional(_fingerprints)),), frozenset({HOST})
    ),
    Message(
        "name",
        (
            optional_text("rw", MAX_NAME_FIELD),
            optional_text("ro", MAX_NAME_FIELD),
            optional_text("key_sha256", KEY_SHA256),
        ),
        frozenset({HOST}),  # once: a second one kills its sender (relay.master.names)
    ),
    Message("stats", (count("bytes_in"), count("bytes_out")), frozenset({HOST})),
    Message("resume", (text("data", MAX_RECONNECT_DATA),), frozenset({HOST})),  # once: its handler
    Message("rdata", (), frozenset({HOST})),
    Message("end", (flag("keep"),), frozenset({HOST})),
)

TO_CONNECTION = _table(
    Message("auth", (flag("allowed"),), FIRST),
    Message("tokens", (text("rw", MAX_USER), text("ro", MAX_USER)), frozenset({HOST}), once=True),
    Message("joined", (flag("readonly"),), frozenset({VIEWER}), once=True, fd=True),
    Message("no-session", (), frozenset({VIEWER}), once=True),
    Message("refused", (text("line", MAX_REFUSAL),), frozenset({HOST, VIEWER}), once=True),
    Message(
        "named",
        (text("rw", MAX_USER), text("ro", MAX_USER), optional_text("notice", MAX_REFUSAL)),
        frozenset({HOST}),
        once=True,
    ),
    Message(
        "viewer",
        (
            flag("readonly"),
            text("ip", MAX_IP),
            optional_text("pubkey", MAX_PUBKEY),
            flag("relinked"),
            count("since"),
        ),
        frozenset({HOST}),
        fd=True,
    ),
    Message(
        "resumed",
        (text("rw", MAX_USER), text("ro", MAX_USER), optional_text("reason", MAX_REASON)),
        frozenset({HOST}),
    ),
    Message("rdata", (text("data", MAX_RECONNECT_DATA),), frozenset({HOST})),
    Message("relink", (flag("readonly"),), frozenset({VIEWER}), fd=True),
    Message("ended", (text("line", MAX_REFUSAL),), frozenset({VIEWER}), once=True),
)


# ---------------------------------------------------------------------- codec
def encode(table: Mapping[str, Message], name: str, *args: object) -> bytes:
    """One message of `table`, checked as the receiving side will check it."""
    spec = table.get(name)
    if spec is None:
        raise ControlError(f"no control message {name!r}")
    spec.check(list(args))
    data = msgpack.packb([name, *args], use_bin_type=True)
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    return data


def decode(table: Mapping[str, Message], data: bytes) -> tuple[Message, list]:
    """(its table entry, its fields); ControlError unless it is a well-formed message of `table`."""
    if len(data) > MAX_CONTROL_MESSAGE:
        raise ControlError(f"control message too large: {len(data)} bytes")
    try:
        msg = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ControlError(f"undecodable control message: {type(e).__name__}") from None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ControlError("control message is not a named array")
    spec = table.get(msg[0])
    if spec is None:
        raise ControlError(f"unexpected control message {msg[0][:32]!r}")
    spec.check(msg[1:])
    return spec, msg[1:]


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(master end, connection end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_with_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    socket.send_fds(sock, [data], [fd])


def log_fields(fields: object) -> dict[str, str | int | float | bool | None]:
    """Log fields from a connection process, reduced to short scalars."""
    if not isinstance(fields, dict):
        return {}
    out: dict[str, str | int | float | bool | None] = {}
    for k, v in list(fields.items())[:32]:
        if not isinstance(k, str) or not k.isidentifier() or len(k) > 64 or k in RESERVED_LOG_KEYS:
            continue
        if isinstance(v, (int, float, bool)) or v is None:
            out[k] = v
        else:
            out[k] = str(v)[:1024]
    return out


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


@dataclass(frozen=True)
class ReconnectionData:
    """The master's answer to `rdata`: the datum for the host's SET_ENV."""

    data: str


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
        if fp is not None and not _fingerprint(fp):
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

    def join(self, token: str, pubkey: str | None, fp: str | None) -> tuple[bool, int] | None:
        """This connection is a viewer of the session `token` names: (readonly, link fd), or
        None when no session takes it; Refused when the session has all the viewers it may."""
        if pubkey is not None and len(pubkey) > MAX_PUBKEY:
            pubkey = None
        if fp is not None and not _fingerprint(fp):
            fp = None
        name, reply, fds = self._ask("join", token, pubkey, fp, answers=("joined", "no-session", "refused"))
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

    def receive_viewer(self) -> NewViewer | ReconnectionData | None:
        """The session's next message from the master: a viewer, a reconnection datum (the answer
        to `rdata`), or None for anything else (ignored); MasterGone when the master closed the
        socket."""
        try:
            spec, args, fds = self._receive()
        except MasterGone:
            raise
        except ControlError:
            return None
        if spec.name == "rdata":
            return ReconnectionData(args[0])
        if spec.name != "viewer":
            _close_all(fds)
            return None
        return NewViewer(args[0], args[1], args[2], fds[0], relinked=args[3], since=args[4])

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
        try:
            spec, args, fds = self._receive()
        except MasterGone:
            raise
        except ControlError:
            return None
        if spec.name == "relink":
            return "relink", args[0], fds[0]
        if spec.name == "ended":
            return "ended", args[0], None
        _close_all(fds)
        return None

    def master_gone(self) -> bool:
        """Read one message (an ssh viewer connection expects none); True at end of stream."""
        try:
            self._receive()
        except MasterGone:
            return True
        except ControlError:
            pass
        return False


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
