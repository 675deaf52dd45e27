"""Render bench: ms per full frame and per incremental frame (one pane line changed).

    .venv/bin/python bench/render.py

Then one small update (a line of output fed to an 80x24 pane, and the frame that shows it), back
to back and after the process slept 50 ms, as each session process does in bench/soak.py: what
it costs once the CPU's caches lost this process's code and data while it waited.

Sizes 80x24 and 200x50, one pane and four panes, each pane filled with coloured text (SGR 16,
256 and RGB colours, some wide characters) and a scrolled history. An incremental frame follows
one line of new output in one pane (the "busy pane"), which scrolls that pane.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from relay.screen.render import ViewerScreen  # noqa: E402
from relay.tmate import messages as m  # noqa: E402
from relay.tmate.session import Session  # noqa: E402


def fill(width: int, n: int, seed: int) -> bytes:
    out = []
    for i in range(n):
        k = (i + seed) % 7
        text = (
            f"{i:5d} \x1b[3{k}mcolour {k}\x1b[0m \x1b[38;5;{(i * 37) % 256}mpalette\x1b[0m "
            f"\x1b[38;2;{i % 256};{(i * 3) % 256};200mrgb\x1b[0m 日本語 " + "x" * 200
        )
        out.append(text[: width + 60])
    return ("\r\n".join(out) + "\r\n").encode()


def session(cols: int, rows: int, four: bool) -> Session:
    s = Session(rw_token="A" * 25, ro_token="ro-" + "b" * 25, ssh_host="h", ssh_port=22)
    s.handle(m.Header(6, "2.4.0"))
    sy = rows - 1
    if four:
        lw, rw = (cols - 1) // 2, cols - 1 - (cols - 1) // 2
        th, bh = (sy - 1) // 2, sy - 1 - (sy - 1) // 2
        panes: tuple[m.PaneGeom, ...] = (
            m.PaneGeom(0, lw, th, 0, 0),
            m.PaneGeom(1, rw, th, lw + 1, 0),
            m.PaneGeom(2, lw, bh, 0, th + 1),
            m.PaneGeom(3, rw, bh, lw + 1, th + 1),
        )
    else:
        panes = (m.PaneGeom(0, cols, sy, 0, 0),)
    s.handle(
        m.SyncLayout(
            cols,
            sy,
            (m.Window(0, "bash", panes, 0), m.Window(1, "vim", (m.PaneGeom(9, cols, sy, 0, 0),), 9)),
            0,
        )
    )
    for p in panes:
        s.handle(m.PtyData(p.id, fill(p.sx, 300, p.id)))
    s.handle(m.Status("[tmate] ", "#[fg=white,bright]relay.example#[default] 12:00"))
    return s


def bench(cols: int, rows: int, four: bool) -> tuple[float, float, float, int, int]:
    s = session(cols, rows, four)
    v = ViewerScreen(cols, rows)
    # full frames
    n = 200
    size_full = len(v.frame(s))
    t0 = time.perf_counter()
    for _ in range(n):  # a viewer joining: nothing cached (borders, pane rows)
        ViewerScreen(cols, rows).frame(s)
    full = (time.perf_counter() - t0) / n * 1000
    # incremental frames: one new line of output in pane 0 per frame
    size_inc = 0
    t_total = 0.0
    for i in range(n):
        s.handle(m.PtyData(0, fill(cols, 1, i)))
        t0 = time.perf_counter()
        size_inc = len(v.frame(s))
        t_total += time.perf_counter() - t0
    inc = t_total / n * 1000
    # a line changed without scrolling (a shell prompt being typed into)
    t_total = 0.0
    for _ in range(n):
        s.handle(m.PtyData(0, b"k"))
        t0 = time.perf_counter()
        v.frame(s)
        t_total += time.perf_counter() - t0
    typing = t_total / n * 1000
    s.close()
    return full, inc, typing, size_full, size_inc


def after_idle(runs: int = 40, gap: float = 0.05) -> tuple[float, float]:
    """(median ms of one update back to back, the same after sleeping `gap` seconds)."""
    s = session(80, 24, False)
    v = ViewerScreen(80, 24)
    v.frame(s)
    out = []
    for pause in (0.0, gap):
        times = []
        for i in range(runs):
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            s.handle(m.PtyData(0, b"line q1x%07dz of the soak\r\n" % i))
            v.frame(s)
            times.append(time.perf_counter() - t0)
        out.append(statistics.median(times) * 1000)
    s.close()
    return out[0], out[1]


def main() -> None:
    print(
        f"{'size':>8} {'panes':>5} {'full ms':>8} {'scroll ms':>9} {'typing ms':>9} "
        f"{'full B':>7} {'scroll B':>8}"
    )
    for cols, rows in ((80, 24), (200, 50)):
        for four in (False, True):
            full, inc, typing, bf, bi = bench(cols, rows, four)
            print(
                f"{cols}x{rows:<5} {4 if four else 1:>5} {full:8.3f} {inc:9.3f} {typing:9.3f} {bf:7d} {bi:8d}"
            )
    warm, cold = after_idle()
    print(
        f"one update (a line, 80x24, fed and framed): {warm:.3f} ms back to back, "
        f"{cold:.3f} ms after 50 ms asleep ({cold / warm:.1f}x)"
    )


if __name__ == "__main__":
    main()
