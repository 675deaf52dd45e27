"""The memory bomb end to end, at small scale: a fake host that speaks the protocol correctly
declares a few huge panes and writes into them. The session process stays under its cap or ends
with the reason logged; the master and a bystander session (a real tmate host) go on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack
import paramiko
import pytest

from tests.e2e import Relay, fake_host, session_tokens, tmate_available, viewer_answer, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="tmate not installed")

CAP_MB = 1024  # the default --session-memory


def _fake_host(port: int) -> tuple[paramiko.Transport, paramiko.Channel]:
    t, ch = fake_host(port)
    ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
    return t, ch


def _layout(panes: int, size: int) -> bytes:
    return msgpack.packb([1, size, size, [[0, "w", [[p, size, size, 0, 0] for p in range(panes)], 0]], 0])


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def _address_space_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return line.split()[-3]  # the hard limit (bytes)
    raise AssertionError("no Max address space line")


def _new_child(relay: Relay, before: set[int]) -> int:
    return wait_for(lambda: next(iter(set(relay.children()) - before), None), 5, "the session process")


def _bystander_goes_on(relay: Relay, bystander) -> None:
    assert relay.proc is not None and relay.proc.poll() is None  # the master
    assert bystander.alive()
    rw, _ = session_tokens(bystander)
    assert _join(relay.port, rw) < 2  # a viewer still joins it


def _join(port: int, token: str) -> float:
    """Seconds from a viewer's shell request to the session's first frame for it."""
    took, frame = viewer_answer(port, token, until=b"")
    assert frame.startswith(b"\x1b[?1049h")  # the session entered its screen
    return took


@pytest.fixture(scope="module")
def bomb_relay(keys_dir):
    with Relay(keys_dir) as r:
        yield r


def _closed(ch: paramiko.Channel, timeout: float = 10) -> bool:
    ch.settimeout(timeout)
    try:
        while ch.recv(65536):
            pass
    except TimeoutError:
        return False
    except (OSError, EOFError):
        pass
    return True


def test_a_few_huge_panes_are_refused_at_once(bomb_relay, make_host):
    relay = bomb_relay
    bystander = make_host(relay)
    bystander.wait_ready()
    t, ch = _fake_host(relay.port)
    try:
        ch.sendall(_layout(3, 10000))  # 300M cells in 2 KB: inside the per-pane limits
        assert _closed(ch)
    finally:
        t.close()
    line = relay.wait_log("max-session-cells")
    assert "host session ended" in line and "protocol violation: too many cells" in line
    _bystander_goes_on(relay, bystander)


def test_big_panes_within_the_limits_stay_under_the_cap(bomb_relay, make_host):
    """Two panes of 1400x1400 (3.9M cells, just under the session's limit) full of output: the
    session lives, its address space stays under the cap, and the cap is in force (seen from
    outside in /proc/PID/limits)."""
    relay = bomb_relay
    bystander = make_host(relay)
    bystander.wait_ready()
    before = set(relay.children())
    t, ch = _fake_host(relay.port)
    try:
        pid = _new_child(relay, before)
        assert _address_space_limit(pid) == str(CAP_MB << 20)
        ch.sendall(_layout(2, 1400))
        chunk = (b"y" * 1399 + b"\r\n") * 10
        for p in (0, 1):
            for _ in range(300):  # two screens and a half of full-width rows
                ch.sendall(msgpack.packb([2, p, chunk]))
        ch.sendall(msgpack.packb([2, 0, b"\x1b[?1049hon the alternate screen"]))
        wait_for(lambda: _status_kb(pid, "VmRSS") > 60_000, 10, "the output to be taken in")
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{pid}") and t.is_active()
        peak = _status_kb(pid, "VmPeak")
        assert peak < CAP_MB * 1024, peak
        assert not relay.has("session-memory")
    finally:
        t.close()
    _bystander_goes_on(relay, bystander)


def test_a_session_that_reaches_its_cap_ends_with_the_reason(bomb_relay, make_host):
    """1000 panes (the protocol's limit) of 63x63 (at the cells limit), each written to: ~1.5 MB
    of address space per terminal, more than the cap. The session ends, logged with
    limit=session-memory; nothing else does."""
    relay = bomb_relay
    bystander = make_host(relay)
    bystander.wait_ready()
    before = set(relay.children())
    t, ch = _fake_host(relay.port)
    try:
        pid = _new_child(relay, before)
        ch.sendall(_layout(1000, 63))
        try:
            for p in range(1000):
                ch.sendall(msgpack.packb([2, p, b"x"]))
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the session may end while we write
        assert _closed(ch)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the session process to go")
    finally:
        t.close()
    line = relay.wait_log("limit='session-memory'")
    assert "host session ended" in line and "memory limit reached" in line
    _bystander_goes_on(relay, bystander)
    again, ch2 = _fake_host(relay.port)  # the master serves new hosts
    again.close()
