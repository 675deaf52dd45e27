"""The systemd units ops install (systemd/): their command lines are ones the relay accepts,
systemd accepts them (`systemd-analyze verify` prints nothing; the console script this checkout
installed stands in for /opt/pymate-relay/bin/pymate-relay), and the service's exposure in
`systemd-analyze security --offline=true` is at most 2.0."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import _parser
from relay.hostkeys.command import _keygen_parser

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "pymate-relay.service"
SOCKET = SYSTEMD / "pymate-relay.socket"
KEYGEN = SYSTEMD / "pymate-relay-keygen.service"
UNITS = (UNIT, SOCKET, KEYGEN)
INSTALLED = "/opt/pymate-relay/bin/pymate-relay"  # where `make install-system` puts the relay
STATE_KEYS = "/var/lib/pymate-relay/keys"
MAX_EXPOSURE = 2.0
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


class _CaseKeepingParser(configparser.ConfigParser):
    """systemd keys are case-sensitive (ExecStart, not execstart)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _unit(path: Path = UNIT) -> configparser.ConfigParser:
    unit = _CaseKeepingParser(strict=False, interpolation=None)
    unit.read_string(path.read_text())
    return unit


def _values(path: Path, section: str, key: str) -> list[str]:
    """Every value of a key systemd lets repeat (configparser keeps only the last)."""
    got, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(key + "="):
            got.append(line.split("=", 1)[1])
    return got


def test_exec_start_is_the_relay_with_options_it_accepts():
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED
    opts = _parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    assert opts.port == 22 and opts.keys == STATE_KEYS  # a fixed key directory, not the cwd's
    assert service["KillMode"] == "mixed"  # SIGTERM to the master, which ends its children
    assert service["Restart"] == "on-failure"


def test_keygen_unit_makes_the_keys_the_service_reads():
    keygen = _unit(KEYGEN)["Service"]
    argv = shlex.split(keygen["ExecStart"])
    assert argv[:2] == [INSTALLED, "keygen"]
    opts = _keygen_parser().parse_args(argv[2:])
    assert opts.keys_dir == STATE_KEYS and opts.port == 22
    assert keygen["Type"] == "oneshot" and keygen["StateDirectory"] == _unit()["Service"]["StateDirectory"]
    requires = _unit()["Unit"]["Requires"].split()
    assert "pymate-relay-keygen.service" in requires and "pymate-relay.socket" in requires


def test_socket_port_is_the_port_the_service_advertises():
    listen = _unit(SOCKET)["Socket"]["ListenStream"]
    assert (
        int(listen.rsplit(":", 1)[-1])
        == _parser().parse_args(shlex.split(_unit()["Service"]["ExecStart"])[1:]).port
    )


def test_service_holds_only_the_measured_capabilities():
    service = _unit()["Service"]
    caps = {"CAP_SETUID", "CAP_SETGID"}  # tests/test_systemd_e2e.py runs a real host with only these
    assert set(service["AmbientCapabilities"].split()) == caps
    assert set(service["CapabilityBoundingSet"].split()) == caps
    assert service["User"] == "pymate-relay" and service["NoNewPrivileges"] == "yes"
    assert set(service["RestrictNamespaces"].split()) == {"user", "mnt", "pid", "ipc", "net", "uts", "cgroup"}


def test_every_directive_not_used_says_why():
    text = UNIT.read_text()
    for directive in ("PrivateUsers=", "ProtectHostname=", "ProcSubset=", "IPAddressDeny=", "RootDirectory="):
        assert not re.search(rf"^{directive}", text, re.M), directive
        assert re.search(rf"^# {re.escape(directive)}\S* .{{20,}}", text, re.M), (
            f"no reason given for {directive}"
        )


def _stand_in_units(tmp_path: Path) -> list[Path]:
    """The units with this checkout's console script in place of the installed path."""
    script = Path(sys.executable).parent / "pymate-relay"
    assert script.exists(), "the console script is installed by `make install`"
    out = []
    for path in UNITS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED, str(script)))
        out.append(copy)
    return out


@needs_analyze
def test_systemd_verify_prints_nothing(tmp_path):
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, _stand_in_units(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr
    )


def _exposure(path: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, KEYGEN], ids=lambda p: p.name)
def test_exposure_is_at_most_2(tmp_path, unit):
    copy = next(p for p in _stand_in_units(tmp_path) if p.name == unit.name)
    exposure = _exposure(copy)
    print(f"\nsystemd-analyze security --offline=true {unit.name}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_socket_activation_is_only_for_the_named_process():
    import os

    from relay.master.activation import inherited_listener

    other = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert inherited_listener(other) is None and other["LISTEN_FDS"] == "1"  # not ours: untouched
    assert inherited_listener({}) is None
    two = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    with pytest.raises(OSError, match="exactly one"):
        inherited_listener(two)
    assert "LISTEN_PID" not in two  # consumed: the jailed children never see it
