"""The control channel's table (relay.control) and the master's dispatch through it: every message
kind, well-formed, malformed, from a role that may not send it and repeated when once-only. A bad
message kills its sender and only its sender: the master goes on answering the others."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import MutableMapping
from typing import Any

import msgpack
import pytest
import structlog

from relay import control
from relay.control import TO_CONNECTION, TO_MASTER
from relay.master.server import Child, Master
from tests.test_master import make_master, registered_child

FP = "SHA256:" + "A" * 43
TOKEN = "x" * 25
# One well-formed instance of every message a connection may send.
SAMPLES: dict[str, list] = {
    "log": ["info", "hello", {"k": 1}],
    "auth": [TOKEN, None],
    "host": [],
    "join": [TOKEN, "ssh-ed25519 AAAA", FP, "192.0.2.7"],
    "access": [[FP]],
    "stats": [1000, 2000],
    "name": ["pairing", None, "0" * 64],
    "resume": ["payload.mac"],
    "rdata": [],
    "end": [True],
    "hot": ["host", [1 << 40, 12345]],
}
ROLES = (control.NO_ROLE, control.HOST, control.VIEWER)


def raw(name: str, *args: object) -> bytes:
    """A message packed without the table's check, as a compromised process could send it."""
    return msgpack.packb([name, *args], use_bin_type=True)


class Rig:
    """A master with hand-registered children (real processes, so killing one is harmless)."""

    def __init__(self) -> None:
        self.master: Master = make_master()
        self.procs: list[subprocess.Popen] = []

    def child(self, role: control.Role = control.NO_ROLE) -> tuple[subprocess.Popen, socket.socket, Child]:
        proc, ours, child = registered_child(self.master, role)
        ours.settimeout(2)
        self.procs.append(proc)
        return proc, ours, child

    def send(self, ours: socket.socket, child: Child, data: bytes) -> list[MutableMapping[str, Any]]:
        """The child sends `data`; what the master logged while handling it."""
        ours.send(data)
        with structlog.testing.capture_logs() as logs:
            self.master._on_control(child)
        return logs

    def answer(self, ours: socket.socket) -> tuple[str, list, list[int]]:
        data, fds, _, _ = socket.recv_fds(ours, control.MAX_CONTROL_MESSAGE + 1, 4)
        spec, args = control.decode(TO_CONNECTION, data)
        return spec.name, args, fds

    def still_serving(self) -> None:
        """Another child still gets its answer."""
        proc, ours, child = self.child()
        self.send(ours, child, control.encode(TO_MASTER, "auth", "y" * 25, None))
        assert self.answer(ours)[:2] == ("auth", [True])
        assert proc.poll() is None

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def killed(proc: subprocess.Popen, child: Child, logs: list[MutableMapping[str, Any]], why: str) -> bool:
    reasons = [e.get("reason", "") for e in logs if e["event"] == "connection killed"]
    assert reasons and why in reasons[0], (reasons, why)
    return proc.wait(5) == -9 and child.ctl.fileno() < 0


def test_every_message_has_a_sample_and_is_documented():
    assert SAMPLES.keys() == TO_MASTER.keys()
    doc = control.__doc__ or ""
    for name in (*TO_MASTER, *TO_CONNECTION):
        assert f"\n  {name} " in doc, name
    for name, args in SAMPLES.items():
        control.encode(TO_MASTER, name, *args)  # the samples pass the table's own check


def _malformed() -> list[tuple[str, bytes, str]]:
    cases = []
    for name, spec in TO_MASTER.items():
        args = SAMPLES[name]
        cases.append((f"{name}-extra-field", raw(name, *args, 0), "fields, expected"))
        if args:
            cases.append((f"{name}-missing-field", raw(name, *args[:-1]), "fields, expected"))
        for i, f in enumerate(spec.fields):
            bad = [*args[:i], "12345" if f.kind.startswith("int") else 12345, *args[i + 1 :]]
            cases.append((f"{name}-{f.name}-wrong-type", raw(name, *bad), f.name))
            if f.kind.startswith("str <= ") and int(f.kind.split()[2]) < 4000:
                long = [*args[:i], "x" * (int(f.kind.split()[2]) + 1), *args[i + 1 :]]
                cases.append((f"{name}-{f.name}-too-long", raw(name, *long), f.name))
    cases += [
        ("unknown-kind", raw("shell", "ls"), "unexpected control message"),
        ("not-an-array", msgpack.packb({"log": 1}), "not a named array"),
        ("undecodable", b"\xc1", "undecodable"),
        ("too-large", raw("log", "info", "x" * 9000, {}), "too large"),
    ]
    return cases


MALFORMED = _malformed()


@pytest.mark.parametrize("data, why", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_message_kills_only_its_sender(rig, data, why):
    host_only = b"access" in data[:8] or b"stats" in data[:8]
    role = control.HOST if host_only else control.NO_ROLE  # else the role check comes first
    proc, ours, child = rig.child(role)
    logs = rig.send(ours, child, data)
    assert killed(proc, child, logs, why)
    rig.still_serving()


WRONG_ROLE = [(name, role) for name, spec in TO_MASTER.items() for role in ROLES if role not in spec.roles]


@pytest.mark.parametrize("name, role", WRONG_ROLE, ids=[f"{n}-from-{r or 'none'}" for n, r in WRONG_ROLE])
def test_a_message_from_a_role_that_may_not_send_it_kills_only_its_sender(rig, name, role):
    proc, ours, child = rig.child(role)
    logs = rig.send(ours, child, control.encode(TO_MASTER, name, *SAMPLES[name]))
    assert killed(proc, child, logs, f"with role {role or 'none'}")
    rig.still_serving()


ONCE = [name for name, spec in TO_MASTER.items() if spec.once]


@pytest.mark.parametrize("name", ONCE)
def test_a_repeated_once_only_message_kills_only_its_sender(rig, name):
    proc, ours, child = rig.child()
    data = control.encode(TO_MASTER, name, *SAMPLES[name])
    rig.send(ours, child, data)
    assert rig.answer(ours)[0] in ("tokens", "no-session")  # the first is answered
    logs = rig.send(ours, child, data)
    assert killed(proc, child, logs, "sent twice")
    rig.still_serving()


def test_every_kind_can_be_repeated_or_is_once_only():
    # The kinds that no role may send twice are exactly those that give a role.
    assert set(ONCE) == {"host", "join"}
    assert WRONG_ROLE, "every kind but log is limited to some roles"


# ---------------------------------------------------------------------- well-formed messages
def test_log_is_logged_with_the_senders_pid_and_ip(rig):
    proc, ours, child = rig.child(control.VIEWER)
    logs = rig.send(ours, child, control.encode(TO_MASTER, "log", "nonsense", "hello", {"k": 1, "pid": 7}))
    [event] = logs
    assert event["event"] == "hello" and event["log_level"] == "info"
    assert event["k"] == 1 and event["pid"] == proc.pid and event["ip"] == "192.0.2.9"
    assert proc.poll() is None


def test_host_gets_its_tokens_and_a_session_is_joined_through_the_master(rig):
    hproc, hours, host = rig.child()
    rig.send(hours, host, control.encode(TO_MASTER, "host"))
    name, (rw, ro), fds = rig.answer(hours)
    assert name == "tokens" and not fds and ro.startswith("ro-")
    assert rig.master.registry[rw] is host and rig.master.registry[ro] is host and host.role == control.HOST

    # Before the host is ready, its tokens name no joinable session.
    vproc, vours, viewer = rig.child()
    rig.send(vours, viewer, control.encode(TO_MASTER, "join", rw, None, None, None))
    assert rig.answer(vours)[:2] == ("no-session", [])

    # access: ready, and only FP may join.
    rig.send(hours, host, control.encode(TO_MASTER, "access", [FP]))
    assert host.joinable and host.authorized == frozenset({FP})
    aproc, aours, auth = rig.child()
    for fp, allowed in ((None, False), ("SHA256:" + "B" * 43, False), (FP, True)):
        rig.send(aours, auth, control.encode(TO_MASTER, "auth", ro, fp))
        assert rig.answer(aours)[:2] == ("auth", [allowed])

    v2proc, v2ours, viewer2 = rig.child()
    rig.send(v2ours, viewer2, control.encode(TO_MASTER, "join", ro, "ssh-ed25519 AAAA", FP, None))
    name, args, fds = rig.answer(v2ours)
    assert (name, args, len(fds)) == ("joined", [True], 1)
    new = control.Client(hours).receive_viewer()
    assert isinstance(new, control.NewViewer)
    assert (new.readonly, new.ip, new.pubkey) == (True, "192.0.2.9", "ssh-ed25519 AAAA")
    # The two fds are the ends of one link.
    with socket.socket(fileno=fds[0]) as v_end, socket.socket(fileno=new.fd) as s_end:
        v_end.send(b"Ihello")
        assert s_end.recv(100) == b"Ihello"
    for proc in (hproc, vproc, aproc, v2proc):
        assert proc.poll() is None


# ---------------------------------------------------------------------- the connection side
@pytest.fixture
def pair():
    ours, theirs = control.socketpair()
    ours.settimeout(2)
    yield ours, control.Client(theirs)
    ours.close()
    theirs.close()


def sent(ours: socket.socket) -> tuple[str, list]:
    spec, args = control.decode(TO_MASTER, ours.recv(control.MAX_CONTROL_MESSAGE + 1))
    return spec.name, args


def test_client_wrappers_send_the_tables_messages(pair):
    ours, client = pair
    ours.send(control.encode(TO_CONNECTION, "tokens", "a" * 25, "ro-" + "b" * 25))
    assert client.request_tokens() == ("a" * 25, "ro-" + "b" * 25)
    assert sent(ours) == ("host", [])

    ours.send(control.encode(TO_CONNECTION, "auth", True))
    assert client.authorize("u" * 500, "not a fingerprint") is True
    assert sent(ours) == ("auth", ["u" * control.MAX_USER, None])
    ours.send(control.encode(TO_CONNECTION, "no-session"))  # a wrong answer: fails closed
    assert client.authorize(TOKEN, FP) is False
    assert sent(ours) == ("auth", [TOKEN, FP])

    ours.send(control.encode(TO_CONNECTION, "no-session"))
    assert client.join(TOKEN, "k" * (control.MAX_PUBKEY + 1), FP) is None
    assert sent(ours) == ("join", [TOKEN, None, FP, None])
    a, b = socket.socketpair()
    control.send_with_fd(ours, control.encode(TO_CONNECTION, "joined", False), a.fileno())
    readonly, fd = client.join(TOKEN, None, None) or (None, -1)
    assert readonly is False and fd >= 0
    assert sent(ours) == ("join", [TOKEN, None, None, None])
    os.close(fd)
    a.close()
    b.close()

    client.publish_access([FP])
    assert sent(ours) == ("access", [[FP]])
    client.log("warning", "e" * 1000, {"pid": 1, "n": 2})
    assert sent(ours) == ("log", ["warning", "e" * control.MAX_LOG_EVENT, {"n": 2}])


def test_the_table_refuses_what_the_master_would_refuse():
    with pytest.raises(control.ControlError):
        control.encode(TO_MASTER, "access", [FP] * (control.MAX_AUTHORIZED_KEYS + 1))
    with pytest.raises(control.ControlError):
        control.encode(TO_MASTER, "join", "x" * (control.MAX_USER + 1), None, None, None)
    with pytest.raises(control.ControlError):
        control.encode(TO_CONNECTION, "viewer", True, "192.0.2.1", None, False, 0)  # a field short
    for relinked, since in ((1, 0), (False, -1), (False, True), (False, control.MAX_COUNT + 1), (False, 1.5)):
        with pytest.raises(control.ControlError):  # relinked is a bool, since an int 0..2^62
            control.encode(TO_CONNECTION, "viewer", True, "192.0.2.1", None, relinked, since, False)
    with pytest.raises(control.ControlError):
        control.encode(TO_MASTER, "tokens", "a", "b")  # the master's message, not a connection's


def test_session_side_ignores_what_is_not_a_viewer_and_closes_its_fds(pair):
    ours, client = pair
    r, w = os.pipe()
    socket.send_fds(ours, [raw("viewer", True, 1234, None)], [r])  # malformed
    assert client.receive_viewer() is None
    socket.send_fds(ours, [control.encode(TO_CONNECTION, "joined", True)], [r])  # not for a session
    assert client.receive_viewer() is None
    ours.send(control.encode(TO_CONNECTION, "viewer", True, "192.0.2.1", None, False, 1, False))  # no fd
    assert client.receive_viewer() is None
    os.close(r)
    # The process holds no copies of the pipe's read end: writing to it fails.
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    os.close(w)
    a, b = socket.socketpair()
    control.send_with_fd(
        ours, control.encode(TO_CONNECTION, "viewer", False, "192.0.2.1", None, False, 7, False), a.fileno()
    )
    new = client.receive_viewer()
    assert new is not None and (new.readonly, new.ip, new.pubkey) == (False, "192.0.2.1", None)
    assert (new.relinked, new.since, new.web) == (False, 7, False)
    os.close(new.fd)
    since = 1_800_000_000  # a relinked viewer: it joined before its host reconnected
    data = control.encode(TO_CONNECTION, "viewer", True, "192.0.2.9", "ssh-ed25519 AAAA", True, since, True)
    control.send_with_fd(ours, data, a.fileno())
    new = client.receive_viewer()
    assert new is not None and (new.readonly, new.ip, new.relinked, new.since, new.web) == (
        True,
        "192.0.2.9",
        True,
        since,
        True,
    )
    os.close(new.fd)
    a.close()
    b.close()
    ours.close()
    with pytest.raises(control.MasterGone):
        client.receive_viewer()


def test_viewer_side_notices_the_master_going(pair):
    ours, client = pair
    ours.send(control.encode(TO_CONNECTION, "auth", True))  # anything else is ignored
    assert client.master_gone() is False
    ours.close()
    assert client.master_gone() is True
