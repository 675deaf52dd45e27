"""Named sessions end to end: real tmate 2.4 hosts (`-n/-r/-k` and .tmate.conf), real OpenSSH
viewers, one relay with `--api-keys` made by `pymate-relay apikey add`. A name stays its
session's while the session is live or held for its host (a test forwarder cuts the host's
connection): another host asking for it gets random tokens and `session name already in use`."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from relay.master import names
from tests.e2e import (
    SSH_LINE,
    Relay,
    SshViewer,
    TmateHost,
    cmdline,
    memory_holds,
    new_api_key,
    tmate_available,
    wait_for,
)
from tests.forward import Forwarder

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate is not installed")


@pytest.fixture(scope="module")
def api_key(tmp_path_factory) -> tuple[str, str]:
    """(the api keys file, alice's key), made with the real `pymate-relay apikey add`."""
    path = tmp_path_factory.mktemp("apikeys") / "api_keys"
    path.write_text("# the relay's api keys\nbroken line\n")
    return str(path), new_api_key(path, "alice")


@pytest.fixture(scope="module")
def named_relay(keys_dir, api_key):
    with Relay(keys_dir, extra=["--api-keys", api_key[0]]) as r:
        yield r


def _conf(rw: str = "", ro: str = "", key: str = "") -> str:
    lines = [
        f'set -g {opt} "{v}"\n'
        for opt, v in (("tmate-session-name", rw), ("tmate-session-name-ro", ro), ("tmate-api-key", key))
        if v
    ]
    return "".join(lines)


def _random_tokens(host: TmateHost) -> bool:
    rw, ro = host.display("#{tmate_ssh}"), host.display("#{tmate_ssh_ro}")
    return bool(SSH_LINE.match(rw) and SSH_LINE.match(ro))


def test_a_named_host_keeps_its_name_against_a_second_one(
    named_relay, api_key, make_host, tmp_path, fingerprints
):
    relay, key = named_relay, api_key[1]
    relay.wait_log("api key line skipped")  # "broken line": logged with its number, skipped
    assert relay.has("api_keys line 2: bad key") and relay.has("api keys loaded")
    # The first host names its session on tmate's command line, as a user does.
    first = TmateHost(tmp_path / "first", relay.port, *fingerprints)
    first.cmd("-f", str(first.conf), "-n", "pairing", "-r", "pairing-ro", "-k", key, "new-session", "-d")
    try:
        first.wait_ready()
        port = relay.port
        assert first.display("#{tmate_ssh}") == f"ssh -p{port} alice/pairing@127.0.0.1"
        assert first.display("#{tmate_ssh_ro}") == f"ssh -p{port} alice/pairing-ro@127.0.0.1"
        relay.wait_log("session named")
        first.leave_messages()
        with (
            SshViewer(tmp_path / "mate", port, "alice/pairing") as mate,
            SshViewer(tmp_path / "ro-mate", port, "alice/pairing-ro") as ro_mate,
        ):
            mate.wait_screen("0:")
            ro_mate.wait_screen("0:")
            wait_for(lambda: first.display("#{tmate_num_clients}") == "2", 5, "both mates on the host")
            assert " ro since " in first.display("#{tmate_clients}")  # the -r name is read-only
            relay.wait_log("role='ro-viewer'")
            # A second host asking for the same name gets random tokens and is told why.
            second = make_host(relay, attached=True, extra_conf=_conf("pairing", "", key))
            second.wait_ready()
            wait_for(lambda: names.IN_USE in second.messages(), 5, "the in-use notice")
            assert _random_tokens(second)
            # ... and a name set once the session runs changes nothing (tmate.io's text).
            second.cmd("set", "-g", "tmate-session-name", "later")
            text = "rw can only be set via the command line, or configuration file"
            wait_for(lambda: text in second.messages(), 5, "the too-late notice")
            # The first keeps its name and its mates.
            first.cmd("send-keys", "echo still-named", "Enter")
            mate.wait_screen("still-named", timeout=10)
            # The key reached the master only as a digest: neither it nor the mates' processes,
            # forked since, hold it; the two hosts' own processes (given it by their tmate) do.
            if os.geteuid() == 0:
                pids = {pid: cmdline(pid) for pid in relay.children()}
                hosts = [p for p, cmd in pids.items() if b"] host " in cmd]
                mates = [p for p, cmd in pids.items() if b"viewer " in cmd]
                assert len(hosts) == 2 and len(mates) == 2, pids
                assert all(memory_holds(p, key.encode()) for p in hosts)  # the probe finds it
                for pid in [relay.proc.pid, *mates]:
                    assert not memory_holds(pid, key.encode()), pids.get(pid, b"the master")
            assert first.display("#{tmate_ssh}") == f"ssh -p{port} alice/pairing@127.0.0.1"
        # A name that matches nothing is refused as a random token is.
        with SshViewer(tmp_path / "nobody", port, "alice/nosuch") as nobody:
            wait_for(nobody.exited, 5, "the unknown name to be refused")
            assert "Invalid or expired session token" in nobody.screen()
    finally:
        first.stop()


def test_a_held_name_is_not_taken_by_another_host(named_relay, api_key, make_host, tmp_path):
    """A named host whose connection is cut is held with its name: a second host asking for it
    meanwhile gets random tokens and the in-use notice; the first comes back with its name and
    its mate."""
    relay, key, name = named_relay, api_key[1], "held-pairing"
    fwd = Forwarder(relay.port)
    mate = None
    try:
        first = make_host(SimpleNamespace(port=fwd.port), attached=True, args=["-n", name, "-k", key])
        first.wait_ready()
        line = f"ssh -p{relay.port} alice/{name}@127.0.0.1"
        wait_for(lambda: f"ssh session: {line}" in first.messages(), 5, "the named line in show-messages")
        assert first.display("#{tmate_ssh}") == line
        first.leave_messages()
        mate = SshViewer(tmp_path / "mate", relay.port, f"alice/{name}").start()
        mate.wait_screen("0:")
        wait_for(lambda: first.display("#{tmate_num_clients}") == "1", 5, "the mate on the host")
        held = relay.log_text().count("event='session held for reconnection'")
        fwd.blocked = True  # the first host stays away while the second one asks
        fwd.cut()
        mate.wait_screen("The host is reconnecting", timeout=3)
        wait_for(
            lambda: relay.log_text().count("event='session held for reconnection'") > held, 5, "the hold"
        )
        second = make_host(relay, attached=True, extra_conf=_conf(name, "", key))
        second.wait_ready()
        wait_for(lambda: names.IN_USE in second.messages(), 5, "the in-use notice")
        assert _random_tokens(second)
        fwd.blocked = False
        wait_for(lambda: "Reconnected" in first.messages(), 10, "the first host back")
        assert first.display("#{tmate_ssh}") == line and names.IN_USE not in first.messages()
        first.cmd("send-keys", "echo still-$((6*7))", "Enter")
        mate.wait_screen("still-42", timeout=5)
        assert not mate.exited() and first.display("#{tmate_num_clients}") == "1"
        assert _random_tokens(second)
    finally:
        if mate is not None:
            mate.stop()
        fwd.close()


def test_each_refusal_is_told_to_the_host(named_relay, api_key, make_host):
    key = api_key[1]
    cases = [
        (_conf("pairing2"), names.MISSING_KEY),
        (_conf("pairing2", "", "tmk-" + "x" * 26), names.INVALID_KEY),  # well formed, unknown
        (_conf("pairing2", "", "not-a-key"), names.INVALID_KEY),
        (_conf("-pairing", "", key), names.BAD_CHARS),
        (_conf("pair--ing", "", key), names.BAD_CHARS),
        (_conf("p" * 51, "", key), names.TOO_LONG),
        (_conf("same", "same", key), names.SAME_NAMES),
    ]
    hosts = [(make_host(named_relay, attached=True, extra_conf=conf), text) for conf, text in cases]
    for host, text in hosts:
        host.wait_ready()
        wait_for(lambda host=host, text=text: text in host.messages(), 5, f"{text!r} on the host")
        assert _random_tokens(host)
        msgs = host.messages()
        assert msgs.index(text) < msgs.index("ssh session read only:")  # before its lines
    assert named_relay.has("session name refused")


def test_a_relay_without_api_keys_says_so(relay, make_host):
    host = make_host(relay, attached=True, extra_conf=_conf("pairing", "", "tmk-" + "a" * 26))
    host.wait_ready()
    wait_for(lambda: names.NOT_OFFERED in host.messages(), 5, "the not-offered notice")
    assert _random_tokens(host)


def test_sighup_loads_a_new_key(named_relay, api_key, make_host):
    path = api_key[0]
    bob = new_api_key(path, "bob")
    assert named_relay.proc is not None
    named_relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: named_relay.has("keys=2 users=2"), 5, "the api keys to be read again")
    host = make_host(named_relay, extra_conf=_conf("bobs-session", "", bob))
    host.wait_ready()
    assert host.display("#{tmate_ssh}") == f"ssh -p{named_relay.port} bob/bobs-session@127.0.0.1"
