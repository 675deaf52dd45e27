"""Named sessions: the api keys file (`--api-keys FILE`) and the master's answer to a host's `name`.

A host started with `tmate -n NAME [-r RONAME] -k KEY` asks (through its session process, control
message `name`) for the tokens `USERNAME/NAME` and `USERNAME/RONAME`. The master checks the names
as tmate.io did (at most 50 characters, letters, digits and single inner hyphens; read-write and
read-only names differ), the key against the file, and that no live session holds either token
(`_token_taken`: the registry, where a session held for its host's return keeps its tokens too,
relay.master.reconnect), and answers with the
tokens or with the reason the session keeps its random ones. It never takes a name over: the
newcomer keeps random tokens (tmate.io let the newest session win, and the two hosts then evicted
each other in a loop, tmate#298).

The file: one `USERNAME KEY` per line, `#` comments and blank lines allowed; keys are `tmk-` and 26
letters and digits, as tmate.io made them; a bad line is logged (with its number, never its text)
and skipped. The master reads it before forking anything and again on SIGHUP (a file that cannot
be read keeps the keys it had). It keeps only each key's SHA-256 digest: the file is read into one
buffer that is zeroed afterwards, so the connection processes it forks, which share its memory,
never hold a key (only the digest of a 130-bit random string), and a session process sends the
master the SHA-256 of the key its host gave, never the key: no key enters the master's memory
after the file is read, so none is copied into the processes it forks later.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay import control, log

if TYPE_CHECKING:
    from relay.master.server import Child, RelayConfig

MAX_NAME = 50  # tmate.io's bound on a session name
MAX_USERNAME = 32
MAX_API_KEYS_FILE = 1 << 20  # bytes; a larger file is refused whole
API_KEY_PREFIX = "tmk-"
API_KEY_RANDOM = 26  # letters and digits after the prefix (30 characters in all)
NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9]|-(?=[a-zA-Z0-9]))*")
USERNAME_RE = re.compile(rf"[a-zA-Z0-9][a-zA-Z0-9_-]{{0,{MAX_USERNAME - 1}}}")
API_KEY_RE = re.compile(rf"tmk-[a-zA-Z0-9]{{{API_KEY_RANDOM}}}")

# What the host is told (tmate.io's words where it had them); the session keeps random tokens.
NOT_OFFERED = "This relay does not offer named sessions"
TOO_LONG = f"The session name length too long (max {MAX_NAME} chars)"
BAD_CHARS = (
    "The session name may only contain alphanumeric characters or single hyphens, "
    "and cannot begin or end with a hyphen"
)
SAME_NAMES = (
    "The same session name for write and read-only access were provided. Try again with different names"
)
MISSING_KEY = "To name sessions, specify your api key with -k (this relay's operator gives them out)"
INVALID_KEY = "The provided api key is invalid. Please fix it (this relay's operator gives them out)"
IN_USE = "session name already in use: this session keeps random tokens"


def name_problem(name: str | None) -> str | None:
    """Why a wanted session name is refused (tmate.io's text), or None when it is fine or absent."""
    if name is None:
        return None
    if len(name) > MAX_NAME:
        return TOO_LONG
    if not NAME_RE.fullmatch(name):
        return BAD_CHARS
    return None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass
class Parsed:
    users: dict[bytes, str]  # key digest -> user name
    bad: list[tuple[int, str]]  # (line number, why)


def parse(buf: bytearray, length: int | None = None) -> Parsed:
    """The `USERNAME KEY` lines of an api keys file (its first `length` bytes). Keys are hashed
    from the buffer in place (memoryview slices, no copies), so zeroing `buf` afterwards leaves
    no key in memory."""
    users: dict[bytes, str] = {}
    bad: list[tuple[int, str]] = []
    size = len(buf) if length is None else length
    start, number = 0, 0
    with memoryview(buf) as view:
        while start < size:
            end = buf.find(b"\n", start, size)
            end = size if end < 0 else end
            number += 1
            why = _line(view[start:end], users)
            if why:
                bad.append((number, why))
            start = end + 1
    return Parsed(users, bad)


BLANK = b" \t\r"


def _line(line: memoryview, users: dict[bytes, str]) -> str | None:
    """Add one line's key to `users`; why the line is bad, or None (a key, a blank, a comment)."""
    start, end = 0, len(line)
    while start < end and line[start] in BLANK:
        start += 1
    while end > start and line[end - 1] in BLANK:
        end -= 1
    if start == end or line[start] == ord("#"):
        return None
    space = start
    while space < end and line[space] not in BLANK:
        space += 1
    user = bytes(line[start:space]).decode("ascii", "replace")
    if space == end:
        return "no key after the user name"
    if not USERNAME_RE.fullmatch(user):
        return f"bad user name (1-{MAX_USERNAME} letters, digits, - and _)"
    while space < end and line[space] in BLANK:
        space += 1
    key = line[space:end]
    if len(key) != len(API_KEY_PREFIX) + API_KEY_RANDOM or not _is_key(key):
        return f"bad key (tmk- and {API_KEY_RANDOM} letters and digits)"
    users[hashlib.sha256(key).digest()] = user
    return None


def _is_key(key: memoryview) -> bool:
    if key[:4] != b"tmk-":
        return False
    return all(48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 for c in key[4:])


class ApiKeys:
    """The api keys of `--api-keys FILE`, as digests; `enabled` is False without the flag."""

    def __init__(self, path: str | None):
        self.path = path
        self.users: dict[bytes, str] = {}
        self.log = log.get_logger()
        if path is not None:
            self.users = self._read(path)  # at start an unreadable file is an error (OSError)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def user(self, key: str) -> str | None:
        return self.users.get(digest(key))

    def user_by_digest(self, key_sha256: str) -> str | None:
        """The user of the key whose SHA-256 (hex) a session process sent (it never sends the key)."""
        try:
            return self.users.get(bytes.fromhex(key_sha256))
        except ValueError:
            return None

    def reload(self) -> None:
        """SIGHUP: read the file again; one that cannot be read keeps the keys there were."""
        if self.path is None:
            return
        try:
            self.users = self._read(self.path)
        except OSError as e:
            self.log.error(
                "api keys not reloaded", reason=f"{self.path}: {e.strerror or e}", keys=len(self.users)
            )

    def _read(self, path: str) -> dict[bytes, str]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_API_KEYS_FILE:
                raise OSError(f"larger than {MAX_API_KEYS_FILE} bytes")
            buf = bytearray(size)
            with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                got = f.readinto(buf) or 0  # straight into buf: no other copy of the keys
        finally:
            os.close(fd)
        try:
            parsed = parse(buf, got)
        finally:
            buf[:] = bytes(len(buf))
        for number, why in parsed.bad:
            self.log.warning("api key line skipped", reason=f"{path} line {number}: {why}")
        self.log.info("api keys loaded", keys=len(parsed.users), users=len(set(parsed.users.values())))
        return parsed.users


# ---------------------------------------------------------------------- the master's side
class Naming:
    """The master's handling of `name` (mixed into Messages, which provides the rest)."""

    cfg: RelayConfig
    log: Any
    registry: dict[str, Child]
    log_context: Any
    api_keys: ApiKeys

    def _send(self, child: Child, name: str, *args: object) -> None:
        raise NotImplementedError

    def _token_taken(self, token: str) -> bool:
        """Whether a session holds `token`: a live one or one held for its host's return (the
        registry keeps a held session's tokens, names included, until its window ends:
        relay.master.reconnect), so a newcomer never takes a name from a reconnecting host."""
        return token in self.registry

    def _on_name(self, child: Child, rw: str | None, ro: str | None, key: str | None) -> None:
        """`key`: the SHA-256 (hex) of the api key the host gave (the key stays in its process)."""
        if "name" in child.seen:  # once per session (the table's `once` marks role-giving messages)
            raise control.ControlError("'name' sent twice")
        child.seen.add("name")
        rw_token, ro_token = child.tokens
        wanted, reason = self._named_tokens(rw or None, ro or None, key or None)
        if wanted is not None:
            new_rw, new_ro = wanted[0] or rw_token, wanted[1] or ro_token
            for token, old in ((new_rw, rw_token), (new_ro, ro_token)):
                if token != old and self._token_taken(token):
                    wanted, reason = None, IN_USE
        if wanted is None:
            self.log.info(
                "session name refused", reason=reason, pid=child.proc.pid, **self.log_context.get(child, {})
            )
            self._send(child, "named", rw_token, ro_token, reason)
            return
        for old in (rw_token, ro_token):
            if self.registry.get(old) is child:
                del self.registry[old]
        child.tokens = (new_rw, new_ro)
        self.registry[new_rw] = child
        self.registry[new_ro] = child
        context = self.log_context.setdefault(child, {})
        context["session"] = new_rw[: log.SHOWN]
        self.log.info(
            "session named",
            user=new_rw.split("/")[0],
            pid=child.proc.pid,
            readonly_named=bool(wanted[1]),
            **context,
        )
        self._send(child, "named", new_rw, new_ro, None)

    def _named_tokens(
        self, rw: str | None, ro: str | None, key: str | None
    ) -> tuple[tuple[str | None, str | None] | None, str | None]:
        """((USER/rw or None, USER/ro or None), None) or (None, why not)."""
        if not self.api_keys.enabled:
            return None, NOT_OFFERED
        for name in (rw, ro):
            problem = name_problem(name)
            if problem:
                return None, problem
        if rw is not None and rw == ro:
            return None, SAME_NAMES
        if key is None:
            return None, MISSING_KEY
        user = self.api_keys.user_by_digest(key)  # a malformed key matches no digest either
        if user is None:
            return None, INVALID_KEY
        return (f"{user}/{rw}" if rw else None, f"{user}/{ro}" if ro else None), None
