"""-A end to end, with a real tmate host and real OpenSSH viewers: a host without `tmate -a` sees
the C server's three lines and nobody can join it; a host with `-a` works as usual."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relay.conn.access import KEYS_REQUIRED
from tests.e2e import Relay, SshViewer, session_tokens, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate is not installed")

LINES = (
    "Server requires authorized_keys but none are given.",
    "Use '-a FILENAME' to specify an authorized_keys file.",
    "Press <Ctrl-c><Ctrl-d> to exit.",
)


@pytest.fixture(scope="module")
def strict_relay(keys_dir):
    with Relay(keys_dir, extra=["-A"]) as r:
        yield r


def _keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def test_the_lines_are_the_c_servers():
    assert KEYS_REQUIRED[:3] == LINES and KEYS_REQUIRED[3] == ""


def test_a_host_without_authorized_keys_is_told_and_nobody_can_join(strict_relay, make_host, tmp_path):
    relay = strict_relay
    host = make_host(relay, attached=True)
    host.wait_ready()
    wait_for(lambda: all(line in host.messages() for line in LINES), 5, "the three lines on the host")
    msgs = host.messages()
    assert msgs.index(LINES[0]) < msgs.index(LINES[1]) < msgs.index(LINES[2])
    relay.wait_log("host session refused")
    rw, ro = session_tokens(host)
    for token in (rw, ro):
        with SshViewer(tmp_path / f"v-{token[:3]}", relay.port, token) as v:
            wait_for(v.exited, 5, "the viewer to be turned away")
            assert "Invalid or expired session token" in v.screen()
    assert host.alive() and not relay.has("host session ended")  # connected until its user leaves
    assert not relay.has("viewer linked")


def test_a_host_with_authorized_keys_works(strict_relay, make_host, tmp_path):
    relay = strict_relay
    mate_pub = _keypair(tmp_path / "mate_key")
    (tmp_path / "authorized_keys").write_text(f"{mate_pub}\n")
    host = make_host(
        relay, attached=True, extra_conf=f'set -g tmate-authorized-keys "{tmp_path / "authorized_keys"}"\n'
    )
    host.wait_ready()
    relay.wait_log("viewer access restricted to authorized keys")
    assert not any(line in host.messages() for line in LINES)
    host.leave_messages()
    rw, _ = session_tokens(host)
    opts = ["-i", str(tmp_path / "mate_key"), "-o", "IdentitiesOnly=yes"]
    with SshViewer(tmp_path / "mate", relay.port, rw, ssh_opts=opts) as v:
        v.wait_screen("0:")
        host.cmd("send-keys", "echo joined-under-A", "Enter")
        v.wait_screen("joined-under-A", timeout=10)
