"""Flood benchmark (issue 8): prints figures, asserts nothing.

A relay (its default limits unless --relay-arg says otherwise; bound to 0.0.0.0 so that test hosts
reach it) is flooded in three stages, one after the other:
  (a) COUNT idle TCP connections that never send a byte, each from its own loopback address
      (127.88.0.0/16);
  (b) COUNT idle connections from one address: a network-namespace test host (tests/netns.py);
  (c) STALLED connections stalled in the middle of the key exchange (our banner and a KEXINIT,
      then silence) from one address (test host A), and (d) as many, each from its own loopback
      address (127.89.0.0/16): a flood from many addresses that does cost processes, where
      --max-startups trades the relay's memory against refusing real clients.
While each flood is held, a real tmate host in test host B starts and waits for tmate-ready, and a
real OpenSSH viewer in test host C joins a session that was started before the flood (ssh start
-> the host's text on its terminal). Figures per stage: ready and join times, the relay's private
memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, summed over the master and
every process below it) and its process count at their peak, how fast the relay answered the
flood (a banner or a close: it had accepted the connection; the rate is over the first run of
answers, and connections the kernel's listen queue overflowed on are answered late or never, see
its ListenOverflows and SyncookiesSent counters), and how long after the grace period the
connections it held were closed (from the relay's banner, and from our connect()). The refusals
it logged per limit name (or per reason) are counted.

Traffic goes only to the relay on this machine, from loopback addresses and from test hosts
made here; every stage is bounded in count and time (about grace + 10 s each).

Usage (root): .venv/bin/python bench/flood.py [--count 1000] [--stalled 200] [--grace 20]
    [--samples 3] [--relay-arg=--max-startups=10:30:100 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import resource
import select
import selectors
import socket
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import Relay, TmateHost, make_host_keys, session_tokens, uss_kib  # noqa: E402
from tests.netns import NetnsHost, netns_host, unavailable  # noqa: E402

SSH_OPTS = "StrictHostKeyChecking=no UserKnownHostsFile=/dev/null LogLevel=ERROR BatchMode=yes".split()
MARK = b"JOIN-MARK"
REAL_TIMEOUT = 15.0  # seconds a real host or viewer is given under a flood


def kexinit_packet() -> bytes:
    """An unencrypted SSH_MSG_KEXINIT (RFC 4253 7.1) as a client sends it, in its binary packet."""

    kex = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256"
    cipher, mac = "aes128-ctr,aes256-gcm@openssh.com", "hmac-sha2-256"
    lists = [kex, "ssh-ed25519,rsa-sha2-512", cipher, cipher, mac, mac, "none", "none", "", ""]
    payload = (
        bytes([20])
        + os.urandom(16)
        + b"".join(struct.pack(">I", len(n)) + n.encode() for n in lists)
        + b"\0"
        + b"\0\0\0\0"
    )
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + bytes(pad)


STALL_BYTES = b"SSH-2.0-OpenSSH_9.2 flood\r\n" + kexinit_packet()


@dataclass
class Conn:
    sock: socket.socket
    t0: float  # connect() issued
    send: bytes = b""
    connected: float | None = None
    first: float | None = None  # the relay's first answer: bytes or a close
    banner: bool = False
    closed: float | None = None


class Watcher(threading.Thread):
    """Opens flood connections (non-blocking) and records, per connection, when the relay answered
    and when it closed it. Reads and drops what the relay sends."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="flood-watcher")
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.pending: list[Conn] = []
        self.calls: list[Callable[[], None]] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ)

    def open(self, socks: list[socket.socket], address: tuple[str, int], send: bytes = b"") -> list[Conn]:
        conns = []
        for s in socks:
            s.setblocking(False)
            c = Conn(s, time.perf_counter(), send)
            try:
                s.connect(address)
            except BlockingIOError:
                pass
            except OSError:
                c.first = c.closed = time.perf_counter()
            conns.append(c)
        with self.lock:
            self.pending.extend(c for c in conns if c.closed is None)
        self.wake_w.send(b"x")
        return conns

    def run(self) -> None:
        while True:  # a daemon thread: it ends with the bench
            for key, _ in self.sel.select(0.5):
                if key.fileobj is self.wake_r:
                    self.wake_r.recv(4096)
                    self._drain_queue()
                else:
                    self._event(key.data)

    def _drain_queue(self) -> None:
        """Register new connections and run queued calls, in this thread: the selector is its own."""
        with self.lock:
            todo, self.pending = self.pending, []
            calls, self.calls = self.calls, []
        for c in todo:
            self.sel.register(c.sock, selectors.EVENT_WRITE, c)
        for fn in calls:
            fn()

    def _event(self, c: Conn) -> None:
        now = time.perf_counter()
        if c.connected is None:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._done(c, now)
            c.connected = now
            if c.send:
                with contextlib.suppress(OSError):
                    c.sock.send(c.send)
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            return None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if c.first is None:
            c.first = now
            c.banner = data.startswith(b"SSH-")
        if not data:
            self._done(c, now)
        return None

    def _done(self, c: Conn, now: float) -> None:
        c.first = c.first or now
        c.closed = now
        self.sel.unregister(c.sock)
        c.sock.close()

    def close_all(self, conns: list[Conn]) -> int:
        """Close what the relay left open (from this thread's side, safely); returns how many."""
        left = [c for c in conns if c.closed is None]
        done = threading.Event()

        def close() -> None:
            for c in left:
                if c.closed is None:
                    with contextlib.suppress(KeyError, ValueError):
                        self.sel.unregister(c.sock)
                    c.sock.close()
            done.set()

        self.call(close)
        done.wait(10)
        return len(left)

    def call(self, fn: Callable[[], None]) -> None:
        with self.lock:
            self.calls.append(fn)
        self.wake_w.send(b"c")


def relay_tree(root: int) -> list[int]:
    """The relay's master and every process below it."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in set(frontier)]
        tree += frontier
    return tree


class MemorySampler(threading.Thread):
    """The relay's private memory and process count, sampled every 0.5 s; peaks since reset()."""

    def __init__(self, root: int):
        super().__init__(daemon=True, name="memory-sampler")
        self.root = root
        self.peak_mb = 0.0
        self.peak_procs = 0

    def sample(self) -> tuple[float, int]:
        tree = relay_tree(self.root)
        return sum(uss_kib(p) for p in tree) / 1024, len(tree)

    def reset(self) -> None:
        self.peak_mb, self.peak_procs = self.sample()

    def run(self) -> None:
        while True:  # a daemon thread: it ends with the bench
            mb, procs = self.sample()
            self.peak_mb, self.peak_procs = max(self.peak_mb, mb), max(self.peak_procs, procs)
            time.sleep(0.5)


def ready_ms(b: NetnsHost, work: Path, port: int, fps: tuple[str, str]) -> float | None:
    """A new real tmate host in test host B: new-session -> tmate-ready, or None past the timeout."""
    h = b.tmate_host(work, port, *fps)
    t0 = time.perf_counter()
    try:
        h.start()
        h.wait_ready(timeout=REAL_TIMEOUT)
        return (time.perf_counter() - t0) * 1000
    except Exception:
        return None
    finally:
        h.stop()


def join_ms(c: NetnsHost, home: Path, port: int, token: str) -> float | None:
    """A real ssh viewer in test host C on an 80x24 pty: ssh start -> the host's text, or None."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {"HOME": str(home), "TERM": "xterm-256color", "LANG": "C.UTF-8", "PATH": os.environ["PATH"]}
    argv = ["ssh", "-p", str(port), *(a for o in SSH_OPTS for a in ("-o", o)), f"{token}@{c.gateway}"]
    t0 = time.perf_counter()
    p = c.popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    buf = b""
    try:
        while MARK not in buf:
            left = t0 + REAL_TIMEOUT - time.perf_counter()
            if left <= 0 or not select.select([master], [], [], left)[0]:
                return None
            try:
                buf = buf[-len(MARK) :] + os.read(master, 65536)
            except OSError:
                return None
        return (time.perf_counter() - t0) * 1000
    finally:
        p.kill()
        p.wait()
        os.close(master)


def fmt_ms(values: list[float | None]) -> str:
    ok = [v for v in values if v is not None]
    failed = len(values) - len(ok)
    if not ok:
        return f"none of {len(values)} within {REAL_TIMEOUT:.0f} s"
    text = f"median {statistics.median(ok):.0f} ms, max {max(ok):.0f} ms over {len(ok)}"
    return text + (f", {failed} not within {REAL_TIMEOUT:.0f} s" if failed else "")


@dataclass
class Bench:
    args: argparse.Namespace
    relay: Relay
    fps: tuple[str, str]
    work: Path
    hosts: dict[str, NetnsHost]
    token: str
    watcher: Watcher
    memory: MemorySampler
    runs: int = 0
    baseline_procs: int = 2
    kernel: dict[str, int] = field(default_factory=dict)
    refusals: Counter = field(default_factory=Counter)

    def real_clients(self) -> tuple[list[float | None], list[float | None]]:
        ready, join = [], []
        for _ in range(self.args.samples):
            self.runs += 1
            ready.append(ready_ms(self.hosts["B"], self.work / f"h{self.runs}", self.relay.port, self.fps))
            join.append(join_ms(self.hosts["C"], self.work, self.relay.port, self.token))
        return ready, join

    def logged_refusals(self) -> Counter:
        """What the relay logged since the last call: refusals per limit name (or per reason where a
        line names no limit), and kills."""
        now: Counter = Counter()
        for line in self.relay.log_text().splitlines():
            limit = re.search(r"limit=['\"]?([\w-]+)", line)
            reason = re.search(r"reason=['\"]?([^'\":(]{1,40})", line)
            if limit:
                now[limit.group(1)] += 1
            elif "connection killed" in line:
                now["killed: " + (reason.group(1).strip() if reason else "?")] += 1
            elif "refused" in line:
                now["refused: " + (reason.group(1).strip() if reason else "?")] += 1
        new = now - self.refusals
        self.refusals = now
        return new

    def stage(self, name: str, socks: list[socket.socket], target: str, send: bytes = b"") -> None:
        self.memory.reset()
        self.logged_refusals()
        self.kernel = listen_counters()
        t_start = time.perf_counter()
        conns = self.watcher.open(socks, (target, self.relay.port), send)
        ready, join = self.real_clients()
        cap = t_start + self.args.grace + 8
        while time.perf_counter() < cap and any(c.closed is None for c in conns):
            time.sleep(0.1)
        left_open = self.watcher.close_all(conns)
        self.report(name, conns, t_start, ready, join, left_open)
        self.settle()

    def settle(self, cap: float = 30.0) -> None:
        """Wait (at most `cap` s) until the relay is back to its master and the bystander session
        for 2 s, so that what a stage left queued (accept backlog) does not load the next one."""
        deadline, quiet_since = time.perf_counter() + cap, time.perf_counter()
        while time.perf_counter() < deadline:
            if len(relay_tree(self.memory.root)) > self.baseline_procs:
                quiet_since = time.perf_counter()
            elif time.perf_counter() - quiet_since >= 2.0:
                return
            time.sleep(0.2)
        print(f"   (the relay still had {len(relay_tree(self.memory.root))} processes {cap:g} s later)")

    def report(self, name, conns, t_start, ready, join, left_open) -> None:
        g = self.args.grace
        print(f"== ({name}) {len(conns)} connections")
        print(f"   real tmate host ready: {fmt_ms(ready)}; real viewer join: {fmt_ms(join)}")
        print(
            f"   relay private memory peak {self.memory.peak_mb:.0f} MB, "
            f"{self.memory.peak_procs} processes at the peak"
        )
        print("   " + answer_figures(conns, t_start, g))
        # Held: served with a banner and kept past the grace period (the others were refused).
        held = [c for c in conns if c.banner and c.closed and c.first and c.closed - c.first > g - 0.5]
        if held:
            for what, since in (("its banner", "first"), ("connect()", "t0")):
                delays = [c.closed - getattr(c, since) - g for c in held]
                late = sum(1 for d in delays if d > 1.0)
                print(
                    f"   {len(held)} held were closed after grace ({g:g} s) from {what}: median "
                    f"{statistics.median(delays):+.2f} s, max {max(delays):+.2f} s, {late} later than +1 s"
                )
        print(f"   still open {g + 8:g} s after the flood began (closed by the bench): {left_open}")
        kernel = listen_counters()
        print(
            "   kernel (whole machine): "
            + ", ".join(f"{k} {v - self.kernel.get(k, 0)}" for k, v in kernel.items())
        )
        refused = ", ".join(f"{k} {v}" for k, v in sorted(self.logged_refusals().items())) or "none"
        print(f"   logged: {refused}")


def answer_figures(conns: list[Conn], t_start: float, grace: float) -> str:
    """How fast the relay answered (a banner or a close: it had accepted the connection): how many
    by when, and the rate over the first run of answers (up to a pause of 0.5 s)."""
    times = sorted(
        c.first - t_start for c in conns if c.first is not None and c.first - t_start < grace - 0.5
    )
    run_end = 0
    while run_end + 1 < len(times) and times[run_end + 1] - times[run_end] < 0.5:
        run_end += 1
    rate = (run_end + 1) / max(times[run_end], 1e-3) if times else 0.0
    banner = sum(1 for c in conns if c.banner)
    within = ", ".join(f"{sum(1 for t in times if t <= w)} within {w:g} s" for w in (0.1, 1, 5))
    return (
        f"answered (banner or close) before grace: {len(times)} ({within}); first run {run_end + 1} "
        f"in {times[run_end] if times else 0:.2f} s = {rate:.0f}/s; {banner} got a banner"
    )


def listen_counters() -> dict[str, int]:
    """The kernel's listen-queue overflow and SYN-cookie counters (/proc/net/netstat)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "SyncookiesSent")}
    return {}


def loopback_sockets(count: int, second_octet: int) -> list[socket.socket]:
    """`count` sockets bound to distinct loopback addresses 127.X.i/250.i%250+1."""
    out = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((f"127.{second_octet}.{i // 250}.{i % 250 + 1}", 0))
        out.append(s)
    return out


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def bystander(b: NetnsHost, work: Path, port: int, fps: tuple[str, str]) -> TmateHost:
    """A session started before the flood, its pane showing the join mark."""
    h = b.tmate_host(work / "bystander", port, *fps).start()
    h.wait_ready()
    h.leave_messages()
    h.cmd("send-keys", "-l", f"clear; echo {MARK.decode()}")
    h.cmd("send-keys", "Enter")
    time.sleep(0.3)
    return h


def run(args: argparse.Namespace, work: Path, hosts: dict[str, NetnsHost]) -> None:
    fps = make_host_keys(work / "keys")
    extra = ["-b", "0.0.0.0", "--grace-period", str(args.grace), *args.relay_arg]
    with Relay(work / "keys", extra=extra) as relay:
        assert relay.proc is not None
        h0 = bystander(hosts["B"], work, relay.port, fps)
        try:
            watcher = Watcher()
            watcher.start()
            memory = MemorySampler(relay.proc.pid)
            memory.start()
            bench = Bench(args, relay, fps, work, hosts, session_tokens(h0)[0], watcher, memory)
            memory.reset()
            bench.baseline_procs = memory.peak_procs
            ready, join = bench.real_clients()
            print(f"== no flood: real tmate host ready: {fmt_ms(ready)}; real viewer join: {fmt_ms(join)}")
            print(f"   relay private memory {memory.peak_mb:.0f} MB, {memory.peak_procs} processes")
            n, a = args.count, hosts["A"]
            bench.stage(f"a: idle, {n} loopback addresses", loopback_sockets(n, 88), "127.0.0.1")
            bench.stage(f"b: idle, one address {a.address}", a.sockets(n), a.gateway)
            k = args.stalled
            bench.stage(
                f"c: stalled mid-kex, {k} from one address {a.address}", a.sockets(k), a.gateway, STALL_BYTES
            )
            socks = loopback_sockets(k, 89)
            bench.stage(f"d: stalled mid-kex, {k} loopback addresses", socks, "127.0.0.1", STALL_BYTES)
        finally:
            h0.stop()
            if args.log:
                Path(args.log).write_text(relay.log_text() + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="idle connections in stages a and b")
    ap.add_argument("--stalled", type=int, default=200, help="connections stalled mid-kex in stage c")
    ap.add_argument("--grace", type=float, default=20.0, help="the relay's --grace-period")
    ap.add_argument("--samples", type=int, default=3, help="real hosts and viewers timed per stage")
    ap.add_argument("--relay-arg", action="append", default=[], help="an extra relay flag (repeatable)")
    ap.add_argument("--log", help="write the relay's log lines to this file at the end")
    args = ap.parse_args()
    if not 0 < args.count <= 5000 or not 0 < args.stalled <= 5000 or not 0 < args.grace <= 120:
        ap.error("bounded: --count and --stalled 1..5000, --grace up to 120 s")
    reason = unavailable()
    if reason:  # `make bench` runs every bench: skip, do not fail
        print(f"flood: skipped: {reason}")
        return
    raise_nofile(2 * (args.count + args.stalled) + 4096)
    with tempfile.TemporaryDirectory(prefix="pymate-flood-") as name, contextlib.ExitStack() as stack:
        hosts = {k: stack.enter_context(netns_host()) for k in "ABC"}
        print("test hosts: " + ", ".join(f"{k} {h.address}" for k, h in hosts.items()))
        run(args, Path(name), hosts)


if __name__ == "__main__":
    main()
