"""Tests of jail/: real jailed processes, checked from outside through /proc.

Every test stops (SIGKILL + waitpid) every process it starts. Root-mode tests need root;
the rootless test runs this file as a helper under `setpriv` as nobody (uid 65534).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import paramiko
import pytest

# Everything a target needs must be imported before the fork (no filesystem in the jail).
msgpack = pytest.importorskip("msgpack")
pyghostty = pytest.importorskip("pyghostty")

from jail import (  # noqa: E402
    DEFAULT_MEMORY_MB,
    JailConfig,
    JailedProcess,
    Jailer,
    JailError,
    _sys,
    set_process_title,
)
from tests.e2e import AcceptingSshServer, ed25519_host_key  # noqa: E402

NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts")
# A range far from the production default, so a relay running on the box never collides.
UID_BASE = 3_100_000
TITLE = "pymate [pending] 192.0.2.7"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="root-mode jail tests need root")


# ------------------------------------------------------------------ in-jail probe server


def _errno_of(fn):
    try:
        fn()
    except OSError as e:
        code = e.errno or 0
        return errno.errorcode.get(code, code)
    return "ok"


def _title_probe() -> str:
    set_process_title("pymate [abcd...] host 192.0.2.7")
    return "ok"


def _probe_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def _probe_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(sum(range(1000))))
    t.start()
    t.join(5)
    return out == [499500]


def _probe_tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(("127.0.0.1", 22))
    finally:
        s.close()


def _probe_allocate(mb: int) -> str:
    try:
        block = bytearray(mb * 1024 * 1024)
    except MemoryError:
        return "MemoryError"
    del block
    return "ok"


def _probe_raise_memory_cap() -> str:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:  # Python turns the kernel's EPERM into this ValueError
        resource.setrlimit(resource.RLIMIT_AS, (hard, resource.RLIM_INFINITY))
    except ValueError as e:
        return "refused" if "not allowed to raise" in str(e) else str(e)
    return "raised"


PROBES = {
    "ping": lambda: "pong",
    "allocate_64mb": lambda: _probe_allocate(64),
    "allocate_2gb": lambda: _probe_allocate(2048),
    "raise_memory_cap": _probe_raise_memory_cap,
    "ids": lambda: {
        "pid": os.getpid(),
        "uid": os.getresuid(),
        "gid": os.getresgid(),
        "groups": os.getgroups(),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
    },
    "open": lambda: _errno_of(lambda: open("/etc/passwd", "rb").close()),
    "listdir": lambda: _errno_of(lambda: os.listdir("/")),
    "listdir_ok": lambda: os.listdir("/"),
    "tcp": lambda: _errno_of(_probe_tcp),
    "unix_socket": lambda: _errno_of(lambda: socket.socket(socket.AF_UNIX).close()),
    "unshare_user": lambda: _errno_of(lambda: _sys.unshare(_sys.CLONE_NEWUSER)),
    "unshare_net": lambda: _errno_of(lambda: _sys.unshare(_sys.CLONE_NEWNET)),
    "mount": lambda: _errno_of(lambda: _sys.mount(b"tmpfs", b"/", b"tmpfs", 0)),
    "fork": lambda: _errno_of(_probe_fork),
    "setuid0": lambda: _errno_of(lambda: os.setuid(0)),
    "thread": _probe_thread,
    "title": _title_probe,
}


def probe_server(fd: int) -> int:
    """Target run inside the jail: answers probe names with JSON on a SEQPACKET socket."""
    s = socket.socket(fileno=fd)
    while True:
        cmd = s.recv(1 << 17)
        if not cmd:
            return 0
        if cmd == b"exit":
            return 7
        if cmd == b"raise":
            raise RuntimeError("boom")
        if cmd.startswith(b"echo:"):
            s.sendall(cmd[5:][::-1])
            continue
        try:
            res = {"ok": PROBES[cmd.decode()]()}
        except BaseException as e:  # report, keep serving
            res = {"exc": f"{type(e).__name__}: {e}"}
        s.send(json.dumps(res).encode())


def rpc(sock: socket.socket, cmd: str, timeout: float = 5.0):
    sock.settimeout(timeout)
    sock.send(cmd.encode())
    res = json.loads(sock.recv(65536))
    assert "exc" not in res, res
    return res["ok"]


# ------------------------------------------------------------------ helpers


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _ns(pid: int | str) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in NAMESPACES}


def _stop(jailer: Jailer, proc: JailedProcess) -> int | None:
    """SIGKILL + reap + release; returns the wait status if we reaped it here."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    status = None
    with contextlib.suppress(ChildProcessError):
        status = os.waitpid(proc.pid, 0)[1]
    jailer.release(proc)
    return status


@contextlib.contextmanager
def jailed_probe(jailer: Jailer, title: str = TITLE):
    """A jailed probe_server; yields (proc, our end of its SEQPACKET socketpair)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = jailer.spawn(
            functools.partial(probe_server, theirs.fileno()), keep_fds=[theirs.fileno()], title=title
        )
    finally:
        theirs.close()
    try:
        yield proc, ours
    finally:
        ours.close()
        _stop(jailer, proc)


def _wait_exit(pid: int, timeout: float = 5.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return status
        time.sleep(0.005)
    raise AssertionError(f"{pid} did not exit")


def _make_jailer(**kw) -> Jailer:
    cfg = JailConfig(**{"uid_base": UID_BASE, "uid_count": 1000, **kw})
    j = Jailer(cfg)
    j.prepare()
    return j


@pytest.fixture(scope="module")
def subreaper():
    """Jailer.prepare() makes this process a child subreaper; undo it after the module."""
    yield
    _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 0)


@pytest.fixture(scope="module")
def jailer(subreaper):
    if os.geteuid() != 0:
        pytest.skip("root-mode jail tests need root")
    j = _make_jailer()
    yield j
    j.close()


@pytest.fixture(scope="module")
def jailer_noseccomp(subreaper):
    if os.geteuid() != 0:
        pytest.skip("root-mode jail tests need root")
    j = _make_jailer(seccomp=False, uid_base=UID_BASE + 1000)
    yield j
    j.close()


# ------------------------------------------------------------------ root mode: properties


def assert_jailed_status(st: dict[str, str], outside_uid: int) -> None:
    assert st["Uid"].split() == [str(outside_uid)] * 4
    assert st["Gid"].split() == [str(outside_uid)] * 4
    assert st["Groups"].strip() == ""
    assert st["NSpid"].split()[-1] == "1" and len(st["NSpid"].split()) >= 2
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"


@needs_root
def test_properties_from_outside(jailer, no_leftovers):
    with jailed_probe(jailer) as (p1, s1), jailed_probe(jailer) as (p2, s2):
        assert p1.uid != p2.uid
        for p, s in ((p1, s1), (p2, s2)):
            assert UID_BASE <= p.uid < UID_BASE + 1000
            assert rpc(s, "ping") == "pong"
            st = _status(p.pid)
            assert_jailed_status(st, p.uid)
            assert st["Seccomp"] == "2"
            assert int(st["PPid"]) == os.getpid()  # the master (a subreaper) reaps it
            mine, theirs = _ns("self"), _ns(p.pid)
            for n in NAMESPACES:
                assert mine[n] != theirs[n], n
            assert os.listdir(f"/proc/{p.pid}/root/") == []
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                assert f.read().startswith(TITLE.encode())
            with open(f"/proc/{p.pid}/comm") as f:
                assert f.read().strip() == TITLE[:15]
            # uid/gid maps: only the inside uid, mapped to the connection's uid.
            with open(f"/proc/{p.pid}/uid_map") as f:
                assert f.read().split() == ["1000", str(p.uid), "1"]
            with open(f"/proc/{p.pid}/setgroups") as f:
                assert f.read().strip() == "deny"
            ids = rpc(s, "ids")
            assert ids["pid"] == 1
            assert ids["uid"] == [1000] * 3 and ids["gid"] == [1000] * 3
            assert ids["groups"] == []
            assert ids["hostname"] == "pymate"
            assert ids["cwd"] == "/"
        assert _ns(p1.pid)["net"] != _ns(p2.pid)["net"]


@needs_root
def test_not_dumpable(jailer, no_leftovers):
    """PR_SET_DUMPABLE 0: the files in /proc/PID are owned by root (the kernel's mark of a
    non-dumpable task; the directory itself keeps the euid), and a process with the jail's
    own uid (and no capabilities) cannot read its environ."""
    with jailed_probe(jailer) as (p, s):
        assert os.stat(f"/proc/{p.pid}/environ").st_uid == 0
        assert _status(p.pid)["Uid"].split()[0] == str(p.uid)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.setgroups([])
                os.setresgid(p.uid, p.uid, p.uid)
                os.setresuid(p.uid, p.uid, p.uid)
                try:
                    open(f"/proc/{p.pid}/environ", "rb").read()
                    code = 0
                except PermissionError:
                    code = 1
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1


@needs_root
def test_socketpair_both_ways(jailer, no_leftovers):
    with jailed_probe(jailer) as (p, s):
        for _ in range(100):
            assert rpc(s, "ping") == "pong"
        # A large message both ways over the kept socketpair.
        payload = os.urandom(60000)
        s.send(b"echo:" + payload)
        assert s.recv(65536) == payload[::-1]


@needs_root
def test_denied_inside(jailer, no_leftovers):
    with jailed_probe(jailer) as (p, s):
        assert rpc(s, "open") == "EPERM"  # seccomp: no openat at all
        assert rpc(s, "listdir") == "EPERM"
        assert rpc(s, "tcp") == "EPERM"  # seccomp: no socket()
        assert rpc(s, "unix_socket") == "EPERM"
        assert rpc(s, "unshare_user") == "EPERM"
        assert rpc(s, "unshare_net") == "EPERM"
        assert rpc(s, "mount") == "EPERM"
        assert rpc(s, "fork") == "EPERM"  # clone without CLONE_THREAD
        assert rpc(s, "setuid0") == "EPERM"
        assert rpc(s, "thread") is True  # ...but threads work
        assert rpc(s, "ping") == "pong"  # and nothing above killed it


@needs_root
def test_namespaces_alone_without_seccomp(jailer_noseccomp, no_leftovers):
    """The namespace/capability layer holds on its own (seccomp off)."""
    with jailed_probe(jailer_noseccomp) as (p, s):
        st = _status(p.pid)
        assert_jailed_status(st, p.uid)
        assert st["Seccomp"] == "0"
        assert rpc(s, "open") == "ENOENT"  # empty root
        assert rpc(s, "listdir_ok") == []
        assert rpc(s, "tcp") == "ENETUNREACH"  # empty net namespace, lo down
        assert rpc(s, "mount") == "EPERM"  # no capabilities
        assert rpc(s, "setuid0") == "EINVAL"  # uid 0 does not exist in its namespace
        assert rpc(s, "ids")["hostname"] == "pymate"


@needs_root
def test_title_can_be_changed_inside(jailer, no_leftovers):
    with jailed_probe(jailer) as (p, s):
        assert rpc(s, "title") == "ok"
        with open(f"/proc/{p.pid}/cmdline", "rb") as f:
            assert f.read().startswith(b"pymate [abcd...] host 192.0.2.7")
        with open(f"/proc/{p.pid}/comm") as f:
            assert f.read().strip() == "pymate [abcd..."


def test_set_process_title_truncates_to_argv_area():
    """A title longer than the original command line and environment is cut to them (never
    overflows), and a title longer than the command line alone still shows whole."""
    from jail.title import _ARGV_AREA

    assert _ARGV_AREA is not None
    start, end = _ARGV_AREA
    with open("/proc/self/cmdline", "rb") as f:
        assert len(f.read()) <= end - start
    pid = os.fork()
    if pid == 0:
        long_title = "pymate [abcd...] host 203.0.113.200 (12 viewers) " + "x" * 40
        set_process_title(long_title)
        with open("/proc/self/cmdline", "rb") as f:
            os._exit(0 if f.read().rstrip(b"\0") == long_title.encode() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    size = end - start
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            set_process_title("pymate [" + "é" * 5000 + "]")
            with open("/proc/self/cmdline", "rb") as f:
                cmd = f.read()
            with open("/proc/self/comm", "rb") as f:
                comm = f.read()
            text = cmd.rstrip(b"\0").decode()  # still valid UTF-8
            if (
                len(cmd) <= size
                and len(text.encode()) < size
                and text.startswith("pymate [é")
                and comm == b"pymate [\xc3\xa9\xc3\xa9\xc3\xa9\n"
            ):
                code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


# ------------------------------------------------------------------ the real workload


def ssh_target(fd: int, host_key: paramiko.PKey) -> int:
    """Inside the jail: an SSH server (paramiko threads), msgpack and pyghostty."""
    t = paramiko.Transport(socket.socket(fileno=fd))
    t.add_server_key(host_key)
    t.start_server(server=AcceptingSshServer())
    chan = t.accept(10)
    if chan is None:
        return 2
    buf = b""
    while not buf.endswith(b"\n"):
        data = chan.recv(4096)
        if not data:
            return 3
        buf += data
    term = pyghostty.Terminal(80, 24)
    term.feed(b"x")
    term.feed(msgpack.unpackb(bytes.fromhex(buf.decode().strip()))[1])
    chan.sendall(msgpack.packb([os.getpid(), term.text(), threading.active_count()]))
    chan.shutdown_write()
    chan.recv(1)  # until the client closes
    t.close()
    return 0


@needs_root
def test_paramiko_msgpack_ghostty_inside_jail(jailer, no_leftovers):
    host_key = ed25519_host_key()
    ours, theirs = socket.socketpair()
    try:
        proc = jailer.spawn(
            functools.partial(ssh_target, theirs.fileno(), host_key),
            keep_fds=[theirs.fileno()],
            title="pymate [ssh test]",
        )
    finally:
        theirs.close()
    client = paramiko.Transport(ours)
    try:
        client.start_client(timeout=10)
        assert client.get_remote_server_key().get_fingerprint() == host_key.get_fingerprint()
        client.auth_none("tmate")
        chan = client.open_session(timeout=10)
        chan.sendall(msgpack.packb([2, b"hello\r\njail"]).hex().encode() + b"\n")
        reply = b""
        while True:
            data = chan.recv(65536)
            if not data:
                break
            reply += data
        pid, text, nthreads = msgpack.unpackb(reply)
        assert pid == 1
        assert text == "xhello\njail"
        assert nthreads >= 2  # paramiko's transport thread ran inside the jail
        assert _status(proc.pid)["Seccomp"] == "2"
        try:
            chan.close()
        except (EOFError, OSError):
            pass  # the target may already be closing its end (once failed so, in a loaded suite)
        status = _wait_exit(proc.pid, 10)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        client.close()
        ours.close()
        _stop(jailer, proc)


# ------------------------------------------------------------------ lifecycle and failures


@needs_root
def test_exit_code_is_reaped(jailer, no_leftovers):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = jailer.spawn(
        functools.partial(probe_server, theirs.fileno()), keep_fds=[theirs.fileno()], title=TITLE
    )
    theirs.close()
    try:
        ours.send(b"exit")
        status = _wait_exit(proc.pid)
        assert os.waitstatus_to_exitcode(status) == 7
        assert not os.path.exists(f"/proc/{proc.pid}")  # reaped: no zombie
    finally:
        ours.close()
        _stop(jailer, proc)


@needs_root
def test_exception_exits_1_and_calls_on_error(jailer, no_leftovers):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = theirs.fileno()

    def on_error(e):
        os.write(fd, f"on_error {type(e).__name__}: {e}".encode())

    proc = jailer.spawn(functools.partial(probe_server, fd), keep_fds=[fd], title=TITLE, on_error=on_error)
    theirs.close()
    try:
        ours.send(b"raise")
        ours.settimeout(5)
        assert ours.recv(100) == b"on_error RuntimeError: boom"
        assert os.waitstatus_to_exitcode(_wait_exit(proc.pid)) == 1
    finally:
        ours.close()
        _stop(jailer, proc)


@needs_root
def test_sigterm_stops_pid1(jailer, no_leftovers):
    with jailed_probe(jailer) as (p, s):
        rpc(s, "ping")
        os.kill(p.pid, signal.SIGTERM)
        status = _wait_exit(p.pid)
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM


@needs_root
def test_fds_not_kept_are_closed(jailer, no_leftovers):
    r, w = os.pipe()
    try:
        with jailed_probe(jailer) as (p, s):
            rpc(s, "ping")  # past "ready": the report socket is closed right after it
            fds = os.listdir(f"/proc/{p.pid}/fd")
            assert sorted(int(fd) for fd in fds)[:3] == [0, 1, 2]
            assert len(fds) == 4, fds  # stdio (/dev/null) + the kept socket
            for fd in (0, 1, 2):
                assert os.readlink(f"/proc/{p.pid}/fd/{fd}") == "/dev/null"
    finally:
        os.close(r)
        os.close(w)


@needs_root
@pytest.mark.parametrize(
    "step",
    [
        "setgroups",
        "unshare",
        "mounts",
        "pivot_root",
        "setresuid",
        "capabilities",
        "memory limit",
        "seccomp",
        "close fds",
    ],
)
def test_failing_step_raises_and_leaves_nothing(jailer, no_leftovers, step):
    jailer._test_fail_step = step
    try:
        with pytest.raises(JailError, match=f"jail step '{step}' failed: forced failure"):
            jailer.spawn(lambda: 0, keep_fds=[], title=TITLE)
    finally:
        jailer._test_fail_step = None
    assert not jailer._in_use  # the uid went back to the pool


@needs_root
@pytest.mark.parametrize("step", ["unshare", "mounts", "seccomp"])
def test_hanging_step_times_out_and_leaves_nothing(no_leftovers, subreaper, step):
    j = _make_jailer(spawn_timeout=0.3, uid_base=UID_BASE + 2000)
    j._test_hang_step = step
    try:
        t0 = time.monotonic()
        with pytest.raises(JailError, match="timed out after 0.3 s"):
            j.spawn(lambda: 0, keep_fds=[], title=TITLE)
        assert time.monotonic() - t0 < 2
        assert not j._in_use
    finally:
        j.close()


@needs_root
def test_release_makes_uid_reusable(subreaper, no_leftovers):
    j = _make_jailer(uid_base=UID_BASE + 3000, uid_count=1)
    try:
        with jailed_probe(j) as (p1, s1):
            assert p1.uid == UID_BASE + 3000
            with pytest.raises(JailError, match="no free uid"):
                j.spawn(lambda: 0, keep_fds=[], title=TITLE)
        # jailed_probe killed, reaped and released it
        with jailed_probe(j) as (p2, s2):
            assert p2.uid == p1.uid
            assert rpc(s2, "ping") == "pong"
    finally:
        j.close()


def _address_space_limit(pid: int) -> tuple[str, str]:
    """The soft and hard `Max address space` of /proc/PID/limits (bytes or 'unlimited')."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max address space"):
                soft, hard = line[len("Max address space") :].split()[:2]
                return soft, hard
    raise AssertionError("no Max address space line")


@needs_root
def test_memory_cap_from_outside(jailer, no_leftovers):
    """Every jailed process has the hard memory cap (RLIMIT_AS, soft = hard), cannot raise it,
    and an allocation beyond it fails as MemoryError inside, without killing the process."""
    cap = jailer.config.memory_mb
    assert cap is not None
    with jailed_probe(jailer) as (p, s):
        assert _address_space_limit(p.pid) == (str(cap << 20), str(cap << 20))
        assert rpc(s, "allocate_64mb") == "ok"
        assert rpc(s, "allocate_2gb") == "MemoryError"
        assert rpc(s, "raise_memory_cap") == "refused"
        assert rpc(s, "ping") == "pong"
    assert _address_space_limit(os.getpid())[1] == "unlimited"  # the master keeps none


@needs_root
def test_memory_cap_can_be_set_or_turned_off(subreaper, no_leftovers):
    size = int(_status(os.getpid())["VmSize"].split()[0]) // 1024
    small = _make_jailer(uid_base=UID_BASE + 4000, memory_mb=size + 200)
    none = _make_jailer(uid_base=UID_BASE + 5000, memory_mb=None)
    try:
        with jailed_probe(small) as (p, s):
            assert _address_space_limit(p.pid)[1] == str((size + 200) << 20)
            assert rpc(s, "allocate_64mb") == "ok"
            assert rpc(s, "allocate_2gb") == "MemoryError"
        with jailed_probe(none) as (p, s):
            assert _address_space_limit(p.pid) == ("unlimited", "unlimited")
    finally:
        small.close()
        none.close()


def test_memory_cap_too_small_is_refused(subreaper):
    rootless = os.geteuid() != 0
    with pytest.raises(JailError, match="memory cap 10 MB is below 64 MB"):
        Jailer(JailConfig(memory_mb=10, rootless=rootless, uid_base=UID_BASE))
    # Below what a child inherits from the master (this process): refused before any spawn.
    j = Jailer(JailConfig(memory_mb=65, rootless=rootless, uid_base=UID_BASE))
    with pytest.raises(JailError, match="memory cap 65 MB leaves no room: a connection process starts with"):
        j.prepare()
    j.close()


def test_cli_defaults_agree_with_the_jail():
    from jail import MIN_MEMORY_MB
    from relay import cli

    assert cli.DEFAULT_SESSION_MEMORY_MB == DEFAULT_MEMORY_MB == JailConfig().memory_mb
    assert cli.MIN_SESSION_MEMORY_MB == MIN_MEMORY_MB
    args, _ = cli._checked_args(["--session-memory", "300"])
    assert args.session_memory == 300
    with pytest.raises(SystemExit):
        cli._checked_args(["--session-memory", "10"])


def test_config_validation():
    with pytest.raises(JailError, match="inside_uid"):
        Jailer(JailConfig(inside_uid=0, rootless=os.geteuid() != 0))
    with pytest.raises(JailError, match="not a directory"):
        Jailer(JailConfig(empty_root="/nonexistent/pymate", rootless=os.geteuid() != 0))
    if os.geteuid() == 0:
        with pytest.raises(JailError, match="65534"):
            Jailer(JailConfig(uid_base=60000, uid_count=10000))
        with pytest.raises(JailError, match="rootless mode as root"):
            Jailer(JailConfig(rootless=True))


def test_userns_unavailable_is_a_clear_error(monkeypatch):
    def refuse(flags):
        raise OSError(errno.EPERM, "unshare: Operation not permitted")

    monkeypatch.setattr(_sys, "unshare", refuse)
    with pytest.raises(JailError, match="user namespaces unavailable .*unshare: Operation not"):
        Jailer(JailConfig(uid_base=UID_BASE))


# ------------------------------------------------------------------ rootless mode

ROOTLESS_UID = 65534


def rootless_helper_main() -> int:
    """Run as an unprivileged user: jail a probe, report, wait for the test to look."""
    try:
        j = Jailer(JailConfig())
    except JailError as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        return 0
    j.prepare()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = j.spawn(functools.partial(probe_server, theirs.fileno()), keep_fds=[theirs.fileno()], title=TITLE)
    theirs.close()
    try:
        probes = {
            c: rpc(ours, c)
            for c in (
                "ids",
                "open",
                "tcp",
                "unshare_user",
                "mount",
                "fork",
                "thread",
                "ping",
                "allocate_2gb",
                "raise_memory_cap",
            )
        }
        try:
            open(f"/proc/{p.pid}/environ", "rb").read()
            environ = "readable"
        except OSError as e:
            assert e.errno is not None
            environ = errno.errorcode[e.errno]
        print(
            json.dumps(
                {
                    "pid": p.pid,
                    "uid": p.uid,
                    "rootless": j.rootless,
                    "my_uid": os.geteuid(),
                    "probes": probes,
                    "environ": environ,
                    "status": _status(p.pid),
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # the test inspects /proc/PID, then closes our stdin
    finally:
        ours.close()
        os.kill(p.pid, signal.SIGKILL)
        os.waitpid(p.pid, 0)
        j.close()
    print(json.dumps({"done": True}), flush=True)
    return 0


@needs_root
def test_rootless_mode(no_leftovers, tmp_path):
    if not os.path.exists("/usr/bin/setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    cmd = [
        "/usr/bin/setpriv",
        f"--reuid={ROOTLESS_UID}",
        f"--regid={ROOTLESS_UID}",
        "--clear-groups",
        sys.executable,
        os.path.abspath(__file__),
        "--rootless-helper",
    ]
    # The project root on the path: this file imports the shared test helpers (tests.e2e).
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/",
        "TMPDIR": "/tmp",
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    }
    helper = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=env,
        text=True,
    )
    assert helper.stdout is not None and helper.stderr is not None
    try:
        line = helper.stdout.readline()
        if not line:
            err = helper.stderr.read()
            # (a Python installed in a private home, e.g. pyenv's under /root, cannot load its
            # libpython as that uid)
            if any(
                why in err for why in ("Permission denied", "No module named", "cannot open shared object")
            ):
                pytest.skip(f"helper cannot run as uid {ROOTLESS_UID}: {err.strip()[-300:]}")
            raise AssertionError(f"helper failed: {err}")
        info = json.loads(line)
        if "unavailable" in info:
            pytest.skip(f"unprivileged user namespaces unavailable: {info['unavailable']}")
        assert info["rootless"] is True and info["my_uid"] == ROOTLESS_UID
        pid = info["pid"]
        assert info["uid"] == ROOTLESS_UID
        st = _status(pid)
        assert_jailed_status(st, ROOTLESS_UID)  # the invoking uid is the one mapped
        assert st["Seccomp"] == "2"
        assert int(st["PPid"]) == helper.pid
        mine, theirs, helpers = _ns("self"), _ns(pid), _ns(helper.pid)
        for n in NAMESPACES:
            assert theirs[n] != mine[n] and theirs[n] != helpers[n], n
        assert os.listdir(f"/proc/{pid}/root/") == []
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().startswith(TITLE.encode())
        with open(f"/proc/{pid}/uid_map") as f:
            assert f.read().split() == ["1000", str(ROOTLESS_UID), "1"]
        pr = info["probes"]
        assert pr["ids"]["pid"] == 1 and pr["ids"]["uid"] == [1000] * 3
        assert pr["ids"]["hostname"] == "pymate"
        assert pr["open"] == pr["tcp"] == pr["unshare_user"] == pr["mount"] == "EPERM"
        assert pr["fork"] == "EPERM" and pr["thread"] is True and pr["ping"] == "pong"
        # The memory cap holds in rootless mode too (RLIMIT_AS needs no privilege).
        cap = str(DEFAULT_MEMORY_MB << 20)
        assert _address_space_limit(pid) == (cap, cap)
        assert pr["allocate_2gb"] == "MemoryError" and pr["raise_memory_cap"] == "refused"
        # Same uid, not dumpable: even the master's uid cannot read its environ.
        assert info["environ"] == "EACCES"
    finally:
        out, err = helper.communicate(input="", timeout=20)
    assert helper.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"done": True}


if __name__ == "__main__" and "--rootless-helper" in sys.argv:
    sys.exit(rootless_helper_main())
