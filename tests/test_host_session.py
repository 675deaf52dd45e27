"""The session loop (relay.conn.host.HostSession) against real sockets: a host flooding output and a
viewer that stops reading. The host must never wait for the viewer, the viewer's backlog must
stay bounded, and once it reads again it must catch up to the exact current screen."""

from __future__ import annotations

import select
import socket
import threading
import time

import structlog

from relay import control
from relay.conn import link
from relay.conn.host import HostSession
from relay.screen.terminal import TerminalModel
from relay.tmate import messages as m
from relay.tmate.codec import RelayDecoder, encode_host
from relay.tmate.session import Session


class SocketChannel:
    """The part of a paramiko Channel that HostSession uses, over a plain socket."""

    mode = "a test's socket"

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def recv_ready(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def poll(self) -> bool:
        return True  # a plain socket that select() saw readable has data or its end

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)


class Conn:
    def __init__(self, ctl: socket.socket):
        self.master = control.Client(ctl)
        self.peer_ip = "192.0.2.1"
        self.log = structlog.get_logger()


class RunningSession:
    """A HostSession running on a thread, with the test playing the host (`host`) and the
    master (`join` hands a viewer link over the control socket)."""

    def __init__(self):
        self.host, relay_end = socket.socketpair()
        self.ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        session = Session(rw_token="a" * 25, ro_token="ro-" + "b" * 25, ssh_host="h", ssh_port=22)
        hs = HostSession(Conn(ctl_child), SocketChannel(relay_end), session)
        self.hs = hs
        self.result: dict = {}
        self.loop = threading.Thread(target=lambda: self.result.setdefault("reason", hs.run()), daemon=True)
        self.sockets = [self.host, relay_end, self.ctl, ctl_child]
        self.loop.start()
        self.host.sendall(encode_host(m.Header(6, "2.4.0")))
        self.host.sendall(
            encode_host(m.SyncLayout(80, 23, (m.Window(0, "sh", (m.PaneGeom(0, 80, 23, 0, 0),), 0),), 0))
        )

    def join(self) -> socket.socket:
        """A viewer joins (80x24); returns its end of the link."""
        viewer_end, session_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        data = control.encode(control.TO_CONNECTION, "viewer", False, "192.0.2.2", None, False, 0, False)
        control.send_with_fd(self.ctl, data, session_end.fileno())
        session_end.close()
        viewer_end.send(link.resize(80, 24))
        self.sockets.append(viewer_end)
        return viewer_end

    def finish(self) -> str | None:
        """The host ends the session; the loop's reason for stopping."""
        self.host.sendall(encode_host(m.Fin()))
        self.loop.join(5)
        for s in self.sockets:
            s.close()
        return self.result.get("reason")


def test_stalled_viewer_never_blocks_the_host_and_catches_up():
    rs = RunningSession()
    host_end = rs.host
    # The host has started its session; a viewer joins through the control socket.
    viewer_end = rs.join()
    replies = RelayDecoder()
    host_end.settimeout(5)
    got: list[m.RelayMessage] = []
    while not any(isinstance(x, m.Resize) for x in got):  # the session took the viewer's size
        got += replies.feed(host_end.recv(65536))
    assert m.Resize(80, 23) in got

    # 20 MB of output while the viewer reads nothing: the host's writes never wait on it.
    line = b"0123456789" * 7 + b"\r\n"
    chunk = b"".join(b"%08d " % i + line for i in range(200))
    t0 = time.monotonic()
    sent = 0
    n = 0
    while sent < 20_000_000:
        data = chunk.replace(b"00000", b"%05d" % (n % 100000), 1)
        for i in range(0, len(data), 16000):
            host_end.sendall(encode_host(m.PtyData(0, data[i : i + 16000])))
        sent += len(data)
        n += 1
    host_end.sendall(encode_host(m.PtyData(0, b"\x1b[2J\x1b[HFINAL-SCREEN\r\nsecond line")))
    host_elapsed = time.monotonic() - t0
    assert host_elapsed < 30, host_elapsed

    # What waits for the viewer is bounded by the link's socket buffers, not by the output.
    time.sleep(0.5)
    pending = 0
    viewer_end.setblocking(False)
    records = []
    try:
        while True:
            rec = viewer_end.recv(link.MAX_RECORD)
            records.append(rec)
            pending += len(rec)
    except BlockingIOError:
        pass
    assert pending < 4 * link.SOCKET_BUFFER, pending

    # Reading again, the viewer converges on the current screen.
    screen = TerminalModel(80, 24)
    for rec in records:
        kind, payload = link.parse(rec)
        assert kind == link.OUTPUT and isinstance(payload, bytes)
        screen.feed(payload)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not screen.rows_text()[0].startswith("FINAL-SCREEN"):
        if select.select([viewer_end], [], [], 0.1)[0]:
            kind, payload = link.parse(viewer_end.recv(link.MAX_RECORD))
            assert isinstance(payload, bytes)
            screen.feed(payload)
    rows = screen.rows_text()
    assert rows[0] == "FINAL-SCREEN" and rows[1] == "second line", rows[:3]
    assert "0:sh*" in rows[23]

    assert rs.finish() == "host finished the session"


def test_a_bad_viewer_record_drops_that_viewer_only():
    rs = RunningSession()
    host_end = rs.host
    bad, good = rs.join(), rs.join()
    bad.send(b"Zgarbage")  # not a record kind a viewer may send
    bad.settimeout(5)
    while bad.recv(link.MAX_RECORD):  # the session closes that link ...
        pass
    host_end.sendall(encode_host(m.PtyData(0, b"still-serving")))
    screen = TerminalModel(80, 24)
    good.settimeout(5)
    while "still-serving" not in screen.rows_text()[0]:  # ... and goes on serving the other viewer
        kind, payload = link.parse(good.recv(link.MAX_RECORD))
        assert isinstance(payload, bytes)
        screen.feed(payload)
    assert rs.loop.is_alive() and "reason" not in rs.result
    assert rs.finish() == "host finished the session"


class VanishingChannel(SocketChannel):
    """A host channel like a killed host's: once it has read end of stream, writing fails."""

    def __init__(self, sock: socket.socket):
        super().__init__(sock)
        self.gone = False
        self.written_after = 0

    def recv(self, n: int) -> bytes:
        data = self.sock.recv(n)
        self.gone = self.gone or not data
        return data

    def sendall(self, data: bytes) -> None:
        if self.gone:
            self.written_after += 1
            raise OSError("Socket is closed")
        self.sock.sendall(data)


def _farewell(end: socket.socket) -> bytes:
    """The last record a viewer gets (frames before it skipped)."""
    end.settimeout(5)
    last = b""
    while record := end.recv(link.MAX_RECORD):
        last = record
    kind, payload = link.parse(last)
    assert kind == link.EXIT, last[:40]
    return payload  # type: ignore[return-value]


def test_a_vanished_host_ends_the_session_with_a_reason_and_every_viewer_is_told():
    from types import SimpleNamespace

    from relay.conn.host import SERVER_EXITED, run_host
    from relay.conn.process import ConnectionConfig

    ctl, ctl_child = control.socketpair()
    ctl.send(control.encode(control.TO_CONNECTION, "tokens", "a" * 25, "ro-" + "b" * 25))
    conn = Conn(ctl_child)
    conn.cfg = ConnectionConfig(host_keys=(), ssh_host="h", ssh_port=22)  # type: ignore[attr-defined]
    host, relay_end = socket.socketpair()
    chan = VanishingChannel(relay_end)
    ends = []
    for readonly in (False, True):
        viewer_end, session_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        data = control.encode(control.TO_CONNECTION, "viewer", readonly, "192.0.2.2", None, False, 0, False)
        control.send_with_fd(ctl, data, session_end.fileno())
        session_end.close()
        viewer_end.send(link.resize(80, 24))
        ends.append(viewer_end)
    server = SimpleNamespace(username="tmate", pubkey=None)
    result: dict = {}
    with structlog.testing.capture_logs() as logs:
        loop = threading.Thread(target=lambda: result.setdefault("code", run_host(conn, chan, server)))  # type: ignore[arg-type]
        loop.start()
        host.sendall(encode_host(m.Header(6, "2.4.0")))
        host.sendall(
            encode_host(m.SyncLayout(80, 23, (m.Window(0, "sh", (m.PaneGeom(0, 80, 23, 0, 0),), 0),), 0))
        )
        replies, got = RelayDecoder(), []
        host.settimeout(5)
        while m.Resize(80, 23) not in got:  # the read-write viewer sized the session
            got += replies.feed(host.recv(65536))
        host.close()  # gone without a word, as a killed host
        farewells = [_farewell(end) for end in ends]
        loop.join(5)
    assert farewells == [SERVER_EXITED, SERVER_EXITED]
    assert chan.written_after == 0  # closing wrote nothing to the vanished host
    assert result == {"code": 0}
    [ended] = [e for e in logs if e["event"] == "host session ended"]
    # Read end of stream first, or failed writing to the host first: either way, a reason.
    assert ended["reason"] == "host closed the connection" or ended["reason"].startswith("connection lost: ")
    assert not [e for e in logs if e["event"] in ("viewer not told", "connection failed")]
    for s in (ctl, ctl_child, relay_end, *ends):
        s.close()


def test_a_viewer_that_cannot_be_told_does_not_stop_the_others():
    from relay.conn.host import SERVER_EXITED

    rs = RunningSession()
    broken, ro_end, rw_end = rs.join(), rs.join(), rs.join()
    rs.host.sendall(encode_host(m.PtyData(0, b"x")))
    wait = time.monotonic() + 5
    while len(rs.hs.viewers) < 3 and time.monotonic() < wait:
        time.sleep(0.01)
    first = next(iter(rs.hs.viewers.values()))

    class Unsendable:  # a link whose farewell fails with something unexpected
        def __init__(self, sock):
            self.sock = sock

        def fileno(self):
            return self.sock.fileno()

        def send(self, data):
            raise RuntimeError("cannot send")

    with structlog.testing.capture_logs() as logs:
        rs.host.sendall(encode_host(m.Fin()))
        rs.loop.join(5)
        first.sock = Unsendable(first.sock)  # type: ignore[assignment]
        rs.hs.close(SERVER_EXITED)
    assert [e["event"] for e in logs if e["event"] == "viewer not told"] == ["viewer not told"]
    assert _farewell(ro_end) == SERVER_EXITED and _farewell(rw_end) == SERVER_EXITED
    broken.close()
    for s in rs.sockets:
        s.close()
