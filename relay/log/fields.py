"""What a log event may carry, and how its fields are named in journald.

Pure functions over structlog event dicts (no I/O):
- `scrub_tokens`: a processor that cuts every whole session token to its first characters,
  wherever it appears (values and keys), so no log output ever holds a token that joins a session:
  random ones (25 characters, `ro-` and 25) and named ones (`USER/NAME` as a whole value, before
  `@` in an ssh link, or after `/t/` in a web path), which are cut before their `/`.
- `journal_fields`: the event as journald fields: MESSAGE (the event and its fields, readable
  in `journalctl`'s default output), PRIORITY, SYSLOG_IDENTIFIER, PYMATE_EVENT, and one
  PYMATE_<KEY> field per structlog key (flags7.md: session, role, ip -> PYMATE_CLIENT_IP, reason,
  limit, duration, bytes_in, bytes_out, viewers...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from relay.master.tokens import ALPHABET, RO_PREFIX, TOKEN_LENGTH

IDENTIFIER = "pymate-relay"  # SYSLOG_IDENTIFIER
SHOWN = 4  # characters of a token that a log may show (the session's name in logs and titles)

# syslog priorities (journald's PRIORITY) of structlog's levels
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}

# structlog keys whose journald field is not simply PYMATE_<KEY>
JOURNAL_NAMES = {"ip": "PYMATE_CLIENT_IP"}
NOT_FIELDS = frozenset({"event", "level", "timestamp"})  # carried by MESSAGE, PRIORITY, journald itself
MAX_FIELD_NAME = 64  # journald's limit on a field name

# A whole token: 25 characters of the alphabet (after `ro-` for a read-only one), not part of a
# longer run of letters and digits. Such runs occur by chance inside base64 (a viewer's public
# key); cutting one there costs nothing but a few characters of that key in the log.
_TOKEN = re.compile(
    rf"(?<![A-Za-z0-9])(?:{re.escape(RO_PREFIX)})?[{ALPHABET}]{{{TOKEN_LENGTH}}}(?![A-Za-z0-9])"
)
# A named token USER/NAME (relay.master.names: the user of an api key, letters, digits, `_`, `-`;
# the name, letters, digits, inner `-`), wider than the master allows, where a token is used: a
# whole value (an ssh user name), before `@` (an ssh link), or in a web path, whatever follows
# /t/ with a `/` in it (the web viewer looks it all up). Not in free text, where USER/NAME is
# also a relative path (keys/api-keys: ...) or a rate (20/s).
_WORD = "A-Za-z0-9"
_NAMED_SHAPE = rf"[{_WORD}][{_WORD}_-]*/[{_WORD}][{_WORD}-]*"
_NAMED_WHOLE = re.compile(_NAMED_SHAPE)
_NAMED = re.compile(rf"(?<=/t/)[{_WORD}_-]+/[{_WORD}_/-]*|(?<![{_WORD}_./+:-]){_NAMED_SHAPE}(?=@)")
_BAD_NAME = re.compile(r"[^A-Z0-9_]")


def _cut(match: re.Match[str]) -> str:
    token = match.group(0)
    prefix = RO_PREFIX if token.startswith(RO_PREFIX) and len(token) > TOKEN_LENGTH else ""
    return f"{prefix}{token[len(prefix) : len(prefix) + SHOWN]}..."


def _cut_named(match: re.Match[str]) -> str:
    token = match.group(0)
    return f"{token[: min(SHOWN, token.index('/'))]}..."  # never past the user: a short one is whole


def scrub(text: str) -> str:
    """`text` with every whole token cut to its first SHOWN characters (a named one's, at most
    up to its `/`) and `...`."""
    if "/" in text:
        whole = _NAMED_WHOLE.fullmatch(text)
        text = _cut_named(whole) if whole else _NAMED.sub(_cut_named, text)
    return _TOKEN.sub(_cut, text)


def scrub_tokens(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no whole token in any value or key of the event."""
    for key in list(event):
        value = event[key]
        clean_key = scrub(key) if isinstance(key, str) else key
        if isinstance(value, str):
            value = scrub(value)
        elif not isinstance(value, (int, float, bool)) and value is not None:
            value = scrub(str(value))  # what a renderer would print of it
        if clean_key != key:
            del event[key]
        event[clean_key] = value
    return event


def journal_name(key: str) -> str:
    """The journald field of a structlog key: PYMATE_ and the key in capitals."""
    name = JOURNAL_NAMES.get(key) or "PYMATE_" + _BAD_NAME.sub("_", key.upper())
    return name[:MAX_FIELD_NAME]


def journal_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def message(event: Mapping[str, Any]) -> str:
    """MESSAGE: the event, then its fields as key=value (what `journalctl` shows by default)."""
    parts = [str(event.get("event", ""))]
    for key, value in event.items():
        if key in NOT_FIELDS or value is None:
            continue
        text = journal_value(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


def journal_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """The event as journald fields (names in capitals, values as text; None values left out)."""
    level = str(event.get("level", "info"))
    fields = {
        "MESSAGE": message(event),
        "PRIORITY": str(PRIORITIES.get(level, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "PYMATE_EVENT": str(event.get("event", "")),
    }
    for key, value in event.items():
        if key in NOT_FIELDS or value is None or not isinstance(key, str):
            continue
        name = journal_name(key)
        if name not in fields:
            fields[name] = journal_value(value)
    return fields
