"""Viewer path end to end: real OpenSSH viewers (in real tmux terminals) join sessions hosted by
the real tmate 2.4 client through a real relay."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.conn.viewer import REFUSAL_DELAY, refusal_delay, wait_refusal
from tests.e2e import SshViewer, cmdline, session_tokens, viewer_answer, wait_for


@pytest.fixture
def shared(relay, make_host, tmp_path):
    """A ready host session (message view dismissed, plain sh prompt) and a viewer factory."""
    host = make_host(relay)
    host.wait_ready()
    host.leave_messages()
    rw, ro = session_tokens(host)
    viewers: list[SshViewer] = []

    def viewer(token=None, cols=80, rows=24) -> SshViewer:
        v = SshViewer(tmp_path / f"viewer{len(viewers)}", relay.port, token or rw, cols, rows)
        viewers.append(v)
        return v.start()

    yield SimpleNamespace(relay=relay, host=host, rw=rw, ro=ro, viewer=viewer)
    for v in viewers:
        v.stop()


def host_run(host, command: str) -> None:
    host.cmd("send-keys", "-l", command)
    host.cmd("send-keys", "Enter")


def host_screen(host) -> str:
    """The host's active pane, wrapped lines joined."""
    return host.cmd("capture-pane", "-p", "-J").stdout


def test_viewer_sees_the_host_and_types_into_it(shared):
    v = shared.viewer()
    host_run(shared.host, "echo from-the-host")
    v.wait_screen("from-the-host")
    v.send("echo hi-from-viewer", literal=True)
    v.send("Enter")
    wait_for(lambda: "\nhi-from-viewer" in "\n" + host_screen(shared.host), 5, "the host to run it")
    v.wait_screen("hi-from-viewer")
    # The status line: window list with the current window marked.
    last = v.lines()[23]
    assert re.search(r"\b0:\S+\*", last), last


def test_special_keys_arrive_as_the_host_expects(shared):
    v = shared.viewer()
    host_run(shared.host, "cat -A")  # shows every byte it gets: ^[ for ESC, ^I for Tab
    time.sleep(0.3)
    v.send(
        "Up", "Down", "Left", "Right", "Home", "End", "F1", "F5", "F12", "BTab", "IC", "DC", "NPage", "PPage"
    )
    v.send("é日本", literal=True)
    v.send("Tab")
    v.send("C-a")
    v.send("Enter")
    # cat -A's own line ends in '$' (the tty's echo of the typed line shows ^A too, not '$').
    screen = wait_for(
        lambda: (lambda s: s if "^A$" in s else None)(host_screen(shared.host)), 5, "the keys to reach cat"
    )
    line = [row for row in screen.splitlines() if "^A$" in row][-1]
    for seq in (
        "^[[A",
        "^[[B",
        "^[[D",
        "^[[C",
        "^[[1~",
        "^[[4~",
        "^[OP",
        "^[[15~",
        "^[[24~",
        "^[[Z",
        "^[[2~",
        "^[[3~",
        "^[[6~",
        "^[[5~",
    ):
        assert seq in line, (seq, line)
    assert "M-CM-)" in line or "é" in line  # é as cat -v shows UTF-8
    assert "^I" in line
    v.send("C-c")
    wait_for(
        lambda: (
            host_screen(shared.host).rstrip().endswith("$") or host_screen(shared.host).rstrip().endswith("#")
        ),
        5,
        "C-c to stop cat",
    )


def test_readonly_viewer_sees_but_cannot_type(shared):
    ro = shared.viewer(shared.ro)
    host_run(shared.host, "echo visible-to-ro")
    ro.wait_screen("visible-to-ro")
    ro.send("echo should-not-run", literal=True)
    ro.send("Enter")
    time.sleep(0.5)
    assert "should-not-run" not in host_screen(shared.host)


def test_split_and_second_window_show_on_the_viewer(shared):
    v = shared.viewer()
    host_run(shared.host, "echo left-pane")
    shared.host.cmd("split-window", "-h")
    host_run(shared.host, "echo right-pane")
    wait_for(
        lambda: (lambda s: "right-pane" in s and "left-pane" in s and "│" in s)(v.screen()),
        5,
        "both panes and the border between them",
    )
    shared.host.cmd("new-window")
    wait_for(lambda: re.search(r"0:\S+- .*1:\S+\*", v.lines()[23]), 5, "both windows in the status line")
    shared.host.cmd("previous-window")  # window 1 becomes the last window: flagged '-'
    wait_for(lambda: re.search(r"0:\S+\* .*1:\S+-", v.lines()[23]), 5, "the window flags to follow")


def test_viewer_prefix_commands(shared):
    v = shared.viewer()
    v.wait_screen("0:")
    v.send("C-b", "c")
    wait_for(lambda: "1:" in shared.host.cmd("list-windows").stdout, 5, "a second window on the host")
    other = shared.viewer()
    other.wait_screen("1:")
    v.send("C-b", "d")
    wait_for(v.exited, 5, "the viewer to be detached")
    time.sleep(0.3)
    assert not other.exited()
    host_run(shared.host, "echo still-here")
    other.wait_screen("still-here")


def test_session_takes_the_smallest_viewer_size(shared):
    big = shared.viewer(cols=120, rows=40)
    big.wait_screen("0:")
    wait_for(
        lambda: shared.host.display("#{window_width}x#{window_height}") == "120x39",
        5,
        "the session to take the viewer's size",
    )
    small = shared.viewer(cols=70, rows=20)
    small.wait_screen("0:")
    wait_for(
        lambda: shared.host.display("#{window_width}x#{window_height}") == "70x19",
        5,
        "the session to take the smaller viewer's size",
    )
    # A read-only viewer never shrinks the session.
    ro = shared.viewer(shared.ro, cols=40, rows=10)
    ro.wait_screen("0:")
    time.sleep(0.5)
    assert shared.host.display("#{window_width}x#{window_height}") == "70x19"
    small.stop()
    wait_for(
        lambda: shared.host.display("#{window_width}x#{window_height}") == "120x39",
        5,
        "the size to be recomputed when a viewer leaves",
    )
    # The larger viewer sees the session area and the rest filled.
    big.resize(130, 40)
    wait_for(
        lambda: "·" in big.screen() or shared.host.display("#{window_width}") == "130",
        5,
        "the resize to apply",
    )


def test_copy_mode_history_and_colours(shared):
    v = shared.viewer()
    # The session first takes the viewer's size (100x29 -> 80x23): a viewer smaller than the
    # window sees its top rows, as tmux 2.4 shows them, so output printed before the host applied
    # the size would leave the newest lines below the viewer's last row.
    wait_for(
        lambda: shared.host.display("#{window_width}x#{window_height}") == "80x23",
        5,
        "the session to take the viewer's size",
    )
    host_run(shared.host, "for i in $(seq 1 100); do echo line-$i; done")
    v.wait_screen("line-100")
    shared.host.cmd("copy-mode")
    shared.host.cmd("send-keys", "PPage")  # tmate 2.4 has no send-keys -X
    # The scrolled view: older lines, not the newest, and copy mode's position indicator. (A
    # capture can land in the middle of a frame: wait for the whole picture.)
    wait_for(
        lambda: (lambda s: "line-60" in s and "line-100" not in s and re.search(r"\[\d+/\d+\]", s))(
            v.screen()
        ),
        5,
        "the viewer to show the host's copy mode",
    )
    shared.host.cmd("send-keys", "q")
    host_run(shared.host, "clear; printf '\\033[31mred\\033[0m \\033[38;5;208morange\\033[0m\\n'")
    # Palette red as SGR 31 or its 256-colour form 38;5;1 (the same colour on the viewer), and
    # 256-colour orange. (The typed command line holds the words too, uncoloured: wait for these.)
    red = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:31|38;5;1)m[^\x1b]*red")
    orange = re.compile(r"\x1b\[[0-9;]*38;5;208m[^\x1b]*orange")
    wait_for(
        lambda: (lambda s: red.search(s) and orange.search(s))(v.screen(colours=True)),
        5,
        "red and orange text on the viewer",
    )


def test_host_exit_ends_every_viewer(shared):
    a, b = shared.viewer(), shared.viewer(shared.ro)
    a.wait_screen("0:")
    b.wait_screen("0:")
    t0 = time.monotonic()
    shared.host.cmd("kill-server")
    wait_for(lambda: a.exited() and b.exited(), 3, "both viewers to end")
    assert time.monotonic() - t0 < 1.5
    assert "[server exited]" in a.screen()


def test_bad_tokens_get_the_c_servers_texts(shared):
    bad = shared.viewer("no")
    wait_for(bad.exited, 5, "the refusal")
    assert "Invalid session token" in bad.screen()
    expired = shared.viewer("x" * 25)
    wait_for(expired.exited, 5, "the refusal")
    assert "Invalid or expired session token" in expired.screen()
    gone = shared.viewer("ro-" + "A" * 25)
    wait_for(gone.exited, 5, "the refusal")
    assert "Invalid or expired session token" in gone.screen()


def test_refusal_delay_is_uniform_between_50_and_200_ms(relay):
    # Where the delay is drawn: uniform over 50-200 ms (15 ms buckets each hold a tenth).
    draws = [refusal_delay() * 1000 for _ in range(20000)]
    assert 50 <= min(draws) < 51 and 199 < max(draws) <= 200
    buckets = [0] * 10
    for d in draws:
        buckets[min(9, int((d - 50) // 15))] += 1
    assert all(1700 < n < 2300 for n in buckets), buckets
    assert 123 < statistics.mean(draws) < 127
    # The delay counts from the request: a look-up that took longer than the draw adds nothing.
    t = time.monotonic()
    wait_refusal(t - REFUSAL_DELAY[1])
    assert time.monotonic() - t < REFUSAL_DELAY[0]
    # End to end, 4 at a time: every refusal waits its delay (plus a little SSH round trip here
    # on loopback), and nothing is instant.
    with ThreadPoolExecutor(4) as pool:  # 8 at once on 2 cores: the clients' own threads lag
        answers = list(
            pool.map(lambda i: viewer_answer(relay.port, f"unknownToken{i:05d}xxxxxxxx"), range(48))
        )
    assert {text for _, text in answers} == {b"Invalid or expired session token\r\n"}
    delays = [dt * 1000 for dt, _ in answers]
    assert min(delays) >= 50
    assert max(delays) < 200 + 30, delays
    assert min(delays) < 100 and max(delays) > 150, (min(delays), max(delays))
    dt, text = viewer_answer(relay.port, "a!")
    assert text == b"Invalid session token\r\n" and dt < 0.05


def _ssh_pid(viewer: SshViewer) -> int:
    """The ssh client's pid inside the viewer's terminal."""
    shell = viewer.tmux("list-panes", "-F", "#{pane_pid}").stdout.split()[0]
    out = subprocess.run(["pgrep", "-P", shell, "-x", "ssh"], capture_output=True, text=True).stdout
    return int(out.split()[0])


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_stalled_viewer_slows_nobody_and_catches_up(shared):
    stalled, live = shared.viewer(), shared.viewer()
    stalled.wait_screen("0:")
    live.wait_screen("0:")
    session_pid = max(shared.relay.children(), key=lambda p: b"host" in cmdline(p))
    rss_before = _rss_kib(session_pid)
    ssh = _ssh_pid(stalled)
    os.kill(ssh, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        host_run(shared.host, "seq 1 400000; echo SEQ-DONE-$((40+2))")
        live.wait_screen("SEQ-DONE-42", timeout=30)
        elapsed = time.monotonic() - t0
        # The live viewer and the host kept going while the other viewer was frozen.
        assert elapsed < 20, elapsed
        # The session's backlog for the frozen viewer is bounded.
        assert _rss_kib(session_pid) - rss_before < 20_000
    finally:
        os.kill(ssh, signal.SIGCONT)
    # Thawed, it catches up with the current screen in one step.
    wait_for(
        lambda: (lambda s: "SEQ-DONE-42" in s and ("399999" in s or "400000" in s))(stalled.screen()),
        10,
        "the thawed viewer to show the final screen",
    )


def test_viewer_prompts_rename_run_and_confirm(shared):
    v = shared.viewer()
    v.wait_screen("0:")
    # C-b , : rename the window from the viewer's own status-line prompt.
    v.send("C-b", ",")
    v.wait_screen("(rename-window)")
    v.send("C-u")
    v.send("renamed-by-mate", literal=True)
    v.send("Enter")
    wait_for(lambda: "renamed-by-mate" in shared.host.cmd("list-windows").stdout, 5, "the rename on the host")
    v.wait_screen("0:renamed-by-mate*")
    # C-b : runs a typed command on the host.
    v.send("C-b", ":")
    v.send("new-window -n typed", literal=True)
    v.send("Enter")
    wait_for(lambda: "typed" in shared.host.cmd("list-windows").stdout, 5, "the typed command on the host")
    # C-b & asks first; n keeps the window, y kills it.
    v.wait_screen("typed*")
    v.send("C-b", "&")
    v.wait_screen("kill-window typed? (y/n)")
    v.send("n")
    time.sleep(0.3)
    assert "typed" in shared.host.cmd("list-windows").stdout
    v.send("C-b", "&")
    v.wait_screen("? (y/n)")
    v.send("y")
    wait_for(lambda: "typed" not in shared.host.cmd("list-windows").stdout, 5, "the window to go")


def test_readonly_viewer_gets_no_prompt(shared):
    ro = shared.viewer(shared.ro)
    ro.wait_screen("0:")
    ro.send("C-b", ":")
    ro.wait_screen("read-only")


def _keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def test_authorized_keys_restrict_who_may_join(relay, make_host, tmp_path):
    allowed_pub = _keypair(tmp_path / "mate_key")
    _keypair(tmp_path / "stranger_key")
    (tmp_path / "authorized_keys").write_text(f"# mates\n{allowed_pub}\n")
    host = make_host(relay, extra_conf=f'set -g tmate-authorized-keys "{tmp_path / "authorized_keys"}"\n')
    host.wait_ready()
    host.leave_messages()
    rw, ro = session_tokens(host)
    relay.wait_log("viewer access restricted to authorized keys")

    def key(name):
        return ["-i", str(tmp_path / name), "-o", "IdentitiesOnly=yes"]

    viewers = []
    try:
        for token in (rw, ro):
            mate = SshViewer(tmp_path / f"mate-{token[:3]}", relay.port, token, ssh_opts=key("mate_key"))
            viewers.append(mate.start())
            mate.wait_screen("0:")
            for who, opts in (
                ("stranger", key("stranger_key")),
                ("keyless", ["-o", "PubkeyAuthentication=no"]),
            ):
                v = SshViewer(tmp_path / f"{who}-{token[:3]}", relay.port, token, ssh_opts=opts)
                viewers.append(v.start())
                wait_for(v.exited, 5, f"the {who} viewer to be turned away")
                assert "Permission denied" in v.screen()
        # Failed attempts are limited per connection (paramiko's server drops the connection after
        # 10), which also bounds how often one connection can make the master check a key.
        import paramiko

        t = paramiko.Transport(("127.0.0.1", relay.port))
        try:
            t.connect()
            attempts = 0
            while t.is_active() and attempts < 20:
                attempts += 1
                try:
                    t.auth_none(rw)
                except (paramiko.AuthenticationException, paramiko.SSHException):
                    pass
                except (EOFError, OSError):
                    # The relay closed the connection while this attempt was being sent.
                    break
            assert not t.is_active() and attempts <= 11, attempts
        finally:
            t.close()
        # A token that matches no session is not denied at auth: nothing is revealed there.
        v = SshViewer(
            tmp_path / "nosession", relay.port, "x" * 25, ssh_opts=["-o", "PubkeyAuthentication=no"]
        )
        viewers.append(v.start())
        wait_for(v.exited, 5, "the refusal")
        assert "Invalid or expired session token" in v.screen()
    finally:
        for v in viewers:
            v.stop()


def test_a_failed_command_is_shown_to_the_viewer_who_ran_it(shared):
    v, other = shared.viewer(), shared.viewer()
    v.wait_screen("0:")
    other.wait_screen("0:")
    v.send("C-b", ":")
    v.send("select-window -t :42", literal=True)
    v.send("Enter")
    # The host's FAILED_CMD comes back for this viewer's client id, capitalised, in its status line.
    screen = v.wait_screen("an't find window")
    assert "42" in screen
    time.sleep(0.3)
    assert "find window" not in other.screen()


def test_extra_channels_are_refused(shared):
    import paramiko

    t = paramiko.Transport(("127.0.0.1", shared.relay.port))
    try:
        t.connect()
        t.auth_none(shared.rw)
        first = t.open_session()
        with pytest.raises(paramiko.ChannelException):
            t.open_session()
        first.close()
    finally:
        t.close()


def test_menus_say_they_are_not_available_and_the_viewer_stays(shared):
    v = shared.viewer()
    v.wait_screen("0:")
    # Each menu's message replaces the one before; only the last one is waited out.
    for key, name in (("w", "choose-"), ("?", "list-keys")):
        v.send("C-b", key)
        wait_for(
            lambda name=name: (lambda s: name in s and "not available to viewers on this relay" in s)(
                v.screen()
            ),
            5,
            f"{name} said to be not available",
        )
    wait_for(lambda: "not available" not in v.screen(), 6, "the message to go")
    host_run(shared.host, "echo after-menus")
    v.wait_screen("after-menus")
    assert not v.exited()


def test_real_clients_channels_are_moved_by_the_relays_own_loop(shared):
    """After the role, the tmate host's and the OpenSSH viewer's channels are read and written by
    their connection processes' own loops (relay.conn.wire), not handed back to paramiko: the
    ends of both say so. Keys and a resize go through it."""
    v = shared.viewer()
    v.wait_screen("0:")
    v.send("echo on-the-wire", literal=True)
    v.send("Enter")
    v.wait_screen("\non-the-wire")
    v.resize(100, 30)
    wait_for(lambda: shared.host.display("#{window_width}") == "100", 5, "the resize to reach the host")
    shared.host.cmd("kill-server")
    wait_for(lambda: v.exited(), 3, "the viewer to end")
    ended = shared.relay.wait_log("event='host session ended'")
    left = shared.relay.wait_log("event='viewer left'")
    assert "ssh='wire'" in ended, ended
    assert "ssh='wire'" in left, left
