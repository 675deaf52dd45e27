"""The systemd unit ops install: its command line is one the relay accepts, and systemd accepts
the unit (with the console script this checkout installed in place of /opt/...)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import _parser

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "pymate-relay.service"


class _CaseKeepingParser(configparser.ConfigParser):
    """systemd keys are case-sensitive (ExecStart, not execstart)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _unit() -> configparser.ConfigParser:
    unit = _CaseKeepingParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    return unit


def test_exec_start_is_the_relay_with_options_it_accepts():
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "pymate-relay"
    opts = _parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    assert opts.port == 22 and opts.keys.startswith("/")  # a fixed key directory, not the cwd's
    assert service["KillMode"] == "mixed"  # SIGTERM to the master, which ends its children


def test_systemd_accepts_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).parent / "pymate-relay"
    assert script.exists(), "the console script is installed by `make install`"
    argv0 = shlex.split(_unit()["Service"]["ExecStart"])[0]
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(argv0, str(script)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line or "pymate" in line
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
