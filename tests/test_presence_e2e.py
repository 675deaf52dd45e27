"""Presence end to end: the real tmate 2.4 host sees its mates (real OpenSSH) join and leave,
`#{tmate_num_clients}` and `#{tmate_clients}` follow, and `tmate set -g @pymate-kick ADDRESS`
sends a mate away. Unit checks of the texts at the end."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from relay.conn import presence
from relay.conn.viewers import Viewer
from tests.e2e import SshViewer, session_tokens, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate is not installed")


def _keypair(path: Path) -> tuple[str, str]:
    """A fresh ed25519 key: its public line and its SHA256 fingerprint."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    pub = path.with_suffix(".pub").read_text().strip()
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], check=True, capture_output=True, text=True)
    return pub, out.stdout.split()[1]


def test_the_host_sees_its_mates_come_and_go(relay, make_host, tmp_path):
    # Keys are only offered where the session asks for them (tmate -a): OpenSSH's `none` works
    # everywhere else, so the fingerprints show with an authorized-keys session.
    pub1, fp1 = _keypair(tmp_path / "mate1")
    pub2, fp2 = _keypair(tmp_path / "mate2")
    (tmp_path / "authorized_keys").write_text(f"{pub1}\n{pub2}\n")
    host = make_host(
        relay, attached=True, extra_conf=f'set -g tmate-authorized-keys "{tmp_path / "authorized_keys"}"\n'
    )
    host.wait_ready()
    host.leave_messages()
    rw, ro = session_tokens(host)
    assert host.display("#{tmate_num_clients}") == "0"  # nobody yet: set from READY on
    assert host.display("#{tmate_clients}") == ""  # set empty (a format cannot tell it from unset)
    key = ["-o", "IdentitiesOnly=yes", "-i"]
    with SshViewer(tmp_path / "v1", relay.port, rw, ssh_opts=[*key, str(tmp_path / "mate1")]) as v1:
        v1.wait_screen("0:")
        joined1 = f"A mate has joined (127.0.0.1, read-write, key {fp1}) -- 1 client currently connected"
        wait_for(lambda: joined1 in host.messages(), 5, "the first join notice")
        assert host.display("#{tmate_num_clients}") == "1"
        assert re.fullmatch(r"127\.0\.0\.1 rw since \d\d:\d\d:\d\d", host.display("#{tmate_clients}"))
        with SshViewer(tmp_path / "v2", relay.port, ro, ssh_opts=[*key, str(tmp_path / "mate2")]) as v2:
            v2.wait_screen("0:")
            joined2 = f"A mate has joined (127.0.0.1, read-only, key {fp2}) -- 2 clients currently connected"
            wait_for(lambda: joined2 in host.messages(), 5, "the second join notice")
            assert host.display("#{tmate_num_clients}") == "2"
            clients = host.display("#{tmate_clients}")
            assert re.fullmatch(r"127\.0\.0\.1 rw since [\d:]{8}, 127\.0\.0\.1 ro since [\d:]{8}", clients)
            # The read-only mate detaches (C-b d): the host is told, the count follows.
            v2.send("C-b", "d")
            wait_for(v2.exited, 5, "the read-only mate to leave")
            left = "A mate has left (127.0.0.1) -- 1 client currently connected"
            wait_for(lambda: left in host.messages(), 5, "the leave notice")
            assert host.display("#{tmate_num_clients}") == "1"
            assert host.display("#{tmate_clients}") == clients.split(", ")[0]
        # The host sends the read-write mate away: it sees why, the host a notice.
        host.cmd("set", "-g", "@pymate-kick", "127.0.0.1")
        wait_for(v1.exited, 5, "the kicked mate to be disconnected")
        assert "[disconnected by the host]" in v1.screen()
        wait_for(lambda: "Disconnected 1 mate from 127.0.0.1" in host.messages(), 5, "the kick notice")
        msgs = host.messages()
        assert "A mate has left (127.0.0.1) -- 0 client currently connected" in msgs
        assert msgs.index(joined1) < msgs.index(joined2) < msgs.index(left)
        assert host.display("#{tmate_num_clients}") == "0" and host.display("#{tmate_clients}") == ""
        host.cmd("set", "-g", "@pymate-kick", "10.9.9.9")
        wait_for(lambda: "No mate from 10.9.9.9 is connected" in host.messages(), 5, "the empty kick notice")
    relay.wait_log("viewer kicked")


# ---------------------------------------------------------------------- units
def _viewer(i: int, ip: str, readonly: bool, since: float) -> Viewer:
    v = Viewer(id=i, sock=None, readonly=readonly, ip=ip, parser=None, dispatcher=None)  # type: ignore[arg-type]
    v.since = since
    return v


def test_texts_count_clients_as_tmate_io_did():
    assert presence.left_text("1.2.3.4", 0) == "A mate has left (1.2.3.4) -- 0 client currently connected"
    assert presence.left_text("1.2.3.4", 1).endswith("-- 1 client currently connected")
    assert presence.joined_text("1.2.3.4", True, None, 2) == (
        "A mate has joined (1.2.3.4, read-only) -- 2 clients currently connected"
    )
    assert presence.joined_text("1.2.3.4", False, None, 1, web=True) == (
        "A mate has joined (1.2.3.4, read-write, web) -- 1 client currently connected"
    )
    page = _viewer(1, "5.6.7.8", True, 1_700_000_000)
    page.web = True
    assert presence.clients_text([page]).startswith("5.6.7.8 ro web since ")


def test_clients_list_is_bounded():
    viewers = [_viewer(i, f"10.0.{i // 256}.{i % 256}", i % 2 == 0, 1_700_000_000 + i) for i in range(500)]
    text = presence.clients_text(viewers)
    assert len(text) <= presence.MAX_CLIENTS_TEXT
    shown = text.count(" since ")
    assert text.endswith(f", and {500 - shown} more") and shown > 10
    assert text.startswith("10.0.0.0 ro since ")  # oldest first
    assert presence.clients_text(viewers[:1], limit=10) == "and 1 more"


def test_kick_reads_set_option_as_tmux_parses_it():
    assert presence.kick_address(("set-option", "-g", "@pymate-kick", "1.2.3.4")) == "1.2.3.4"
    assert presence.kick_address(("set", "@pymate-kick", " ::1 ")) == "::1"
    assert presence.kick_address(("set-option", "-gu", "@pymate-kick")) is None
    assert presence.kick_address(("set-option", "-g", "@other", "1.2.3.4")) is None
    assert presence.kick_address(("bind-key", "x", "@pymate-kick")) is None
    assert presence.kick_address(("set-option", "-Z", "@pymate-kick", "1.2.3.4")) is None
    assert presence.fingerprint_of(None) is None and presence.fingerprint_of("ssh-ed25519 !!") is None
