"""The viewer's erase character end to end: a real OpenSSH viewer whose terminal erases with ^H
(`stty erase ^H` before ssh starts, so its pty-req says VERASE=^H) types C-h, and the real tmate
host's shell gets Backspace; a viewer with the default modes still sends C-h as C-h."""

from __future__ import annotations

import time

import pytest

from tests.e2e import SSH_LINE, SshViewer, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs tmate")


class CtrlHViewer(SshViewer):
    """An ssh viewer started from a shell whose terminal erases with ^H."""

    def ssh_command(self) -> str:
        return f"stty erase '^H'; {super().ssh_command()}"


def host_screen(host) -> str:
    return host.cmd("capture-pane", "-p", "-J").stdout


def cat_line(host, ending: str) -> str:
    """The line `cat -A` printed that ends in `ending`."""
    screen = wait_for(
        lambda: (lambda s: s if ending in s else None)(host_screen(host)), 5, f"{ending!r} from cat -A"
    )
    return [row for row in screen.splitlines() if row.endswith(ending)][-1]


def test_ctrl_h_erases_for_a_viewer_whose_terminal_erases_with_it(relay, make_host, tmp_path):
    host = make_host(relay)
    host.wait_ready()
    host.leave_messages()
    line = SSH_LINE.match(host.display("#{tmate_ssh}"))
    assert line is not None
    token = line.group(2)
    with (
        CtrlHViewer(tmp_path / "ctrl-h", relay.port, token) as ctrl_h,
        SshViewer(tmp_path / "plain", relay.port, token) as plain,
    ):
        host.cmd("send-keys", "-l", "cat -A")
        host.cmd("send-keys", "Enter")
        ctrl_h.wait_screen("cat -A")
        plain.wait_screen("cat -A")
        time.sleep(0.3)

        # ^H is this viewer's Backspace: the host's shell erases the 'b' (cat never sees it).
        ctrl_h.send("ab", literal=True)
        ctrl_h.send("C-h")
        ctrl_h.send("c1", literal=True)
        ctrl_h.send("Enter")
        assert cat_line(host, "c1$") == "ac1$"

        # The other viewer's terminal erases with DEL: its C-h stays C-h.
        plain.send("xy", literal=True)
        plain.send("C-h")
        plain.send("z2", literal=True)
        plain.send("Enter")
        assert cat_line(host, "z2$") == "xy^Hz2$"
        plain.send("pq", literal=True)
        plain.send("BSpace")
        plain.send("r3", literal=True)
        plain.send("Enter")
        assert cat_line(host, "r3$") == "pr3$"
