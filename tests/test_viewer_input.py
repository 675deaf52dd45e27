"""A viewer's input in the session process (relay.conn.host.HostSession over real sockets): the
host's escape-time, also when it changes after the viewer joined, and the viewer's erase
character, carried over the link from its pty-req."""

from __future__ import annotations

import socket
import time

from relay.conn import link
from relay.input.keycodes import KEY_ESCAPE, KEYC_BSPACE, KEYC_ESCAPE
from relay.tmate import messages as m
from relay.tmate.codec import RelayDecoder, encode_host
from tests.test_host_session import RunningSession


class Host:
    """The test's host end: what the session process sends the host, as messages."""

    def __init__(self, rs: RunningSession):
        self.rs = rs
        self.decoder = RelayDecoder()
        self.got: list = []

    def send(self, msg) -> None:
        self.rs.host.sendall(encode_host(msg))

    def set_option(self, name: str, value: str) -> None:
        self.send(m.ExecCmd(("set-option", "-g", name, value)))
        time.sleep(0.2)  # handled before the viewer's next record (another socket)

    def wait(self, predicate, timeout: float) -> list:
        """Messages received until `predicate(messages)` holds; [] if it does not in time."""
        deadline = time.monotonic() + timeout
        while not predicate(self.got):
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.rs.host.settimeout(left)
            try:
                data = self.rs.host.recv(65536)
            except TimeoutError:
                return []
            self.got += self.decoder.feed(data)
        got, self.got = self.got, []
        return got

    def keys(self, n: int, timeout: float = 5.0) -> list[int]:
        msgs = self.wait(lambda got: sum(isinstance(x, m.PaneKey) for x in got) >= n, timeout)
        return [x.key for x in msgs if isinstance(x, m.PaneKey)]


def joined(rs: RunningSession) -> socket.socket:
    """A viewer that joined, once the session process has taken it (its first output came)."""
    viewer = rs.join()
    viewer.settimeout(5)
    kind, _ = link.parse(viewer.recv(link.MAX_RECORD))
    assert kind == link.OUTPUT
    return viewer


def type_(viewer: socket.socket, data: bytes) -> None:
    viewer.send(link.INPUT + data)


def test_escape_time_from_the_host_and_its_changes():
    rs = RunningSession()
    host = Host(rs)
    host.set_option("escape-time", "500")
    viewer = joined(rs)

    t0 = time.monotonic()
    type_(viewer, b"\x1b")
    assert host.keys(1, timeout=0.35) == []  # not before escape-time
    assert host.keys(1) == [KEY_ESCAPE]  # a key after it
    assert 0.45 <= time.monotonic() - t0 < 2

    host.set_option("escape-time", "0")  # after the viewer joined
    t0 = time.monotonic()
    type_(viewer, b"\x1b")
    assert host.keys(1, timeout=0.3) == [KEY_ESCAPE]
    assert time.monotonic() - t0 < 0.3

    host.set_option("escape-time", "500")
    type_(viewer, b"\x1b")
    time.sleep(0.1)
    type_(viewer, b"x")  # within escape-time: Meta-x, one key
    assert host.keys(1) == [ord("x") | KEYC_ESCAPE]
    assert rs.finish() == "host finished the session"


def test_the_viewers_erase_character_is_bspace():
    rs = RunningSession()
    host = Host(rs)
    ctrl_h = joined(rs)
    ctrl_h.send(link.erase(0x08))  # its terminal: stty erase ^H
    type_(ctrl_h, b"\x08\x7f")
    assert host.keys(2) == [KEYC_BSPACE, 0x7F]

    plain = joined(rs)  # no erase record: DEL stays BSpace
    type_(plain, b"\x08\x7f")
    assert host.keys(2) == [0x08, KEYC_BSPACE]
    assert rs.finish() == "host finished the session"


def test_a_malformed_erase_record_drops_that_viewer_only():
    rs = RunningSession()
    host = Host(rs)
    bad, good = joined(rs), joined(rs)
    bad.send(link.ERASE + b"\x08\x08")
    bad.settimeout(5)
    while bad.recv(link.MAX_RECORD):  # the session closes that link
        pass
    type_(good, b"a")
    assert host.keys(1) == [ord("a")]
    assert rs.finish() == "host finished the session"
