"""relay.tmate.session.Session: the sans-IO state of one tmate session."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from relay.screen.terminal import history_cap_bytes
from relay.tmate import messages as m
from relay.tmate.session import Session, SessionError, ssh_connection_string
from relay.tmate.wire import MAX_SESSION_CELLS, SESSION_HISTORY_BYTES

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = sorted(FIXTURES.glob("host-stream-*.bin"))
RW = "ABCDEFGHJKLMNPQRSTUVWXYZa"
RO = "ro-bcdefghjkmnpqrstuvwxyz2"


# ---------------------------------------------------------------- a tiny fixture decoder
def _s(b):
    return b.decode() if isinstance(b, bytes) else b


def to_message(a):
    """A recorded host message (msgpack array, raw=True) as a relay.tmate.messages object."""
    t, body = a[0], a[1:]
    if t == 0:
        return m.Header(body[0], _s(body[1]))
    if t == 1:
        sx, sy, wins, active = body
        return m.SyncLayout(
            sx,
            sy,
            tuple(
                m.Window(idx, _s(name), tuple(m.PaneGeom(*p) for p in panes), ap)
                for idx, name, panes, ap in wins
            ),
            active,
        )
    if t == 2:
        return m.PtyData(body[0], bytes(body[1]))
    if t == 5:
        return m.Status(_s(body[0]), _s(body[1]))
    if t == 6:
        pid, cm = body
        if not cm:
            return m.SyncCopyMode(pid, None)
        backing, oy, cx, cy, sel, prompt = cm
        return m.SyncCopyMode(
            pid,
            m.CopyMode(
                backing,
                oy,
                cx,
                cy,
                m.Selection(*sel) if sel else None,
                m.Prompt(prompt[0], _s(prompt[1]), _s(prompt[2])) if prompt else None,
            ),
        )
    if t == 7:
        return m.WriteCopyMode(body[0], _s(body[1]))
    if t == 8:
        return m.Fin()
    if t == 9:
        return m.HostReady()
    if t == 12:
        return m.ExecCmd(tuple(_s(x) for x in body))
    if t == 13:
        return m.Uname(*(_s(x) for x in body))
    raise AssertionError(f"message type {t} not in the fixtures")


def recorded(path):
    u = msgpack.Unpacker(raw=True)
    u.feed(path.read_bytes())
    return [to_message(a) for a in u]


def new_session(port=2222, **kw):
    return Session(rw_token=RW, ro_token=RO, ssh_host="relay.example", ssh_port=port, **kw)


def layout(*windows, active=0, sx=100, sy=29):
    """layout((idx, name, [(id, sx, sy, xoff, yoff), ...], active_pane), ...)"""
    return m.SyncLayout(
        sx,
        sy,
        tuple(m.Window(i, n, tuple(m.PaneGeom(*p) for p in ps), ap) for i, n, ps, ap in windows),
        active,
    )


@pytest.fixture
def s():
    sess = new_session()
    sess.handle(m.Header(6, "2.4.0"))
    yield sess
    sess.close()


# ---------------------------------------------------------------- the recorded sessions
@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_recorded_session_final_state(path):
    sess = new_session()
    msgs = recorded(path)
    replies = [sess.handle(x) for x in msgs]
    try:
        assert replies[0][-1] == m.RelayReady()
        assert all(r == [] for r in replies[1:])
        assert sess.protocol == 6 and sess.client_version == "2.4.0"
        assert sess.host_ready and not sess.finished
        assert sess.uname.sysname == "Linux" and sess.uname.machine == "x86_64"

        # Two windows: 0 split in two panes, 1 with one pane; window 1 is current.
        assert list(sess.windows) == [0, 1]
        assert sess.active_window == 1 and sess.current_window.idx == 1
        w0, w1 = sess.windows[0], sess.windows[1]
        assert w0.name == "bash" and w0.pane_ids == (0, 1) and w0.active_pane == 1
        assert w1.name == "bash" and w1.pane_ids == (2,) and w1.active_pane == 2
        assert (sess.sx, sess.sy) == (100, 29)
        p0, p1, p2 = sess.panes[0], sess.panes[1], sess.panes[2]
        assert (p0.sx, p0.sy, p0.xoff, p0.yoff, p0.window_idx) == (50, 29, 0, 0, 0)
        assert (p1.sx, p1.sy, p1.xoff, p1.yoff, p1.window_idx) == (49, 29, 51, 0, 0)
        assert (p2.sx, p2.sy, p2.xoff, p2.yoff, p2.window_idx) == (100, 29, 0, 0, 1)
        assert p0.model.size == (50, 29) and p1.model.size == (49, 29)
        assert p2.model.size == (100, 29)

        text0 = "\n".join(p0.model.history_text() + p0.model.rows_text())
        assert "hello-from-host" in text0
        assert "one\ntwo\nthree" in text0
        assert any("Linux vm" in r for r in p1.model.rows_text())
        rows2 = p2.model.rows_text()
        assert rows2[0] == "mate@vm:/home/mate/wk# date"
        assert rows2[2] == "mate@vm:/home/mate/wk# x"
        assert p2.model.cursor == (24, 2)
        assert p2.model.mode(2004)  # bash's bracketed paste

        # The message view was shown on pane 0 and left with q (SYNC_COPY_MODE []).
        assert not p0.in_mode and not p0.message_view and list(p0.message_lines) == []

        # Replicated key table and options.
        prefix = sess.key_tables["prefix"]
        assert prefix['"'].command == ("split-window",)
        assert prefix["%"].command == ("split-window", "-h")
        assert prefix["d"].command == ("detach-client",)
        assert prefix["C-b"].command == ("send-prefix",)
        assert prefix["Up"].repeat and prefix["Up"].command == ("select-pane", "-U")
        assert not prefix["c"].repeat
        assert prefix["$"].command == ("command-prompt", "-I#S", "rename-session '%%'")
        root = sess.key_tables["root"]
        assert root["WheelUpStatus"].command == ("previous-window",)
        assert "Up" not in root
        assert len(prefix) + len(root) == 83  # 89 EXEC_CMD = 83 bind-key + 6 set-option
        assert sess.options["tmate-server-host"] == "127.0.0.1"
        assert sess.options["tmate-server-port"] == "2211"
        assert sess.options["status-keys"] == "emacs"
        assert sess.window_options["status-keys"] == "emacs"
        assert sess.options["tmate-server-ed25519-fingerprint"].startswith("SHA256:")
        assert sess.authorized_keys is None
        assert not sess.other_commands and not sess.notes
    finally:
        sess.close()
    assert sess.panes == {}


def test_recorded_message_view_before_q():
    """Stop the recording just before the user presses q: pane 0 shows tmate's messages."""
    sess = new_session()
    msgs = recorded(FIXTURES / "host-stream-none_z1.bin")
    first_exit = next(i for i, x in enumerate(msgs) if isinstance(x, m.SyncCopyMode))
    for x in msgs[:first_exit]:
        sess.handle(x)
    p0 = sess.panes[0]
    assert p0.in_mode and p0.message_view
    assert list(p0.message_lines) == [
        "Tip: if you wish to use tmate only for remote access, run: tmate -F",
        "To see the following messages again, run in a tmate session: tmate show-messages",
        "Press <q> or <ctrl-c> to continue",
        "---------------------------------------------------------------------",
        "Connecting to 127.0.0.1...",
        "hello",
    ]
    assert sess.windows[0].name == "[tmux]"
    sess.close()


# ---------------------------------------------------------------- HEADER
def expected_header_reply(port):
    rw = f"ssh -p{port} {RW}@relay.example" if port != 22 else f"ssh {RW}@relay.example"
    ro = f"ssh -p{port} {RO}@relay.example" if port != 22 else f"ssh {RO}@relay.example"
    # Order as tmate-ssh-server's tmate_header() sends them.
    return [
        m.Notify("Note: clear your terminal before sharing readonly access"),
        m.Notify(f"ssh session read only: {ro}"),
        m.SetEnv("tmate_ssh_ro", ro),
        m.Notify(f"ssh session: {rw}"),
        m.SetEnv("tmate_ssh", rw),
        m.RelayReady(),
    ]


def test_header_reply_port_22():
    sess = new_session(port=22)
    assert sess.handle(m.Header(6, "2.4.0")) == [
        m.Notify("Note: clear your terminal before sharing readonly access"),
        m.Notify(f"ssh session read only: ssh {RO}@relay.example"),
        m.SetEnv("tmate_ssh_ro", f"ssh {RO}@relay.example"),
        m.Notify(f"ssh session: ssh {RW}@relay.example"),
        m.SetEnv("tmate_ssh", f"ssh {RW}@relay.example"),
        m.RelayReady(),
    ]
    assert not sess.host_ready  # protocol 6 waits for READY
    sess.handle(m.HostReady())
    assert sess.host_ready


def test_header_reply_port_2222():
    sess = new_session(port=2222)
    reply = sess.handle(m.Header(6, "2.4.0"))
    assert reply == expected_header_reply(2222)
    assert reply[1] == m.Notify(f"ssh session read only: ssh -p2222 {RO}@relay.example")
    assert reply[4] == m.SetEnv("tmate_ssh", f"ssh -p2222 {RW}@relay.example")


def test_ssh_connection_string():
    assert ssh_connection_string("tok", "h", 22) == "ssh tok@h"
    assert ssh_connection_string("tok", "h", 2201) == "ssh -p2201 tok@h"


def test_header_older_protocols():
    # protocol 5: same messages; the header counts as READY (no READY message before 6).
    sess = new_session()
    assert sess.handle(m.Header(5, "2.2.1")) == expected_header_reply(2222)
    assert sess.host_ready
    # protocol < 4: no SET_ENV and no READY exist.
    sess = new_session()
    assert sess.handle(m.Header(3, "2.0")) == [
        r for r in expected_header_reply(2222) if isinstance(r, m.Notify)
    ]
    assert sess.host_ready
    # protocol < 3 sends no version: the C server assumes 1.8.5.
    sess = new_session()
    sess.handle(m.Header(2, ""))
    assert sess.client_version == "1.8.5"


def test_second_header_is_an_error(s):
    with pytest.raises(SessionError, match="second HEADER"):
        s.handle(m.Header(6, "2.4.0"))


@pytest.mark.parametrize(
    "msg",
    [
        m.HostReady(),
        m.ExecCmd(("bind-key", "x", "kill-pane")),
        m.PtyData(0, b"x"),
        layout((0, "bash", [(0, 80, 24, 0, 0)], 0)),
        m.Fin(),
    ],
)
def test_message_before_header_is_an_error(msg):
    with pytest.raises(SessionError, match="before HEADER"):
        new_session().handle(msg)


# ---------------------------------------------------------------- layout and panes
def test_pane_lifecycle(s):
    s.handle(layout((0, "bash", [(0, 80, 24, 0, 0)], 0)))
    model0 = s.panes[0].model
    s.handle(m.PtyData(0, b"first pane"))
    # Split: pane 0 resized (same model), pane 1 created at its geometry.
    s.handle(layout((0, "bash", [(0, 40, 24, 0, 0), (1, 39, 24, 41, 0)], 1)))
    assert s.panes[0].model is model0 and model0.size == (40, 24)
    assert s.panes[0].model.rows_text()[0] == "first pane"
    assert s.panes[1].model.size == (39, 24) and s.windows[0].active_pane == 1
    # Pane 0 exits: its model is closed and dropped.
    s.handle(layout((0, "bash", [(1, 80, 24, 0, 0)], 1)))
    assert model0.closed and 0 not in s.panes
    assert s.panes[1].model.size == (80, 24)
    with pytest.raises(SessionError, match="unknown pane id 0"):
        s.handle(m.PtyData(0, b"late"))


def test_pane_moves_between_windows(s):
    # break-pane on the host: the pane keeps its id and screen in a new window.
    s.handle(layout((0, "bash", [(0, 40, 24, 0, 0), (1, 39, 24, 41, 0)], 1)))
    s.handle(m.PtyData(1, b"keep me"))
    s.handle(layout((0, "bash", [(0, 80, 24, 0, 0)], 0), (1, "bash", [(1, 80, 24, 0, 0)], 1), active=1))
    assert s.panes[1].window_idx == 1
    assert s.panes[1].model.rows_text()[0] == "keep me"


def test_pty_data_unknown_pane(s):
    s.handle(layout((0, "bash", [(0, 80, 24, 0, 0)], 0)))
    with pytest.raises(SessionError, match="^unknown pane id 7$"):
        s.handle(m.PtyData(7, b"x"))


def test_too_many_panes():
    sess = new_session(max_panes=3)
    sess.handle(m.Header(6, "2.4.0"))
    sess.handle(
        layout((0, "a", [(0, 10, 10, 0, 0), (1, 10, 10, 11, 0)], 0), (1, "b", [(2, 10, 10, 0, 0)], 2))
    )
    with pytest.raises(SessionError, match="too many panes"):
        sess.handle(
            layout(
                (0, "a", [(0, 10, 10, 0, 0), (1, 10, 10, 11, 0)], 0),
                (1, "b", [(2, 10, 10, 0, 0), (3, 10, 10, 11, 0)], 2),
            )
        )
    # Nothing was applied from the rejected layout.
    assert set(sess.panes) == {0, 1, 2}
    sess.close()


def test_cells_per_session_are_bounded():
    """The memory bomb: one small SYNC_LAYOUT of huge panes (each inside the per-pane limit) is a
    protocol violation, refused before the session changes anything."""
    assert MAX_SESSION_CELLS == 4_000_000
    sess = new_session()
    sess.handle(m.Header(6, "2.4.0"))
    sess.handle(layout((0, "a", [(0, 80, 24, 0, 0)], 0)))
    bomb = layout((0, "w", [(p, 10000, 10000, 0, 0) for p in range(200)], 0), sx=10000, sy=10000)
    with pytest.raises(SessionError, match=r"too many cells: .* more than 4000000 \(limit max-session-cells"):
        sess.handle(bomb)
    assert list(sess.panes) == [0]
    # Exactly at the limit is fine (a 2000x2000 pane), one cell more is not; a 0-sized pane
    # counts as the 1x1 terminal it gets.
    sess.handle(layout((0, "a", [(0, 2000, 2000, 0, 0)], 0)))
    with pytest.raises(SessionError, match="at pane 1 of 0x0"):
        sess.handle(layout((0, "a", [(0, 2000, 2000, 0, 0), (1, 0, 0, 0, 0)], 0)))
    small = new_session(max_cells=100)
    small.handle(m.Header(6, "2.4.0"))
    small.handle(layout((0, "a", [(0, 10, 5, 0, 0)], 0), (1, "b", [(1, 10, 5, 0, 0)], 1)))
    with pytest.raises(SessionError, match="more than 100"):
        small.handle(layout((0, "a", [(0, 10, 5, 0, 0)], 0), (1, "b", [(1, 10, 6, 0, 0)], 1)))
    sess.close()
    small.close()


def test_pane_terminals_are_allocated_on_first_use(s):
    """Panes cost memory in proportion to what is used: a pane nobody wrote to or looked at has
    no native terminal."""
    s.handle(layout((0, "a", [(0, 80, 24, 0, 0), (1, 80, 24, 0, 0)], 0)))
    a, b = s.panes[0].model, s.panes[1].model
    assert not a.allocated and not b.allocated
    s.handle(m.PtyData(0, b"hello"))
    assert a.allocated and not b.allocated
    assert b.rows_text() == [""] * 24 and b.allocated  # a read makes it too


def test_history_is_shared_within_a_session_budget():
    """Each pane's history cap is the smaller of its own (2000 rows of its width) and an equal
    share of the session's budget; the shares follow the number of panes."""
    assert SESSION_HISTORY_BYTES == 128 * 1024 * 1024
    sess = new_session(history_budget=40_000_000)
    sess.handle(m.Header(6, "2.4.0"))
    sess.handle(layout((0, "a", [(0, 200, 50, 0, 0)], 0)))
    own = history_cap_bytes(200, 50, 2000)
    assert sess.panes[0].model.history_cap == own < 40_000_000  # alone: its own cap
    panes = [(p, 200, 50, 0, 0) for p in range(20)]
    sess.handle(layout((0, "a", panes, 0)))
    assert all(p.model.history_cap == 2_000_000 for p in sess.panes.values())
    sess.panes[3].model.feed(b"line\r\n" * 5000)
    assert sess.panes[3].model.history_cap == 2_000_000
    sess.handle(layout((0, "a", panes[:2], 0)))
    assert all(p.model.history_cap == own for p in sess.panes.values())
    sess.close()


@pytest.mark.parametrize(
    "bad, reason",
    [
        (layout((0, "a", [(0, 10, 10, 0, 0), (0, 10, 10, 11, 0)], 0)), "duplicate pane id 0"),
        (layout((0, "a", [(0, 10, 10, 0, 0)], 0), (1, "b", [(0, 10, 10, 0, 0)], 0)), "duplicate pane id 0"),
        (
            layout((0, "a", [(0, 10, 10, 0, 0)], 0), (0, "b", [(1, 10, 10, 0, 0)], 1)),
            "duplicate window index 0",
        ),
        (layout((0, "a", [(0, 10, 10, 0, 0)], 5)), "active pane 5 not in window"),
        (layout((0, "a", [(0, 10, 10, 0, 0)], 0), active=3), "active window 3 not in layout"),
        (layout((0, "a", [(0, 70000, 10, 0, 0)], 0)), "size 70000x10 out of range"),
        (layout((0, "a", [(0, 10, -1, 0, 0)], 0)), "out of range"),
        (layout((0, "a", [(-2, 10, 10, 0, 0)], -2)), "bad pane id -2"),
        (layout(active=0), "active window 0 not in layout"),
    ],
)
def test_bad_layouts(s, bad, reason):
    s.handle(layout((0, "bash", [(0, 80, 24, 0, 0)], 0)))
    with pytest.raises(SessionError, match=reason):
        s.handle(bad)
    assert list(s.panes) == [0] and s.panes[0].model.size == (80, 24)


def test_session_error_is_one_line(s):
    with pytest.raises(SessionError) as e:
        s.handle(m.PtyData(3, b""))
    assert "\n" not in str(e.value) and str(e.value)


# ---------------------------------------------------------------- copy mode, status, misc
def test_copy_mode_and_message_view(s):
    s.handle(layout((0, "bash", [(0, 80, 24, 0, 0)], 0)))
    p = s.panes[0]
    s.handle(m.WriteCopyMode(0, "Connecting..."))
    assert p.message_view and list(p.message_lines) == ["Connecting..."]
    s.handle(m.SyncCopyMode(0, None))  # q
    assert not p.in_mode and not p.message_lines
    cm = m.CopyMode(1, 10, 3, 4, m.Selection(1, 2, 0), m.Prompt(1, "search down", "foo"))
    s.handle(m.SyncCopyMode(0, cm))
    assert p.in_mode and not p.message_view and p.copy_mode == cm
    s.handle(m.SyncCopyMode(0, None))
    assert p.copy_mode is None and not p.in_mode
    # Copy-mode messages for a pane that is gone are dropped, not fatal.
    assert s.handle(m.SyncCopyMode(9, None)) == []
    assert s.handle(m.WriteCopyMode(9, "x")) == []
    assert len(s.notes) == 2


def test_status_uname_fin_failed_cmd(s):
    s.handle(m.Status("#[fg=green][0] ", '"host" 12:00'))
    assert s.status == m.Status("#[fg=green][0] ", '"host" 12:00')
    s.handle(m.Uname("Linux", "box", "6.1", "#1", "aarch64"))
    assert s.uname.nodename == "box"
    generation = s.generation
    # The session process shows a FAILED_CMD to the viewer; the model keeps nothing of it.
    assert s.handle(m.FailedCmd(3, "unknown command: foo")) == []
    assert s.generation == generation and not s.notes
    assert not s.finished
    assert s.handle(m.Fin()) == []
    assert s.finished
    assert s.handle(m.Reconnect("data")) == [] and s.reconnection_data == "data"


# ---------------------------------------------------------------- replicated commands
def test_bind_and_unbind(s):
    cmds = [
        ("bind-key", "-n", "C-a", "send-prefix"),
        ("bind-key", "-r", "-T", "prefix", "h", "select-pane", "-L"),
        ("bind-key", "-Tcopy", "y", "copy-selection"),
        ("bind-key", "-nr", "M-Left", "select-pane", "-L"),
        ("bind-key", "-t", "vi-copy", "v", "begin-selection"),
        ("bind-key", "x", "kill-pane"),
        ("bind", "X", "kill-window"),
    ]
    for c in cmds:
        assert s.handle(m.ExecCmd(c)) == []
    assert s.key_tables["root"]["C-a"].command == ("send-prefix",)
    assert s.key_tables["prefix"]["h"].repeat
    assert s.key_tables["copy"]["y"].command == ("copy-selection",)
    assert s.key_tables["root"]["M-Left"].repeat
    assert s.mode_key_tables["vi-copy"]["v"].command == ("begin-selection",)
    assert s.key_tables["prefix"]["X"].command == ("kill-window",)
    s.handle(m.ExecCmd(("unbind-key", "x")))
    assert "x" not in s.key_tables["prefix"] and "h" in s.key_tables["prefix"]
    s.handle(m.ExecCmd(("unbind-key", "-n", "C-a")))
    assert "C-a" not in s.key_tables["root"]
    s.handle(m.ExecCmd(("unbind-key", "-a", "-T", "copy")))
    assert s.key_tables["copy"] == {}
    s.handle(m.ExecCmd(("unbind-key", "-a")))
    assert s.key_tables["prefix"] == {}
    s.handle(m.ExecCmd(("unbind-key", "-T", "nosuchtable", "q")))  # no error
    # Malformed commands are noted, never fatal.
    assert s.handle(m.ExecCmd(("bind-key", "-T"))) == []
    assert s.handle(m.ExecCmd(("bind-key", "-Z", "x", "y"))) == []
    assert s.handle(m.ExecCmd(("bind-key", "onlykey"))) == []
    assert len(s.notes) == 3


def test_set_options(s):
    for c in [
        ("set-option", "-g", "prefix", "C-a"),
        ("set-option", "-g", "prefix2", "C-b"),
        ("set-option", "-g", "status", "on"),
        ("set-option", "-g", "status-style", "bg=green,fg=black"),
        ("set", "-g", "status-left", "[#S] "),
        ("set-option", "-ga", "status-left", "x"),
        ("set-option", "-go", "prefix", "C-z"),  # -o: only if unset
        ("set-option", "-s", "escape-time", "0"),
        ("set-option", "-w", "mode-keys", "vi"),
        ("set-window-option", "-g", "window-status-current-style", "bold"),
        ("setw", "-g", "automatic-rename", "off"),
        ("set-option", "-g", "tmate-server-host", "relay.example"),
        ("set-option", "-g", "visual-bell"),  # flag without a value: toggles on
    ]:
        assert s.handle(m.ExecCmd(c)) == []
    assert s.options["prefix"] == "C-a" and s.option("prefix2") == "C-b"
    assert s.options["status"] == "on"
    assert s.options["status-style"] == "bg=green,fg=black"
    assert s.options["status-left"] == "[#S] x"
    assert s.server_options == {"escape-time": "0"}
    assert s.window_options == {
        "mode-keys": "vi",
        "window-status-current-style": "bold",
        "automatic-rename": "off",
    }
    assert s.option("mode-keys") == "vi"
    assert s.options["tmate-server-host"] == "relay.example"
    assert s.options["visual-bell"] == "on"
    s.handle(m.ExecCmd(("set-option", "-g", "visual-bell")))
    assert s.options["visual-bell"] == "off"
    s.handle(m.ExecCmd(("set-option", "-gu", "prefix2")))
    assert "prefix2" not in s.options and s.option("prefix2", "none") == "none"


def test_binding_and_option_floods_are_errors(s, monkeypatch):
    import relay.tmate.replicated as rs

    monkeypatch.setattr(rs, "MAX_BINDINGS", 5)
    monkeypatch.setattr(rs, "MAX_OPTIONS", 3)
    for k in "abcde":
        s.handle(m.ExecCmd(("bind-key", k, "new-window")))
    s.handle(m.ExecCmd(("bind-key", "a", "kill-pane")))  # rebinding is fine
    with pytest.raises(SessionError, match="too many key bindings"):
        s.handle(m.ExecCmd(("bind-key", "-n", "f", "new-window")))
    for o in ("x", "y", "z"):
        s.handle(m.ExecCmd(("set-option", "-g", o, "1")))
    s.handle(m.ExecCmd(("set-option", "-g", "x", "2")))
    with pytest.raises(SessionError, match="too many options"):
        s.handle(m.ExecCmd(("set-option", "-w", "w", "1")))


def test_other_commands_are_stored_not_fatal(s):
    assert s.handle(m.ExecCmd(("new-window", "-n", "x"))) == []
    assert s.handle(m.ExecCmd(())) == []
    assert list(s.other_commands) == [("new-window", "-n", "x")]


def test_exec_cmd_str_old_clients(s):
    s.handle(m.ExecCmdStr("bind-key -n F2 new-window ; set-option -g prefix C-a"))
    assert s.key_tables["root"]["F2"].command == ("new-window",)
    assert s.options["prefix"] == "C-a"
    s.handle(m.ExecCmdStr('bind-key "unterminated'))  # unparsable: noted, not fatal
    assert s.notes


def test_exec_cmd_str_follows_tmux_command_line_rules(s):
    # Quotes keep blanks and `;` in a word; an unquoted `;` ends a command even at a word's end;
    # a `#` starting a word comments out the rest.
    out = s.handle(
        m.ExecCmdStr(
            "bind-key -n F3 display-message 'a; b' ; set-option -g status-left \"[#S] x\"; set -g mouse on # set -g x y"
        )
    )
    assert out == []
    assert s.key_tables["root"]["F3"].command == ("display-message", "a; b")
    assert s.options["status-left"] == "[#S] x"
    assert s.options["mouse"] == "on" and "x" not in s.options
    assert not s.notes and not s.other_commands


def test_exec_cmd_str_malformed_is_noted(s):
    generation = s.generation
    for bad in ("set-option -g status-left 'open", 'bind-key x "open', "set -g a 1;" * 33):
        assert s.handle(m.ExecCmdStr(bad)) == []
    assert len(s.notes) == 3 and all(n.startswith("unparsable command string") for n in s.notes)
    assert "status-left" not in s.options and "a" not in s.options
    assert s.generation == generation
    # A command that parses but breaks its own usage goes the way of a bad EXEC_CMD.
    s.handle(m.ExecCmdStr("bind-key -z x new-window; set -g ok yes"))
    assert s.notes[-1] == "bind-key: unknown flag -z" and s.options["ok"] == "yes"


def test_set_option_toggle_reads_the_flag_as_tmux_does(s):
    for current, toggled in (
        ("on", "off"),
        ("yes", "off"),
        ("1", "off"),
        ("off", "on"),
        ("0", "on"),
        ("x", "on"),
    ):
        s.handle(m.ExecCmd(("set-option", "-g", "visual-bell", current)))
        s.handle(m.ExecCmd(("set-option", "-g", "visual-bell")))
        assert s.options["visual-bell"] == toggled, current
    s.handle(m.ExecCmd(("set-option", "-g", "new-flag")))
    assert s.options["new-flag"] == "on"


def test_authorized_keys_and_named_sessions(s):
    assert s.authorized_keys is None
    s.handle(m.ExecCmd(("set-option", "tmate-set", "authorized_keys=ssh-ed25519 AAAAC3Nz me@x")))
    s.handle(m.ExecCmd(("set-option", "tmate-set", "authorized_keys=garbage")))
    s.handle(m.ExecCmd(("set-option", "tmate-set", "foreground=true")))
    assert s.authorized_keys == [("ssh-ed25519", "AAAAC3Nz")]
    assert s.tmate_values["foreground"] == "true"
    s.handle(m.ExecCmd(("set-option", "-g", "tmate-authorized-keys", "/path")))
    assert s.authorized_keys == []
    # The C server (without its websocket server) tells the host once that names are unsupported.
    note = [m.Notify("Named sessions are not supported (no websocket server)")]
    assert s.handle(m.ExecCmd(("set-option", "-g", "tmate-session-name", "mine"))) == note
    assert s.handle(m.ExecCmd(("set-option", "-g", "tmate-api-key", "k"))) == []
    assert s.options["tmate-session-name"] == "mine"


def test_snapshot_restores_pane(s):
    s.handle(layout((0, "bash", [(0, 20, 3, 0, 0)], 0)))
    red_bold = (0 << 24) | (0x1 << 16) | (8 << 8) | 1
    plain = (0 << 24) | (0 << 16) | (8 << 8) | 8
    snap = m.Snapshot(
        (
            m.SnapshotPane(
                0,
                2,
                1,
                0x1,
                (
                    m.SnapshotLine("old", (plain,) * 3),
                    m.SnapshotLine("hi", (red_bold, red_bold)),
                    m.SnapshotLine("$ ", (plain, plain)),
                    m.SnapshotLine("", ()),
                ),
            ),
        )
    )
    s.handle(m.PtyData(0, b"garbage"))
    s.handle(snap)
    model = s.panes[0].model
    assert model.rows_text() == ["hi", "$", ""]
    assert model.history_text() == ["old"]
    assert model.cursor == (2, 1)
    assert "\x1b[1m" in model.row_vt(0) and "\x1b[38;5;1m" in model.row_vt(0)
    with pytest.raises(SessionError, match="unknown pane id 4"):
        s.handle(m.Snapshot((m.SnapshotPane(4, 0, 0, 0, ()),)))


def test_snapshot_on_alternate_screen(s):
    s.handle(layout((0, "vim", [(0, 20, 3, 0, 0)], 0)))
    plain = (8 << 8) | 8
    saved = m.SnapshotGrid(2, 1, (m.SnapshotLine("$ vim", (plain,) * 5), m.SnapshotLine("$ ", (plain,) * 2)))
    s.handle(m.Snapshot((m.SnapshotPane(0, 3, 0, 0x1, (m.SnapshotLine("~ file", (plain,) * 6),), saved),)))
    model = s.panes[0].model
    assert model.alt_screen and model.rows_text()[0] == "~ file" and model.cursor == (3, 0)
    model.feed(b"\x1b[?1049l")  # vim exits: the normal screen is back
    assert model.rows_text()[:2] == ["$ vim", "$"]


def test_last_window_follows_the_hosts_layouts():
    from relay.tmate import messages as msgs

    s = Session(rw_token="a" * 25, ro_token="ro-" + "b" * 25, ssh_host="h", ssh_port=22)
    s.handle(msgs.Header(6, "2.4.0"))

    def layout(active, *idxs):
        wins = tuple(msgs.Window(i, f"w{i}", (msgs.PaneGeom(i, 80, 23, 0, 0),), i) for i in idxs)
        s.handle(msgs.SyncLayout(80, 23, wins, active))

    layout(0, 0)
    assert s.last_window is None
    layout(1, 0, 1)  # new-window: 0 becomes the last window
    assert s.last_window == 0
    layout(0, 0, 1)  # previous-window: now 1 is
    assert s.last_window == 1
    layout(2, 0, 1, 2)
    assert s.last_window == 0
    layout(2, 1, 2)  # the last window closes: the one before it takes over
    assert s.last_window == 1
    layout(2, 2)
    assert s.last_window is None
