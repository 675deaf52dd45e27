"""Host-session benchmark: prints figures, asserts nothing.

1. new-session -> tmate-ready: a real tmate 2.4 client runs `new-session -d` then
   `wait tmate-ready`; median of N (the C server measured 37-77 ms here; goal <= 40 ms).
2. Private memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) per idle
   host session, over M idle sessions held by real tmate clients (C server: 0.63 MB; goal <= 2 MB).

Usage: .venv/bin/python bench/host_session.py [--ready-runs 10] [--sessions 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import TmateHost, scratch_relay, uss_kib, wait_for  # noqa: E402


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready-runs", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=50)
    args = ap.parse_args()

    with scratch_relay() as (tmp, relay, fps):
        # Warm-up session (first spawn pays one-time costs).
        h = TmateHost(tmp / "warm", relay.port, *fps).start()
        h.wait_ready()
        h.stop()

        times = []
        for i in range(args.ready_runs):
            h = TmateHost(tmp / f"r{i}", relay.port, *fps)
            t0 = time.perf_counter()
            h.start()
            h.wait_ready()
            times.append((time.perf_counter() - t0) * 1000)
            h.stop()
        med = statistics.median(times)
        print(
            f"new-session -> tmate-ready: median {med:.1f} ms over {len(times)} "
            f"(min {min(times):.1f}, max {max(times):.1f}); C server 37-77 ms; goal <= 40 ms"
        )

        hosts = []
        try:
            for i in range(args.sessions):
                h = TmateHost(tmp / f"m{i}", relay.port, *fps).start()
                hosts.append(h)
            for h in hosts:
                h.wait_ready(timeout=30)
            wait_for(lambda: len(relay.children()) >= args.sessions, 30, "all sessions")
            time.sleep(2.0)  # let the sessions go idle
            pids = relay.children()
            uss = [uss_kib(p) for p in pids]
            pss = [pss_kib(p) for p in pids]
            master_uss = uss_kib(relay.proc.pid)
            print(
                f"idle host sessions: {len(pids)}; USS per session: median "
                f"{statistics.median(uss) / 1024:.2f} MB, mean {statistics.mean(uss) / 1024:.2f} MB, "
                f"max {max(uss) / 1024:.2f} MB; PSS mean {statistics.mean(pss) / 1024:.2f} MB; "
                f"master USS {master_uss / 1024:.1f} MB; C server 0.63 MB; goal <= 2 MB"
            )
            print(
                f"ratio to C server: ready {med / 57:.2f}x (vs 57 ms, mid of 37-77); "
                f"memory {statistics.mean(uss) / 1024 / 0.63:.2f}x"
            )
        finally:
            for h in hosts:
                h.stop()


if __name__ == "__main__":
    main()
