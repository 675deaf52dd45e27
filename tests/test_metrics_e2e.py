"""--metrics through a real relay with a real tmate host and an OpenSSH viewer: /metrics parses with
prometheus_client's parser and its numbers move as the session and its viewer come and go;
/healthz answers; the HTTP is answered by a jailed process, not the master."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import Relay, SshViewer, free_port, session_tokens, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs tmate")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(port: int, name: str, **labels: str) -> float:
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return fields


def test_metrics_move_as_a_session_comes_and_goes(keys_dir, make_host, tmp_path):
    port = free_port()
    with Relay(keys_dir, extra=["--metrics", f"127.0.0.1:{port}"]) as relay:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        before = scrape(port)
        assert before[("pymate_sessions", ())] == 0
        assert before[("pymate_sessions_started_total", ())] == 0
        # The HTTP side is a jailed process of the relay's: seccomp, no_new_privs, no capabilities.
        metrics_pid = int(relay.wait_log("metrics listening").split("pid=")[1].split()[0])
        assert metrics_pid in relay.children()
        status = _status(metrics_pid)
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0

        host = make_host(relay)
        host.wait_ready()
        host.leave_messages()
        rw, _ro = session_tokens(host)
        wait_for(lambda: value(port, "pymate_sessions") == 1, 3, "one session")
        assert value(port, "pymate_connections", state="host") == 1
        assert value(port, "pymate_sessions_started_total") == 1
        assert value(port, "pymate_jail_spawn_seconds_count") >= 1
        viewer = SshViewer(tmp_path / "viewer", relay.port, rw)
        try:
            viewer.start().wait_screen("0:")
            wait_for(lambda: value(port, "pymate_viewers") == 1, 3, "one viewer")
            assert value(port, "pymate_connections", state="viewer") == 1
            assert value(port, "pymate_viewers_linked_total") == 1
            host.cmd("send-keys", "seq 1 2000", "Enter")
            viewer.wait_screen("2000")
            wait_for(lambda: value(port, "pymate_bytes_in_total") > 8000, 3, "bytes in from the stats")
            wait_for(lambda: value(port, "pymate_bytes_out_total") > 1000, 3, "bytes out from the stats")
            viewer.send("C-b", "d")
            wait_for(lambda: value(port, "pymate_viewers") == 0, 3, "the viewer gone")
        finally:
            viewer.stop()
        out_so_far = value(port, "pymate_bytes_out_total")
        host.stop()
        wait_for(lambda: value(port, "pymate_sessions") == 0, 5, "the session gone")
        after = scrape(port)
        assert after[("pymate_connections", (("state", "host"),))] == 0
        assert after[("pymate_sessions_started_total", ())] == 1  # counters never go back
        assert after[("pymate_bytes_out_total", ())] >= out_so_far
        assert (
            after[("pymate_master_loop_lag_seconds_count", ())]
            > before[("pymate_master_loop_lag_seconds_count", ())]
        )
        assert "metrics process exited" not in relay.log_text()
