"""Where the master's log events go: journald, a terminal, JSON lines, a file.

Every event passes the same processors (level, UTC timestamp, exception text, no whole token)
and then goes to each sink: the one `choose_format` picks for the master's output, plus JSON
lines appended to `-l FILE` if one is given. A sink that fails (journald gone, disk full) never
stops the master: the event is written to stderr instead.

journald: through cysystemd's `journal.send` (sd_journal_sendv of the libsystemd its wheel
bundles; the native protocol over /run/systemd/journal/socket), every field of the event as its
own journald field (relay.log.fields).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import structlog

from relay.log.fields import journal_fields

JOURNAL_SOCKET = "/run/systemd/journal/socket"
FORMAT_VARIABLE = "PYMATE_LOG_FORMAT"  # overrides the choice: journal, console, json or kv
FORMATS = ("journal", "console", "json", "kv")
FIRST_KEYS = ("timestamp", "level", "event")


def choose_format(
    environ: Mapping[str, str] | None = None,
    stderr: IO[str] | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """journal under systemd (JOURNAL_STREAM set or journald's socket present) unless stderr is a
    terminal; coloured lines on a terminal; JSON lines otherwise. PYMATE_LOG_FORMAT overrides
    (`kv` is the older key=value line)."""
    env = os.environ if environ is None else environ
    err = sys.stderr if stderr is None else stderr
    chosen = env.get(FORMAT_VARIABLE, "").strip().lower()
    if chosen in FORMATS:
        return chosen
    try:
        terminal = err.isatty()
    except (AttributeError, ValueError, OSError):
        terminal = False
    if terminal:
        return "console"
    if env.get("JOURNAL_STREAM") or os.path.exists(journal_socket):
        return "journal"
    return "json"


def ordered(event: Mapping[str, Any]) -> dict[str, Any]:
    """timestamp, level and event first, the rest as given."""
    out = {k: event[k] for k in FIRST_KEYS if k in event}
    out.update((k, v) for k, v in event.items() if k not in out)
    return out


def json_line(event: Mapping[str, Any]) -> str:
    return json.dumps(ordered(event), default=str, ensure_ascii=False)


class StreamSink:
    """Rendered lines on a text stream, flushed per event."""

    def __init__(self, stream: IO[str], render: Callable[[dict[str, Any]], str]):
        self.stream = stream
        self.render = render

    def write(self, event: Mapping[str, Any]) -> None:
        self.stream.write(self.render(dict(event)) + "\n")
        self.stream.flush()


class JournalSink:
    """journald's native protocol: one datagram per event, every field its own."""

    def __init__(self, send: Callable[..., Any] | None = None):
        if send is None:
            from cysystemd import journal  # the bundled libsystemd, loaded in the master only

            send = journal.send
        self.send = send

    def write(self, event: Mapping[str, Any]) -> None:
        self.send(**journal_fields(event))


class Sinks:
    """The logger at the end of the master's processor chain: every sink gets the event dict."""

    def __init__(self, sinks: Sequence[StreamSink | JournalSink], fallback: IO[str] | None = None):
        self.sinks = list(sinks)
        self.fallback = fallback

    def msg(self, **event: Any) -> None:
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception as e:  # noqa: BLE001 - a log sink never stops the master
                err = self.fallback or sys.stderr
                try:
                    err.write(json_line({**event, "log_error": f"{type(e).__name__}: {e}"}) + "\n")
                    err.flush()
                except (OSError, ValueError):
                    pass

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def console_renderer(colors: bool) -> Callable[[dict[str, Any]], str]:
    render = structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False)
    return lambda event: str(render(None, "", event))


def kv_renderer() -> Callable[[dict[str, Any]], str]:
    render = structlog.processors.KeyValueRenderer(key_order=list(FIRST_KEYS), drop_missing=True)
    return lambda event: str(render(None, "", event))


def make_sinks(fmt: str, log_file: IO[str] | None, stderr: IO[str]) -> Sinks:
    main: StreamSink | JournalSink
    if fmt == "journal":
        main = JournalSink()
    elif fmt == "console":
        main = StreamSink(stderr, console_renderer(colors=True))
    elif fmt == "kv":
        main = StreamSink(stderr, kv_renderer())
    else:
        main = StreamSink(stderr, json_line)
    sinks: list[StreamSink | JournalSink] = [main]
    if log_file is not None:
        sinks.append(StreamSink(log_file, json_line))
    return Sinks(sinks, fallback=stderr)
