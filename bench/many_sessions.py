"""Scale benchmark (issue 9 part 5): prints figures, asserts nothing.

Holds N idle host sessions on one relay with a light load generator in this one process
(asyncssh, many connections): each opens the `tmate` subsystem and replays a recorded tmate 2.4
host stream (tests/fixtures/host-stream-none_z0.bin: the header, the 89 replicated commands,
UNAME, READY, layouts and a few prompts of output), then stays connected and idle, reading what
the relay sends. With the N sessions live it measures:

- USS per session (Private_Clean + Private_Dirty summed over the session processes, / N), and the
  master's own USS and RSS;
- join: an asyncssh viewer (auth none, pty, shell) joins a random one of the N sessions; from
  connect() to its first frame, and from its shell request to its first frame (p50, p99);
- ready: the real tmate client `new-session -d` -> `tmate wait tmate-ready` (p50, p99).

The relay is this tree's, started with flags that admit N from one address (--max-sessions,
--max-connections, --max-startups, --per-source-*), RLIMIT_NOFILE raised to its hard limit.
Goals (issue 9): with 2,000 idle sessions live, join p99 < 100 ms and ready p99 < 100 ms.

Usage: .venv/bin/python bench/many_sessions.py [--sessions 200] [--joins 50] [--ready 20]
       [--concurrency 16] [--extra "relay flags"]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import print_profile  # noqa: E402

from tests.e2e import Relay, TmateHost, cpu_ticks, make_host_keys, teach, uss_kib, wait_for  # noqa: E402

STREAM = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "host-stream-none_z0.bin"
SET_ENV = 4


def relay_flags(n: int) -> list[str]:
    """Flags that admit n sessions (and the measuring viewers and hosts) from one address."""
    return [
        "--max-sessions",
        str(n + 100),
        "--max-connections",
        str(n + 200),
        "--max-startups",
        "200:30:400",
        "--per-source-max-startups",
        "200",
        "--per-source-rate",
        "2000",
        "--grace-period",
        "60",
    ]


def connect(port: int, user: str):  # an awaitable (and async context manager) connection
    return asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
        preferred_auth="none",
    )


class HostSide(asyncssh.SSHClientSession):
    """A replayed host: reads the relay's messages, keeps the read-write ssh line it is given."""

    def __init__(self) -> None:
        self.unpacker = msgpack.Unpacker(raw=False)
        self.token = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype) -> None:
        self.unpacker.feed(data)
        for msg in self.unpacker:
            if msg[0] == SET_ENV and msg[1] == "tmate_ssh" and not self.token.done():
                self.token.set_result(msg[2].rsplit(" ", 1)[1].split("@")[0])

    def connection_lost(self, exc) -> None:
        if not self.token.done():
            self.token.set_exception(ConnectionError(f"host closed: {exc}"))


async def open_host(port: int, stream: bytes) -> tuple[asyncssh.SSHClientConnection, str]:
    conn = await connect(port, "tmate")
    chan, side = await conn.create_session(HostSide, subsystem="tmate", encoding=None)
    chan.write(stream)
    token = await asyncio.wait_for(side.token, 30)
    return conn, token


async def open_hosts(port: int, n: int, concurrency: int) -> tuple[list, list[str], float]:
    stream = STREAM.read_bytes()
    sem = asyncio.Semaphore(concurrency)
    conns: list = []
    tokens: list[str] = []

    async def one() -> None:
        async with sem:
            for attempt in range(5):
                try:
                    conn, token = await open_host(port, stream)
                    conns.append(conn)
                    tokens.append(token)
                    return
                except (TimeoutError, OSError, asyncssh.Error, ConnectionError) as e:
                    if attempt == 4:
                        print(f"  host failed: {e!r}", file=sys.stderr)
                    await asyncio.sleep(0.2)

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    for i, task in enumerate(asyncio.as_completed(tasks), 1):
        await task
        if i % 500 == 0:
            print(f"  {i} hosts up ({time.monotonic() - t0:.0f} s)", flush=True)
    return conns, tokens, time.monotonic() - t0


class ViewerSide(asyncssh.SSHClientSession):
    def __init__(self) -> None:
        self.first = asyncio.get_running_loop().create_future()

    def data_received(self, data, datatype) -> None:
        if not self.first.done():
            self.first.set_result(time.perf_counter())

    def connection_lost(self, exc) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionError(f"viewer closed: {exc}"))


async def join_once(port: int, token: str) -> tuple[float, float]:
    """(connect -> first frame, shell request -> first frame), in seconds."""
    t0 = time.perf_counter()
    async with connect(port, token) as conn:
        t1 = time.perf_counter()
        _chan, side = await conn.create_session(
            ViewerSide, term_type="xterm-256color", term_size=(80, 24), encoding=None
        )
        first = await asyncio.wait_for(side.first, 10)
    return first - t0, first - t1


async def joins(port: int, tokens: list[str], count: int) -> tuple[list[float], list[float]]:
    whole, shell = [], []
    for _ in range(count):
        a, b = await join_once(port, random.choice(tokens))
        whole.append(a)
        shell.append(b)
        await asyncio.sleep(0.05)
    return whole, shell


def start_py_spy(py_spy: str | None, relay: Relay, out: Path, seconds: float) -> subprocess.Popen | None:
    """py-spy recording the master (unjailed, so py-spy can read its interpreter) for `seconds`."""
    if py_spy is None:
        return None
    assert relay.proc is not None
    cmd = [py_spy, "record", "-p", str(relay.proc.pid), "-d", str(int(seconds) + 1), "-r", "200"]
    return subprocess.Popen(
        [*cmd, "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def ready_times(tmp: Path, port: int, fps: tuple[str, str], count: int) -> list[float]:
    out = []
    for i in range(count):
        host = TmateHost(tmp / f"ready{i}", port, *fps)
        try:
            t0 = time.perf_counter()
            host.start()
            host.wait_ready()
            out.append(time.perf_counter() - t0)
        finally:
            host.stop()
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def ms(values: list[float]) -> str:
    if not values:
        return "(none)"
    return (
        f"p50 {statistics.median(values) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, "
        f"max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def session_pids(relay: Relay) -> list[int]:
    out = []
    for pid in relay.children():
        try:
            if b" host " in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


async def idle_cpu(relay: Relay, seconds: float = 5.0) -> None:
    """CPU the idle sessions and the master use, as % of one core."""
    assert relay.proc is not None
    pids = session_pids(relay)
    master = relay.proc.pid
    a, am, t0 = cpu_ticks(pids), cpu_ticks([master]), time.monotonic()
    await asyncio.sleep(seconds)
    b, bm, dt = cpu_ticks(pids), cpu_ticks([master]), time.monotonic() - t0
    hz = os.sysconf("SC_CLK_TCK")
    print(
        f"idle CPU over {seconds:.0f} s: {len(pids)} sessions {(b - a) / hz / dt * 100:.1f} % of a core "
        f"in all; master {(bm - am) / hz / dt * 100:.1f} %"
    )


def memory_report(relay: Relay, n: int) -> None:
    assert relay.proc is not None
    pids = session_pids(relay)
    total = sum(uss_kib(p) for p in pids)
    master = relay.proc.pid
    print(
        f"memory: {len(pids)} session processes, USS {total / 1024:.0f} MB in all, "
        f"{total / 1024 / max(1, len(pids)):.2f} MB per session; master USS "
        f"{uss_kib(master) / 1024:.1f} MB, RSS {status_kib(master, 'VmRSS') / 1024:.1f} MB"
    )


async def run(args: argparse.Namespace, tmp: Path, relay: Relay, fps: tuple[str, str]) -> None:
    print(f"opening {args.sessions} replayed hosts ({args.concurrency} at a time)...", flush=True)
    conns, tokens, took = await open_hosts(relay.port, args.sessions, args.concurrency)
    print(f"hosts: {len(conns)} of {args.sessions} live after {took:.1f} s ({len(conns) / took:.0f}/s)")
    # This process's own collector: with N connections' objects, a full collection pauses it for
    # tens of ms, which the join and ready timings (taken here) would count as the relay's.
    gc.freeze()
    try:
        await asyncio.sleep(2)
        memory_report(relay, len(conns))
        await idle_cpu(relay)
        spy = start_py_spy(args.py_spy, relay, tmp / "master.txt", args.joins * 0.12 + 2)
        whole, shell = await joins(relay.port, tokens, args.joins)
        if spy is not None and relay.proc is not None:
            spy.wait()
            print_profile(f"the master during the joins (pid {relay.proc.pid})", [tmp / "master.txt"])
        print(f"join with {len(conns)} sessions live, connect -> first frame: {ms(whole)}")
        print(f"join with {len(conns)} sessions live, shell request -> first frame: {ms(shell)}")
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, ready_times, tmp, relay.port, fps, args.ready)
        print(f"ready with {len(conns)} sessions live, new-session -> tmate-ready: {ms(ready)}")
        alive = sum(1 for c in conns if not c.is_closed())
        print(f"hosts still connected at the end: {alive} of {len(conns)}")
    finally:
        for c in conns:
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--joins", type=int, default=50)
    ap.add_argument("--ready", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--py-spy", metavar="PATH", help="a py-spy binary: profile the master during the joins")
    ap.add_argument("--extra", default="", help="extra relay flags, one shell-quoted string")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"RLIMIT_NOFILE {soft} -> {hard}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="pymate-bench-") as name:
        tmp = Path(name)
        fps = make_host_keys(tmp / "keys")
        extra = relay_flags(args.sessions) + shlex.split(args.extra)
        with Relay(tmp / "keys", extra=extra) as relay:
            teach(relay, fps, tmp / "teach")  # the steady state: what the first sessions taught it
            asyncio.run(run(args, tmp, relay, fps))
            assert relay.proc is not None
            wait_for(lambda: len(session_pids(relay)) == 0, 60, "the sessions to end")


if __name__ == "__main__":
    main()
