import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e import Relay, TmateHost, ssh_fingerprint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    """Host keys made once per test run with the project's own keygen."""
    d = tmp_path_factory.mktemp("keys")
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "relay", "keygen", "-k", str(d),
                    "-h", "127.0.0.1", "-p", "2222"], check=True, capture_output=True, cwd=ROOT)
    os.chmod(d, 0o755)  # readable by an unprivileged relay in rootless tests (keys stay 0600)
    return d


@pytest.fixture(scope="session")
def fingerprints(keys_dir) -> tuple[str, str]:
    return (ssh_fingerprint(keys_dir / "ssh_host_rsa_key.pub"),
            ssh_fingerprint(keys_dir / "ssh_host_ed25519_key.pub"))


@pytest.fixture(scope="module")
def relay(keys_dir):
    with Relay(keys_dir) as r:
        yield r


@pytest.fixture
def make_host(tmp_path, fingerprints):
    """Start real tmate hosts against a relay; all are killed at the end of the test."""
    hosts = []

    def make(relay, *, rsa_fp=None, ed25519_fp=None, attached=False, **kw) -> TmateHost:
        h = TmateHost(tmp_path / f"host{len(hosts)}", relay.port, rsa_fp or fingerprints[0],
                      ed25519_fp or fingerprints[1], **kw)
        hosts.append(h)
        return h.start(attached=attached)

    yield make
    for h in hosts:
        h.stop()
