"""The service's credentials are enough, measured with real clients: the relay started as
systemd starts it (the listening socket passed by socket activation, `systemd-socket-activate`;
a non-root user holding only the unit's AmbientCapabilities=, NoNewPrivileges, the unit's
SecureBits=) serves a real tmate host and a real ssh viewer from root-mode jails (a distinct
outside uid each), and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.e2e import (
    ROOT,
    SSH_LINE,
    SshViewer,
    children_of,
    free_port,
    python_fails_as,
    terminate,
    tmate_available,
    wait_for,
)
from tests.test_systemd_unit import _unit

USER = 65534  # stands in for the pymate-relay system user
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not tmate_available()
    or shutil.which("systemd-socket-activate") is None
    or shutil.which("setpriv") is None,
    reason="needs root, tmate, systemd-socket-activate and setpriv",
)
_CANNOT_RUN = python_fails_as(USER) if os.geteuid() == 0 and shutil.which("setpriv") else None


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


class ActivatedRelay:
    """The relay under `systemd-socket-activate`, as the unit's user with the unit's capabilities."""

    def __init__(self, keys: Path):
        self.port = free_port()
        service = _unit()["Service"]
        caps = [c.removeprefix("CAP_").lower() for c in service["AmbientCapabilities"].split()]
        self.caps = caps
        capset = ",".join(["-all"] + [f"+{c}" for c in caps])
        bits = ",".join(f"+{b.replace('-', '_')}" for b in service["SecureBits"].split())
        self.cmd = [
            "systemd-socket-activate",
            "-l",
            f"127.0.0.1:{self.port}",
            "setpriv",
            f"--reuid={USER}",
            f"--regid={USER}",
            "--clear-groups",
            "--no-new-privs",
            f"--securebits={bits}",
            f"--inh-caps={capset}",
            f"--ambient-caps={capset}",
            f"--bounding-set={capset}",
            sys.executable,
            "-m",
            "relay",
            "-k",
            str(keys),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-v",
        ]
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        wait_for(lambda: any("Listening on" in line for line in self.lines), 5, "systemd-socket-activate")

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def master(self) -> int:
        """The relay's pid: systemd-socket-activate execs it (setpriv execs too) at the first connection."""

        def relay() -> int | None:
            cmdline = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()
            return self.proc.pid if b"\0-m\0relay\0" in cmdline else None

        return wait_for(relay, 10, "the relay to start")

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture
def user_keys(keys_dir):
    """A copy of the test host keys owned by the relay's user (keys stay 0600)."""
    d = Path(tempfile.mkdtemp(prefix="pymate-systemd-keys-"))
    for f in keys_dir.iterdir():
        shutil.copy2(f, d / f.name)
        os.chown(d / f.name, USER, USER)
    os.chown(d, USER, USER)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(_CANNOT_RUN is not None, reason=str(_CANNOT_RUN))
def test_unit_credentials_serve_a_real_host_from_root_mode_jails(user_keys, make_host):
    relay = ActivatedRelay(user_keys)
    jailed: list[int] = []
    try:
        host = make_host(relay)
        host.wait_ready(timeout=20)
        master = relay.master()
        st = _status(master)
        assert st["Uid"].split()[1] == str(USER) and st["NoNewPrivs"] == "1"
        assert int(st["CapEff"], 16) == (1 << 6) | (1 << 7), "CAP_SETGID and CAP_SETUID only"
        m = SSH_LINE.match(host.display("#{tmate_ssh}"))
        assert m, host.display("#{tmate_ssh}")
        with SshViewer(host.dir / "viewer", relay.port, m.group(2)) as viewer:
            viewer.wait_screen("0:")
            jailed = wait_for(
                lambda: (lambda pids: pids if len(pids) == 2 else None)(children_of(master, b"pymate ")),
                5,
                "the host's and the viewer's jailed processes",
            )
            uids = {int(_status(p)["Uid"].split()[1]) for p in jailed}
            assert len(uids) == 2 and all(100000 <= u < 150000 for u in uids), uids  # root mode
            for p in jailed:
                assert _status(p)["CapEff"] == "0000000000000000" and _status(p)["Seccomp"] == "2"
        host.stop()
    finally:
        relay.stop()
        log = "\n".join(relay.lines)
    assert relay.proc.returncode == 0, log  # SIGTERM: a clean stop
    assert "listening" in log, log
    assert not jailed_left(jailed), "a jailed process outlived the relay"


def jailed_left(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()]
