"""Soak benchmark (issue 9 part 6): many small updates; prints figures, asserts nothing.

SESSIONS real tmate 2.4 hosts (80x24) each run a small program that prints one numbered line
every INTERVAL (50 ms), for MINUTES; each session has VIEWERS viewers (asyncssh in this process,
pty 80x24, the first read-write, the others read-only) that read everything. Every SAMPLE seconds
it prints the server's CPU (% of one core: utime + stime from /proc/PID/stat of the server and
every process below it, over the last period; for the relay also split into master, session
processes and viewer processes) and its private memory (USS, summed the same way). At the end it
checks that every viewer saw every line of its session (a line's number shows in the bytes the
viewer received), and prints what was lost.

Memory: a pane keeps at least 2000 rows of history, capped in bytes (relay.screen.terminal), so
a session's memory must stop growing once its pane's history first reaches the cap: at line 3468
for these 80x23 panes (the bench finds it with the relay's own terminal model), t = 173 s at
50 ms. The bench prints that moment and the growth after it.

With --c-server PATH (tmate-ssh-server, built outside this repository) the same soak then runs
against the C server, one after the other in the same run, and the ratios are printed.
With --py-spy PATH (a py-spy binary, e.g. from a scratch venv under /tmp) one session process
and one viewer process of the relay are sampled for --profile-seconds at mid-run, and the
functions taking most of their time are printed (self and inclusive).

Usage: .venv/bin/python bench/soak.py [--minutes 5] [--sessions 30] [--viewers 2]
       [--interval 0.05] [--sample 30] [--c-server PATH] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host_session import Server, c_server  # noqa: E402

from relay.screen.terminal import TerminalModel  # noqa: E402
from tests.e2e import (  # noqa: E402
    Relay,
    TmateHost,
    cpu_ticks,
    descendants,
    make_host_keys,
    session_tokens,
    teach,
    uss_kib,
)

HZ = os.sysconf("SC_CLK_TCK")
LINE = re.compile(rb"q(\d+)x(\d{7})z")
PRINTER = """\
import sys, time
s, count, interval = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
for n in range(1, count + 1):
    delay = t0 + n * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sys.stdout.write("line q%dx%07dz of the soak\\n" % (s, n))
    sys.stdout.flush()
"""


@contextlib.contextmanager
def relay_server(tmp: Path) -> Iterator[Server]:
    tmp.mkdir(parents=True, exist_ok=True)
    fps = make_host_keys(tmp / "keys")
    with Relay(tmp / "keys", extra=["--per-source-max-startups", "100", "--per-source-rate", "200"]) as r:
        assert r.proc is not None
        teach(r, fps, tmp / "teach")  # the steady state: what the first sessions taught it
        yield Server("relay", r.port, fps, r.proc.pid, r.children)


class Watch(asyncssh.SSHClientSession):
    """A viewer that reads everything and marks which of its session's lines it saw."""

    def __init__(self, session: int, count: int):
        self.session, self.count = session, count
        self.seen = bytearray(count + 1)
        self.latest = 0
        self.tail = b""
        self.bytes = 0
        self.closed = False

    def data_received(self, data: bytes, datatype) -> None:
        self.bytes += len(data)
        buf = self.tail + data
        for m in LINE.finditer(buf):
            if int(m[1]) == self.session:
                n = int(m[2])
                if 0 < n <= self.count:
                    self.seen[n] = 1
                    self.latest = max(self.latest, n)
        self.tail = buf[-24:]

    def connection_lost(self, exc) -> None:
        self.closed = True

    def missing(self) -> int:
        return self.count - sum(self.seen[1:])


async def join(port: int, token: str, session: int, count: int) -> tuple[asyncssh.SSHClientConnection, Watch]:
    conn = await asyncssh.connect(
        "127.0.0.1",
        port,
        username=token,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
        preferred_auth="none,keyboard-interactive",
    )
    _chan, watch = await conn.create_session(
        lambda: Watch(session, count), term_type="xterm-256color", term_size=(80, 24), encoding=None
    )
    assert isinstance(watch, Watch)
    return conn, watch


def groups(server: Server) -> dict[str, list[int]]:
    """The server's processes by kind: all, and for the relay master / sessions / viewers."""
    procs = descendants(server.pid)
    out = {"all": [server.pid, *procs]}
    if server.name == "relay":
        out["master"] = [server.pid]
        for pid in procs:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            kind = "sessions" if b" host " in cmd else "viewers" if b"viewer " in cmd else "other"
            out.setdefault(kind, []).append(pid)
    return out


class Sampler:
    """CPU (% of a core) per group over each period, and USS of all, over time."""

    def __init__(self, server: Server):
        self.server = server
        self.groups = groups(server)
        self.last = ({k: cpu_ticks(v) for k, v in self.groups.items()}, time.monotonic())
        self.rows: list[tuple[float, float, float]] = []  # (t, cpu % all, uss MB)
        self.t0 = time.monotonic()

    def sample(self, watches: list[Watch]) -> None:
        ticks, now = {k: cpu_ticks(v) for k, v in self.groups.items()}, time.monotonic()
        prev, then = self.last
        dt = now - then
        self.last = (ticks, now)
        cpu = {k: (ticks[k] - prev[k]) / HZ / dt * 100 for k in ticks}
        mem = {k: sum(uss_kib(p) for p in v) / 1024 for k, v in self.groups.items()}
        uss = mem["all"]
        t = now - self.t0
        self.rows.append((t, cpu["all"], uss))
        split = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "all")
        mem_split = ", ".join(f"{k} {v:.1f}" for k, v in mem.items() if k != "all")
        lines = min((w.latest for w in watches), default=0)
        print(
            f"  t={t:6.0f} s  CPU {cpu['all']:5.1f} % of a core{f' ({split})' if split else ''}  "
            f"USS {uss:7.1f} MB{f' ({mem_split})' if mem_split else ''}  lines shown (slowest viewer) {lines}",
            flush=True,
        )


def start_hosts(server: Server, tmp: Path, n: int) -> list[TmateHost]:
    hosts = [
        TmateHost(tmp / f"{server.name[0]}h{i}", server.port, *server.fps, sx=80, sy=24) for i in range(n)
    ]
    for h in hosts:
        h.start()
    for h in hosts:
        h.wait_ready(timeout=30)
    for h in hosts:
        h.leave_messages()
    return hosts


async def soak(server: Server, tmp: Path, args: argparse.Namespace, py_spy: str | None) -> Sampler:
    count = int(args.minutes * 60 / args.interval)
    cap_line = first_pruned(80, 23)
    tmp.mkdir(parents=True, exist_ok=True)
    printer = tmp / "printer.py"
    printer.write_text(PRINTER)
    loop = asyncio.get_running_loop()
    hosts = await loop.run_in_executor(None, start_hosts, server, tmp, args.sessions)
    conns, watches = [], []
    try:
        for i, h in enumerate(hosts, 1):
            rw, ro = session_tokens(h)
            for v in range(args.viewers):
                conn, watch = await join(server.port, rw if v == 0 else ro, i, count)
                conns.append(conn)
                watches.append(watch)
        await asyncio.sleep(1.0)
        print(
            f"{server.name}: {args.sessions} sessions x {args.viewers} viewers, a line every "
            f"{args.interval * 1000:.0f} ms for {args.minutes:g} min ({count} lines per session); "
            f"the relay's pane history reaches its cap (first pruned) at line {cap_line}: "
            f"t={cap_line * args.interval:.0f} s",
            flush=True,
        )
        for i, h in enumerate(hosts, 1):
            h.cmd("send-keys", f"python3 {printer} {i} {count} {args.interval}", "Enter")
        sampler = Sampler(server)
        end = time.monotonic() + count * args.interval
        profiled = py_spy is None
        while time.monotonic() < end:
            await asyncio.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            sampler.sample(watches)
            if py_spy is not None and not profiled and time.monotonic() - sampler.t0 > args.minutes * 30:
                profiled = True
                await loop.run_in_executor(None, profile, server, py_spy, args.profile_seconds, tmp)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(w.latest < count for w in watches):
            await asyncio.sleep(0.2)
        report_losses(watches, count)
        return sampler
    finally:
        for c in conns:
            c.close()
        for h in hosts:
            h.stop()


def report_losses(watches: list[Watch], count: int) -> None:
    missing = [w.missing() for w in watches]
    lost = sum(1 for x in missing if x)
    print(
        f"  lines lost: {sum(missing)} of {count * len(watches)} ({lost} of {len(watches)} viewers "
        f"lost any); viewers read {sum(w.bytes for w in watches) / 1e6:.1f} MB; "
        f"{sum(w.closed for w in watches)} viewers were disconnected"
    )


def first_pruned(cols: int, rows: int) -> int:
    """The soak's line at which a pane's history (this relay's terminal model at the session's
    size, capped in bytes: relay.screen.terminal) first drops rows: memory is flat from then on."""
    model = TerminalModel(cols, rows)
    most = 0
    try:
        for n in range(1, 100_000):
            model.feed(b"line q1x%07dz of the soak\r\n" % n)
            if model.history_size < most:
                return n
            most = model.history_size
        return n
    finally:
        model.close()


def summary(s: Sampler, interval: float) -> None:
    rows = s.rows
    if not rows:
        return
    cpus = [c for _t, c, _u in rows]
    full = first_pruned(80, 23) * interval
    after = [(t, u) for t, _c, u in rows if t >= full + 5]
    growth = ""
    if len(after) >= 2:
        growth = (
            f"; USS from t={full:.0f} s (the relay's history at its cap): {after[0][1]:.1f} -> {after[-1][1]:.1f} MB "
            f"({(after[-1][1] / after[0][1] - 1) * 100:+.1f} %)"
        )
    print(
        f"  {s.server.name}: CPU {min(cpus):.1f}-{max(cpus):.1f} % of a core (median "
        f"{statistics.median(cpus):.1f}); USS {rows[0][2]:.1f} -> {rows[-1][2]:.1f} MB{growth}"
    )


PROFILED = 6  # processes of each kind sampled at once (one alone holds too few samples)


def profile(server: Server, py_spy: str, seconds: float, tmp: Path) -> None:
    """py-spy record on a few session processes and viewer processes at once (samples that hold
    the GIL: where the CPU goes, not where it waits); the top functions of each kind."""
    g = groups(server)
    runs: list[tuple[str, list[Path], list[subprocess.Popen]]] = []
    for kind in ("sessions", "viewers"):
        pids = g.get(kind, [])[:PROFILED]
        outs = [tmp / f"{kind}-{pid}.txt" for pid in pids]
        cmd = [py_spy, "record", "--gil", "-d", str(int(seconds)), "-r", "200", "-f", "raw"]
        procs = [
            subprocess.Popen(
                [*cmd, "-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for pid, out in zip(pids, outs, strict=True)
        ]
        runs.append((kind, outs, procs))
    for kind, outs, procs in runs:
        for proc in procs:
            proc.wait()
        print_profile(f"{len(outs)} {kind[:-1]} processes", outs)


def short_frame(frame: str) -> str:
    """py-spy's `func (path/to/file.py:123)` as `func (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else frame


def print_profile(what: str, paths: list[Path], top: int = 18) -> None:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    text = ""
    for path in paths:
        with contextlib.suppress(OSError):
            text += path.read_text() + "\n"
    if not text.strip():
        print(f"  profile of {what}: none (py-spy failed)")
        return
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack.strip() or not n.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        count = int(n)
        total += count
        self_t[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"  profile of {what}: {total} samples; self / inclusive % of samples:")
    for f, c in self_t.most_common(top):
        print(f"    self {c / total * 100:5.1f} %  {f}")
    below = [(f, c) for f, c in incl.most_common() if c < 0.9 * total]  # not the process's own frames
    for f, c in below[: top + 8]:
        print(f"    incl {c / total * 100:5.1f} %  {f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--viewers", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--sample", type=float, default=30)
    ap.add_argument("--c-server", metavar="PATH")
    ap.add_argument("--py-spy", metavar="PATH")
    ap.add_argument("--profile-seconds", type=float, default=20)
    args = ap.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="pymate-soak-") as name:
        tmp = Path(name)
        with relay_server(tmp / "relay") as server:
            results.append(asyncio.run(soak(server, tmp / "relay", args, args.py_spy)))
        if args.c_server and Path(args.c_server).exists():
            with c_server(args.c_server) as server:
                results.append(asyncio.run(soak(server, tmp / "c", args, None)))
        elif args.c_server:
            print(f"no C server at {args.c_server}: relay only")
    print("summary:")
    for s in results:
        summary(s, args.interval)
    if len(results) == 2:
        ratio = statistics.median(r[1] for r in results[0].rows) / max(
            0.01, statistics.median(r[1] for r in results[1].rows)
        )
        print(f"  relay CPU / C server CPU (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
