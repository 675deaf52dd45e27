"""Reconnection through a real relay, real tmate 2.4 hosts and real OpenSSH viewers.

A TCP forwarder of the test's own sits between the host's tmate and the relay; `cut()` resets
both sides (what a dropped network looks like, never a FIN). The host's tmate retries every 2 s
with the relay's `tmate_reconnection_data`:

- cut mid-session with two viewers: the host comes back with the same tokens and is told
  `Reconnected` (no second set of lines); both viewers stayed connected, were told the host is
  reconnecting, see the screen restored from the SNAPSHOT and then new output, and the host gets
  its RESIZE again; a third viewer that joins while the host is away waits with them; the host
  is told of that one joining, not of the two that never left (#{tmate_clients} lists them as
  before); pymate_sessions_held counts the session while it waits, pymate_reconnections_total
  the takeover and a stale datum;
- a viewer that quits while its host is away: once the host is back it is told `A mate has
  left` and #{tmate_num_clients} / #{tmate_clients} count and list the mate that stayed;
- a datum made with another relay's key (the forwarder switched to a relay whose
  reconnect.key differs): new tokens, and the host is told why;
- a host that never comes back (`--reconnect-window 2`): its viewers get `[server exited]`
  (pymate_reconnections_total{outcome="window_expired"});
- the host's session process SIGKILLed (the connection process dying): the session is held, the
  host reconnects and its viewer sees it again;
- a named session (`--api-keys`, `tmate-session-name`) comes back as carol/pair, its viewer
  relinked, and is not told its name is in use (its own held session holds it);
- the reconnection key is in the master's memory and in no jailed process's (root reads them);
- SIGTERM the relay with a live host and start it again on the same keys and port: the host is
  back with the same tokens and a new viewer joins with the old ssh command.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.tmate import messages as m
from relay.tmate.codec import RelayDecoder, encode_host
from tests.e2e import (
    Relay,
    SshViewer,
    cmdline,
    fake_host,
    free_port,
    memory_holds,
    new_api_key,
    session_tokens,
    tmate_available,
    wait_for,
)
from tests.forward import Forwarder
from tests.test_metrics_e2e import value

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs tmate")

AWAY = "The host is reconnecting"


def _replay(port: int, datum: str) -> list[str]:
    """What a host the test speaks for is told when it sends HEADER and RECONNECT `datum`."""
    t, ch = fake_host(port)
    try:
        ch.sendall(encode_host(m.Header(6, "2.4.0")) + encode_host(m.Reconnect(datum)))
        ch.sendall(
            encode_host(m.SyncLayout(80, 23, (m.Window(0, "sh", (m.PaneGeom(0, 80, 23, 0, 0),), 0),), 0))
        )
        decoder, got = RelayDecoder(), list[m.RelayMessage]()
        ch.settimeout(5)
        while not any(isinstance(x, m.RelayReady) for x in got):
            got += decoder.feed(ch.recv(65536))
        return [x.message for x in got if isinstance(x, m.Notify)]
    finally:
        t.close()


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def relay(keys_dir, metrics_port):
    with Relay(keys_dir, extra=["--metrics", f"127.0.0.1:{metrics_port}"]) as r:
        yield r


def _metric_becomes(port: int, expected: float, name: str, **labels: str) -> None:
    """The relay's metric reaches `expected` (a rendering is reused for 0.1 s: a scrape may be
    that old)."""
    wait_for(lambda: value(port, name, **labels) == expected, 2, f"{name}{labels} == {expected}")


def _joins_since_reconnected(host) -> list[str]:
    """The host's `A mate has joined` lines after its last `Reconnected`."""
    messages = host.messages()
    assert "Reconnected" in messages, messages
    after = messages[messages.rindex("Reconnected") :]
    return [line for line in after.splitlines() if "A mate has joined" in line]


def _host_through(make_host, fwd: Forwarder):
    host = make_host(SimpleNamespace(port=fwd.port), attached=True)
    host.wait_ready()
    host.leave_messages()
    return host


def _type(host, line: str) -> None:
    host.cmd("send-keys", line, "Enter")


def test_a_cut_host_comes_back_with_its_tokens_and_viewers(relay, metrics_port, make_host, tmp_path):
    outcomes = ("taken_over", "stale")
    counted = {o: value(metrics_port, "pymate_reconnections_total", outcome=o) for o in outcomes}
    held = value(metrics_port, "pymate_sessions_held")
    fwd = Forwarder(relay.port)
    viewers: list[SshViewer] = []
    try:
        host = _host_through(make_host, fwd)
        rw, ro = session_tokens(host)
        first_datum = host.display("#{tmate_reconnection_data}")
        viewers = [SshViewer(tmp_path / n, relay.port, t).start() for n, t in (("rw", rw), ("ro", ro))]
        _type(host, "echo before-$((6*7))")
        for v in viewers:
            v.wait_screen("before-42")
        wait_for(lambda: host.display("#{tmate_num_clients}") == "2", 3, "two clients")
        clients = host.display("#{tmate_clients}").split(", ")
        fwd.blocked = True  # the host stays away until the late viewer waits too
        cut = time.monotonic()
        fwd.cut()
        for v in viewers:
            v.wait_screen(AWAY, timeout=3)
        viewers.append(SshViewer(tmp_path / "late", relay.port, ro).start())  # joins while the host is away
        viewers[-1].wait_screen(AWAY, timeout=3)
        relay.wait_log("event='viewer waiting for its host'")
        _metric_becomes(metrics_port, held + 1, "pymate_sessions_held")
        fwd.blocked = False
        relay.wait_log("event='host reconnected'", timeout=8)
        for v in viewers:
            v.wait_screen("before-42", timeout=5)  # the screen restored from the SNAPSHOT
        back = time.monotonic()
        _type(host, "echo after-$((6*7))")
        for v in viewers:
            v.wait_screen("after-42", timeout=5)
        assert not any(v.exited() for v in viewers)
        wait_for(lambda: host.display("#{window_width}x#{window_height}") == "80x23", 3, "RESIZE again")
        assert session_tokens(host) == (rw, ro)
        messages = host.messages()
        assert "Reconnected" in messages, messages
        assert messages.count(f"ssh session: ssh -p{relay.port} {rw}@") == 1, messages
        assert back - cut < 10, back - cut
        # The two viewers never left: no join notice for them, listed as before; the late one is new.
        wait_for(lambda: host.display("#{tmate_num_clients}") == "3", 3, "three clients")
        joins = _joins_since_reconnected(host)
        assert len(joins) == 1 and "(127.0.0.1, read-only) -- " in joins[0], joins
        now = host.display("#{tmate_clients}").split(", ")
        assert len(now) == 3 and set(clients) <= set(now), (clients, now)
        _metric_becomes(metrics_port, held, "pymate_sessions_held")
        taken_over = counted["taken_over"] + 1
        _metric_becomes(metrics_port, taken_over, "pymate_reconnections_total", outcome="taken_over")
        wait_for(
            lambda: host.display("#{tmate_reconnection_data}") != first_datum, 3, "a datum of generation 1"
        )
        # The datum of before the takeover is stale now: whoever replays it gets a new session.
        notices = _replay(relay.port, first_datum)
        assert any(
            n.startswith("Reconnection refused (stale reconnection data (generation 0, now 1))")
            for n in notices
        )
        assert not any(rw in n for n in notices) and session_tokens(host) == (rw, ro)
        stale = counted["stale"] + 1
        _metric_becomes(metrics_port, stale, "pymate_reconnections_total", outcome="stale")
    finally:
        for v in viewers:
            v.stop()
        fwd.close()


def test_the_host_is_told_of_a_mate_that_left_while_it_was_away(relay, make_host, tmp_path):
    """Its session process was gone when the mate left: the master kept the mate's address and
    the new one tells the host once the other mate is relinked; the formats are current again."""
    fwd = Forwarder(relay.port)
    viewers: list[SshViewer] = []
    try:
        host = _host_through(make_host, fwd)
        rw, ro = session_tokens(host)
        viewers = [SshViewer(tmp_path / n, relay.port, t).start() for n, t in (("stays", rw), ("goes", ro))]
        for v in viewers:
            v.wait_screen("0:")
        wait_for(lambda: host.display("#{tmate_num_clients}") == "2", 3, "two clients")
        stays = host.display("#{tmate_clients}").split(", ")[0]
        assert " rw since " in stays
        fwd.blocked = True
        fwd.cut()
        for v in viewers:
            v.wait_screen(AWAY, timeout=3)
        viewers[1].stop()  # the read-only mate quits while the host is away
        relay.wait_log("event='viewer left while its host was away'")
        fwd.blocked = False
        relay.wait_log("event='host reconnected'", timeout=8)
        left = "A mate has left (127.0.0.1) -- 1 client currently connected"
        wait_for(lambda: left in host.messages().partition("Reconnected")[2], 5, "the leave notice")
        assert host.display("#{tmate_num_clients}") == "1"
        assert host.display("#{tmate_clients}") == stays  # the mate that stayed, since its first join
        _type(host, "echo stayed-$((6*7))")
        viewers[0].wait_screen("stayed-42", timeout=5)
        assert session_tokens(host) == (rw, ro) and not _joins_since_reconnected(host)
    finally:
        for v in viewers:
            v.stop()
        fwd.close()


def test_another_relays_datum_gets_new_tokens_and_a_notice(relay, keys_dir, make_host, tmp_path):
    other_keys = tmp_path / "other-keys"  # the same host keys, another reconnection key
    other_keys.mkdir(mode=0o700)
    for f in keys_dir.glob("ssh_host_*"):
        shutil.copy2(f, other_keys / f.name)
    fwd = Forwarder(relay.port)
    try:
        with Relay(other_keys) as other:
            host = _host_through(make_host, fwd)
            rw, ro = session_tokens(host)
            fwd.target = other.port
            fwd.cut()
            line = other.wait_log("event='reconnection refused'", timeout=8)
            assert "forged reconnection data" in line, line
            wait_for(lambda: session_tokens(host)[0] != rw, 5, "the host's new tokens")
            assert "Reconnection refused (forged reconnection data" in host.messages()
            new_rw, _ = session_tokens(host)
            assert new_rw != rw and relay.wait_log("event='session held for reconnection'")
    finally:
        fwd.close()


def test_a_host_that_never_returns_ends_its_session_after_the_window(keys_dir, make_host, tmp_path):
    port = free_port()
    with Relay(keys_dir, extra=["--reconnect-window", "2", "--metrics", f"127.0.0.1:{port}"]) as short:
        fwd = Forwarder(short.port)
        viewer = None
        try:
            host = _host_through(make_host, fwd)
            rw, _ = session_tokens(host)
            viewer = SshViewer(tmp_path / "v", short.port, rw).start()
            viewer.wait_screen("0:")
            fwd.blocked = True
            cut = time.monotonic()
            fwd.cut()
            viewer.wait_screen(AWAY, timeout=3)
            _metric_becomes(port, 1, "pymate_sessions_held")
            viewer.wait_screen("[server exited]", timeout=5)
            assert 1.5 < time.monotonic() - cut < 4.5
            line = short.wait_log("limit='reconnect-window'")
            assert "host session ended" in line, line
            _metric_becomes(port, 0, "pymate_sessions_held")
            _metric_becomes(port, 1, "pymate_reconnections_total", outcome="window_expired")
            wait_for(viewer.exited, 3, "the ssh client to end")
        finally:
            if viewer is not None:
                viewer.stop()
            fwd.close()


def test_a_restarted_relay_gets_its_hosts_back_with_their_tokens(keys_dir, make_host, tmp_path):
    first = Relay(keys_dir).start()
    viewer = None
    try:
        host = make_host(first, attached=True)
        host.wait_ready()
        host.leave_messages()
        rw, ro = session_tokens(host)
        _type(host, "echo kept-$((6*7))")
        first.stop()
        second = Relay(keys_dir, port=first.port).start()
        try:
            second.wait_log("event='host reconnected'", timeout=10)
            assert session_tokens(host) == (rw, ro)
            viewer = SshViewer(tmp_path / "v", second.port, rw).start()
            viewer.wait_screen("kept-42")
            _type(host, "echo again-$((6*7))")
            viewer.wait_screen("again-42")
            assert "Reconnected" in host.messages()
        finally:
            if viewer is not None:
                viewer.stop()
            second.stop()
    finally:
        first.stop()


def test_a_session_process_that_dies_is_held_and_its_host_takes_it_back(relay, make_host, tmp_path):
    host = make_host(relay)
    host.wait_ready()
    host.leave_messages()
    rw, _ = session_tokens(host)
    viewer = SshViewer(tmp_path / "v", relay.port, rw).start()
    try:
        viewer.wait_screen("0:")
        wait_for(lambda: host.display("#{tmate_reconnection_data}"), 3, "the host's datum")
        [pid] = [p for p in relay.children() if f"[{rw[:4]}...] host".encode() in cmdline(p)]
        os.kill(pid, signal.SIGKILL)  # the connection process dies, its host's TCP connection with it
        viewer.wait_screen(AWAY, timeout=3)
        line = relay.wait_log(f"event='session held for reconnection' pid={pid}")
        assert "reason='session process died'" in line, line
        _type(host, "echo back-$((6*7))")  # typed while away: tmate replays the screen
        viewer.wait_screen("back-42", timeout=8)
        assert session_tokens(host)[0] == rw and not viewer.exited()
    finally:
        viewer.stop()


def test_a_named_session_keeps_its_name_over_a_reconnection(keys_dir, make_host, tmp_path):
    keys = tmp_path / "api_keys"
    key = new_api_key(keys, "carol")
    conf = f'set -g tmate-session-name "pair"\nset -g tmate-api-key "{key}"\n'
    with Relay(keys_dir, extra=["--api-keys", str(keys)]) as named:
        fwd = Forwarder(named.port)
        viewer = None
        try:
            host = make_host(SimpleNamespace(port=fwd.port), attached=True, extra_conf=conf)
            host.wait_ready()
            wait_for(lambda: "carol/pair@" in host.display("#{tmate_ssh}"), 5, "the named ssh line")
            viewer = SshViewer(tmp_path / "v", named.port, "carol/pair").start()
            viewer.wait_screen("0:")
            fwd.cut()
            viewer.wait_screen(AWAY, timeout=3)
            named.wait_log("event='viewer relinked' session=", timeout=8)
            assert "carol/pair@" in host.display("#{tmate_ssh}")
            assert "session name already in use" not in host.messages()
            assert "Reconnected" in host.messages()
        finally:
            if viewer is not None:
                viewer.stop()
            fwd.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="reads the jailed processes' memory as root")
def test_the_reconnection_key_never_leaves_the_master(relay, keys_dir, make_host, tmp_path):
    key = (keys_dir / "reconnect.key").read_bytes()
    host = make_host(relay)
    host.wait_ready()
    rw, _ = session_tokens(host)
    with SshViewer(tmp_path / "v", relay.port, rw) as viewer:
        viewer.wait_screen("0:")
        wait_for(lambda: host.display("#{tmate_reconnection_data}"), 3, "the host's datum")
        assert relay.proc is not None and memory_holds(relay.proc.pid, key)  # the probe finds it
        jailed = relay.children()
        assert len(jailed) >= 2, jailed  # the session and the viewer, at least
        for pid in jailed:
            assert not memory_holds(pid, key), Path(f"/proc/{pid}/cmdline").read_bytes()
