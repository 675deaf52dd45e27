"""Structured logs.

The master's events go to journald natively under systemd, as coloured lines on a terminal, as
JSON lines otherwise, and as JSON lines to `-l FILE` as well (relay.log.output); no output holds
a whole session token (relay.log.fields.scrub_tokens). A jailed connection process has no
stderr and no filesystem: its events travel as control messages to the master, which re-emits
them with the connection's pid and ip bound (see relay.control), through the same processors and
sinks, so they carry the same fields. `configure_child` is the first thing a connection process
does: until then it holds the master's sinks, whose descriptors the jail has closed.

Event fields (structlog keyword -> journald field): event -> MESSAGE and PYMATE_EVENT, level ->
PRIORITY, session (the token's first 4 characters) -> PYMATE_SESSION, role -> PYMATE_ROLE, ip ->
PYMATE_CLIENT_IP, reason, limit, duration (s), bytes_in, bytes_out, viewers -> PYMATE_REASON ...;
any other key -> PYMATE_<KEY>. SYSLOG_IDENTIFIER=pymate-relay.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

from relay.log.fields import SHOWN, journal_fields, scrub, scrub_tokens
from relay.log.output import FORMAT_VARIABLE, choose_format, make_sinks

__all__ = [
    "FORMAT_VARIABLE",
    "SHOWN",
    "choose_format",
    "configure_child",
    "configure_master",
    "get_logger",
    "journal_fields",
    "master_processors",
    "scrub",
    "scrub_tokens",
]

_log_file: IO[str] | None = None  # -l FILE, open for the master's lifetime


def master_processors() -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_tokens,
    ]


def configure_master(verbose: bool = False, log_file: str | None = None, fmt: str | None = None) -> None:
    """The master's logs: `fmt` (journal, console, json, kv) or the one `choose_format` picks;
    `log_file` adds JSON lines appended to that file. `verbose` adds debug events."""
    global _log_file
    if _log_file is not None:
        _log_file.close()
        _log_file = None
    if log_file is not None:
        _log_file = open(log_file, "a", encoding="utf-8")  # open while the master runs
    sinks = make_sinks(fmt or choose_format(), _log_file, sys.stderr)
    structlog.configure(
        processors=[*master_processors(), lambda _logger, _method, event: event],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *_args: sinks,
        cache_logger_on_first_use=False,
    )


def configure_child(send, verbose: bool = False) -> None:
    """Route this process's log events to `send(level, event, fields)`."""

    def forward(_logger, method_name, event_dict):
        event = str(event_dict.pop("event", ""))
        level = event_dict.pop("level", method_name)
        send(level, event, event_dict)
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.processors.add_log_level, forward],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind):
    return structlog.get_logger().bind(**bind)
