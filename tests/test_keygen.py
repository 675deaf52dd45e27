"""Host key management: relay.hostkeys and the `pymate-relay keygen` command.

The command is exercised both in-process (keygen_main) and as a real
subprocess; fingerprints and key sizes are checked against `ssh-keygen`.
keygen also makes the reconnection key (reconnect.key, 32 bytes, 0600) where it
is missing, and keeps an existing one.
"""

from __future__ import annotations

import base64
import errno
import itertools
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.hostkeys import (
    ED25519_KEY_FILE,
    RSA_BITS,
    RSA_KEY_FILE,
    HostKeyError,
    HostKeyInfo,
    ensure_host_keys,
    fingerprint,
    keygen_main,
    load_host_keys,
    tmate_conf_lines,
)
from relay.hostkeys.store import RECONNECT_KEY_BYTES, RECONNECT_KEY_FILE, ensure_reconnect_key
from tests.tls import self_signed

REPO = Path(__file__).resolve().parents[1]
KEYGEN_CMD = [
    sys.executable,
    "-c",
    "import sys; from relay.hostkeys import keygen_main; sys.exit(keygen_main(sys.argv[1:]))",
]
# The command with RSA generation replaced by the pre-made key in $PREMADE_RSA_KEY (PEM), for the
# subprocess tests that are not about generation (see the premade_rsa fixture).
PREMADE_KEYGEN_CMD = [
    sys.executable,
    "-c",
    "import os, sys\n"
    "from cryptography.hazmat.primitives import serialization\n"
    "from cryptography.hazmat.primitives.asymmetric import rsa\n"
    "with open(os.environ['PREMADE_RSA_KEY'], 'rb') as f:\n"
    "    key = serialization.load_pem_private_key(f.read(), None, unsafe_skip_rsa_key_validation=True)\n"
    "rsa.generate_private_key = lambda public_exponent, key_size: key\n"
    "from relay.hostkeys import keygen_main\n"
    "sys.exit(keygen_main(sys.argv[1:]))",
]
FP_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
ALL_FILES = [RSA_KEY_FILE, RSA_KEY_FILE + ".pub", ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub"]
KEYGEN_FILES = [*ALL_FILES, RECONNECT_KEY_FILE]  # what keygen leaves: the host keys and reconnect.key
RECONNECT_LINE = re.compile(r"reconnect\.key: the hosts' reconnection key, mode 0600 \((created|existing)\)")

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


# --------------------------------------------------------------------------
# helpers


def _env(premade: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if premade is not None:
        env["PREMADE_RSA_KEY"] = str(premade)
    return env


def run_keygen(*args, prefix=(), cwd=None, timeout=120, premade=None) -> subprocess.CompletedProcess:
    """`pymate-relay keygen ARGS` as a real process (RSA generation replaced by the key in the
    PEM file `premade`, if given)."""
    return subprocess.run(
        [*prefix, *(KEYGEN_CMD if premade is None else PREMADE_KEYGEN_CMD), *map(str, args)],
        cwd=cwd or REPO,
        env=_env(premade),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_inprocess(capsys, *args) -> tuple[int, str, str]:
    rc = keygen_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def ssh_keygen_l(path) -> tuple[int, str, str]:
    """(bits, fingerprint, type) as printed by `ssh-keygen -l -E sha256 -f`."""
    res = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    fields = res.stdout.split()
    return int(fields[0]), fields[1], fields[-1]


def ssh_keygen_y(path) -> str:
    """Public key derived from a private key by `ssh-keygen -y` (type + base64)."""
    res = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
    return " ".join(res.stdout.split()[:2])


def snapshot(directory) -> dict:
    """Everything observable about a directory's entries (no following links)."""
    directory = Path(directory)
    snap = {}
    for entry in sorted(os.listdir(directory)):
        p = directory / entry
        st = os.lstat(p)
        content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(p)
        snap[entry] = (content, st.st_mode, st.st_mtime_ns, st.st_ino, st.st_size)
    return snap


def parse_output(out: str) -> dict:
    """keygen stdout -> {"keys": {name: (fp, status)}, "reconnect": status, "conf": [4 lines]}."""
    lines = out.splitlines()
    assert len(lines) == 2 + 1 + 1 + 1 + 4, out
    keys_ = {}
    for line in lines[:2]:
        m = re.fullmatch(r"(ssh_host_\w+_key): (SHA256:[A-Za-z0-9+/]{43}) \((.+)\)", line)
        assert m, line
        keys_[m.group(1)] = (m.group(2), m.group(3))
    assert list(keys_) == [RSA_KEY_FILE, ED25519_KEY_FILE]
    reconnect = RECONNECT_LINE.fullmatch(lines[2])
    assert reconnect, lines[2]
    assert lines[3] == ""
    assert lines[4] == "Add these lines to ~/.tmate.conf on each host:"
    return {"keys": keys_, "reconnect": reconnect.group(1), "conf": lines[5:]}


def expected_conf(host, port, directory) -> list[str]:
    rsa_fp = ssh_keygen_l(Path(directory) / RSA_KEY_FILE)[1]
    ed_fp = ssh_keygen_l(Path(directory) / ED25519_KEY_FILE)[1]
    return [
        f"set -g tmate-server-host {host}",
        f"set -g tmate-server-port {port}",
        f'set -g tmate-server-rsa-fingerprint "{rsa_fp}"',
        f'set -g tmate-server-ed25519-fingerprint "{ed_fp}"',
    ]


def assert_one_line_error(err: str, *needles: str):
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("pymate-relay: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def assert_good_reconnect_key(d: Path) -> None:
    st = (d / RECONNECT_KEY_FILE).lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == RECONNECT_KEY_BYTES


def assert_good_keys(directory, reconnect: bool = False):
    """The host keys are good (and, with `reconnect`, the reconnection key: what keygen leaves)."""
    d = Path(directory)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name, bits, typ in ((RSA_KEY_FILE, RSA_BITS, "(RSA)"), (ED25519_KEY_FILE, 256, "(ED25519)")):
        key = d / name
        pub = d / (name + ".pub")
        st = key.lstat()
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(pub.lstat().st_mode) == 0o644
        assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        got_bits, _, got_type = ssh_keygen_l(key)
        assert got_type == typ
        assert got_bits == bits
        # .pub: one line, "type base64 comment", matching the private key
        pub_text = pub.read_text()
        assert pub_text.endswith("\n") and pub_text.count("\n") == 1
        assert len(pub_text.split()) == 3
        assert " ".join(pub_text.split()[:2]) == ssh_keygen_y(key)
        assert ssh_keygen_l(pub)[1] == ssh_keygen_l(key)[1]
        # paramiko (what the server uses) reads it too
        pk = paramiko.PKey.from_path(key)
        assert fingerprint(pk) == ssh_keygen_l(key)[1]
    assert ssh_keygen_l(d / RSA_KEY_FILE)[0] >= 3072
    if reconnect:
        assert_good_reconnect_key(d)
    # no temp files left behind
    assert sorted(os.listdir(d)) == sorted(KEYGEN_FILES if reconnect else ALL_FILES)


def copy_keys(src, dst, names=KEYGEN_FILES) -> Path:
    dst = Path(dst)
    dst.mkdir(mode=0o700, exist_ok=True)
    for name in names:
        shutil.copy2(Path(src) / name, dst / name)
    return dst


def write_file(path, data, mode=0o600):
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


# --------------------------------------------------------------------------
# fixtures (generating RSA-3072 keys is slow-ish: do it once)

PREMADE_COUNT = 4


@pytest.fixture(scope="session")
def rsa_pool(tmp_path_factory) -> list[tuple[rsa.RSAPrivateKey, Path]]:
    """Distinct RSA keys of the generated size, made once: (key, its PEM file)."""
    d = tmp_path_factory.mktemp("premade")
    pool = []
    for i in range(PREMADE_COUNT):
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = d / f"rsa{i}.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        pool.append((key, pem))
    return pool


@pytest.fixture
def premade_rsa(monkeypatch, rsa_pool) -> list[Path]:
    """For tests that are not about generation: in this process, RSA generation hands out the
    pool's keys in turn (consecutive keys differ); returns the pool's PEM files for subprocesses
    (run_keygen(premade=...)). Generation itself is tested by test_subprocess_creates_keys,
    test_ensure_host_keys_api and the pool."""
    keys = itertools.cycle([key for key, _ in rsa_pool])

    def premade(public_exponent: int, key_size: int, backend: object = None) -> rsa.RSAPrivateKey:
        assert (public_exponent, key_size) == (65537, RSA_BITS)
        return next(keys)

    monkeypatch.setattr(rsa, "generate_private_key", premade)
    return [pem for _, pem in rsa_pool]


@pytest.fixture(scope="session")
def good_keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good") / "keys"
    ensure_host_keys(d)
    ensure_reconnect_key(d)
    return d


@pytest.fixture(scope="session")
def foreign(tmp_path_factory) -> Path:
    """Key-ish files that must be refused."""
    d = tmp_path_factory.mktemp("foreign")

    def sshkg(name, *args):
        subprocess.run(
            ["ssh-keygen", "-q", "-C", "test", "-f", str(d / name), *args],
            check=True,
            capture_output=True,
        )

    sshkg("rsa2048", "-t", "rsa", "-b", "2048", "-N", "")
    sshkg("ecdsa", "-t", "ecdsa", "-N", "")
    sshkg("ed25519_encrypted", "-t", "ed25519", "-N", "secret")
    sshkg("rsa_by_ssh_keygen", "-t", "rsa", "-b", "3072", "-N", "")
    sshkg("ed25519_by_ssh_keygen", "-t", "ed25519", "-N", "")
    # A 3072-bit RSA key in PEM form: ssh-keygen converts a copy of its own key (no second keygen).
    shutil.copy2(d / "rsa_by_ssh_keygen", d / "rsa3072_pem")
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-m", "PEM", "-N", "", "-f", str(d / "rsa3072_pem")],
        check=True,
        capture_output=True,
    )

    self_signed(d)  # cert.pem (and its key.pem, unused)
    return d


# --------------------------------------------------------------------------
# creating keys


def test_subprocess_creates_keys(tmp_path):
    d = tmp_path / "keys"
    res = run_keygen("-k", d, "-h", "relay.example.com", "-p", "2222")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert_good_keys(d, reconnect=True)
    parsed = parse_output(res.stdout)
    assert parsed["reconnect"] == "created"
    for name in (RSA_KEY_FILE, ED25519_KEY_FILE):
        fp, status = parsed["keys"][name]
        assert status == "created"
        assert fp == ssh_keygen_l(d / name)[1]
    assert parsed["conf"] == expected_conf("relay.example.com", 2222, d)


def test_second_run_creates_nothing_and_touches_nothing(tmp_path, premade_rsa):
    d = tmp_path / "keys"
    first = run_keygen("-k", d, "-h", "relay.example.com", "-p", "2222", premade=premade_rsa[0])
    assert first.returncode == 0, first.stderr
    before = snapshot(d)
    dir_mtime = d.stat().st_mtime_ns
    second = run_keygen("-k", d, "-h", "relay.example.com", "-p", "2222")
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert snapshot(d) == before  # byte-identical, same mtimes and inodes
    assert d.stat().st_mtime_ns == dir_mtime  # no temp files came and went
    p1, p2 = parse_output(first.stdout), parse_output(second.stdout)
    assert {n: fp for n, (fp, _) in p1["keys"].items()} == {n: fp for n, (fp, _) in p2["keys"].items()}
    assert [s for _, s in p2["keys"].values()] == ["existing", "existing"]
    assert (p1["reconnect"], p2["reconnect"]) == ("created", "existing")
    assert p2["conf"] == p1["conf"]


def test_inprocess_keygen_main(tmp_path, capsys, premade_rsa):
    d = tmp_path / "sub" / "keys"  # parents are created too
    rc, out, err = run_inprocess(capsys, "-k", d, "-h", "10.0.0.1", "-p", "443")
    assert rc == 0, err
    assert err == ""
    assert_good_keys(d, reconnect=True)
    parsed = parse_output(out)
    assert [s for _, s in parsed["keys"].values()] == ["created", "created"]
    assert parsed["reconnect"] == "created"
    assert parsed["conf"] == expected_conf("10.0.0.1", 443, d)

    rc, out2, err = run_inprocess(capsys, "--keys-dir", d, "--host", "10.0.0.1", "--port", "443")
    assert rc == 0, err
    assert parse_output(out2)["conf"] == parsed["conf"]


def test_defaults_host_is_hostname_port_22(tmp_path, capsys, good_keys):
    d = copy_keys(good_keys, tmp_path / "keys")
    rc, out, err = run_inprocess(capsys, "-k", d)
    assert rc == 0, err
    conf = parse_output(out)["conf"]
    host = socket.gethostname()
    assert conf[0] in (f"set -g tmate-server-host {host}", f'set -g tmate-server-host "{host}"')
    assert conf[1] == "set -g tmate-server-port 22"


def test_default_keys_dir_is_keys(tmp_path, good_keys):
    copy_keys(good_keys, tmp_path / "keys")
    before = snapshot(tmp_path / "keys")
    res = run_keygen("-h", "h.example", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    parsed = parse_output(res.stdout)
    assert [s for _, s in parsed["keys"].values()] == ["existing"] * 2
    assert parsed["reconnect"] == "existing"
    assert snapshot(tmp_path / "keys") == before


def test_help_documents_defaults(capsys):
    rc, out, err = run_inprocess(capsys, "--help")
    assert rc == 0
    assert "-h HOST" in out and "-p PORT" in out and "-k DIR" in out
    assert "default: 22" in out and "default: keys" in out and "host name" in out


def test_ensure_host_keys_api(tmp_path):
    d = tmp_path / "keys"
    infos = ensure_host_keys(d)
    assert [type(i) for i in infos] == [HostKeyInfo, HostKeyInfo]
    assert [i.key_type for i in infos] == ["rsa", "ed25519"]
    assert [i.path for i in infos] == [str(d / RSA_KEY_FILE), str(d / ED25519_KEY_FILE)]
    assert all(i.created for i in infos)
    for info in infos:
        assert FP_RE.fullmatch(info.fingerprint)
        assert info.fingerprint == ssh_keygen_l(info.path)[1]
    again = ensure_host_keys(str(d))
    assert [i.created for i in again] == [False, False]
    assert [i.pub_created for i in again] == [False, False]
    assert [i.fingerprint for i in again] == [i.fingerprint for i in infos]


def test_exact_modes_whatever_the_umask(tmp_path, premade_rsa):
    for umask in (0o000, 0o077, 0o027):
        old = os.umask(umask)
        try:
            d = tmp_path / f"keys{umask:o}"
            ensure_host_keys(d)
        finally:
            os.umask(old)
        assert_good_keys(d)


def test_keygen_makes_the_reconnection_key_0600_and_keeps_an_existing_one(
    tmp_path, capsys, good_keys, premade_rsa
):
    for umask in (0o000, 0o077, 0o027):
        old = os.umask(umask)
        try:
            d = tmp_path / f"keys{umask:o}"
            rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "22")
        finally:
            os.umask(old)
        assert rc == 0, err
        assert parse_output(out)["reconnect"] == "created"
        assert_good_keys(d, reconnect=True)
        key = (d / RECONNECT_KEY_FILE).read_bytes()
        assert len(set(key)) > 4  # random bytes, not a constant
        for shown in (key.hex(), key.hex().upper(), base64.b64encode(key).decode().rstrip("=")):
            assert shown not in out  # the secret is never printed
        before = snapshot(d)
        rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "22")
        assert rc == 0 and parse_output(out)["reconnect"] == "existing"
        assert snapshot(d) == before  # the same bytes, inode and mtime
    # One made elsewhere (the relay's, or a copy for a second relay) is adopted as it is.
    d = copy_keys(good_keys, tmp_path / "adopted", [RECONNECT_KEY_FILE])
    before = snapshot(d)
    rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "22")
    assert rc == 0 and parse_output(out)["reconnect"] == "existing"
    assert snapshot(d)[RECONNECT_KEY_FILE] == before[RECONNECT_KEY_FILE]
    assert_good_keys(d, reconnect=True)


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda p: write_file(p, os.urandom(16)), "16 bytes, a reconnection key has 32"),
        (lambda p: write_file(p, os.urandom(32), 0o644), "readable by others (mode 0644; chmod 600 it)"),
        (lambda p: os.mkdir(p, 0o700), "not a regular file"),
    ],
    ids=["short", "mode-0644", "directory"],
)
def test_keygen_refuses_a_broken_reconnection_key_and_writes_nothing(
    tmp_path, capsys, good_keys, setup, needle
):
    d = copy_keys(good_keys, tmp_path / "keys", [ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub"])
    setup(d / RECONNECT_KEY_FILE)
    before = snapshot(d)
    rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "22")
    assert rc == 1 and out == ""
    assert_one_line_error(err, f"{d}/{RECONNECT_KEY_FILE}: {needle}")
    assert snapshot(d) == before  # the missing RSA key was not made either


def test_adopts_keys_made_by_ssh_keygen(tmp_path, foreign):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    shutil.copy2(foreign / "rsa_by_ssh_keygen", d / RSA_KEY_FILE)
    shutil.copy2(foreign / "ed25519_by_ssh_keygen", d / ED25519_KEY_FILE)
    infos = ensure_host_keys(d)
    assert [i.created for i in infos] == [False, False]
    assert [i.pub_created for i in infos] == [True, True]
    for info in infos:
        assert info.fingerprint == ssh_keygen_l(info.path)[1]
    assert_good_keys(d)


def test_creates_only_the_missing_key(tmp_path, capsys, good_keys, premade_rsa):
    d = copy_keys(good_keys, tmp_path / "keys", [ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub"])
    before = snapshot(d)
    rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "1")
    assert rc == 0, err
    parsed = parse_output(out)
    assert parsed["keys"][RSA_KEY_FILE][1] == "created"
    assert parsed["keys"][ED25519_KEY_FILE] == (ssh_keygen_l(d / ED25519_KEY_FILE)[1], "existing")
    assert parsed["reconnect"] == "created"
    after = snapshot(d)
    for name in before:
        assert after[name] == before[name]
    assert_good_keys(d, reconnect=True)


@pytest.mark.parametrize("name", [RSA_KEY_FILE, ED25519_KEY_FILE])
def test_missing_pub_is_regenerated(tmp_path, capsys, good_keys, name):
    d = copy_keys(good_keys, tmp_path / "keys")
    expected_pub = (d / (name + ".pub")).read_text().split()[:2]
    os.unlink(d / (name + ".pub"))
    before = snapshot(d)
    rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "2222")
    assert rc == 0, err
    parsed = parse_output(out)
    assert parsed["keys"][name][1] == f"existing; wrote missing {name}.pub"
    assert (d / (name + ".pub")).read_text().split()[:2] == expected_pub
    assert parsed["reconnect"] == "existing"
    after = snapshot(d)
    for entry in before:
        assert after[entry] == before[entry]  # the rest untouched
    assert_good_keys(d, reconnect=True)
    # and it is reported through the API too
    os.unlink(d / (name + ".pub"))
    infos = {i.key_type: i for i in ensure_host_keys(d)}
    changed = "rsa" if name == RSA_KEY_FILE else "ed25519"
    assert infos[changed].pub_created and not infos[changed].created


def test_concurrent_keygens_do_not_clobber(tmp_path, premade_rsa):
    d = tmp_path / "keys"
    procs = [
        subprocess.Popen(
            [*PREMADE_KEYGEN_CMD, "-k", str(d), "-h", "h", "-p", "22"],
            cwd=REPO,
            env=_env(premade),  # each process its own RSA key
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for premade in premade_rsa
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(parse_output(out))
    # Everybody reports the keys that ended up on disk...
    for name in (RSA_KEY_FILE, ED25519_KEY_FILE):
        on_disk = ssh_keygen_l(d / name)[1]
        assert {o["keys"][name][0] for o in outs} == {on_disk}
        # ...and exactly one process created each key.
        assert [o["keys"][name][1] for o in outs].count("created") == 1
    assert [o["reconnect"] for o in outs].count("created") == 1
    assert_good_keys(d, reconnect=True)


def test_works_without_hard_links(tmp_path, monkeypatch, premade_rsa):
    def no_link(src, dst, *a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    d = tmp_path / "keys"
    infos = ensure_host_keys(d)
    assert all(i.created for i in infos)
    assert_good_keys(d)


def test_link_losing_a_race_keeps_the_winner(tmp_path, good_keys, monkeypatch, premade_rsa):
    """If the key appears between validation and link, ours is discarded."""
    d = tmp_path / "keys"
    real_link = os.link

    def racing_link(src, dst, *a, **kw):
        name = os.path.basename(dst)
        if not os.path.exists(dst):
            shutil.copy2(good_keys / name, dst)  # a concurrent keygen wins
        return real_link(src, dst, *a, **kw)

    monkeypatch.setattr(os, "link", racing_link)
    infos = ensure_host_keys(d)
    assert [i.created for i in infos] == [False, False]
    for name in ALL_FILES:
        assert (d / name).read_bytes() == (good_keys / name).read_bytes()
    assert sorted(os.listdir(d)) == sorted(ALL_FILES)


# --------------------------------------------------------------------------
# refusals: clear one-line error, exit 1, nothing touched


def _corrupt_middle(path):
    lines = path.read_text().splitlines(keepends=True)
    mid = len(lines) // 2
    line = lines[mid]
    lines[mid] = ("B" if line[5] != "B" else "C").join([line[:5], line[6:]])
    path.write_text("".join(lines))


ED25519_PAIR = (ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub")


def _move_in(d: Path, name: str, src: Path, *, drop: tuple[str, ...] = (), mode: int | None = None) -> None:
    """Remove the files `drop` from d, then copy src to d/name (and chmod it to `mode`)."""
    for n in drop:
        os.unlink(d / n)
    shutil.copy2(src, d / name)
    if mode is not None:
        os.chmod(d / name, mode)


def _rewrite(path: Path, data: str, mode: int) -> None:
    os.unlink(path)
    write_file(path, data, mode)


# Each case: (id, setup(dir, good, foreign), expected message substrings).
# setup starts from a directory holding only the ed25519 key pair, so the
# missing RSA key shows that nothing gets created when something is wrong.
REFUSALS = [
    ("empty-file", lambda d, g, f: write_file(d / RSA_KEY_FILE, b""), [RSA_KEY_FILE, "file is empty"]),
    (
        "garbage",
        lambda d, g, f: write_file(d / RSA_KEY_FILE, "hello world\n"),
        [RSA_KEY_FILE + ": not an OpenSSH private key"],
    ),
    (
        "binary",
        lambda d, g, f: write_file(d / RSA_KEY_FILE, os.urandom(300) + b"\xff"),
        [RSA_KEY_FILE + ": not an OpenSSH private key"],
    ),
    (
        "truncated",
        lambda d, g, f: write_file(d / RSA_KEY_FILE, (g / RSA_KEY_FILE).read_bytes()[:1200]),
        [RSA_KEY_FILE + ": corrupt or truncated OpenSSH private key"],
    ),
    (
        "bitflip",
        lambda d, g, f: (shutil.copy2(g / RSA_KEY_FILE, d / RSA_KEY_FILE), _corrupt_middle(d / RSA_KEY_FILE)),
        [RSA_KEY_FILE + ": ", "corrupt"],
    ),
    (
        "ed25519-in-rsa-file",
        lambda d, g, f: shutil.copy2(g / ED25519_KEY_FILE, d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": wrong key type: ed25519 (expected rsa)"],
    ),
    (
        "rsa-in-ed25519-file",
        lambda d, g, f: _move_in(d, ED25519_KEY_FILE, g / RSA_KEY_FILE, drop=ED25519_PAIR),
        [ED25519_KEY_FILE + ": wrong key type: rsa (expected ed25519)"],
    ),
    (
        "ecdsa-in-rsa-file",
        lambda d, g, f: shutil.copy2(f / "ecdsa", d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": wrong key type: ecdsa (expected rsa)"],
    ),
    (
        "pem-certificate",
        lambda d, g, f: write_file(d / RSA_KEY_FILE, (f / "cert.pem").read_bytes()),
        [RSA_KEY_FILE + ": not an OpenSSH private key (it is a PEM certificate)"],
    ),
    (
        "public-key",
        lambda d, g, f: write_file(d / RSA_KEY_FILE, (g / (RSA_KEY_FILE + ".pub")).read_bytes()),
        [RSA_KEY_FILE + ": not an OpenSSH private key (it is a public key)"],
    ),
    (
        "pem-private-key",
        lambda d, g, f: shutil.copy2(f / "rsa3072_pem", d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": not an OpenSSH private key (it is a PEM private key", "ssh-keygen -p -N '' -f"],
    ),
    (
        "rsa-2048",
        lambda d, g, f: shutil.copy2(f / "rsa2048", d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": RSA key is 2048 bits, minimum is 3072"],
    ),
    (
        "passphrase",
        lambda d, g, f: _move_in(d, ED25519_KEY_FILE, f / "ed25519_encrypted", drop=ED25519_PAIR),
        [ED25519_KEY_FILE + ": key is passphrase-protected"],
    ),
    (
        "mode-0644",
        lambda d, g, f: _move_in(d, RSA_KEY_FILE, g / RSA_KEY_FILE, mode=0o644),
        [RSA_KEY_FILE + ": permissions 0644 are too open (want 0600)"],
    ),
    (
        "mode-0640",
        lambda d, g, f: os.chmod(d / ED25519_KEY_FILE, 0o640),
        [ED25519_KEY_FILE + ": permissions 0640 are too open (want 0600)"],
    ),
    (
        "mode-0602",
        lambda d, g, f: os.chmod(d / ED25519_KEY_FILE, 0o602),
        [ED25519_KEY_FILE + ": permissions 0602 are too open (want 0600)"],
    ),
    (
        "directory",
        lambda d, g, f: os.mkdir(d / RSA_KEY_FILE, 0o700),
        [RSA_KEY_FILE + ": is a directory, not a regular file"],
    ),
    (
        "fifo",
        lambda d, g, f: os.mkfifo(d / RSA_KEY_FILE, 0o600),
        [RSA_KEY_FILE + ": is a FIFO, not a regular file"],
    ),
    (
        "dangling-symlink",
        lambda d, g, f: os.symlink("nowhere", d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": dangling symbolic link"],
    ),
    (
        "symlink-to-dir",
        lambda d, g, f: os.symlink("/", d / RSA_KEY_FILE),
        [RSA_KEY_FILE + ": is a directory, not a regular file"],
    ),
    (
        "pub-mismatch",
        lambda d, g, f: _move_in(
            d, ED25519_KEY_FILE + ".pub", f / "ed25519_by_ssh_keygen.pub", drop=(ED25519_KEY_FILE + ".pub",)
        ),
        [ED25519_KEY_FILE + ".pub: does not match", ED25519_KEY_FILE],
    ),
    (
        "pub-garbage",
        lambda d, g, f: _rewrite(d / (ED25519_KEY_FILE + ".pub"), "nonsense\n", 0o644),
        [ED25519_KEY_FILE + ".pub: not an OpenSSH public key"],
    ),
    (
        "pub-without-key",
        lambda d, g, f: shutil.copy2(g / (RSA_KEY_FILE + ".pub"), d / (RSA_KEY_FILE + ".pub")),
        [RSA_KEY_FILE + ".pub: exists without its private key"],
    ),
]


def _refusal_setup(tmp_path, good_keys, foreign, setup) -> Path:
    d = copy_keys(good_keys, tmp_path / "keys", [ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub"])
    setup(d, good_keys, foreign)
    return d


@pytest.mark.parametrize("how", ["inprocess", "subprocess"])
@pytest.mark.parametrize("setup,needles", [pytest.param(s, n, id=i) for i, s, n in REFUSALS])
def test_refusals(tmp_path, capsys, good_keys, foreign, setup, needles, how):
    d = _refusal_setup(tmp_path, good_keys, foreign, setup)
    before = snapshot(d)
    dir_mtime = d.stat().st_mtime_ns
    if how == "inprocess":
        rc, out, err = run_inprocess(capsys, "-k", d, "-h", "h", "-p", "2222")
    else:
        res = run_keygen("-k", d, "-h", "h", "-p", "2222", timeout=60)
        rc, out, err = res.returncode, res.stdout, res.stderr
    assert rc == 1
    assert out == ""
    assert_one_line_error(err, f"pymate-relay: error: {d}/", *needles)
    assert snapshot(d) == before
    assert d.stat().st_mtime_ns == dir_mtime


@pytest.mark.parametrize("setup,needles", [pytest.param(s, n, id=i) for i, s, n in REFUSALS])
def test_refusals_api(tmp_path, good_keys, foreign, setup, needles):
    d = _refusal_setup(tmp_path, good_keys, foreign, setup)
    before = snapshot(d)
    with pytest.raises(HostKeyError) as ei:
        ensure_host_keys(d)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{d}/")
    for needle in needles:
        assert needle in msg
    assert snapshot(d) == before
    # the server's loader refuses the same things (nothing missing counts)
    if "exists without its private key" not in msg:
        with pytest.raises(HostKeyError) as ei2:
            load_host_keys(d)
        assert str(ei2.value) == msg
    assert snapshot(d) == before


def test_keys_dir_is_a_file(tmp_path, capsys):
    f = tmp_path / "keys"
    f.write_text("not a dir\n")
    rc, out, err = run_inprocess(capsys, "-k", f)
    assert rc == 1 and out == ""
    assert_one_line_error(err, f"{f}: not a directory")
    assert f.read_text() == "not a dir\n"
    res = run_keygen("-k", f / "sub")
    assert res.returncode == 1 and res.stdout == ""
    assert_one_line_error(res.stderr, f"{f}/sub: cannot create directory (Not a directory)")


def _world_dir() -> Path:
    """A root-owned 0755 directory outside pytest's private (0700) tmp tree."""
    d = Path(tempfile.mkdtemp(prefix="pymate-keygen-test-"))
    os.chmod(d, 0o755)
    return d


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_unwritable_dir_as_unprivileged_user(good_keys):
    probe = run_keygen("--help", prefix=NOBODY)
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot run {sys.executable}: {probe.stderr.strip()}")
    base = _world_dir()
    try:
        d = base / "keys"
        os.mkdir(d)
        os.chmod(d, 0o755)  # root's; nobody may not write here
        nobody = NOBODY

        res = run_keygen("-k", d, prefix=nobody)
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stdout == ""
        assert_one_line_error(res.stderr, f"{d}: directory is not writable (Permission denied)")
        assert os.listdir(d) == []

        res = run_keygen("-k", base / "new" / "keys", prefix=nobody)
        assert res.returncode == 1
        assert_one_line_error(res.stderr, f"{base}/new/keys: cannot create directory (Permission denied)")
        assert os.listdir(base) == ["keys"]

        # A key nobody cannot read is reported as such.
        copy_keys(good_keys, d)
        before = snapshot(d)
        res = run_keygen("-k", d, prefix=nobody)
        assert res.returncode == 1
        assert_one_line_error(res.stderr, f"{d}/{RSA_KEY_FILE}: cannot read (Permission denied)")
        assert snapshot(d) == before
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses permission bits")
def test_unwritable_dir_chmod(tmp_path, capsys):
    d = tmp_path / "keys"
    d.mkdir(mode=0o500)
    try:
        rc, out, err = run_inprocess(capsys, "-k", d)
        assert rc == 1 and out == ""
        assert_one_line_error(err, f"{d}: directory is not writable")
        assert os.listdir(d) == []
    finally:
        os.chmod(d, 0o700)


def _can_bind_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    try:
        return (
            subprocess.run(
                ["unshare", "-m", "sh", "-c", "mount --bind / /mnt"],
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_bind_mount(), reason="needs root and mount namespaces")
def test_read_only_mount(tmp_path, good_keys):
    d = copy_keys(good_keys, tmp_path / "keys", [ED25519_KEY_FILE, ED25519_KEY_FILE + ".pub"])
    ro = [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"',
        str(d),
    ]
    before = snapshot(d)
    res = run_keygen("-k", d, "-h", "h", prefix=ro)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout == ""
    assert_one_line_error(res.stderr, f"{d}: directory is not writable (Read-only file system)")
    assert snapshot(d) == before

    # The host keys in place but no reconnection key: keygen cannot make it, and says so.
    copy_keys(good_keys, d, [RSA_KEY_FILE, RSA_KEY_FILE + ".pub"])
    before = snapshot(d)
    res = run_keygen("-k", d, "-h", "h", prefix=ro)
    assert res.returncode == 1 and res.stdout == "", res.stdout + res.stderr
    assert_one_line_error(res.stderr, f"{d}: directory is not writable (Read-only file system)")
    assert snapshot(d) == before

    # With everything in place, a read-only key directory is fine.
    copy_keys(good_keys, d, [RECONNECT_KEY_FILE])
    res = run_keygen("-k", d, "-h", "h", prefix=ro)
    assert res.returncode == 0, res.stderr
    parsed = parse_output(res.stdout)
    assert [s for _, s in parsed["keys"].values()] == ["existing"] * 2
    assert parsed["reconnect"] == "existing"


# --------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-p", "0"], "invalid port"),
        (["-p", "65536"], "invalid port"),
        (["-p", "ssh"], "invalid port"),
        (["-h", "bad host"], "invalid host name"),
        (["-h", "evil\nset -g x y"], "invalid host name"),
        (["--bogus"], "unrecognized arguments"),
        (["-k"], "expected one argument"),
    ],
)
def test_usage_errors(tmp_path, capsys, args, needle):
    rc, out, err = run_inprocess(capsys, "-k", tmp_path / "keys", *args)
    assert rc == 2
    assert out == ""
    assert "pymate-relay keygen: error:" in err and needle in err
    assert not (tmp_path / "keys").exists()


def test_usage_error_subprocess(tmp_path):
    res = run_keygen("-k", tmp_path / "keys", "-p", "99999")
    assert res.returncode == 2
    assert "invalid port" in res.stderr
    assert not (tmp_path / "keys").exists()


# --------------------------------------------------------------------------
# load_host_keys, fingerprint, tmate_conf_lines


def test_load_host_keys(tmp_path, good_keys):
    loaded = load_host_keys(good_keys)
    assert [type(k) for k in loaded] == [paramiko.RSAKey, paramiko.Ed25519Key]
    assert [fingerprint(k) for k in loaded] == [
        ssh_keygen_l(good_keys / RSA_KEY_FILE)[1],
        ssh_keygen_l(good_keys / ED25519_KEY_FILE)[1],
    ]
    assert all(k.can_sign() for k in loaded)
    assert loaded[0].get_bits() >= 3072

    only_ed = copy_keys(good_keys, tmp_path / "ed", [ED25519_KEY_FILE])  # no .pub: fine
    before = snapshot(only_ed)
    (k,) = load_host_keys(only_ed)
    assert isinstance(k, paramiko.Ed25519Key)
    assert snapshot(only_ed) == before  # loading never writes


def test_load_host_keys_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HostKeyError) as ei:
        load_host_keys(empty)
    assert str(ei.value) == f"{empty}: no host keys found (run: pymate-relay keygen -k {empty})"
    assert os.listdir(empty) == []

    missing = tmp_path / "missing"
    with pytest.raises(HostKeyError) as ei:
        load_host_keys(missing)
    assert str(ei.value).startswith(f"{missing}: directory does not exist")
    assert not missing.exists()

    with pytest.raises(HostKeyError, match="not a directory"):
        load_host_keys(Path(__file__))


def test_fingerprint_matches_ssh_keygen(foreign):
    for name in ("rsa_by_ssh_keygen", "ed25519_by_ssh_keygen", "rsa2048", "ecdsa"):
        pk = paramiko.PKey.from_path(foreign / name)
        fp = fingerprint(pk)
        assert FP_RE.fullmatch(fp)
        assert fp == ssh_keygen_l(foreign / name)[1]
        assert fp == pk.fingerprint  # paramiko's own rendering agrees


def test_tmate_conf_lines():
    rfp = "SHA256:" + "A" * 43
    efp = "SHA256:" + "b+/9" * 10 + "xyz"
    assert tmate_conf_lines("relay.example.com", 2222, rfp, efp) == [
        "set -g tmate-server-host relay.example.com",
        "set -g tmate-server-port 2222",
        f'set -g tmate-server-rsa-fingerprint "{rfp}"',
        f'set -g tmate-server-ed25519-fingerprint "{efp}"',
    ]
    assert tmate_conf_lines("::1", 22, rfp, efp)[0] == "set -g tmate-server-host ::1"
    assert tmate_conf_lines("[::1]", 22, rfp, efp)[0] == 'set -g tmate-server-host "[::1]"'
    assert tmate_conf_lines('a"b$c\\d', 22, rfp, efp)[0] == ('set -g tmate-server-host "a\\"b\\$c\\\\d"')
    bad_args: list[tuple[Any, ...]] = [
        ("h\nx", 22, rfp, efp),
        ("", 22, rfp, efp),
        ("a b", 22, rfp, efp),
        ("h", 0, rfp, efp),
        ("h", 65536, rfp, efp),
        ("h", "22", rfp, efp),
        ("h", 22, "SHA256:short", efp),
        ("h", 22, rfp, "MD5:" + "A" * 43),
        ("h", 22, rfp, efp + "="),
    ]
    for bad in bad_args:
        with pytest.raises(ValueError):
            tmate_conf_lines(*bad)
