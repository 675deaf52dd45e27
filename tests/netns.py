"""Test hosts with source addresses of their own: network namespaces (pyroute2).

`netns_host()` makes one: a named network namespace joined to the root namespace by a veth pair,
the root end 198.18.N.1/30 and the host's end 198.18.N.2/30 (N from 1 to 255, from the
benchmarking range 198.18.0.0/15 of RFC 2544, never another range), both links up, loopback up
inside and a default route back through the root end. A relay under test listens on the root
end's address or on 0.0.0.0 and sees the host's connections come from 198.18.N.2.

Inside a test host: `command()`/`run()`/`popen()` run a program (`nsenter --net=...`; the real
tmate and ssh clients run this way: `tmate_host()`, `ssh_viewer()`), `sockets()` opens Python
sockets there (a short-lived thread enters the namespace with setns(2); a socket keeps the
namespace it was made in). Everything made is removed on exit, also when the test fails:
processes still inside the namespace are killed, the veth pair deleted, the namespace unmounted.
`unavailable()` says why test hosts cannot be made here (not root, no pyroute2, no unshare),
for a skip reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.e2e import SshViewer, TmateHost

NETNS_DIR = Path("/run/netns")
PREFIX = "pymate-t"  # namespace pymate-tN, root end of the veth pair pymate-tN
LOCK = Path("/run/lock/pymate-netns.lock")  # serialises choosing N between test runs and benches
CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why network-namespace test hosts cannot be made on this machine, or None."""
    if os.geteuid() != 0:
        return "network-namespace test hosts need root"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "pyroute2 is not installed (the test extra)"
    if shutil.which("nsenter") is None:
        return "nsenter (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsHost:
    """One test host: its namespace's name, its address and the root end's address."""

    def __init__(self, index: int):
        self.index = index
        self.name = f"{PREFIX}{index}"
        self.ns_path = NETNS_DIR / self.name
        self.address = f"198.18.{index}.2"  # the host's own (source) address
        self.gateway = f"198.18.{index}.1"  # the root end: where the relay is reached

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's network namespace."""
        return ["nsenter", f"--net={self.ns_path}", "--", *argv]

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), **kw)

    def sockets(
        self, count: int = 1, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> list[socket.socket]:
        """`count` new sockets that live in this host's namespace (made by a thread that entered it;
        the calling thread's namespace is untouched)."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def make() -> None:
            try:
                fd = os.open(self.ns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
                made.extend(socket.socket(family, kind) for _ in range(count))
            except BaseException as e:  # re-raised in the caller's thread
                failed.append(e)

        t = threading.Thread(target=make, name=f"netns-{self.name}")
        t.start()
        t.join()
        if failed:
            for s in made:
                s.close()
            raise failed[0]
        return made

    def connect(self, port: int, address: str | None = None, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from this host to `address` (the root end by default) on `port`."""
        (s,) = self.sockets()
        s.settimeout(timeout)
        try:
            s.connect((address or self.gateway, port))
        except BaseException:
            s.close()
            raise
        return s

    def tmate_host(self, workdir: Path, port: int, rsa_fp: str, ed25519_fp: str, **kw: Any) -> TmateHost:
        """A real tmate client in this host (not started), using the relay at the root end."""
        return NetnsTmateHost(self, workdir, port, rsa_fp, ed25519_fp, **kw)

    def ssh_viewer(self, workdir: Path, port: int, token: str, **kw: Any) -> SshViewer:
        """A real OpenSSH viewer in this host (not started), joining the relay at the root end."""
        return NetnsSshViewer(self, workdir, port, token, **kw)

    def pids(self) -> list[int]:
        """The processes whose network namespace is this host's."""
        try:
            ino = os.stat(self.ns_path).st_ino
        except OSError:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if os.stat(d / "ns" / "net").st_ino == ino:
                        out.append(int(d.name))
                except OSError:
                    continue
        return out


class NetnsTmateHost(TmateHost):
    """TmateHost whose tmate commands (and so its tmate server) run inside a test host."""

    def __init__(self, netns: NetnsHost, workdir: Path, port: int, rsa_fp: str, ed25519_fp: str, **kw: Any):
        super().__init__(workdir, port, rsa_fp, ed25519_fp, host=netns.gateway, **kw)
        self.netns = netns

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        return self.netns.run(argv, **kw)

    def start(self, attached: bool = False) -> TmateHost:
        if attached:
            raise NotImplementedError("an attached tmate client is not run inside a test host")
        return super().start()


class NetnsSshViewer(SshViewer):
    """SshViewer whose ssh client runs inside a test host (its tmux terminal stays outside)."""

    def __init__(self, netns: NetnsHost, workdir: Path, port: int, token: str, **kw: Any):
        super().__init__(workdir, port, token, **kw)
        self.netns = netns

    def ssh_command(self) -> str:
        opts = "StrictHostKeyChecking=no UserKnownHostsFile=/dev/null LogLevel=ERROR BatchMode=yes".split()
        argv = ["ssh", "-p", str(self.port), *(a for o in opts for a in ("-o", o)), *self.ssh_opts]
        return shlex.join(self.netns.command([*argv, f"{self.token}@{self.netns.gateway}"]))


@contextlib.contextmanager
def netns_host() -> Iterator[NetnsHost]:
    """Make a test host; everything it made is removed on exit."""
    from pyroute2 import IPRoute, NetNS, netns

    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with IPRoute() as ipr:
            used = {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)}
            free = (
                n
                for n in range(1, 256)
                if f"198.18.{n}.1" not in used
                and not (NETNS_DIR / f"{PREFIX}{n}").exists()
                and not ipr.link_lookup(ifname=f"{PREFIX}{n}")
            )
            host = NetnsHost(next(free))
            netns.create(host.name)
            try:
                ipr.link(
                    "add", ifname=host.name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": host.name}
                )
                (root_end,) = ipr.link_lookup(ifname=host.name)
                ipr.addr("add", index=root_end, address=host.gateway, prefixlen=30)
                ipr.link("set", index=root_end, state="up")
                with NetNS(host.name) as ns:
                    (lo,) = ns.link_lookup(ifname="lo")
                    ns.link("set", index=lo, state="up")
                    (eth0,) = ns.link_lookup(ifname="eth0")
                    ns.addr("add", index=eth0, address=host.address, prefixlen=30)
                    ns.link("set", index=eth0, state="up")
                    ns.route("add", dst="0.0.0.0/0", gateway=host.gateway)
            except BaseException:
                _remove(host)
                raise
    try:
        yield host
    finally:
        _remove(host)


def _remove(host: NetnsHost) -> None:
    """Kill what still runs inside the host, delete its veth pair and its namespace."""
    from pyroute2 import IPRoute, netns

    for pid in host.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=host.name):
            ipr.link("del", index=index)  # deletes both ends
    if host.ns_path.exists():
        netns.remove(host.name)
