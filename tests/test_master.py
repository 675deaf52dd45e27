import socket

from jail import JailedProcess
from relay import master as master_mod
from relay.master import LOG_BURST, LOG_RATE, Child, Master, RelayConfig


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_log_events_from_a_connection_are_rate_limited(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(master_mod.time, "monotonic", clock.monotonic)
    m = Master(RelayConfig(host_keys=()), jailer=object())
    a, b = socket.socketpair()
    child = Child(proc=JailedProcess(pid=4242, uid=100000), ip="192.0.2.9", ctl=a, started=clock.now,
                  log_stamp=clock.now)
    allowed = sum(m._log_allowed(child) for _ in range(LOG_BURST + 50))
    assert allowed == LOG_BURST
    assert child.logs_dropped == 50
    clock.now += 1.0                          # a second later, LOG_RATE more are allowed
    allowed = sum(m._log_allowed(child) for _ in range(100))
    assert allowed == int(LOG_RATE)
    assert child.logs_dropped == 100 - int(LOG_RATE)   # the count restarts after it is reported
    a.close()
    b.close()
