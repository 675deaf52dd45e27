"""journald end to end: a real systemd-journald of the test's own, a real relay logging to it
natively, a real tmate host and real ssh viewers.

journald runs in a mount namespace of its own (`unshare --mount`) with a tmpfs over /run, so its
socket is /run/systemd/journal/socket in there and nowhere else; its journal goes to a directory
of the test (Storage=volatile, /run/log/journal bound to it), read from outside with
`journalctl -D DIR -o json`. The relay runs in the same namespace with stderr a pipe, so it
picks journald by itself. Asserted: the fields of listening, role taken, session started,
viewer joined and left, token look-up failed, session ended (duration, bytes, viewers), and that
no whole token appears anywhere in the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.master import tokens
from tests.e2e import ROOT, SshViewer, free_port, session_tokens, terminate, tmate_available, wait_for

JOURNALD = "/lib/systemd/systemd-journald"
JOURNALD_CONF = """[Journal]
Storage=volatile
ReadKMSG=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
RateLimitBurst=0
"""
# Runs in the new mount namespace: journald first, then the relay; SIGTERM stops both.
NAMESPACE_SCRIPT = """
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/log/journal /run/systemd/journald.conf.d
mount --bind "$JOURNAL_DIR" /run/log/journal
printf '%s' "$JOURNALD_CONF" > /run/systemd/journald.conf.d/test.conf
"$JOURNALD" &
journald=$!
for _ in $(seq 500); do [ -S /run/systemd/journal/socket ] && break; sleep 0.01; done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start" >&2; exit 1; }
"$@" &
relay=$!
trap 'kill -TERM $relay 2>/dev/null' TERM
wait $relay || true
wait $relay 2>/dev/null || true
kill -TERM $journald
wait $journald || true
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: a mount namespace with a tmpfs over /run for journald"
    if not os.access(JOURNALD, os.X_OK) or shutil.which("journalctl") is None:
        return f"no {JOURNALD} or journalctl (Debian's systemd package)"
    if not tmate_available() or shutil.which("ssh") is None:
        return "needs the real tmate and ssh clients"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a mount namespace: {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


class JournaledRelay:
    """journald and the relay in their own mount namespace; the journal in `journal_dir`."""

    def __init__(self, keys: Path, journal_dir: Path, out: Path):
        self.port = free_port()
        self.journal_dir = journal_dir
        journal_dir.mkdir()
        relay = [sys.executable, "-m", "relay", "-k", str(keys), "-b", "127.0.0.1", "-p", str(self.port)]
        relay += ["-h", "127.0.0.1"]
        env = {k: v for k, v in os.environ.items() if k not in ("PYMATE_LOG_FORMAT", "JOURNAL_STREAM")}
        env.update(JOURNAL_DIR=str(journal_dir), JOURNALD=JOURNALD, JOURNALD_CONF=JOURNALD_CONF)
        self.out = out.open("w")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE_SCRIPT, "ns", *relay],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

    def entries(self) -> list[dict]:
        """The relay's entries in the journal so far."""
        out = subprocess.run(
            ["journalctl", "-D", str(self.journal_dir), "-o", "json", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        found = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [e for e in found if e.get("SYSLOG_IDENTIFIER") == "pymate-relay"]

    def wait_event(self, event: str, timeout: float = 5.0, **fields: str) -> dict:
        def find():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay's namespace exited ({self.proc.returncode})")
            for e in self.entries():
                if e.get("PYMATE_EVENT") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        return wait_for(find, timeout, f"{event!r} in the journal", interval=0.05)

    def stop(self) -> int:
        code = terminate(self.proc)
        self.out.close()
        return code


SHOWN_FIELDS = (
    "PRIORITY",
    "PYMATE_EVENT",
    "PYMATE_SESSION",
    "PYMATE_ROLE",
    "PYMATE_CLIENT_IP",
    "PYMATE_REASON",
    "PYMATE_DURATION",
    "PYMATE_BYTES_IN",
    "PYMATE_BYTES_OUT",
    "PYMATE_VIEWERS",
    "MESSAGE",
)


def test_the_relays_events_in_a_real_journal(keys_dir, make_host, tmp_path):
    relay = JournaledRelay(keys_dir, tmp_path / "journal", tmp_path / "namespace.out")
    viewers: list[SshViewer] = []
    try:
        listening = relay.wait_event("listening", timeout=15)
        host = make_host(SimpleNamespace(port=relay.port))
        host.wait_ready()
        rw, ro = session_tokens(host)
        session = rw[:4]
        relay.wait_event("host session started", PYMATE_SESSION=session)
        viewers.append(SshViewer(tmp_path / "viewer", relay.port, ro).start())
        relay.wait_event("viewer joined", PYMATE_SESSION=session)
        wrong = tokens.new_token()
        viewers.append(SshViewer(tmp_path / "stranger", relay.port, wrong).start())
        relay.wait_event("token look-up failed")
        viewers[0].stop()
        relay.wait_event("viewer left", PYMATE_SESSION=session)
        host.stop()
        ended = relay.wait_event("host session ended", PYMATE_SESSION=session)
    finally:
        for v in viewers:
            v.stop()
        code = relay.stop()
    assert code == 0, (tmp_path / "namespace.out").read_text()
    entries = relay.entries()

    assert listening["PYMATE_PORT"] == str(relay.port) and listening["PRIORITY"] == "6"
    assert all(e["_TRANSPORT"] == "journal" for e in entries)  # the native protocol, not stderr
    assert all(e["MESSAGE"].startswith(e["PYMATE_EVENT"]) for e in entries)
    mine = [e for e in entries if e.get("PYMATE_SESSION") == session]
    by_event = {e["PYMATE_EVENT"]: e for e in mine}
    host_taken = by_event["role taken"]
    assert (host_taken["PYMATE_ROLE"], host_taken["PYMATE_CLIENT_IP"]) == ("host", "127.0.0.1")
    started = by_event["host session started"]
    assert (started["PYMATE_ROLE"], started["PYMATE_CLIENT_IP"]) == ("host", "127.0.0.1")
    joined, left = by_event["viewer joined"], by_event["viewer left"]
    assert joined["PYMATE_ROLE"] == left["PYMATE_ROLE"] == "ro-viewer"
    assert joined["PYMATE_CLIENT_IP"] == "127.0.0.1" and float(left["PYMATE_DURATION"]) > 0
    assert ended["PYMATE_ROLE"] == "host" and ended["PRIORITY"] == "6"
    assert float(ended["PYMATE_DURATION"]) > 0 and int(ended["PYMATE_VIEWERS"]) == 1
    assert int(ended["PYMATE_BYTES_IN"]) > 1000 and int(ended["PYMATE_BYTES_OUT"]) > 100
    failed = [e for e in entries if e["PYMATE_EVENT"] == "token look-up failed"]
    assert failed and failed[0]["PYMATE_REASON"] == "no session for this token"
    assert failed[0]["PYMATE_ROLE"] == "viewer" and "PYMATE_SESSION" not in failed[0]

    everything = json.dumps(entries) + (tmp_path / "namespace.out").read_text()
    for secret in (rw, ro, ro[3:], wrong):
        assert secret not in everything

    print(f"\none session's events (journalctl -o json, {len(mine)} entries, selected fields):")
    for e in mine:
        print(json.dumps({k: e[k] for k in SHOWN_FIELDS if k in e}))
    print(f"every field of 'host session ended':\n{json.dumps(ended, indent=1, sort_keys=True)}")
