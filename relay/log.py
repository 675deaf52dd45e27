"""Structured logging.

The master renders log events to stderr (key=value lines). A jailed connection process has no
stderr and no filesystem: its events travel as control messages to the master, which logs them
with the connection's pid bound (see relay.control).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_master(verbose: bool = False) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
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
