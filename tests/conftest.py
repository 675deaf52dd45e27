import os
from pathlib import Path

import pytest

from tests.e2e import Relay, TmateHost, children_of, make_host_keys


@pytest.fixture
def no_leftovers():
    """Every process the test started (live or zombie, a child of this process) is gone at its end."""
    before = set(children_of(os.getpid()))
    yield
    left = set(children_of(os.getpid())) - before
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="session")
def host_keys(tmp_path_factory) -> tuple[Path, tuple[str, str]]:
    """Host keys made once per test run with the project's own keygen, and their fingerprints."""
    d = tmp_path_factory.mktemp("keys")
    fps = make_host_keys(d)
    os.chmod(d, 0o755)  # readable by an unprivileged relay in rootless tests (keys stay 0600)
    return d, fps


@pytest.fixture(scope="session")
def keys_dir(host_keys) -> Path:
    return host_keys[0]


@pytest.fixture(scope="session")
def fingerprints(host_keys) -> tuple[str, str]:
    return host_keys[1]


@pytest.fixture(scope="module")
def relay(keys_dir):
    with Relay(keys_dir) as r:
        yield r


@pytest.fixture
def make_host(tmp_path, fingerprints):
    """Start real tmate hosts against a relay; all are killed at the end of the test."""
    hosts: list[TmateHost] = []

    def make(relay, *, rsa_fp=None, ed25519_fp=None, attached=False, **kw) -> TmateHost:
        h = TmateHost(
            tmp_path / f"host{len(hosts)}",
            relay.port,
            rsa_fp or fingerprints[0],
            ed25519_fp or fingerprints[1],
            **kw,
        )
        hosts.append(h)
        return h.start(attached=attached)

    yield make
    for h in hosts:
        h.stop()
