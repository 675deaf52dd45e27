"""The log processors and outputs (relay.log): journald's fields, JSON lines, the output chosen,
no whole token anywhere, and the master re-emitting a connection's events with the fields it
knows (pid, ip, role, session)."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any, cast

import pytest
import structlog

from jail import JailedProcess, Jailer
from relay import control, log
from relay.log import fields, output
from relay.master import names, tokens
from relay.master.server import Child, Master, RelayConfig

TOKEN = "abcdefghjkmnpqrstuvwxyzAB"  # 25 characters of the token alphabet
assert len(TOKEN) == tokens.TOKEN_LENGTH and set(TOKEN) <= set(tokens.ALPHABET)


@pytest.fixture
def restore_structlog():
    saved = structlog.get_config()
    yield
    log.configure_master(fmt="json")  # closes the log file a test opened
    structlog.configure(**saved)


# ---------------------------------------------------------------------- no whole token
def test_scrub_cuts_every_whole_token_to_its_first_characters():
    assert fields.scrub(TOKEN) == "abcd..."
    assert fields.scrub(f"ssh -p2222 {TOKEN}@relay.example") == "ssh -p2222 abcd...@relay.example"
    assert fields.scrub(f"ssh ro-{TOKEN}@h") == "ssh ro-abcd...@h"
    assert fields.scrub(f"{TOKEN}-{TOKEN}") == "abcd...-abcd..."
    new_rw, new_ro = tokens.new_token_pair()
    assert new_rw not in fields.scrub(f"x {new_rw} {new_ro} y") and new_ro[3:] not in fields.scrub(new_ro)


def test_scrub_leaves_what_is_no_token():
    for text in (TOKEN[:-1], TOKEN + "C", "SHA256:" + "A" * 43, "abcdefghjk0mnpqrstuvwxyzAB", "host session"):
        assert fields.scrub(text) == text


def test_scrub_cuts_named_tokens_before_their_slash():
    assert fields.scrub("alice/pairing") == "alic..."
    assert fields.scrub("ssh -p2222 alice/pairing@relay.example") == "ssh -p2222 alic...@relay.example"
    assert fields.scrub("https://relay.example/t/alice/pairing") == "https://relay.example/t/alic..."
    assert fields.scrub("GET /t/bob/ro-name?x=1 HTTP/1.1") == "GET /t/bob...?x=1 HTTP/1.1"
    assert fields.scrub("/t/alice/pairing/more") == "/t/alic..."  # all after /t/ is looked up
    assert (
        fields.scrub("ssh alice/pairing@h and ssh -p2222 bob/ro-name@h")
        == "ssh alic...@h and ssh -p2222 bob...@h"
    )
    assert fields.scrub("ab/c") == "ab..."  # a short user: never past the `/`, the name never shown
    assert fields.scrub(f"alice/{TOKEN}") == "alic..."
    longest = "u" * names.MAX_USERNAME + "/" + "n-" * (names.MAX_NAME // 2 - 1) + "n"
    assert names.name_problem(longest.split("/")[1]) is None and fields.scrub(longest) == "uuuu..."


def test_scrub_leaves_paths_rates_base64_and_fingerprints():
    for text in (
        "keys/host.key",
        "relay/conn/web.py",
        "/usr/bin/python3",
        "SHA256:abcd/efghijk",
        "AAAAC3Nz+ab/cd+ef==",
        "HTTP/1.1",
        "/static/app.js",
        "too many new connections from this address (limit 20/s)",
        "input faster than 65536 bytes/s",
        "keys/api-keys: No such file or directory",
        "198.51.100.0/24 and 2001:db8::/32",
    ):
        assert fields.scrub(text) == text


def test_scrub_tokens_processor_covers_values_keys_and_other_types():
    event = {
        "event": f"joined {TOKEN}",
        "user": TOKEN,
        TOKEN: 1,
        "n": 3,
        "ok": True,
        "x": None,
        "obj": [TOKEN],
    }
    out = fields.scrub_tokens(None, "info", event)
    assert TOKEN not in json.dumps(out)
    assert out["event"] == "joined abcd..." and out["user"] == "abcd..." and out["abcd..."] == 1
    assert (out["n"], out["ok"], out["x"]) == (3, True, None)


# ---------------------------------------------------------------------- journald's fields
def test_journal_fields_follow_the_interface():
    event = {
        "timestamp": "2026-01-01T00:00:00Z",
        "level": "warning",
        "event": "connection refused",
        "session": "abcd",
        "role": "viewer",
        "ip": "198.51.100.7",
        "reason": "too many viewers (limit 2)",
        "limit": "max-viewers",
        "duration": 1.25,
        "bytes_in": 10,
        "bytes_out": 20,
        "viewers": 3,
        "readonly": False,
        "session_pid": 42,
        "odd-key": "v",
        "nothing": None,
    }
    f = fields.journal_fields(event)
    assert f["PRIORITY"] == "4" and f["SYSLOG_IDENTIFIER"] == "pymate-relay"
    assert f["PYMATE_EVENT"] == "connection refused"
    assert f["MESSAGE"].startswith("connection refused ") and "limit=max-viewers" in f["MESSAGE"]
    assert "reason='too many viewers (limit 2)'" in f["MESSAGE"]
    expected = {
        "PYMATE_SESSION": "abcd",
        "PYMATE_ROLE": "viewer",
        "PYMATE_CLIENT_IP": "198.51.100.7",
        "PYMATE_REASON": "too many viewers (limit 2)",
        "PYMATE_LIMIT": "max-viewers",
        "PYMATE_DURATION": "1.25",
        "PYMATE_BYTES_IN": "10",
        "PYMATE_BYTES_OUT": "20",
        "PYMATE_VIEWERS": "3",
        "PYMATE_READONLY": "false",
        "PYMATE_SESSION_PID": "42",
        "PYMATE_ODD_KEY": "v",
    }
    assert {k: f[k] for k in expected} == expected
    assert "PYMATE_NOTHING" not in f and "PYMATE_TIMESTAMP" not in f and "PYMATE_LEVEL" not in f
    assert all(len(name) <= 64 and name.replace("_", "").isalnum() and name.isupper() for name in f)


@pytest.mark.parametrize(
    ("level", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_priorities(level, priority):
    assert fields.journal_fields({"event": "e", "level": level})["PRIORITY"] == priority


def test_the_journal_sink_sends_the_fields():
    sent: list[dict[str, str]] = []
    sink = output.JournalSink(send=lambda **kw: sent.append(kw))
    sink.write({"level": "info", "event": "listening", "port": 22})
    assert sent == [fields.journal_fields({"level": "info", "event": "listening", "port": 22})]


def test_a_failing_sink_never_stops_logging():
    def broken(**_kw: Any) -> None:
        raise OSError("journal gone")

    err, other = io.StringIO(), io.StringIO()
    sinks = output.Sinks([output.JournalSink(send=broken), output.StreamSink(other, output.json_line)], err)
    sinks.info(event="listening", level="info")
    assert json.loads(err.getvalue())["log_error"] == "OSError: journal gone"
    assert json.loads(other.getvalue())["event"] == "listening"


# ---------------------------------------------------------------------- which output
class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_output_chosen(tmp_path: Path):
    sock = tmp_path / "socket"
    none = str(tmp_path / "absent")
    assert output.choose_format({}, Stream(True), none) == "console"
    assert output.choose_format({}, Stream(False), none) == "json"
    assert output.choose_format({"JOURNAL_STREAM": "8:1234"}, Stream(False), none) == "journal"
    assert output.choose_format({"JOURNAL_STREAM": "8:1234"}, Stream(True), none) == "console"
    sock.touch()
    assert output.choose_format({}, Stream(False), str(sock)) == "journal"
    for fmt in ("journal", "console", "json", "kv"):
        assert output.choose_format({"PYMATE_LOG_FORMAT": fmt.upper()}, Stream(True), none) == fmt
    assert output.choose_format({"PYMATE_LOG_FORMAT": "xml"}, Stream(False), none) == "json"


def test_json_lines_and_the_log_file(tmp_path: Path, capsys, restore_structlog):
    path = tmp_path / "relay.log"
    log.configure_master(verbose=False, log_file=str(path), fmt="json")
    logger = log.get_logger()
    logger.info("host session started", session=TOKEN[:4], user=TOKEN, ip="198.51.100.7")
    logger.debug("not shown without -v")
    logger.warning("connection refused", limit="max-sessions", reason=f"token {TOKEN}", count=1)
    lines = path.read_text().splitlines()
    assert lines == capsys.readouterr().err.splitlines()  # the same JSON lines on stderr and in the file
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["host session started", "connection refused"]
    assert list(events[0])[:3] == ["timestamp", "level", "event"] and events[0]["timestamp"].endswith("Z")
    assert events[0]["session"] == "abcd" and events[0]["user"] == "abcd..." and events[1]["count"] == 1
    assert TOKEN not in path.read_text()
    log.configure_master(verbose=True, log_file=str(path), fmt="kv")  # appends
    log.get_logger().debug("shown with -v", port=22)
    assert "event='shown with -v' port=22" in capsys.readouterr().err
    assert json.loads(path.read_text().splitlines()[-1])["event"] == "shown with -v"


def test_console_lines(restore_structlog, capsys):
    log.configure_master(fmt="console")
    log.get_logger().info("listening", port=2222)
    err = capsys.readouterr().err
    assert "listening" in err and "port" in err and "2222" in err and "\x1b[" in err  # coloured


# ---------------------------------------------------------------------- the master re-emits
class NoJailer:
    rootless = True


def _child(pid: int, ip: str) -> tuple[Child, socket.socket]:
    ours, theirs = control.socketpair()
    return Child(proc=JailedProcess(pid=pid, uid=0), ip=ip, ctl=ours, started=0.0), theirs


def test_the_master_adds_pid_ip_role_and_session_to_a_connections_events():
    m = Master(RelayConfig(), connection=lambda *a: lambda: 0, jailer=cast(Jailer, NoJailer()))
    host, host_end = _child(101, "198.51.100.1")
    early, early_end = _child(102, "198.51.100.2")
    viewer, viewer_end = _child(103, "198.51.100.3")
    with structlog.testing.capture_logs() as logs:
        m._on_host(host)
        rw, ro = host.tokens
        m._on_join(early, ro, None, None)  # the host is not ready yet
        m._on_access(host, None)
        m._on_join(viewer, ro, None, None)
        m._on_log(viewer, "info", "viewer left", {"reason": "viewer left", "duration": 2.5, "role": "forged"})
        m._on_log(host, "info", "host session ended", {"bytes_in": 5, "bytes_out": 7, "viewers": 1})
    by_event: dict[str, Any] = {}
    for e in logs:
        by_event.setdefault(e["event"], e)  # the first of each
    assert by_event["role taken"] == {
        "event": "role taken",
        "log_level": "info",
        "ip": "198.51.100.1",
        "pid": 101,
        "role": "host",
        "session": rw[:4],
    }
    failed = by_event["token look-up failed"]
    assert failed["role"] == "ro-viewer" and failed["reason"] == "session not ready for viewers yet"
    left = by_event["viewer left"]
    assert (left["pid"], left["ip"], left["role"], left["session"]) == (
        103,
        "198.51.100.3",
        "ro-viewer",
        rw[:4],
    )
    assert left["duration"] == 2.5
    ended = by_event["host session ended"]
    assert (ended["role"], ended["session"], ended["bytes_in"], ended["pid"]) == ("host", rw[:4], 5, 101)
    assert by_event["viewer linked"]["session"] == rw[:4]
    for s in (host.ctl, early.ctl, viewer.ctl, host_end, early_end, viewer_end):
        s.close()
