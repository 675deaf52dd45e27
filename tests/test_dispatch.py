"""relay.input.dispatch, encode, commands: key codes -> messages for the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.input import commands
from relay.input import encode as enc
from relay.input.dispatch import KeyDispatcher, Local, Notice
from relay.input.keycodes import (
    KEY_PASTE_END,
    KEY_PASTE_START,
    KEYC_BASE,
    KEYC_BSPACE,
    KEYC_CTRL,
    KEYC_ESCAPE,
    KEYC_F1,
    KEYC_F12,
    KEYC_IC,
    KEYC_KP_PERIOD,
    KEYC_NONE,
    KEYC_SHIFT,
    KEYC_UP,
    key_from_name,
)
from relay.input.parser import InputParser
from relay.tmate import messages as m
from relay.tmate.codec import HostDecoder, encode
from relay.tmate.session import Session
from relay.tmux import cmdline

FIXTURES = Path(__file__).parent / "fixtures"


def _key(name: str) -> int:
    """key_from_name for a name that must parse."""
    code = key_from_name(name)
    assert code is not None, name
    return code


# ---------------------------------------------------------------- encoding for the host
def test_encode_key_protocol_6():
    assert enc.encode_key(KEYC_UP | KEYC_CTRL, 6) == [m.PaneKey(-1, KEYC_UP | KEYC_CTRL)]
    assert enc.encode_key(0xE9, 6) == [m.PaneKey(-1, 0xE9)]
    assert enc.encode_key(KEYC_NONE, 6) == []
    assert enc.encode_key(_key("MouseDown1Pane"), 6) == []
    assert enc.encode_key(KEY_PASTE_START, 6) == []
    assert encode(m.PaneKey(-1, KEYC_UP | KEYC_CTRL | KEYC_SHIFT))  # fits the codec


def test_encode_key_protocol_5_shift():
    # tmate 2.2.0 (protocol 5) has no MouseDragEnd keys: special keys from BSpace on are 9 lower.
    assert enc.encode_key(KEYC_UP, 5) == [m.PaneKey(-1, KEYC_UP - 9)]
    assert enc.encode_key(KEYC_BSPACE, 5) == [m.PaneKey(-1, KEYC_BASE + 36)]
    assert enc.encode_key(KEYC_F1 | KEYC_SHIFT, 5) == [m.PaneKey(-1, (KEYC_F1 - 9) | KEYC_SHIFT)]
    assert enc.encode_key(ord("a"), 5) == [m.PaneKey(-1, ord("a"))]
    assert enc.encode_key(ord("a") | KEYC_ESCAPE, 5) == [m.PaneKey(-1, ord("a") | KEYC_ESCAPE)]


def test_encode_key_legacy():
    L = m.LegacyPaneKey
    assert enc.encode_key(ord("a"), 4) == [L(ord("a"))]
    assert enc.encode_key(0x02, 4) == [L(0x02)]
    assert enc.encode_key(KEYC_BSPACE, 4) == [L(0x1001)]
    assert enc.encode_key(KEYC_F1, 4) == [L(0x1002)]
    assert enc.encode_key(KEYC_F12, 4) == [L(0x100D)]
    assert enc.encode_key(KEYC_IC, 3) == [L(0x1016)]  # after F13-F20
    assert enc.encode_key(KEYC_UP | KEYC_CTRL, 4) == [L(0x4000 | 0x101D)]
    assert enc.encode_key(KEYC_KP_PERIOD, 4) == [L(0x1030)]
    assert enc.encode_key(ord("x") | KEYC_ESCAPE, 4) == [L(0x2000 | ord("x"))]
    # UTF-8: one key per byte, modifiers on the first
    assert enc.encode_key(0xE9 | KEYC_ESCAPE, 4) == [L(0x2000 | 0xC3), L(0xA9)]
    assert all(encode(x, 4) for x in enc.encode_key(0x1F600, 4))


def test_encode_command():
    assert enc.encode_command(("split-window", "-h"), 6, 7) == m.ViewerExecCmd(7, ("split-window", "-h"))
    s = enc.encode_command(("rename-window", 'a "b" $HOME \\x', "-t=;"), 5, 7)
    assert s == m.ViewerExecCmdStr(7, '"rename-window" "a \\"b\\" \\$HOME \\\\x" "-t=\\\\;"')


def test_split_commands():
    assert cmdline.split_commands(("select-pane", "-t=;", "send-keys", "-M")) == [
        ("select-pane", "-t="),
        ("send-keys", "-M"),
    ]
    assert cmdline.split_commands(("a", ";", "b")) == [("a",), ("b",)]
    assert cmdline.split_commands(("send-keys", "\\;")) == [("send-keys", ";")]
    assert cmdline.split_commands(("split-window",)) == [("split-window",)]


def test_canonical_command():
    assert commands.canonical_command("splitw") == "split-window"
    assert commands.canonical_command("split-w") == "split-window"
    assert commands.canonical_command("if") == "if-shell"
    assert commands.canonical_command("detach") == "detach-client"
    assert commands.canonical_command("list-") is None  # ambiguous
    assert commands.canonical_command("nope") is None


# ---------------------------------------------------------------- dispatcher
def _session(fixture="host-stream-none_z0.bin") -> Session:
    s = Session(
        rw_token="ABCDEFGHJKLMNPQRSTUVWXYZa",
        ro_token="ro-bcdefghjkmnpqrstuvwxyz2",
        ssh_host="relay.example",
        ssh_port=22,
    )
    for msg in HostDecoder().feed((FIXTURES / fixture).read_bytes()):
        s.handle(msg)
    return s


@pytest.fixture
def sess():
    s = _session()
    yield s
    s.close()


_clock = [1000.0]


def press(d: KeyDispatcher, keys) -> list:
    """Keys one second apart (no repeat window, no assume-paste)."""
    out = []
    for k in keys:
        _clock[0] += 1.0
        out += d.key(k, _clock[0])
    return out


def test_fixture_replicated_default_bindings(sess):
    assert sess.protocol == 6
    assert sess.key_tables["prefix"]['"'].command == ("split-window",)


def test_plain_keys_go_to_the_pane(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("l"), ord("s"), 0x0D, KEYC_UP]) == [
        m.PaneKey(-1, ord("l")),
        m.PaneKey(-1, ord("s")),
        m.PaneKey(-1, 0x0D),
        m.PaneKey(-1, KEYC_UP),
    ]


def test_prefix_then_split(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert d.key(0x02, 100.0) == []
    assert d.table == "prefix"
    assert d.key(ord('"'), 101.0) == [m.ViewerExecCmd(3, ("split-window",))]
    assert d.table == "root"
    assert d.key(ord("a"), 102.0) == [m.PaneKey(-1, ord("a"))]


def test_prefix_from_parsed_bytes(sess):
    p = InputParser()
    d = KeyDispatcher(sess, 3, readonly=False)
    out = d.keys(p.feed(b"\x02", 0.0), 0.0) + d.keys(p.feed(b"%", 1.0), 1.0)
    assert out == [m.ViewerExecCmd(3, ("split-window", "-h"))]


def test_prefix_detach_is_local(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("d")]) == [Local("detach-client", ("detach-client",))]


def test_prefix_twice_sends_prefix_to_pane(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, 0x02]) == [m.PaneKey(-1, 0x02)]
    assert d.table == "root"


def test_unbound_prefix_key_dropped(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("Q")]) == []
    assert d.table == "root"
    assert press(d, [ord("Q")]) == [m.PaneKey(-1, ord("Q"))]


def test_ui_commands_are_local(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord(":")]) == [Local("command-prompt", ("command-prompt",))]
    assert press(d, [0x02, ord("x")]) == [
        Local("confirm-before", ("confirm-before", "-pkill-pane #P? (y/n)", "kill-pane"))
    ]
    assert press(d, [0x02, ord("?")]) == [Local("list-keys", ("list-keys",))]
    assert press(d, [0x02, ord("s")]) == [Local("choose-tree", ("choose-tree",))]
    # switch-client (C-b L) acts on this viewer: never sent to the host
    assert press(d, [0x02, ord("L")]) == [Local("switch-client", ("switch-client", "-l"))]


def test_repeat_binding(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    up = [m.ViewerExecCmd(3, ("select-pane", "-U"))]
    assert d.key(0x02, 10.0) == []
    assert d.key(KEYC_UP, 10.1) == up  # bind -r Up
    assert d.repeating and d.pending_timeout(10.1) == pytest.approx(0.5)
    assert d.key(KEYC_UP, 10.4) == up  # within repeat-time: no prefix
    assert d.key(KEYC_UP, 10.8) == up  # window restarted at 10.4
    # A non-repeating key ends the repeat and is looked up from the root table.
    assert d.key(ord("n"), 11.0) == [m.PaneKey(-1, ord("n"))]
    assert not d.repeating and d.table == "root"
    # After repeat-time the key goes to the pane.
    assert d.key(0x02, 20.0) == [] and d.key(KEYC_UP, 20.1) == up
    assert d.expire(20.7) and d.table == "root"
    assert d.key(KEYC_UP, 20.8) == [m.PaneKey(-1, KEYC_UP)]


def test_compound_binding(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    sess.handle(
        m.ExecCmd(("bind-key", "X", "select-pane", "-t=;", "display-message", "hi", ";", "send-keys", "a\\;"))
    )
    assert press(d, [0x02, ord("X")]) == [
        m.ViewerExecCmd(3, ("select-pane", "-t=")),
        Local("display-message", ("display-message", "hi")),
        m.ViewerExecCmd(3, ("send-keys", "a;")),
    ]


def test_custom_prefix(sess):
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix", "C-a")))
    sess.handle(m.ExecCmd(("unbind-key", "C-b")))
    sess.handle(m.ExecCmd(("bind-key", "C-a", "send-prefix")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02]) == [m.PaneKey(-1, 0x02)]  # C-b is an ordinary key now
    assert press(d, [0x01, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    assert press(d, [0x01, 0x01]) == [m.PaneKey(-1, 0x01)]  # send-prefix sends C-a


def test_prefix2(sess):
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix2", "M-a")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("a") | KEYC_ESCAPE, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    sess.handle(m.ExecCmd(("set-option", "-g", "prefix2", "None")))
    assert press(d, [ord("a") | KEYC_ESCAPE]) == [m.PaneKey(-1, ord("a") | KEYC_ESCAPE)]


def test_root_table_binding(sess):
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-h", "select-pane", "-L")))
    sess.handle(m.ExecCmd(("bind-key", "-n", "F2", "new-window")))
    d = KeyDispatcher(sess, 3, readonly=False)
    p = InputParser()
    assert d.keys(p.feed(b"\x1bh", 1.0), 1.0) == [m.ViewerExecCmd(3, ("select-pane", "-L"))]
    assert d.keys(p.feed(b"\x1bOQ", 2.0), 2.0) == [m.ViewerExecCmd(3, ("new-window",))]
    # a root binding takes precedence over the prefix key itself
    sess.handle(m.ExecCmd(("bind-key", "-n", "C-b", "next-window")))
    assert press(d, [0x02]) == [m.ViewerExecCmd(3, ("next-window",))]
    sess.handle(m.ExecCmd(("unbind-key", "-n", "C-b")))
    assert press(d, [0x02, ord("n")]) == [m.ViewerExecCmd(3, ("next-window",))]


def test_custom_key_table(sess):
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-w", "switch-client", "-T", "mine")))
    sess.handle(m.ExecCmd(("bind-key", "-T", "mine", "x", "kill-pane")))
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [ord("w") | KEYC_ESCAPE]) == [] and d.table == "mine"
    assert press(d, [ord("x")]) == [m.ViewerExecCmd(3, ("kill-pane",))]
    assert d.table == "root"
    sess.handle(m.ExecCmd(("bind-key", "-n", "M-q", "switch-client", "-Tnope")))
    assert press(d, [ord("q") | KEYC_ESCAPE]) == [Notice("table nope doesn't exist")]


def test_readonly_viewer(sess):
    d = KeyDispatcher(sess, 4, readonly=True)
    assert press(d, [ord("a"), 0x0D, KEYC_UP]) == []
    assert press(d, [0x02, ord('"')]) == [Notice("client is read-only")]
    assert press(d, [0x02, 0x02]) == [Notice("client is read-only")]  # send-prefix too
    assert press(d, [0x02, ord("Q")]) == []
    # detach-client is a read-only command: C-b d still detaches a read-only viewer
    assert press(d, [0x02, ord("d")]) == [Local("detach-client", ("detach-client",))]
    assert d.run_command(("kill-server",)) == [Notice("client is read-only")]
    assert d.keys([KEY_PASTE_START, ord("a"), KEY_PASTE_END], 200.0) == []


def test_paste_bypasses_bindings(sess):
    pane = sess.panes[sess.current_window.active_pane]
    pane.model.feed(b"\x1b[?2004l")  # the recorded shell had turned bracketed paste on
    d = KeyDispatcher(sess, 3, readonly=False)
    out = d.keys([KEY_PASTE_START, 0x02, ord("d"), KEY_PASTE_END], 100.0)
    # the pane does not want bracketed paste: no wrapper
    assert out == [m.PaneKey(-1, 0x02), m.PaneKey(-1, ord("d"))]
    assert d.table == "root"


def test_paste_wrapped_when_pane_wants_it(sess):
    pane = sess.panes[sess.current_window.active_pane]
    pane.model.feed(b"\x1b[?2004h")
    assert not pane.in_mode
    d = KeyDispatcher(sess, 3, readonly=False)
    p = InputParser()
    keys = p.feed(b"\x1b[200~hi\n\x1b[201~", 0.0)
    out = d.keys(keys, 100.0)
    open_ = [m.PaneKey(-1, ord("[") | KEYC_ESCAPE)] + [m.PaneKey(-1, c) for c in b"200~"]
    close = [m.PaneKey(-1, ord("[") | KEYC_ESCAPE)] + [m.PaneKey(-1, c) for c in b"201~"]
    assert out == open_ + [m.PaneKey(-1, ord("h")), m.PaneKey(-1, ord("i")), m.PaneKey(-1, 0x0D)] + close


def test_assume_paste_time(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    # Keys in one burst: the first two are looked up normally, later ones go to the pane.
    out = d.keys([ord("a"), ord("b"), 0x02, ord("c")], 5.0)
    assert out == [m.PaneKey(-1, c) for c in (ord("a"), ord("b"), 0x02, ord("c"))]
    sess.handle(m.ExecCmd(("set-option", "-g", "assume-paste-time", "0")))
    assert d.keys([ord("a"), ord("b"), 0x02, ord("c")], 6.0) == [
        m.PaneKey(-1, ord("a")),
        m.PaneKey(-1, ord("b")),
        m.ViewerExecCmd(3, ("new-window",)),
    ]


def test_protocol_5_and_4(sess):
    for proto, key_msgs, cmd in [
        (5, [m.PaneKey(-1, 0x02), m.PaneKey(-1, KEYC_UP - 9)], m.ViewerExecCmdStr(3, '"split-window"')),
        (4, [m.LegacyPaneKey(0x02), m.LegacyPaneKey(0x101D)], m.ViewerExecCmdStr(3, '"split-window"')),
    ]:
        sess.protocol = proto
        d = KeyDispatcher(sess, 3, readonly=False)
        assert press(d, [0x02, 0x02, KEYC_UP]) == key_msgs
        assert press(d, [0x02, ord('"')]) == [cmd]
        for msg in key_msgs + [cmd]:
            assert encode(msg, proto)


def test_bindings_follow_session_changes(sess):
    d = KeyDispatcher(sess, 3, readonly=False)
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window",))]
    sess.handle(m.ExecCmd(("bind-key", "c", "new-window", "-c", "#{pane_current_path}")))
    assert press(d, [0x02, ord("c")]) == [m.ViewerExecCmd(3, ("new-window", "-c", "#{pane_current_path}"))]
    sess.handle(m.ExecCmd(("unbind-key", "c")))
    assert press(d, [0x02, ord("c")]) == []
