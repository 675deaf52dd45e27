"""Tests for relay.tmate.codec, the sans-IO tmate codec."""

from __future__ import annotations

import ast
import collections
import random
import re
from pathlib import Path

import msgpack
import pytest

from relay.tmate import codec as P
from relay.tmate.codec import (
    HostDecoder,
    ProtocolError,
    RelayDecoder,
    encode,
    encode_host,
)
from relay.tmate.messages import (
    CopyMode,
    ExecCmd,
    ExecCmdStr,
    FailedCmd,
    Fin,
    Header,
    HostMessage,
    HostMsg,
    HostReady,
    LegacyPaneKey,
    Notify,
    PaneGeom,
    PaneKey,
    Prompt,
    PtyData,
    Reconnect,
    RelayMessage,
    RelayReady,
    Resize,
    Selection,
    SetEnv,
    Snapshot,
    SnapshotGrid,
    SnapshotLine,
    SnapshotPane,
    Status,
    SyncCopyMode,
    SyncLayout,
    Uname,
    ViewerExecCmd,
    ViewerExecCmdStr,
    Window,
    WriteCopyMode,
)

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = sorted(FIXTURES.glob("host-stream-*.bin"))
LINE_RE = re.compile(r"^t=\s*[\d.]+ type=\s*(\d+) (\S+)\s+size=\s*(\d+) (.*)$")


def listing(stream: Path) -> list[tuple[int, str, int, list]]:
    """(type, name, size, body) for each line of the decoded listing beside a stream."""
    out = []
    for line in stream.with_suffix(".decoded.txt").read_text().splitlines():
        m = LINE_RE.match(line)
        assert m, line
        out.append((int(m[1]), m[2], int(m[3]), ast.literal_eval(m[4])))
    return out


def decode_all(data: bytes, chunks=None) -> list:
    dec = HostDecoder()
    if chunks is None:
        return dec.feed(data)
    out, off = [], 0
    for n in chunks:
        out += dec.feed(data[off : off + n])
        off += n
    assert off >= len(data)
    return out


def random_chunks(rng: random.Random, total: int, hi: int) -> list[int]:
    out = []
    while total > 0:
        n = rng.randint(1, hi)
        out.append(n)
        total -= n
    return out


# ---------------------------------------------------------------- recorded streams


def test_fixtures_present():
    assert len(STREAMS) == 4


@pytest.mark.parametrize("stream", STREAMS, ids=lambda p: p.stem)
def test_fixture_stream_matches_listing(stream):
    data = stream.read_bytes()
    msgs = decode_all(data)
    lst = listing(stream)
    assert len(msgs) == len(lst)
    # Counts per type, and the same order of types.
    want = collections.Counter(t for t, _, _, _ in lst)
    got = collections.Counter(HOST_TYPE[type(m)] for m in msgs)
    assert got == want
    assert [HOST_TYPE[type(m)] for m in msgs] == [t for t, _, _, _ in lst]
    for m, (t, name, size, body) in zip(msgs, lst, strict=True):
        assert HostMsg(t).name == name
        wire = encode_host(m)
        # Re-encoding gives exactly the client's bytes, so the size matches the listing...
        assert len(wire) == size
        # ...and the content shown in the listing survived decoding.
        assert msgpack.unpackb(wire, raw=False) == body
    # The whole stream re-encodes byte for byte.
    assert b"".join(encode_host(m) for m in msgs) == data


@pytest.mark.parametrize("stream", STREAMS, ids=lambda p: p.stem)
def test_fixture_stream_any_chunking(stream):
    data = stream.read_bytes()
    whole = decode_all(data)
    assert decode_all(data, [1] * len(data)) == whole
    rng = random.Random(stream.name)
    for hi in (2, 7, 64, 1000, 5000):
        assert decode_all(data, random_chunks(rng, len(data), hi)) == whole
    # Many streams back to back in one feed.
    assert HostDecoder().feed(data * 3) == whole * 3


def test_fixture_spot_checks():
    msgs = decode_all((FIXTURES / "host-stream-none_z0.bin").read_bytes())
    assert msgs[0] == Header(6, "2.4.0")
    assert isinstance(msgs[0].protocol, int) and isinstance(msgs[0].client_version, str)
    assert msgs[1] == ExecCmd(("bind-key", "C-b", "send-prefix"))
    assert ExecCmd(("bind-key", "&", "confirm-before", "-pkill-window #W? (y/n)", "kill-window")) in msgs
    assert ExecCmd(("bind-key", "-n", "MouseDown1Pane", "select-pane", "-t=;", "send-keys", "-M")) in msgs
    assert ExecCmd(("set-option", "-g", "tmate-server-port", "2211")) in msgs
    unames = [m for m in msgs if isinstance(m, Uname)]
    assert unames == [Uname("Linux", "vm", "6.18.44-fc-v669", "#1 SMP PREEMPT_DYNAMIC @0", "x86_64")]
    i = msgs.index(unames[0])
    assert isinstance(msgs[i + 1], HostReady)
    assert msgs[i + 2] == SyncLayout(100, 29, (Window(0, "bash", (PaneGeom(0, 100, 29, 0, 0),), 0),), 0)
    layouts = [m for m in msgs if isinstance(m, SyncLayout)]
    two = [lay for lay in layouts if len(lay.windows) == 1 and len(lay.windows[0].panes) == 2]
    assert two[0] == SyncLayout(
        100, 29, (Window(0, "bash", (PaneGeom(0, 50, 29, 0, 0), PaneGeom(1, 49, 29, 51, 0)), 1),), 0
    )
    assert layouts[-1].windows[1] == Window(1, "bash", (PaneGeom(2, 100, 29, 0, 0),), 2)
    assert layouts[-1].active_window == 1
    wcm = [m for m in msgs if isinstance(m, WriteCopyMode)]
    assert wcm[0] == WriteCopyMode(0, "Tip: if you wish to use tmate only for remote access, run: tmate -F")
    assert WriteCopyMode(0, "hello") in wcm
    assert [m for m in msgs if isinstance(m, SyncCopyMode)] == [SyncCopyMode(0, None)] * 2
    pty = [m for m in msgs if isinstance(m, PtyData)]
    assert pty[0] == PtyData(0, b"\x1b[?2004hmate@vm:~# ")
    assert PtyData(0, b"hello-from-host\r\n") in pty
    assert PtyData(2, b"Sun Nov 22 01:19:17 UTC 2026\r\n") in pty
    assert all(type(m.data) is bytes for m in pty)
    assert pty[-1] == PtyData(2, b"x")


# ---------------------------------------------------------------- round trips

HOST_TYPE = {
    Header: 0,
    SyncLayout: 1,
    PtyData: 2,
    ExecCmdStr: 3,
    FailedCmd: 4,
    Status: 5,
    SyncCopyMode: 6,
    WriteCopyMode: 7,
    Fin: 8,
    HostReady: 9,
    Reconnect: 10,
    Snapshot: 11,
    ExecCmd: 12,
    Uname: 13,
}

SNAP = Snapshot(
    (
        SnapshotPane(
            0, 3, 1, 0x10, (SnapshotLine("ab€", (0x00000807, 0, 0x01000000)), SnapshotLine("", ())), None
        ),
        SnapshotPane(
            5, 0, 0, 0xFFFFFFFF, (), SnapshotGrid(9, 2, (SnapshotLine("x" * 300, (0xFFFFFFFF,) * 300),))
        ),
    )
)

HOST_MESSAGES: list[HostMessage] = [
    Header(6, "2.4.0"),
    Header(6, ""),
    SyncLayout(
        100,
        29,
        (
            Window(0, "bash", (PaneGeom(0, 50, 29, 0, 0), PaneGeom(1, 49, 29, 51, 0)), 1),
            Window(7, "", (PaneGeom(2, 100, 29, 0, 0),), 2),
        ),
        7,
    ),
    SyncLayout(0, 0, (), -1),
    SyncLayout(
        P.MAX_DIMENSION,
        P.MAX_DIMENSION,
        (Window(P.MAX_ID, "é\ufffd", (PaneGeom(P.MAX_ID, 1, 1, P.MAX_DIMENSION, 0),), -1),),
        P.MAX_ID,
    ),
    PtyData(0, b""),
    PtyData(3, b"\xff\xfe\x80 not utf-8 \xc3(\x1b[0m"),
    PtyData(P.MAX_ID, bytes(range(256)) * 64),
    PtyData(1, b"x" * 31),
    PtyData(1, b"x" * 32),
    PtyData(1, b"x" * 255),
    PtyData(1, b"x" * 256),
    ExecCmdStr("bind-key q kill-session"),
    ExecCmdStr(""),
    FailedCmd(-1, "unknown command: foo"),
    FailedCmd(3, ""),
    Status("[0] 0:bash*", '"vm" 01:19 22-Nov-26'),
    Status("", ""),
    SyncCopyMode(0, None),
    SyncCopyMode(1, CopyMode(1, 10, 5, 3, None, None)),
    SyncCopyMode(2, CopyMode(0, 0, 0, 0, Selection(4, -2, 1), Prompt(2, "(search up) ", "needle"))),
    SyncCopyMode(2, CopyMode(1, 2000, 99, 28, None, Prompt(0, "", ""))),
    WriteCopyMode(0, "hello"),
    WriteCopyMode(0, ""),
    Fin(),
    HostReady(),
    Reconnect("opaque-reconnection-data"),
    Reconnect(""),
    SNAP,
    Snapshot(()),
    ExecCmd(("bind-key", "-n", "M-x", "kill-pane")),
    ExecCmd(("",)),
    ExecCmd(tuple(str(i) for i in range(P.MAX_ARGV))),
    Uname("Linux", "vm", "6.1.0", "#1 SMP", "x86_64"),
    Uname("", "", "", "", ""),
]

RELAY_MESSAGES: list[RelayMessage] = [
    Notify("ssh session: ssh TOKEN@host"),
    Notify(""),
    Notify("é" * 200),
    LegacyPaneKey(ord("a")),
    LegacyPaneKey(0x4000 | 0x1001),
    Resize(80, 24),
    Resize(-1, -1),
    Resize(0, 0),
    ViewerExecCmdStr(1, "new-window"),
    ViewerExecCmdStr(-1, ""),
    SetEnv("tmate_ssh", "ssh -p2222 TOKEN@127.0.0.1"),
    SetEnv("tmate_web", ""),
    RelayReady(),
    PaneKey(-1, ord("c")),
    PaneKey(0, 0x400000000000 | ord("c")),
    PaneKey(3, 0x100000000000 + 5),
    PaneKey(P.MAX_ID, 0),
    PaneKey(-1, 2**63),
    PaneKey(-1, 2**63 + 0x63),
    PaneKey(-1, 2**64 - 1),
    ViewerExecCmd(2, ("select-pane", "-t", "0.1")),
    ViewerExecCmd(0, ("",)),
]


def test_host_round_trip_every_type():
    assert {type(m) for m in HOST_MESSAGES} == set(HOST_TYPE)
    for m in HOST_MESSAGES:
        wire = encode_host(m)
        assert HostDecoder().feed(wire) == [m], m
        assert msgpack.unpackb(wire, raw=True)[0] == HOST_TYPE[type(m)]
    stream = b"".join(encode_host(m) for m in HOST_MESSAGES)
    assert HostDecoder().feed(stream) == HOST_MESSAGES
    assert decode_all(stream, [1] * len(stream)) == HOST_MESSAGES
    assert decode_all(stream, random_chunks(random.Random(1), len(stream), 300)) == HOST_MESSAGES


def test_relay_round_trip_every_type():
    assert {type(m) for m in RELAY_MESSAGES} == {
        Notify,
        LegacyPaneKey,
        Resize,
        ViewerExecCmdStr,
        SetEnv,
        RelayReady,
        PaneKey,
        ViewerExecCmd,
    }
    for m in RELAY_MESSAGES:
        assert RelayDecoder().feed(encode(m)) == [m], m
    stream = b"".join(encode(m) for m in RELAY_MESSAGES)
    dec = RelayDecoder()
    assert [x for i in range(len(stream)) for x in dec.feed(stream[i : i + 1])] == RELAY_MESSAGES


def test_pty_data_is_str_type_with_raw_bytes():
    wire = encode_host(PtyData(1, b"\xff\x00ok"))
    assert wire == b"\x93\x02\x01\xa4\xff\x00ok"
    wire = encode_host(PtyData(1, b"a" * 200))
    assert wire[:5] == b"\x93\x02\x01\xd9\xc8"  # str8, as the real client
    # bin is accepted too (the C server accepts both).
    assert HostDecoder().feed(msgpack.packb([2, 1, b"\xff"], use_bin_type=True)) == [PtyData(1, b"\xff")]


def test_invalid_utf8_in_texts_is_replaced():
    wire = msgpack.packb([7, 0, b"ok \xff\xfe end"], use_bin_type=False)
    assert HostDecoder().feed(wire) == [WriteCopyMode(0, "ok \ufffd\ufffd end")]
    wire = msgpack.packb([1, 10, 5, [[0, b"w\xc3", [[0, 10, 5, 0, 0]], 0]], 0], use_bin_type=False)
    layout = HostDecoder().feed(wire)[0]
    assert isinstance(layout, SyncLayout)
    assert layout.windows[0].name == "w\ufffd"


def test_pane_key_encodings():
    # Keys are uint64 on the wire; those >= 2**63 must be msgpack uint64 (0xcf), not int64.
    assert encode(PaneKey(-1, 2**63)) == b"\x93\x06\xff\xcf" + (2**63).to_bytes(8, "big")
    assert encode(PaneKey(0, 0x400000000063)) == b"\x93\x06\x00\xcf" + (0x400000000063).to_bytes(8, "big")
    assert encode(PaneKey(0, ord("c"))) == b"\x93\x06\x00\x63"
    assert encode(Resize(-1, -1)) == b"\x93\x02\xff\xff"
    assert encode(RelayReady()) == b"\x91\x05"
    assert encode(Notify("hi")) == b"\x92\x00\xa2hi"
    for bad in (
        PaneKey(-2, 1),
        PaneKey(0, -1),
        PaneKey(0, 2**64),
        PaneKey(True, 1),
        Resize(-2, 0),
        Notify(b"bytes"),  # type: ignore[arg-type]  # deliberately not a str
        ViewerExecCmd(0, ()),
        ViewerExecCmd(0, tuple("x" * (P.MAX_ARGV + 1))),
    ):
        with pytest.raises(ValueError):
            encode(bad)
    with pytest.raises(TypeError):
        encode(Fin())  # type: ignore[arg-type]  # deliberately a host message
    with pytest.raises(TypeError):
        encode_host(Notify("x"))  # type: ignore[arg-type]  # deliberately a relay message


def test_encode_for_old_msgpack_peers():
    # Protocol < 5 hosts predate str8: a 40-byte string goes out as str16.
    text = "x" * 40
    assert encode(Notify(text))[2] == 0xD9
    assert encode(Notify(text), protocol=4)[2:5] == b"\xda\x00\x28"
    assert RelayDecoder().feed(encode(Notify(text), protocol=4)) == [Notify(text)]


# ---------------------------------------------------------------- header variants


@pytest.mark.parametrize(
    "wire,header",
    [
        ([0, 6, "2.4.0"], Header(6, "2.4.0")),
        ([0, 5, "2.2.0"], Header(5, "2.2.0")),
        ([0, 4, "1.8.10"], Header(4, "1.8.10")),
        ([0, 3, "1.8.6"], Header(3, "1.8.6")),
        ([0, 2], Header(2, "1.8.5")),
        ([0, 1], Header(1, "1.8.5")),
    ],
)
def test_header_variants(wire, header):
    dec = HostDecoder()
    assert dec.feed(msgpack.packb(wire)) == [header]
    assert dec.protocol == header.protocol
    assert HostDecoder().feed(encode_host(header, protocol=header.protocol)) == [header]


@pytest.mark.parametrize(
    "wire,reason",
    [
        ([0, 7, "9.9"], "unsupported protocol version 7 (accepted: 1-6)"),
        ([0, 0], "unsupported protocol version 0 (accepted: 1-6)"),
        ([0, -1], "unsupported protocol version -1 (accepted: 1-6)"),
        ([0, 6], "malformed HEADER: expected 2 fields, got 1"),
        ([0, 2, "1.8.5"], "malformed HEADER: expected 1 fields, got 2"),
        ([0, 6, 6], "malformed HEADER: client version must be a string, got integer"),
        ([0], "malformed HEADER: missing protocol version"),
        ([0, "6", "2.4.0"], "malformed HEADER: protocol version must be an integer, got string"),
    ],
)
def test_bad_headers(wire, reason):
    with pytest.raises(ProtocolError) as ei:
        HostDecoder().feed(msgpack.packb(wire))
    assert ei.value.reason == reason == str(ei.value)


def test_protocol_1_copy_mode_has_no_backing():
    dec = HostDecoder()
    wire = msgpack.packb([0, 1]) + msgpack.packb([6, 0, [4, 1, 2, [3, 7, 0], []]])
    assert dec.feed(wire) == [
        Header(1, "1.8.5"),
        SyncCopyMode(0, CopyMode(1, 4, 1, 2, Selection(3, 7, 0), None)),
    ]
    # The protocol-6 shape is refused after a protocol-1 header, and vice versa.
    with pytest.raises(ProtocolError, match="copy mode must have 5 elements, got 6"):
        dec.feed(msgpack.packb([6, 0, [1, 4, 1, 2, [], []]]))
    with pytest.raises(ProtocolError, match="copy mode must have 6 elements, got 5"):
        HostDecoder().feed(msgpack.packb([6, 0, [4, 1, 2, [], []]]))
    m = SyncCopyMode(0, CopyMode(1, 4, 1, 2, None, Prompt(1, "p", "s")))
    dec = HostDecoder()
    assert dec.feed(encode_host(Header(1, "1.8.5"), 1) + encode_host(m, 1)) == [Header(1, "1.8.5"), m]


# ---------------------------------------------------------------- limits and errors


def test_limits_are_explicit():
    assert P.MAX_MESSAGE_SIZE == 17 * 1024
    assert P.MAX_PANES == 1000
    assert P.MAX_WINDOWS == 1000
    assert P.MAX_DIMENSION == 10000
    assert P.MAX_ID == 2**31 - 1
    assert P.MAX_ARGV == 1024
    assert P.MAX_SNAPSHOT_SIZE == 4 * 1024 * 1024
    assert P.MAX_SNAPSHOT_LINES == 2000
    assert P.MAX_SNAPSHOT_LINE_CELLS == 10000


def raises(data: bytes, dec=None, chunk: int | None = None) -> ProtocolError:
    dec = dec or HostDecoder()
    with pytest.raises(ProtocolError) as ei:
        if chunk is None:
            dec.feed(data)
        else:
            for i in range(0, len(data), chunk):
                dec.feed(data[i : i + chunk])
    assert str(ei.value) == ei.value.reason
    return ei.value


def pty_of_size(total: int) -> bytes:
    """A PTY_DATA message to pane 0 whose encoding is exactly `total` bytes."""
    for overhead in (4, 5, 6):  # fixstr, str8, str16 header
        wire = encode_host(PtyData(0, b"y" * (total - overhead)))
        if len(wire) == total:
            return wire
    raise AssertionError(total)


def test_message_size_limit_exact():
    ok = pty_of_size(P.MAX_MESSAGE_SIZE)
    pty = HostDecoder().feed(ok)[0]
    assert isinstance(pty, PtyData)
    assert pty.data == b"y" * (P.MAX_MESSAGE_SIZE - 6)
    for chunk in (None, 1000, 1):
        e = raises(pty_of_size(P.MAX_MESSAGE_SIZE + 1), chunk=chunk)
        assert "message too large" in e.reason and "17408" in e.reason


def test_complete_oversize_message():
    wire = encode_host(PtyData(0, b"z" * 20480))
    e = raises(wire)
    assert e.reason == f"message too large: {len(wire)} bytes > 17408"
    # Also an oversize non-PTY message.
    big = msgpack.packb([5, "l" * 18000, ""])
    assert raises(big).reason == f"message too large: {len(big)} bytes > 17408"
    # And after valid messages in the same feed, which the error carries.
    e = raises(encode_host(Fin()) + wire)
    assert e.decoded == [Fin()]


def test_declared_huge_incomplete_message_is_refused_early():
    head = b"\x93\x02\x00\xdb" + (1 << 20).to_bytes(4, "big")  # str32 claiming 1 MiB
    dec = HostDecoder()
    fed = 0
    with pytest.raises(ProtocolError) as ei:
        dec.feed(head)
        fed = len(head)
        for _ in range(2000):
            dec.feed(b"q" * 1000)
            fed += 1000
    # Refused once the buffered part passed the limit, long before 1 MiB arrived.
    assert P.MAX_MESSAGE_SIZE - 1000 < fed <= P.MAX_MESSAGE_SIZE
    assert ei.value.reason.startswith("message too large:")
    assert "incomplete > 17408" in ei.value.reason
    # The same in one feed of 20 KiB, and a huge array header.
    assert "too large" in raises(head + b"q" * 20000).reason
    # A declared-huge array is refused at its header by msgpack's own length check.
    assert (
        raises(b"\xdd" + (1 << 24).to_bytes(4, "big")).reason
        == "malformed msgpack: 16777216 exceeds max_array_len(4211712)"
    )


def test_custom_max_message_size():
    dec = HostDecoder(max_message_size=100)
    assert dec.feed(pty_of_size(100))
    assert (
        raises(pty_of_size(101), HostDecoder(max_message_size=100)).reason
        == "message too large: 101 bytes > 100"
    )
    with pytest.raises(ProtocolError, match="message too large"):
        RelayDecoder(max_message_size=50).feed(encode(Notify("n" * 60)))


def layout(win_panes: list[int]) -> bytes:
    pid = 0
    wins = []
    for i, n in enumerate(win_panes):
        wins.append([i, "w", [[pid + j, 10, 10, 0, 0] for j in range(n)], pid])
        pid += n
    return msgpack.packb([1, 100, 30, wins, 0])


def test_pane_limit():
    ok = layout([91] * 10 + [90])  # 1000 panes in 11 windows
    assert len(ok) < P.MAX_MESSAGE_SIZE
    msg = HostDecoder().feed(ok)[0]
    assert isinstance(msg, SyncLayout)
    assert sum(len(w.panes) for w in msg.windows) == 1000
    e = raises(layout([91] * 11))  # 1001
    assert e.reason == "too many panes: more than 1000 in SYNC_LAYOUT"
    assert (
        raises(layout([3, 3]), HostDecoder(max_panes=5)).reason
        == "too many panes: more than 5 in SYNC_LAYOUT"
    )


def test_window_limit():
    wins = [[i, "", [], -1] for i in range(P.MAX_WINDOWS + 1)]
    assert raises(msgpack.packb([1, 10, 10, wins, 0])).reason == "too many windows: 1001 > 1000"
    assert HostDecoder().feed(msgpack.packb([1, 10, 10, wins[:-1], 0]))


def test_argv_limit():
    wire = msgpack.packb([12] + [""] * (P.MAX_ARGV + 1))
    assert raises(wire).reason == "argv too long: 1025 > 1024 in EXEC_CMD"
    assert raises(msgpack.packb([12])).reason == "malformed EXEC_CMD: empty argv"
    wire = msgpack.packb([7, 0] + [""] * (P.MAX_ARGV + 1))
    assert raises(wire, RelayDecoder()).reason == "argv too long: 1025 > 1024 in EXEC_CMD"


def big_snapshot(lines: int, width: int) -> Snapshot:
    ln = SnapshotLine("s" * width, tuple(range(width)))
    return Snapshot((SnapshotPane(0, 0, 0, 0, (ln,) * lines, None),))


def test_snapshot_has_its_own_size_limit():
    snap = big_snapshot(300, 100)
    wire = encode_host(snap)
    assert P.MAX_MESSAGE_SIZE < len(wire) < P.MAX_SNAPSHOT_SIZE
    assert HostDecoder().feed(wire) == [snap]
    rng = random.Random(3)
    assert decode_all(wire, random_chunks(rng, len(wire), 50)) == [snap]
    assert decode_all(wire, [7] * (len(wire) // 7 + 1)) == [snap]
    # Over the snapshot limit: refused complete and incomplete.
    e = raises(wire, HostDecoder(max_snapshot_size=50_000))
    assert e.reason == "message too large: 52224 bytes buffered and incomplete > 50000"
    e = raises(wire[:60_000], HostDecoder(max_snapshot_size=50_000), chunk=4096)
    assert "incomplete > 50000" in e.reason
    # A snapshot over its limit, fed complete in one slice, is measured exactly.
    wire = encode_host(big_snapshot(40, 100))
    e = raises(wire, HostDecoder(max_message_size=5000, max_snapshot_size=6000))
    assert e.reason == f"message too large: {len(wire)} bytes > 6000"


def test_snapshot_line_and_cell_limits():
    def wire(nlines, ncells):
        return msgpack.packb([11, [[0, 0, [0, 0, [["", [0] * ncells]] * nlines], None]]])

    assert raises(wire(P.MAX_SNAPSHOT_LINES + 1, 0)).reason == "too many snapshot lines: 2001 > 2000"
    assert (
        raises(wire(1, P.MAX_SNAPSHOT_LINE_CELLS + 1)).reason
        == "too many cells in a snapshot line: 10001 > 10000"
    )
    snap = HostDecoder().feed(wire(P.MAX_SNAPSHOT_LINES, 0))[0]
    assert isinstance(snap, Snapshot)
    assert len(snap.panes[0].lines) == 2000
    assert (
        raises(msgpack.packb([11, [[0, 0, [0, 0, [["", [-1]]]], None]]])).reason
        == "malformed SNAPSHOT: cell attribute -1 out of range [0, 4294967295]"
    )
    assert (
        raises(msgpack.packb([11, [[0, 0, [0, 0, []], 5]]])).reason
        == "malformed SNAPSHOT: saved grid must be an array, got integer"
    )
    panes = [[i, 0, [0, 0, []], None] for i in range(P.MAX_PANES + 1)]
    assert raises(msgpack.packb([11, panes])).reason == "too many panes: 1001 > 1000 in SNAPSHOT"


@pytest.mark.parametrize(
    "obj,reason",
    [
        (42, "message is not an array but integer"),
        ("hello", "message is not an array but string"),
        (None, "message is not an array but nil"),
        ([], "empty message (no type)"),
        (["2", 0, "x"], "message type must be an integer, got string"),
        ([2.0, 0, "x"], "message type must be an integer, got float"),
        ([42, 1], "unknown message type 42"),
        ([-1], "unknown message type -1"),
        ([2**64 - 1], f"unknown message type {2**64 - 1}"),
        ([2, "zero", "data"], "malformed PTY_DATA: pane id must be an integer, got string"),
        ([2, True, "data"], "malformed PTY_DATA: pane id must be an integer, got boolean"),
        ([2, -1, "data"], "malformed PTY_DATA: pane id -1 out of range [0, 2147483647]"),
        ([2, 2**31, "data"], "malformed PTY_DATA: pane id 2147483648 out of range [0, 2147483647]"),
        ([2, 0, 5], "malformed PTY_DATA: data must be a string, got integer"),
        ([2, 0], "malformed PTY_DATA: expected 2 fields, got 1"),
        ([2, 0, "a", "b"], "malformed PTY_DATA: expected 2 fields, got 3"),
        ([8, 1], "malformed FIN: expected 0 fields, got 1"),
        ([9, None], "malformed READY: expected 0 fields, got 1"),
        ([13, "Linux"], "malformed UNAME: expected 5 fields, got 1"),
        ([13, "a", "b", "c", "d", 5], "malformed UNAME: machine must be a string, got integer"),
        ([1, -1, 29, [], 0], "malformed SYNC_LAYOUT: sx -1 out of range [0, 10000]"),
        ([1, 100, "29", [], 0], "malformed SYNC_LAYOUT: sy must be an integer, got string"),
        ([1, 100, 29, {}, 0], "malformed SYNC_LAYOUT: windows must be an array, got map"),
        ([1, 100, 29, {1: 2}, 0], "malformed msgpack: 1 exceeds max_map_len(0)"),
        (
            [1, 100, 29, [[0, "b", [[0, 10, -5, 0, 0]], 0]], 0],
            "malformed SYNC_LAYOUT: pane sy -5 out of range [0, 10000]",
        ),
        (
            [1, 100, 29, [[0, "b", [[0, 10, 5, 0]], 0]], 0],
            "malformed SYNC_LAYOUT: pane must have 5 elements, got 4",
        ),
        (
            [1, 100, 29, [[0, "b", [[0, 10, 5, 0, 0], [0, 1, 1, 0, 0]], 0]], 0],
            "malformed SYNC_LAYOUT: duplicate pane id 0",
        ),
        (
            [1, 100, 29, [[0, "b", [], -1], [0, "c", [], -1]], 0],
            "malformed SYNC_LAYOUT: duplicate window index 0",
        ),
        (
            [1, 100, 29, [[0, 7, [], -1]], 0],
            "malformed SYNC_LAYOUT: window name must be a string, got integer",
        ),
        (
            [1, 100, 29, [[0, "b", [], -2]], 0],
            "malformed SYNC_LAYOUT: active pane id -2 out of range [-1, 2147483647]",
        ),
        ([1, 100, 29, [], 0.5], "malformed SYNC_LAYOUT: active window index must be an integer, got float"),
        ([6, 0, None], "malformed SYNC_COPY_MODE: copy mode must be an array, got nil"),
        ([6, 0, [1, 0, 0, 0, [1, 2], []]], "malformed SYNC_COPY_MODE: selection must have 3 elements, got 2"),
        ([6, 0, [2, 0, 0, 0, [], []]], "malformed SYNC_COPY_MODE: backing 2 out of range [0, 1]"),
        (
            [6, 0, [1, 0, 0, 0, [], [0, "p", 5]]],
            "malformed SYNC_COPY_MODE: prompt input must be a string, got integer",
        ),
        ([7, 0, None], "malformed WRITE_COPY_MODE: text must be a string, got nil"),
        ([4, "1", "x"], "malformed FAILED_CMD: client id must be an integer, got string"),
        ([5, "l"], "malformed STATUS: expected 2 fields, got 1"),
        ([3, 1], "malformed EXEC_CMD_STR: command must be a string, got integer"),
        ([10], "malformed RECONNECT: expected 1 fields, got 0"),
        ([12, "bind-key", 1], "malformed EXEC_CMD: argument must be a string, got integer"),
        ([11, [[0, 0, [0, 0], None]]], "malformed SNAPSHOT: grid must have 3 elements, got 2"),
    ],
)
def test_malformed_host_messages(obj, reason):
    assert raises(msgpack.packb(obj)).reason == reason


def test_invalid_msgpack():
    assert (
        raises(b"\xc1").reason
        == "malformed msgpack: invalid type byte (such as 0xc1, which msgpack never uses)"
    )
    # Deeply nested input: msgpack's own error has no message; ours says what it was.
    assert raises(b"\x91" * 5000).reason == "malformed msgpack: nested deeper than 1024 levels"
    assert raises(b"\x91" * 1025 + b"\x00").reason == "malformed msgpack: nested deeper than 1024 levels"
    for bad in (b"\xc1", b"\x91" * 5000, b"\xd4\x01\x00"):
        detail = raises(bad).reason.removeprefix("malformed msgpack:").strip()
        assert detail, bad
    assert raises(msgpack.packb(msgpack.ExtType(1, b"x"))).reason.startswith("malformed msgpack")


def test_decoder_unusable_after_error():
    dec = HostDecoder()
    raises(msgpack.packb([42]), dec)
    assert dec.failed == "unknown message type 42"
    with pytest.raises(ProtocolError) as ei:
        dec.feed(encode_host(Fin()))
    assert ei.value.reason == "decoder unusable after error: unknown message type 42"


@pytest.mark.parametrize(
    "obj,reason",
    [
        ([8], "unknown message type 8"),
        ([6, -2, 1], "malformed PANE_KEY: pane id -2 out of range [-1, 2147483647]"),
        ([6, 0, -1], "malformed PANE_KEY: key -1 out of range [0, 18446744073709551615]"),
        ([6, 0], "malformed PANE_KEY: expected 2 fields, got 1"),
        ([2, -2, 0], "malformed RESIZE: sx -2 out of range [-1, 10000]"),
        ([0, 1], "malformed NOTIFY: message must be a string, got integer"),
        ([4, "a"], "malformed SET_ENV: expected 2 fields, got 1"),
        ([5, 1], "malformed READY: expected 0 fields, got 1"),
        ([7], "malformed EXEC_CMD: missing client id"),
        ([7, 1], "malformed EXEC_CMD: empty argv"),
        ([3, 1, None], "malformed EXEC_CMD_STR: command must be a string, got nil"),
        ([1, "k"], "malformed LEGACY_PANE_KEY: key must be an integer, got string"),
    ],
)
def test_malformed_relay_messages(obj, reason):
    assert raises(msgpack.packb(obj), RelayDecoder()).reason == reason
