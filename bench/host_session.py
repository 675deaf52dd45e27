"""Host-session benchmark: prints figures, asserts nothing.

1. new-session -> tmate-ready: a real tmate 2.4 client runs `new-session -d` then
   `wait tmate-ready`; median of N. With --c-server, the C server's runs alternate with the
   relay's in the same run (one of each in turn), and the ratio is printed.
2. Private memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) per idle
   host session, over M idle sessions held by real tmate clients (goal <= 1.5 MB on 3.12+);
   for the C server, the USS of all its processes but the listener, divided by M.
3. --smaps: one idle session's private memory by mapping (heap, anonymous, stacks, libpython,
   other libraries), as /proc/PID/smaps gives it.

The relay runs on this interpreter (`build/venv-313/bin/python bench/host_session.py` measures
3.13; PYTHONPATH=. when the venv has no editable install).
Usage: .venv/bin/python bench/host_session.py [--ready-runs 20] [--sessions 50] [--smaps]
       [--c-server /work/cserver/tmate-ssh-server]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import (  # noqa: E402
    TmateHost,
    descendants,
    free_port,
    scratch_relay,
    ssh_fingerprint,
    teach,
    terminate,
    uss_kib,
    wait_for,
)


class Server:
    """What a bench needs of a server under test: its port, fingerprints and session processes."""

    def __init__(self, name: str, port: int, fps: tuple[str, str], pid: int, sessions):
        self.name, self.port, self.fps, self.pid, self.sessions = name, port, fps, pid, sessions


@contextlib.contextmanager
def c_server(path: str) -> Iterator[Server]:
    """The C server (tmate-ssh-server, built outside this repository) on a free port."""
    with tempfile.TemporaryDirectory(prefix="pymate-cserver-") as name:
        keys = Path(name)
        for t in ("rsa", "ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", t, "-N", "", "-f", str(keys / f"ssh_host_{t}_key")], check=True
            )
        port = free_port()
        proc = subprocess.Popen(
            [path, "-k", str(keys), "-p", str(port), "-h", "127.0.0.1", "-b", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        fps = (
            ssh_fingerprint(keys / "ssh_host_rsa_key.pub"),
            ssh_fingerprint(keys / "ssh_host_ed25519_key.pub"),
        )
        try:
            time.sleep(0.3)
            yield Server("C server", port, fps, proc.pid, lambda: descendants(proc.pid))
        finally:
            terminate(proc)


def ready_ms(server: Server, workdir: Path) -> float:
    h = TmateHost(workdir, server.port, *server.fps)
    t0 = time.perf_counter()
    h.start()
    h.wait_ready()
    ms = (time.perf_counter() - t0) * 1000
    h.stop()
    return ms


def idle_uss(server: Server, workdir: Path, n: int, smaps: bool) -> tuple[float, float]:
    """(USS per idle session in MB, the listener's own USS in MB) with n idle sessions."""
    hosts = [TmateHost(workdir / f"m{i}", server.port, *server.fps) for i in range(n)]
    try:
        for h in hosts:
            h.start()
        for h in hosts:
            h.wait_ready(timeout=30)
        wait_for(lambda: len(server.sessions()) >= n, 30, "all sessions")
        time.sleep(2.0)  # let the sessions go idle
        pids = server.sessions()
        if smaps and pids:
            print_smaps(server.name, pids[0])
        return sum(uss_kib(p) for p in pids) / 1024 / n, uss_kib(server.pid) / 1024
    finally:
        for h in hosts:
            h.stop()


def mapping_kind(name: str) -> str:
    if name in ("[heap]", "[stack]"):
        return name
    if not name:
        return "anonymous (pymalloc arenas, mmap'd malloc, thread stacks)"
    base = os.path.basename(name)
    if base.startswith("libpython") or base.startswith("python3"):
        return "libpython / python"
    return "other libraries and files" if "/" in name else name


def print_smaps(what: str, pid: int) -> None:
    """One process's Private_Clean + Private_Dirty by kind of mapping, in KiB."""
    totals: dict[str, int] = defaultdict(int)
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and ":" not in head[0]:
            kind = mapping_kind(head[5] if len(head) > 5 else "")
        elif head[0] in ("Private_Clean:", "Private_Dirty:"):
            totals[kind] += int(head[1])
    print(f"  {what}: one idle session's private memory by mapping (KiB):")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        if v:
            print(f"    {v:6d}  {k}")
    print(f"    {sum(totals.values()):6d}  total")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready-runs", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--smaps", action="store_true")
    ap.add_argument("--c-server", metavar="PATH")
    args = ap.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    with contextlib.ExitStack() as stack:
        tmp, relay, fps = stack.enter_context(scratch_relay())
        teach(relay, fps, tmp / "teach")
        heap = next((x for x in relay.log_text().splitlines() if "immortal heap" in x), "")
        print(f"relay: {heap[heap.find('event=') :]}")
        servers = [Server("relay", relay.port, fps, relay.proc.pid, relay.children)]
        if args.c_server:
            servers.append(stack.enter_context(c_server(args.c_server)))
        times: dict[str, list[float]] = {s.name: [] for s in servers}
        for s in servers:  # the first spawn pays one-time costs
            ready_ms(s, tmp / f"warm-{s.name}")
        for i in range(args.ready_runs):
            for s in servers:
                times[s.name].append(ready_ms(s, tmp / f"r{i}-{s.name}"))
        uss = {}
        for s in servers:
            t = times[s.name]
            print(
                f"{s.name}: new-session -> tmate-ready median {statistics.median(t):.1f} ms over {len(t)} "
                f"(min {min(t):.1f}, max {max(t):.1f})"
            )
            per, own = idle_uss(s, tmp / f"idle-{s.name}", args.sessions, args.smaps)
            uss[s.name] = per
            print(
                f"{s.name}: {args.sessions} idle host sessions, USS {per:.2f} MB per session; listener {own:.1f} MB"
            )
        if args.c_server:
            r, c = times["relay"], times["C server"]
            print(
                f"ratio relay / C server (same run): ready {statistics.median(r) / statistics.median(c):.2f}x, "
                f"USS per idle session {uss['relay'] / uss['C server']:.2f}x"
            )


if __name__ == "__main__":
    main()
