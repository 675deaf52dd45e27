"""Viewer-path benchmarks: print figures and ratios to the C server's (measured here), assert nothing.

1. Throughput: the host runs `seq 1 3000000` (22.9 MB) with one viewer attached; time until the
   viewer shows the last line, MB/s, and the relay's CPU seconds
   [C: 0.98-1.19 MB/s, 11.5-12.5 CPU-s; goals >= 3x the C server's MB/s, relay CPU <= 2.5 s].
2. Keystroke echo, viewer -> host -> viewer, on a raw pty (the host pane runs `stty raw -echo`
   and a byte-echo loop), median of 20 [C: 0.83-0.92 ms; goal <= 0.9 ms].
3. Join: ssh start -> host text on the viewer, median of 10 [C: 66-89 ms; goal <= 70 ms].

Viewers are real OpenSSH clients on a pseudo-terminal this script reads directly.
Usage: .venv/bin/python bench/viewer.py [--lines 3000000] [--echo 20] [--joins 10]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import SSH_LINE, TmateHost, scratch_relay  # noqa: E402

SSH_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
]


class PtySsh:
    """`ssh TOKEN@127.0.0.1` on a pty of a given size; output is read by this process."""

    def __init__(self, port: int, token: str, cols: int = 80, rows: int = 24, home: str = "/tmp"):
        self.t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update(HOME=home, TERM="xterm-256color", LANG="C.UTF-8")
            os.execvp("ssh", ["ssh", "-p", str(port), *SSH_OPTS, f"{token}@127.0.0.1"])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.pid, self.fd = pid, fd
        self.buf = bytearray()

    def read_until(self, needle: bytes, timeout: float, keep: bool = True) -> float:
        """Read until `needle` shows; returns the time it showed (perf_counter)."""
        deadline = time.perf_counter() + timeout
        start = max(0, len(self.buf) - len(needle))
        while True:
            if needle in self.buf[start:]:
                return time.perf_counter()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 1 << 16)
                except OSError:
                    raise TimeoutError("ssh ended") from None
                if not keep:  # only the tail can still hold the needle
                    self.buf = bytearray(self.buf[-len(needle) :])
                    start = 0
                self.buf += data

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                self.buf += os.read(self.fd, 1 << 16)
            except OSError:
                return
        self.buf.clear()

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=3_000_000)
    ap.add_argument("--echo", type=int, default=20)
    ap.add_argument("--joins", type=int, default=10)
    args = ap.parse_args()
    with scratch_relay() as (tmp, relay, fps):
        host = TmateHost(tmp / "host", relay.port, *fps).start()
        try:
            host.wait_ready()
            host.leave_messages()
            m = SSH_LINE.match(host.display("#{tmate_ssh}"))
            assert m, host.display("#{tmate_ssh}")
            rw = m.group(2)

            # 1. throughput
            data_size = len(subprocess.run(["seq", "1", str(args.lines)], capture_output=True).stdout)
            v = PtySsh(relay.port, rw, 80, 24, str(tmp))
            v.read_until(b"0:", 10)
            v.drain()
            before = cpu_seconds(relay.children() + [relay.proc.pid])
            host.cmd("send-keys", "-l", f"clear; seq 1 {args.lines}; echo DONE-$((6*7))")
            t0 = time.perf_counter()
            host.cmd("send-keys", "Enter")
            t1 = v.read_until(b"DONE-42", 600, keep=False)
            after = cpu_seconds(relay.children() + [relay.proc.pid])
            secs = t1 - t0
            mbs = data_size / secs / 1e6
            cpu = after - before
            print(
                f"throughput: seq 1 {args.lines} ({data_size / 1e6:.1f} MB, ~{data_size * 1.06 / 1e6:.1f} MB "
                f"with the pty's CRLF) shown in {secs:.2f} s = {mbs:.2f} MB/s "
                f"({mbs / 1.085:.1f}x the C server's 0.98-1.19); relay CPU {cpu:.2f} s "
                f"(C 11.5-12.5 s; goal <= 2.5 s)"
            )
            v.close()

            # 2. keystroke echo on a raw pty
            host.cmd(
                "send-keys", "-l", "clear; stty raw -echo; while :; do dd bs=1 count=1 2>/dev/null; done"
            )
            host.cmd("send-keys", "Enter")
            time.sleep(0.5)
            v = PtySsh(relay.port, rw, 80, 24, str(tmp))
            v.read_until(b"0:", 10)
            time.sleep(0.3)
            v.drain()
            echoes = []
            for i in range(args.echo + 3):
                ch = bytes([ord("a") + i % 26])
                v.buf.clear()
                t0 = time.perf_counter()
                os.write(v.fd, ch)
                t1 = v.read_until(ch, 5)
                if i >= 3:  # first few warm the path
                    echoes.append((t1 - t0) * 1000)
                time.sleep(0.05)
            med = statistics.median(echoes)
            print(
                f"keystroke echo: median {med:.2f} ms over {len(echoes)} (min {min(echoes):.2f}, "
                f"max {max(echoes):.2f}); C 0.83-0.92 ms; goal <= 0.9 ms; ratio {med / 0.875:.2f}x"
            )
            v.close()
            host.cmd("send-keys", "C-c")

            # 3. join
            host.cmd("send-keys", "-l", "stty sane; clear; echo JOIN-MARK")
            host.cmd("send-keys", "Enter")
            time.sleep(0.3)
            joins = []
            for _ in range(args.joins):
                v = PtySsh(relay.port, rw, 80, 24, str(tmp))
                t1 = v.read_until(b"JOIN-MARK", 10)
                joins.append((t1 - v.t0) * 1000)
                v.close()
                time.sleep(0.1)
            med = statistics.median(joins)
            print(
                f"join: ssh start -> host text, median {med:.1f} ms over {len(joins)} "
                f"(min {min(joins):.1f}, max {max(joins):.1f}); C 66-89 ms; goal <= 70 ms; "
                f"ratio {med / 77.5:.2f}x"
            )
        finally:
            host.stop()


if __name__ == "__main__":
    main()
