"""Reconnection without a network: the datum (tamper, other key, expiry, generation), the key
file and its wipe in forked children, and SNAPSHOT decoding (every cell attribute, colours, wide
characters, history, the alternate screen, the cursor)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from types import SimpleNamespace
from typing import Any

import pytest

from relay import control
from relay.hostkeys import HostKeyError
from relay.hostkeys.store import RECONNECT_KEY_FILE, ensure_reconnect_key
from relay.master.reconnect import Datum, HmacKey, Reconnection, ReconnectState, check_datum, make_datum
from relay.screen.terminal import TerminalModel
from relay.tmate import messages as m
from relay.tmate.snapshot import snapshot_vt

NOW = 1_800_000_000.0
LIFETIME = 900.0
DATUM = Datum("0123456789abcdef", "a" * 25, "ro-" + "b" * 25, 3, int(NOW) - 10)


@pytest.fixture
def key() -> HmacKey:
    return HmacKey(bytearray(range(32)))


# ---------------------------------------------------------------------- the datum
def test_a_datum_round_trips_and_carries_identity_tokens_generation_and_time(key):
    data = make_datum(key, DATUM)
    assert data.isascii() and data.count(".") == 1 and len(data) < 400
    assert check_datum(key, data, NOW, LIFETIME) == DATUM


def test_any_changed_character_is_forged(key):
    data = make_datum(key, DATUM)
    for i in range(0, len(data), 7):
        if data[i] == ".":
            continue
        c = "A" if data[i] != "A" else "B"
        assert check_datum(key, data[:i] + c + data[i + 1 :], NOW, LIFETIME) in (
            "forged reconnection data (not made by this relay's key)",
            "malformed reconnection data",
        )


def test_a_datum_of_another_key_is_forged(key):
    other = HmacKey(bytearray(32))
    assert str(check_datum(other, make_datum(key, DATUM), NOW, LIFETIME)).startswith("forged")


def test_a_payload_with_another_generation_needs_its_own_mac(key):
    good = make_datum(key, DATUM)
    later = make_datum(key, Datum(DATUM.sid, DATUM.rw, DATUM.ro, 4, DATUM.issued))
    spliced = later.split(".")[0] + "." + good.split(".")[1]
    assert str(check_datum(key, spliced, NOW, LIFETIME)).startswith("forged")


def test_expiry_and_the_clock(key):
    data = make_datum(key, DATUM)
    assert isinstance(check_datum(key, data, DATUM.issued + LIFETIME, LIFETIME), Datum)
    assert check_datum(key, data, DATUM.issued + LIFETIME + 1, LIFETIME) == "expired reconnection data"
    assert (
        check_datum(key, data, DATUM.issued - 61, LIFETIME) == "expired reconnection data"
    )  # from the future


@pytest.mark.parametrize("data", ["", "nodot", "a.b.c", "é.x", "x" * 2000 + ".y"])
def test_malformed_data_is_refused_before_any_decoding(key, data):
    assert check_datum(key, data, NOW, LIFETIME) in (
        "malformed reconnection data",
        "forged reconnection data (not made by this relay's key)",
    )


class Registry(Reconnection):
    """The master's takeover rule over a bare registry."""

    def __init__(self, **tokens):
        self.registry = tokens


class _Session:  # a registry entry: hashed by identity, as the master's Child
    def __init__(self, rw: str, ro: str, sid: str, generation: int):
        self.tokens, self.rc = (rw, ro), ReconnectState(sid=sid, generation=generation)


def _session(rw: str, ro: str, sid: str, generation: int) -> Any:
    return _Session(rw, ro, sid, generation)


def test_takeover_rule_generation_identity_and_free_tokens():
    me = _session("x" * 25, "ro-" + "y" * 25, "", 0)  # the new connection, with its random tokens
    assert Registry()._takeover_refusal(me, DATUM) is None  # unknown: a restarted relay
    held = _session(DATUM.rw, DATUM.ro, DATUM.sid, 3)
    reg = Registry(**{DATUM.rw: held, DATUM.ro: held})
    assert reg._takeover_refusal(me, DATUM) is None  # the session's current generation
    held.rc.generation = 4  # someone took it over since this datum was issued
    assert reg._takeover_refusal(me, DATUM) == "stale reconnection data (generation 3, now 4)"
    other = _session(DATUM.rw, DATUM.ro, "another-session", 0)  # a name reused by a new session
    reg = Registry(**{DATUM.rw: other, DATUM.ro: other})
    assert reg._takeover_refusal(me, DATUM) == "another session holds these tokens now"


# ---------------------------------------------------------------------- the key
def test_the_key_file_is_made_once_0600_and_checked(tmp_path):
    d = tmp_path / "keys"
    path, created = ensure_reconnect_key(d)
    assert created and path == str(d / RECONNECT_KEY_FILE)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    before = open(path, "rb").read()
    assert ensure_reconnect_key(d) == (path, False) and open(path, "rb").read() == before
    a, b = HmacKey.load(path), HmacKey.load(path)
    assert a.mac("x") == b.mac("x") != HmacKey.ephemeral().mac("x")
    os.chmod(path, 0o644)
    with pytest.raises(HostKeyError, match="readable by others"):
        ensure_reconnect_key(d)
    os.chmod(path, 0o600)
    with open(path, "ab") as f:
        f.write(b"!")
    with pytest.raises(HostKeyError, match="33 bytes"):
        ensure_reconnect_key(d)
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        HmacKey.load(path)


def test_a_forked_child_holds_no_copy_of_the_key():
    secret = bytes(range(100, 132))
    key = HmacKey(bytearray(secret))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a jailed connection process would find in its memory
        os.close(r)
        os.write(w, bytes(key._buf))
        os._exit(0)
    os.close(w)
    seen = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert seen == bytes(32)
    assert bytes(key._buf) == secret  # the master keeps it


# ---------------------------------------------------------------------- SNAPSHOT to VT
def cell(fg: int = 8, bg: int = 8, attr: int = 0, flags: int = 0) -> int:
    return flags << 24 | attr << 16 | bg << 8 | fg


def pane(lines, cx=0, cy=0, mode=0x1, saved=None) -> m.SnapshotPane:
    return m.SnapshotPane(0, cx, cy, mode, tuple(m.SnapshotLine(t, tuple(a)) for t, a in lines), saved)


@pytest.mark.parametrize(
    "attr, sgr",
    [(0x1, "1"), (0x2, "2"), (0x4, "4"), (0x8, "5"), (0x10, "7"), (0x20, "8"), (0x40, "3")],
    ids=["bright", "dim", "underscore", "blink", "reverse", "hidden", "italics"],
)
def test_every_cell_attribute_becomes_its_sgr(attr, sgr):
    vt = snapshot_vt(pane([("x", [cell(attr=attr)])])).decode()
    assert f"\x1b[0;{sgr}m\x1b(Bx" in vt


def test_all_attributes_at_once_and_the_line_drawing_charset():
    vt = snapshot_vt(pane([("qx", [cell(attr=0xFF), cell(attr=0x80)])])).decode()
    assert "\x1b[0;1;2;4;5;7;8;3m\x1b(0q" in vt and "\x1b[0m\x1b(0x" in vt
    model = TerminalModel(10, 2)
    model.feed(snapshot_vt(pane([("qx", [cell(attr=0x80)] * 2)])))
    assert model.rows_text()[0] == "─│"  # DEC special graphics
    model.close()


@pytest.mark.parametrize(
    "fg, bg, flags, codes",
    [
        (1, 8, 0, "31"),  # palette foreground
        (8, 4, 0, "44"),  # palette background
        (8, 8, 0, None),  # defaults: no colour code
        (91, 8, 0, "91"),  # aixterm bright
        (8, 92, 0, "102"),  # tmux keeps a bright background as 90-97 too
        (208, 8, 0x1, "38;5;208"),  # 256 colours
        (8, 17, 0x2, "48;5;17"),
        (5, 8, 0x10, None),  # RGB: the packing kept one byte, so the default is drawn
    ],
)
def test_colours(fg, bg, flags, codes):
    vt = snapshot_vt(pane([("x", [cell(fg, bg, flags=flags)])])).decode()
    assert (f"\x1b[0;{codes}m" in vt) if codes else "\x1b[0m\x1b(Bx" in vt


@pytest.mark.parametrize("text", ["日x", "日 x"], ids=["padding-without-text", "padding-with-a-space"])
def test_wide_characters_and_their_padding_cells(text):
    model = TerminalModel(10, 2)
    model.feed(snapshot_vt(pane([(text, [cell(1), cell(flags=0x4), cell()])], cx=3)))
    assert model.rows_text()[0] == "日x"
    assert model.cursor == (3, 0)
    model.close()


def test_history_screen_cursor_and_a_hidden_cursor():
    lines = [(f"line {i}", [cell()] * 6) for i in range(8)]
    model = TerminalModel(20, 3, history_lines=100)
    model.feed(snapshot_vt(pane(lines, cx=4, cy=2, mode=0)))
    assert model.history_text() == [f"line {i}" for i in range(5)]
    assert model.rows_text() == ["line 5", "line 6", "line 7"]
    assert model.cursor == (4, 2) and not model.cursor_visible
    model.close()


def test_the_alternate_screen_over_a_saved_normal_screen_with_history():
    saved = m.SnapshotGrid(2, 2, tuple(m.SnapshotLine(f"sh {i}", (cell(),) * 4) for i in range(5)))
    model = TerminalModel(20, 3, history_lines=100)
    model.feed(
        snapshot_vt(pane([("~ top", [cell(attr=0x10)] * 5), ("~", [cell()])], cx=1, cy=1, saved=saved))
    )
    assert model.alt_screen and model.rows_text()[:2] == ["~ top", "~"] and model.cursor == (1, 1)
    assert "\x1b[7m" in model.row_vt(0)
    model.feed(b"\x1b[?1049l")  # the program exits: the normal screen and its history are back
    assert model.rows_text() == ["sh 2", "sh 3", "sh 4"] and model.history_text() == ["sh 0", "sh 1"]
    model.close()


# ---------------------------------------------------------------------- the flag
def test_the_reconnect_window_reaches_the_master_and_the_viewers(monkeypatch, tmp_path):
    from relay import cli, log
    from relay.conn import process

    given: list[process.ConnectionConfig] = []

    def connection(sock, ctl, ip, cfg, accepted):
        given.append(cfg)
        return SimpleNamespace(run=None)

    monkeypatch.setattr(process, "Connection", connection)
    a, uids = cli._checked_args(["--reconnect-window", "2.5", "-k", str(tmp_path / "keys")], {})
    a.reconnect_key = cli._reconnect_key(a.keys, log.get_logger())
    assert a.reconnect_key == str(tmp_path / "keys" / RECONNECT_KEY_FILE)  # made at start
    master = cli._make_master(a, [], uids)
    assert (master.cfg.reconnect_window, master.cfg.reconnect_key) == (2.5, a.reconnect_key)
    assert master.hmac_key.mac("x") == HmacKey.load(a.reconnect_key).mac("x")
    master.connection(None, None, "203.0.113.7", 0.0)
    assert given[0].reconnect_window == 2.5
    assert cli._checked_args([], {})[0].reconnect_window == 600
    with pytest.raises(SystemExit):
        cli._checked_args(["--reconnect-window", "0"], {})


# ---------------------------------------------------------------------- relinked viewers
def _answer(ours) -> tuple[str, list]:
    data, fds, _, _ = socket.recv_fds(ours, control.MAX_CONTROL_MESSAGE, 4)
    for fd in fds:
        os.close(fd)
    spec, args = control.decode(control.TO_CONNECTION, data)
    return spec.name, args


def _say(m, ours, child, *msg) -> None:
    ours.send(control.encode(control.TO_MASTER, *msg))
    m._on_control(child)


@contextlib.contextmanager
def _master():
    """A master driven through the control table, and a maker of children known to it (real
    processes, killed at the end; `child(**attrs)` sets the Child's attributes)."""
    from tests.test_master import make_master, registered_child

    m = make_master()
    procs = []

    def child(**attrs: Any):
        proc, ours, c = registered_child(m)
        for name, value in attrs.items():
            setattr(c, name, value)
        procs.append(proc)
        return ours, c

    try:
        yield m, child
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _host_with_datum(m, child, access: list[str] | None = None):
    """A host whose session is ready (`access`) and has its reconnection datum: (its end of the
    control socket, the Child, the datum)."""
    ours, host = child()
    for msg in (("host",), ("access", access), ("rdata",)):
        _say(m, ours, host, *msg)
    assert _answer(ours)[0] == "tokens"
    name, (datum,) = _answer(ours)
    assert name == "rdata"
    return ours, host, datum


def test_the_master_relinks_its_viewers_as_relinked_since_their_first_join():
    """`viewer` to the host's new session process: relinked with its first join time for a viewer
    the old one had, not relinked (announced, from now) for one that joined while the host was away."""
    with _master() as (m, child):
        h1_ours, h1, datum = _host_with_datum(m, child)
        rw, ro = h1.tokens
        v1_ours, v1 = child()
        _say(m, v1_ours, v1, "join", rw, None, None, None)
        assert _answer(v1_ours) == ("joined", [False])
        name, (readonly, _ip, _key, relinked, since, web) = _answer(h1_ours)
        assert (name, readonly, relinked, web) == ("viewer", False, False, False)
        assert abs(since - time.time()) < 5 and v1.rc.since == since
        v1.rc.since = since = since - 3600  # as if it had joined an hour ago
        _say(m, h1_ours, h1, "end", True)
        m._forget(h1)  # its host is lost: the session is held
        v2_ours, v2 = child()
        _say(m, v2_ours, v2, "join", ro, None, None, None)  # joins while the host is away: it waits
        assert _answer(v2_ours) == ("joined", [True]) and v2.rc.since == 0
        h2_ours, h2 = child()
        _say(m, h2_ours, h2, "host")
        _say(m, h2_ours, h2, "resume", datum)
        assert _answer(h2_ours)[0] == "tokens" and _answer(h2_ours) == ("resumed", [rw, ro, None])
        _say(m, h2_ours, h2, "access", None)  # ready: the waiting viewers are linked to it
        got = {}
        for _ in range(2):
            name, (readonly, _ip, _key, relinked, first, _web) = _answer(h2_ours)
            assert name == "viewer"
            got[readonly] = (relinked, first)
        assert got[False] == (True, since)  # v1: the host knows it, since its first join
        assert got[True][0] is False and abs(got[True][1] - time.time()) < 5 and v2.rc.since == got[True][1]
        assert [_answer(o)[0] for o in (v1_ours, v2_ours)] == ["relink", "relink"]
        assert _answer(h2_ours) == ("relinked", [[], 0])  # the relinks are done; nobody left


def test_a_relinked_viewer_is_listed_as_before_and_not_announced():
    from relay.conn import presence

    sent: list = []
    hs = SimpleNamespace(
        closing=False, session=SimpleNamespace(protocol=6), viewers={}, send_host=sent.append
    )
    first = NOW - 3600

    def viewer(i: int, readonly: bool) -> Any:
        v = SimpleNamespace(
            id=i, ip=f"192.0.2.{i}", readonly=readonly, since=0.0, fingerprint=None, web=False
        )
        hs.viewers[i] = v
        return v

    presence.joined(hs, viewer(1, False), None, relinked=True, since=first)
    assert sent == []  # no notice; counted with the rest once the relinks are done
    presence.back(hs, [], 0)
    shown = time.strftime("%H:%M:%S", time.localtime(first))
    assert sent == [
        m.SetEnv("tmate_num_clients", "1"),
        m.SetEnv("tmate_clients", f"192.0.2.1 rw since {shown}"),
    ]  # counted and listed since its first join
    sent.clear()
    presence.joined(hs, viewer(2, True), None, since=NOW)  # a new one is announced
    # The count and the list first, so the host shows the notice with them current.
    assert sent[0] == m.SetEnv("tmate_num_clients", "2")
    assert sent[1].value.startswith(f"192.0.2.1 rw since {shown}, 192.0.2.2 ro since ")
    assert sent[2] == m.Notify("A mate has joined (192.0.2.2, read-only) -- 2 clients currently connected")


def test_the_host_is_told_who_left_while_it_was_away():
    from relay.conn import presence

    sent: list = []
    hs = SimpleNamespace(
        closing=False, session=SimpleNamespace(protocol=6), viewers={}, send_host=sent.append
    )
    presence.back(hs, ["192.0.2.1", "192.0.2.2"], 3)
    assert sent == [
        m.SetEnv("tmate_num_clients", "0"),
        m.SetEnv("tmate_clients", ""),
        m.Notify("A mate has left (192.0.2.1) -- 0 client currently connected"),
        m.Notify("A mate has left (192.0.2.2) -- 0 client currently connected"),
        m.Notify("3 more mates left meanwhile -- 0 client currently connected"),
    ]
    sent.clear()
    presence.ready(hs)  # a fresh session's READY: nobody yet, and the formats say so
    assert sent == [m.SetEnv("tmate_num_clients", "0"), m.SetEnv("tmate_clients", "")]
    hs.closing = True
    sent.clear()
    presence.back(hs, ["192.0.2.1"], 0)
    assert sent == []


def test_the_master_keeps_who_left_while_the_host_was_away(monkeypatch):
    """A viewer the host had that leaves while its host is away (held, or resumed and not ready
    yet) is handed to the new session process after the relinks (`relinked`), at most
    control.MAX_LEFT by address; one that joined meanwhile, unknown to the host, is not."""
    monkeypatch.setattr(control, "MAX_LEFT", 2)
    with _master() as (m, child):
        h1_ours, h1, datum = _host_with_datum(m, child)
        rw, ro = h1.tokens
        had = []
        for i in range(4):
            v_ours, v = child(ip=f"198.51.100.{i}")
            _say(m, v_ours, v, "join", rw, None, None, None)
            had.append(v)
        _say(m, h1_ours, h1, "end", True)
        m._forget(h1)  # held
        late_ours, late = child(ip="203.0.113.1")
        _say(m, late_ours, late, "join", ro, None, None, None)  # joins while away: it waits
        for v in (had[0], had[1], had[2], late):  # three the host had and the late one leave
            m._forget(v)
        h2_ours, h2 = child()
        _say(m, h2_ours, h2, "host")
        _say(m, h2_ours, h2, "resume", datum)
        assert _answer(h2_ours)[0] == "tokens" and _answer(h2_ours)[0] == "resumed"
        assert had[3].session is h2  # it waits for the new process now
        _say(m, h2_ours, h2, "access", None)
        assert _answer(h2_ours)[0] == "viewer"  # the one that stayed
        assert _answer(h2_ours) == ("relinked", [["198.51.100.0", "198.51.100.1"], 1])
        assert h2.viewers == {had[3].proc.pid} and h2.rc.left == [] and not h2.rc.resumed
        _say(m, h2_ours, h2, "access", None)  # a later access relinks nothing and tells nothing
        h2_ours.setblocking(False)
        with pytest.raises(BlockingIOError):
            h2_ours.recv(1)


def test_a_resumed_tmate_a_session_admits_only_its_keys_among_the_viewers_that_waited():
    """A host with authorized keys (tmate -a) is away and back: until its new session process
    says which keys it admits (`access`), the held session's keys decide who may wait (a stranger
    is refused, a web page too: ssh only); at that `access`, a waiting viewer whose key is no
    longer listed gets its last line instead of a link."""
    from relay.master.reconnect import NOT_AUTHORIZED
    from relay.master.web import SSH_ONLY

    fp1, fp2, stranger = ("SHA256:" + c * 43 for c in "abs")
    with _master() as (m, child):
        h1_ours, h1, datum = _host_with_datum(m, child, [fp1, fp2])
        rw, _ro = h1.tokens
        first_ours, first = child()
        _say(m, first_ours, first, "join", rw, None, fp1, None)
        assert _answer(first_ours) == ("joined", [False])
        _say(m, h1_ours, h1, "end", True)
        m._forget(h1)  # held, `first` waiting
        h2_ours, h2 = child()
        _say(m, h2_ours, h2, "host")
        _say(m, h2_ours, h2, "resume", datum)
        assert _answer(h2_ours)[0] == "tokens" and _answer(h2_ours)[0] == "resumed"
        assert h2.authorized == frozenset({fp1, fp2})  # the held session's, until `access`
        assert not m._may_log_in(rw, stranger) and not m._may_log_in(rw, None)
        second_ours, second = child()
        _say(m, second_ours, second, "join", rw, None, fp2, None)
        assert _answer(second_ours) == ("joined", [False]) and second.session is h2  # waits
        for fp, web in ((stranger, False), (fp1, True)):
            ours, v = child(web=web)
            _say(m, ours, v, "join", rw, None, fp, None)
            assert (
                _answer(ours) == (("refused", [SSH_ONLY]) if web else ("no-session", []))
                and v.session is None
            )
        _say(m, h2_ours, h2, "access", [fp1])  # back, it admits fp1 only
        assert _answer(h2_ours)[0] == "viewer"  # `first`
        assert _answer(h2_ours) == ("relinked", [[], 0])
        assert _answer(first_ours) == ("relink", [False])
        assert _answer(second_ours) == ("ended", [NOT_AUTHORIZED])
        assert h2.viewers == {first.proc.pid}
