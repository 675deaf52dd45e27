"""The control channel's table: every message either way, its fields and their bounds (the
interface relay.control's docstring describes), the roles a connection process may have, and the
check a message's fields pass on either side (`Message.check`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
MAX_LEFT = 16  # addresses of viewers that left while their host was away, told one by one (the rest counted)
MAX_HOT_CODE = 700  # code objects a `hot` report names (jail/hotcode.py MAX_HOT)
LEARN_AFTER = 2.0  # seconds a process runs in a state before it reports the code it ran (jail/hotcode.py)

# Roles of a connection process, as the master knows them.
NO_ROLE = None
HOST = "host"
VIEWER = "viewer"
Role = str | None
# What a `hot` report is the code of (jail/hotcode.py), and the role that may send it: a host
# session LEARN_AFTER s after its READY, the same once its first viewer joined, a viewer.
LEARN_KINDS: dict[str, str] = {"host": HOST, "host-viewed": HOST, "viewer": VIEWER}


class ControlError(Exception):
    pass


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


def is_fingerprint(v: object) -> bool:
    return isinstance(v, str) and v.startswith("SHA256:") and len(v) <= MAX_FINGERPRINT


def _fingerprints(v: object) -> bool:
    return isinstance(v, list) and len(v) <= MAX_AUTHORIZED_KEYS and all(is_fingerprint(x) for x in v)


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


def code_ids(name: str) -> Field:
    return Field(
        name,
        f"[int] <= {MAX_HOT_CODE}",
        lambda v: (
            isinstance(v, list)
            and len(v) <= MAX_HOT_CODE
            and all(type(x) is int and 0 <= x < 1 << 64 for x in v)
        ),
    )


def addresses(name: str, limit: int) -> Field:
    return Field(
        name,
        f"[str <= {MAX_IP}] <= {limit}",
        lambda v: isinstance(v, list) and len(v) <= limit and all(_text(MAX_IP)(x) for x in v),
    )


def optional_fingerprint(name: str) -> Field:
    return Field(name, "SHA256 fingerprint | nil", _optional(is_fingerprint))


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
            optional_text("forwarded_for", MAX_IP),  # a web viewer's, by its trusted proxy
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
    # The code objects it ran, by their addresses in the master (jail/hotcode.py); the master
    # uses the first reports of each kind and ignores the rest (a cheap look-up each).
    Message("hot", (text("kind", 16), code_ids("code")), frozenset({HOST, VIEWER})),  # more are ignored
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
            flag("web"),
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
    # A resumed session's viewers are relinked (the `viewer`s before it): who left meanwhile.
    Message("relinked", (addresses("left", MAX_LEFT), count("more")), frozenset({HOST}), once=True),
    Message("relink", (flag("readonly"),), frozenset({VIEWER}), fd=True),
    Message("ended", (text("line", MAX_REFUSAL),), frozenset({VIEWER}), once=True),
)
