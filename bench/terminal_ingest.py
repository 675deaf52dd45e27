"""Ingest benchmark for relay.screen.terminal.TerminalModel (the relay's hot path).

Feeds, at 200x50 with the relay's history cap (2000 rows, capped in bytes):
  - `ls -laR --color=always /usr` output, generated at run time (capped at ~30 MB), LF -> CRLF
    as a pty with onlcr would deliver it;
  - `seq 1 3000000` output with CRLF line ends;
in 16 KiB chunks (tmate's PTY_DATA size) and prints MB/s and the history rows kept.
Then prints the memory of a fresh 100x30 model and of one with a full history, from RSS deltas
over 100 models (tracemalloc cannot see libghostty's native allocations).

Run: .venv/bin/python bench/terminal_ingest.py   (goal: >= 20 MB/s for each corpus)
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from relay.screen.terminal import TerminalModel, history_cap_bytes  # noqa: E402

CHUNK = 16 * 1024
CAP = 30 * 1024 * 1024


def ls_corpus() -> bytes:
    p = subprocess.Popen(
        ["ls", "-laR", "--color=always", "/usr"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert p.stdout is not None
    data = p.stdout.read(CAP)
    p.kill()
    p.wait()
    return data.replace(b"\n", b"\r\n")


def seq_corpus() -> bytes:
    return b"\r\n".join(b"%d" % i for i in range(1, 3_000_001)) + b"\r\n"


def ingest(name: str, data: bytes, cols: int = 200, rows: int = 50, runs: int = 3) -> None:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    best: float | None = None
    for _ in range(runs):
        m = TerminalModel(cols, rows)
        t0 = time.perf_counter()
        for c in chunks:
            m.feed(c)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        hist = m.history_size
        m.close()
    assert best is not None
    mb = len(data) / 1e6
    print(
        f"{name:>6}: {mb:7.1f} MB at {cols}x{rows}: {mb / best:6.1f} MB/s (best of {runs}), "
        f"history rows kept: {hist} (cap {history_cap_bytes(cols, rows, 2000) / 1e6:.2f} MB)"
    )


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def memory() -> None:
    filler = b"".join(b"\x1b[3%dm%06d\x1b[0m " % (i % 8, i) + b"x" * 80 + b"\r\n" for i in range(3000))
    screen = b"".join(b"\x1b[32muser@host\x1b[0m:~$ " + b"y" * 60 + b"\r\n" for _ in range(29))
    for label, fill, n in (
        ("fresh 100x30", None, 1000),
        ("100x30 one screenful", screen, 1000),
        ("100x30 + full history", filler, 100),
    ):
        gc.collect()
        base = rss_kb()
        models = []
        for _ in range(n):
            m = TerminalModel(100, 30)
            if fill:
                m.feed(fill)
            models.append(m)
        gc.collect()
        per = (rss_kb() - base) / n
        hist = models[0].history_size
        print(f"memory {label:>22}: {per:8.1f} KB per model (RSS delta over {n}), history rows {hist}")
        for m in models:
            m.close()
        del models


def main() -> None:
    t = time.perf_counter()
    ls = ls_corpus()
    print(f"generated ls -laR corpus: {len(ls) / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")
    ingest("ls", ls)
    del ls
    ingest("seq", seq_corpus())
    memory()


if __name__ == "__main__":
    main()
