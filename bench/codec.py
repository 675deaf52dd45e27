"""Throughput of the tmate codec (relay.tmate.codec): prints figures, asserts nothing.

    .venv/bin/python bench/codec.py [MB]

PTY_DATA decoding is the hot path (a host running `cat` on a large log): the stream is fed in
SSH-channel-sized reads, as the connection does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import cast

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from relay.tmate.codec import HostDecoder, encode, encode_host  # noqa: E402
from relay.tmate.messages import PaneKey, PtyData  # noqa: E402


def log_bytes(n: int) -> bytes:
    line = b"2026-11-22T01:19:17.123Z INFO  worker[4711] \x1b[32mrequest ok\x1b[0m path=/api/v1 t=3ms\r\n"
    return (line * (n // len(line) + 1))[:n]


def bench_pty(total_mb: int, chunk: int, read: int) -> None:
    payload = log_bytes(chunk)
    one = encode_host(PtyData(0, payload))
    count = max(1, total_mb * 1024 * 1024 // chunk)
    stream = one * count
    reads = [stream[i : i + read] for i in range(0, len(stream), read)]
    best = 0.0
    for _ in range(3):
        dec = HostDecoder()
        got = 0
        t0 = time.perf_counter()
        for r in reads:
            for m in cast(list[PtyData], dec.feed(r)):  # the stream holds PTY_DATA only
                got += len(m.data)
        dt = time.perf_counter() - t0
        assert got == count * chunk
        best = max(best, got / dt / 1e6)
    print(
        f"decode PTY_DATA {chunk:>6} B/msg, reads of {read:>6} B: {best:8.1f} MB/s "
        f"of pane output ({count / (got / best / 1e6) / 1e3:,.0f}k msg/s)"
    )


def bench_keys(n: int = 200_000) -> None:
    msg = PaneKey(-1, 0x400000000000 | ord("c"))
    t0 = time.perf_counter()
    for _ in range(n):
        encode(msg)
    dt = time.perf_counter() - t0
    print(f"encode PANE_KEY: {n / dt / 1e3:,.0f}k msg/s")


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    bench_pty(total, 16 * 1024, 32 * 1024)
    bench_pty(total, 16 * 1024, 16 * 1024 + 7)
    bench_pty(total, 4096, 32 * 1024)
    bench_pty(total // 4 or 1, 100, 32 * 1024)
    bench_pty(total // 16 or 1, 16 * 1024, 1024)
    bench_keys()


if __name__ == "__main__":
    main()
