import socket
import subprocess
from typing import cast

from jail import JailedProcess, Jailer
from relay import control
from relay.master import server as master_mod
from relay.master.server import LOG_BURST, LOG_RATE, Child, Master, RelayConfig


class FakeJailer:
    """A master's jailer for tests that register children by hand."""

    def release(self, proc: JailedProcess) -> None:
        pass


def make_master() -> Master:
    def no_connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
        raise AssertionError("these tests spawn nothing")

    return Master(RelayConfig(), connection=no_connection, jailer=cast(Jailer, FakeJailer()))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_log_events_from_a_connection_are_rate_limited(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(master_mod.time, "monotonic", clock.monotonic)
    m = make_master()
    a, b = socket.socketpair()
    child = Child(
        proc=JailedProcess(pid=4242, uid=100000),
        ip="192.0.2.9",
        ctl=a,
        started=clock.now,
        log_stamp=clock.now,
    )
    allowed = sum(m._log_allowed(child) for _ in range(LOG_BURST + 50))
    assert allowed == LOG_BURST
    assert child.logs_dropped == 50
    clock.now += 1.0  # a second later, LOG_RATE more are allowed
    allowed = sum(m._log_allowed(child) for _ in range(100))
    assert allowed == int(LOG_RATE)
    assert child.logs_dropped == 100 - int(LOG_RATE)  # the count restarts after it is reported
    a.close()
    b.close()


def registered_child(m: Master, role: control.Role = control.NO_ROLE):
    """A child known to the master: a real process (so killing it is harmless) and a control
    socketpair whose other end the test plays."""
    proc = subprocess.Popen(["sleep", "30"])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    child = Child(
        proc=JailedProcess(pid=proc.pid, uid=100000), ip="192.0.2.9", ctl=theirs, started=0.0, log_stamp=0.0
    )
    child.role = role
    m.children[proc.pid] = child
    return proc, ours, child


def test_hostile_control_messages_kill_the_child_not_the_master(monkeypatch):
    m = make_master()
    # A log event whose fields reuse the logger's own argument names is logged, not fatal.
    proc, ours, child = registered_child(m)
    ours.send(
        control.encode(
            control.TO_MASTER, "log", "info", "hello", {"event": "x", "level": "y", "self": 1, "ok": 2}
        )
    )
    m._on_control(child)
    assert child.ctl.fileno() >= 0 and proc.poll() is None
    # A child that never reads its answers is killed once its buffer is full; the master goes on.
    while child.ctl.fileno() >= 0:
        ours.send(control.encode(control.TO_MASTER, "auth", "x" * 25, None))
        m._on_control(child)
    assert proc.wait(5) == -9
    # Unknown or out-of-role messages kill the sender too.
    proc2, ours2, child2 = registered_child(m)
    ours2.send(control.encode(control.TO_MASTER, "access", None))  # only a host may say this
    m._on_control(child2)
    assert proc2.wait(5) == -9
    for s in (ours, ours2):
        s.close()
