"""The jail as a live relay applies it: real tmate hosts, properties read from outside via /proc."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e import SSH_LINE, Relay, SshViewer, python_fails_as, wait_for

NOBODY = 65534


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def uid(pid: int) -> int:
    """The real uid `pid` runs as, seen from outside its user namespace."""
    return int(status(pid)["Uid"].split()[0])


def namespaces(pid: int) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("user", "mnt", "pid", "net", "ipc", "uts")}


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def assert_jailed(pid: int, relay_pid: int, outside_uid: int) -> None:
    st = status(pid)
    assert st["Uid"].split() == [str(outside_uid)] * 4
    assert st["Gid"].split() == [str(outside_uid)] * 4
    assert st["Groups"] == ""
    nspid = st["NSpid"].split()
    assert nspid[0] == str(pid) and nspid[-1] == "1"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    mine, master = namespaces(pid), namespaces(relay_pid)
    for name in mine:
        assert mine[name] != master[name], name
    assert os.listdir(f"/proc/{pid}/root/") == []


def _host_pids(relay: Relay, n: int) -> list[int]:
    return wait_for(
        lambda: (lambda c: c if len(c) == n else None)(relay.children()), 5, f"{n} connection processes"
    )


def test_live_host_sessions_are_jailed(relay, make_host):
    a, b = make_host(relay), make_host(relay)
    a.wait_ready()
    b.wait_ready()
    pids = _host_pids(relay, 2)
    uids = {uid(p) for p in pids}
    assert len(uids) == 2, "each session has its own outside uid"
    assert all(100000 <= u < 150000 for u in uids)
    for pid in pids:
        assert_jailed(pid, relay.proc.pid, uid(pid))
    tokens = {a.display("#{tmate_ssh}").split()[-1][:4], b.display("#{tmate_ssh}").split()[-1][:4]}
    titles = {title(p) for p in pids}
    assert titles == {f"pymate [{t}...] host 127.0.0.1" for t in tokens}
    # A viewer's connection is jailed too, under a uid of its own.
    m = SSH_LINE.match(a.display("#{tmate_ssh}"))
    assert m, a.display("#{tmate_ssh}")
    token = m.group(2)
    with SshViewer(a.dir / "viewer", relay.port, token) as viewer:
        viewer.wait_screen("0:")
        [viewer_pid] = [p for p in _host_pids(relay, 3) if p not in pids]
        viewer_uid = uid(viewer_pid)
        assert viewer_uid not in uids
        assert_jailed(viewer_pid, relay.proc.pid, viewer_uid)
        assert title(viewer_pid) == f"pymate [{token[:4]}...] viewer 127.0.0.1"


def test_connection_is_jailed_before_the_first_byte(keys_dir):
    """A connection is fully jailed before its process reads a byte. (One that sends nothing has
    no process at all: the master forks once the client's first bytes wait, so this one sends.)"""
    with Relay(keys_dir, extra=["--grace-period", "2"]) as relay:
        s = socket.create_connection(("127.0.0.1", relay.port))
        s.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        try:
            [pid] = _host_pids(relay, 1)
            assert_jailed(pid, relay.proc.pid, uid(pid))
            assert title(pid) == "pymate [pending] 127.0.0.1"
        finally:
            s.close()
        wait_for(lambda: not relay.children(), 5, "the connection process to go")


def _rootless_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    if not shutil.which("setpriv"):
        return "setpriv not installed"
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        return "unprivileged user namespaces are not available here"
    return python_fails_as(NOBODY)


@pytest.mark.skipif(_rootless_ok() is not None, reason=str(_rootless_ok()))
def test_rootless_relay_jails_every_session(keys_dir, make_host):
    # pytest's tmp dirs are private to root: the unprivileged relay gets keys of its own.
    keys = Path(tempfile.mkdtemp(prefix="pymate-rootless-keys-"))
    try:
        os.chmod(keys, 0o700)
        for f in keys_dir.iterdir():
            shutil.copy2(f, keys / f.name)
        for f in (keys, *keys.iterdir()):
            os.chown(f, NOBODY, NOBODY)
        _rootless_session(keys, make_host)
    finally:
        shutil.rmtree(keys)


def _rootless_session(keys: Path, make_host) -> None:
    with Relay(keys, user=str(NOBODY)) as relay:
        relay.wait_log("rootless mode")
        assert status(relay.proc.pid)["Uid"].split()[0] == str(NOBODY)
        host = make_host(relay)
        host.wait_ready()
        assert host.display("#{tmate_ssh}").startswith(f"ssh -p{relay.port} ")
        [pid] = _host_pids(relay, 1)
        assert_jailed(pid, relay.proc.pid, NOBODY)
        # A viewer joins through the rootless relay, and its connection is jailed the same way.
        m = SSH_LINE.match(host.display("#{tmate_ssh}"))
        assert m, host.display("#{tmate_ssh}")
        token = m.group(2)
        host.leave_messages()
        with SshViewer(host.dir / "viewer", relay.port, token) as viewer:
            viewer.wait_screen("0:")
            host.cmd("send-keys", "-l", "echo rootless-$((6*7))")
            host.cmd("send-keys", "Enter")
            viewer.wait_screen("rootless-42")
            pids = _host_pids(relay, 2)
            [viewer_pid] = [p for p in pids if p != pid]
            assert title(viewer_pid).startswith("pymate [") and " viewer " in title(viewer_pid)
            assert_jailed(viewer_pid, relay.proc.pid, NOBODY)
