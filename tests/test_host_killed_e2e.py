"""A host that vanishes without ending its session (its tmate killed with SIGKILL): every viewer,
read-only included, is told `[server exited]` at once, and the session process ends with a
logged reason, not with an error."""

from __future__ import annotations

import os
import signal
import time

from tests.e2e import Relay, SshViewer, session_tokens, wait_for


def test_killed_host_tells_every_viewer_server_exited(keys_dir, make_host, tmp_path):
    with Relay(keys_dir) as relay:  # a relay of its own: its log is this test's alone
        host = make_host(relay)
        host.wait_ready()
        host.leave_messages()
        rw, ro = session_tokens(host)
        server_pid = int(host.display("#{pid}"))  # the tmate server holds the relay connection
        viewers = [SshViewer(tmp_path / name, relay.port, token) for name, token in (("rw", rw), ("ro", ro))]
        try:
            for v in viewers:
                v.start().wait_screen("0:")
            os.kill(server_pid, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(
                lambda: all("[server exited]" in v.screen() for v in viewers),
                1.0,
                "both viewers to be told [server exited]",
            )
            assert time.monotonic() - t0 < 1.0
            line = relay.wait_log("host session ended", timeout=2)
            assert "reason=" in line, line
            wait_for(lambda: all(v.exited() for v in viewers), 3, "both ssh clients to end")
            assert "connection failed" not in relay.log_text(), relay.log_text()
        finally:
            for v in viewers:
                v.stop()
