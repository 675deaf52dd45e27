"""tmux's `status` is a flag (on/off, yes/no, 1/0): the session's size (RESIZE to the host) and the
viewer's screen read it the same way (relay.tmux.options.status_rows), so a viewer never gets a
session sized for a status line it does not draw, or a status line drawn over the session."""

from __future__ import annotations

import select
import time

import pytest

from relay.conn import link
from relay.screen.render import ViewerScreen
from relay.screen.terminal import TerminalModel
from relay.tmate import messages as m
from relay.tmate.codec import RelayDecoder, encode_host
from relay.tmux import options

from .test_host_session import RunningSession
from .test_render import one_pane

OFF: list[str | None] = ["off", "no", "0", "OFF"]
ON: list[str | None] = ["on", "yes", "1", None, "bogus"]


def test_status_rows():
    assert [options.status_rows(v) for v in OFF] == [0, 0, 0, 0]
    assert [options.status_rows(v) for v in ON] == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("value", OFF + ON[:3])
def test_the_screen_draws_the_status_line_by_the_flag(value):
    s = one_pane(80, 24)
    s.handle(m.ExecCmd(("set-option", "-g", "status", value)))
    s.handle(m.PtyData(0, b"\x1b[24;1HLAST"))
    term = TerminalModel(80, 24)
    term.feed(ViewerScreen(80, 24).frame(s))
    rows = term.rows_text()
    if options.status_rows(value):
        assert "0:bash*" in rows[23] and "LAST" not in rows[23]
    else:
        assert rows[23] == "LAST" and not any("0:bash*" in r for r in rows)
    term.close()
    s.close()


def _read_until(sock, screen: TerminalModel, done, timeout: float = 5.0) -> list[str]:
    """Feed the viewer's frames to `screen` until done(rows) holds."""
    deadline = time.monotonic() + timeout
    while not done(screen.rows_text()):
        assert time.monotonic() < deadline, screen.rows_text()
        if select.select([sock], [], [], 0.1)[0]:
            kind, payload = link.parse(sock.recv(link.MAX_RECORD))
            assert kind == link.OUTPUT
            assert isinstance(payload, bytes)
            screen.feed(payload)
    return screen.rows_text()


def _next_resize(host, replies: RelayDecoder, min_rows: int) -> m.Resize:
    host.settimeout(5)
    while True:
        for msg in replies.feed(host.recv(65536)):
            if isinstance(msg, m.Resize) and msg.sy >= min_rows:
                return msg


@pytest.mark.parametrize("value,session_rows", [("no", 30), ("0", 30), ("off", 30), ("on", 29)])
def test_resize_leaves_a_row_only_for_a_drawn_status_line(value, session_rows):
    rs = RunningSession()
    replies = RelayDecoder()
    rs.host.sendall(encode_host(m.ExecCmd(("set-option", "-g", "status", value))))
    rs.host.sendall(encode_host(m.PtyData(0, b"MARK")))  # after the option in the host's stream
    viewer = rs.join()
    screen = TerminalModel(80, 24)
    _read_until(viewer, screen, lambda rows: rows[0].startswith("MARK"))

    viewer.send(link.resize(80, 30))
    screen.resize(80, 30)
    assert _next_resize(rs.host, replies, 29) == m.Resize(80, session_rows)

    # The host takes the size it was given; its pane's last row is the viewer's last window row.
    pane = (m.PaneGeom(0, 80, session_rows, 0, 0),)
    rs.host.sendall(encode_host(m.SyncLayout(80, session_rows, (m.Window(0, "sh", pane, 0),), 0)))
    rs.host.sendall(encode_host(m.PtyData(0, b"\x1b[%d;1HLAST" % session_rows)))
    rows = _read_until(viewer, screen, lambda rows: rows[session_rows - 1] == "LAST")
    if session_rows == 30:
        assert not any("0:sh*" in r for r in rows), rows
    else:
        assert "0:sh*" in rows[29], rows
    assert not any("from a smaller client" in r for r in rows), rows
    screen.close()
    assert rs.finish() == "host finished the session"


def test_a_status_change_after_the_viewer_joined_resizes_the_session():
    rs = RunningSession()
    replies = RelayDecoder()
    viewer = rs.join()
    assert _next_resize(rs.host, replies, 23) == m.Resize(80, 23)  # 24 rows less the status line
    rs.host.sendall(encode_host(m.ExecCmd(("set-option", "-g", "status", "off"))))
    assert _next_resize(rs.host, replies, 24) == m.Resize(80, 24)
    rs.host.sendall(encode_host(m.ExecCmd(("set-option", "-g", "status", "on"))))
    rs.host.settimeout(5)
    got: list[m.RelayMessage] = []
    while m.Resize(80, 23) not in got:
        got += replies.feed(rs.host.recv(65536))
    viewer.close()
    assert rs.finish() == "host finished the session"


@pytest.mark.parametrize(
    "argv,shown",
    [
        (("display-message", "win #I:#W"), "win 0:sh"),
        (("display-message", "-p", "-t", "0", "#{window_name}!"), "sh!"),
        (("display-message", "-F", "#W via -F"), "sh via -F"),
    ],
)
def test_display_message_shows_its_expanded_message(argv, shown):
    rs = RunningSession()
    rs.host.sendall(encode_host(m.ExecCmd(("bind-key", "-n", "F2", *argv))))
    rs.host.sendall(encode_host(m.PtyData(0, b"MARK")))
    viewer = rs.join()
    screen = TerminalModel(80, 24)
    _read_until(viewer, screen, lambda rows: rows[0].startswith("MARK"))
    viewer.send(link.INPUT + b"\x1bOQ")  # F2
    rows = _read_until(viewer, screen, lambda rows: shown in rows[23])
    assert rows[23].startswith(shown), rows[23]
    screen.close()
    assert rs.finish() == "host finished the session"
