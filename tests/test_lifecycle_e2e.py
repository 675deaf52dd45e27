"""Stop and reload through a real relay, real tmate hosts and real OpenSSH viewers.

SIGTERM with a live session: the host is told `[tmate] relay shutting down` (its message log),
its viewer `[relay shutting down]`, the relay exits within 5 s and leaves no process and no
listening socket behind. SIGHUP with a new host key: new connections see its fingerprint, the
live session goes on; a broken key file keeps the keys in use and the log says why.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import paramiko
import pytest

from relay.hostkeys import ensure_host_keys
from tests.e2e import Relay, SshViewer, free_port, session_tokens, ssh_fingerprint, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs tmate")

STOP_WITHIN = 5.0


def served_fingerprint(port: int, key_type: str) -> str:
    """The SHA256 fingerprint of the host key of `key_type` the relay offers a new connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    t = paramiko.Transport(sock)
    try:
        t.get_security_options().key_types = [key_type]
        t.start_client(timeout=5)
        blob = t.get_remote_server_key().asbytes()
    finally:
        t.close()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_tells_the_host_and_viewer_and_leaves_nothing(keys_dir, make_host, tmp_path):
    metrics_port = free_port()
    with Relay(keys_dir, extra=["--metrics", str(metrics_port)]) as relay:
        assert relay.proc is not None
        host = make_host(relay, attached=True)
        host.wait_ready()
        rw, _ro = session_tokens(host)
        viewer = SshViewer(tmp_path / "viewer", relay.port, rw)
        try:
            viewer.start().wait_screen("0:")
            relay.wait_log("viewer linked")
            processes = relay.children()
            assert len(processes) >= 3, processes  # the session, the viewer, the metrics process
            started = time.monotonic()
            relay.proc.send_signal(signal.SIGTERM)
            code = relay.proc.wait(STOP_WITHIN + 2)
            took = time.monotonic() - started
            print(f"\nSIGTERM -> relay gone: {took:.2f} s (exit code {code})")
            assert took < STOP_WITHIN, took
            assert code == 0, relay.log_text()
            wait_for(lambda: "[relay shutting down]" in viewer.screen(), 3, "the viewer's notice")
            wait_for(
                lambda: "[tmate] relay shutting down" in host.messages(),
                5,
                "the host's notice in show-messages",
            )
            assert "[tmate] [tmate]" not in host.messages()
            ended = relay.wait_log("host session ended", timeout=1)
            assert "relay is shutting down" in ended, ended
            assert relay.has("event='stopped'"), relay.log_text()
            wait_for(lambda: not any(_alive(p) for p in processes), 1, "every jailed process gone")
            assert _refused(relay.port) and _refused(metrics_port)
            assert "connection killed" not in relay.log_text(), relay.log_text()
        finally:
            viewer.stop()


def _copy_keys(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    os.chmod(dst, 0o755)
    return dst


def test_sighup_serves_a_new_key_and_the_session_lives(keys_dir, fingerprints, make_host, tmp_path):
    keys = _copy_keys(keys_dir, tmp_path / "keys")
    with Relay(keys) as relay:
        assert relay.proc is not None
        host = make_host(relay)
        host.wait_ready()
        host.leave_messages()
        rw, _ro = session_tokens(host)
        viewer = SshViewer(tmp_path / "viewer", relay.port, rw)
        try:
            viewer.start().wait_screen("0:")
            assert served_fingerprint(relay.port, "ssh-ed25519") == fingerprints[1]
            for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
                (keys / name).unlink()
            ensure_host_keys(keys)  # a new ed25519 key; the RSA key stays
            new_fp = ssh_fingerprint(keys / "ssh_host_ed25519_key.pub")
            assert new_fp != fingerprints[1]
            relay.proc.send_signal(signal.SIGHUP)
            line = relay.wait_log("host keys reloaded")
            assert "changed=1" in line, line
            assert relay.has(f"fingerprint='{new_fp}'"), relay.log_text()
            assert served_fingerprint(relay.port, "ssh-ed25519") == new_fp
            assert served_fingerprint(relay.port, "rsa-sha2-512") == fingerprints[0]
            # The session and its viewer go on.
            assert host.alive()
            host.cmd("send-keys", "echo still-$((40+2))", "Enter")
            viewer.wait_screen("still-42")
            # A broken key file: the keys in use stay, the log says why.
            (keys / "ssh_host_ed25519_key.pub").write_text("not a key\n")
            relay.proc.send_signal(signal.SIGHUP)
            line = relay.wait_log("host keys not reloaded")
            assert "old keys are kept" in line, line
            assert served_fingerprint(relay.port, "ssh-ed25519") == new_fp
            assert relay.proc.poll() is None and host.alive()
            viewer.send("C-b", "d")
            viewer.wait_screen("[detached]")
        finally:
            viewer.stop()
