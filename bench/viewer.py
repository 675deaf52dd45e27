"""Viewer-path benchmarks: print figures and ratios to the C server's (measured here), assert nothing.

1. Throughput: the host runs `seq 1 3000000` (22.9 MB) with one viewer attached; time until the
   viewer shows the last line, MB/s, and the server's CPU seconds (all its processes).
2. Keystroke echo, viewer -> host -> viewer, on a raw pty (the host pane runs `stty raw -echo`
   and a byte-echo loop), median of 20.
3. Join: ssh start -> host text on the viewer, median of 10.
4. Private memory (USS) per idle ssh viewer, over --viewers idle viewers of one session.

With --c-server PATH the C server (tmate-ssh-server, built outside this repository) is measured
the same way in the same run, after the relay, and the ratios are printed. The relay runs on
this interpreter (build/venv-313/bin/python measures 3.13; PYTHONPATH=. without an editable
install). Viewers are real OpenSSH clients on a pseudo-terminal this script reads directly.
Usage: .venv/bin/python bench/viewer.py [--lines 3000000] [--echo 20] [--joins 10] [--viewers 10]
       [--c-server /work/cserver/tmate-ssh-server]
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
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host_session import Server, c_server  # noqa: E402

from tests.e2e import SSH_LINE, TmateHost, descendants, scratch_relay, teach, uss_kib  # noqa: E402

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


# The host echoes each byte it reads, raw: the echo benches type into it.
ECHO_LOOP = "clear; stty raw -echo; while :; do dd bs=1 count=1 2>/dev/null; done"


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


def throughput(server: Server, host: TmateHost, rw: str, tmp: Path, lines: int) -> tuple[float, float]:
    """(MB/s, CPU seconds of all the server's processes) for `seq 1 LINES` shown on one viewer."""
    data_size = len(subprocess.run(["seq", "1", str(lines)], capture_output=True).stdout)
    v = PtySsh(server.port, rw, 80, 24, str(tmp))
    v.read_until(b"0:", 10)
    v.drain()
    pids = [server.pid, *descendants(server.pid)]
    before = cpu_seconds(pids)
    host.cmd("send-keys", "-l", f"clear; seq 1 {lines}; echo DONE-$((6*7))")
    t0 = time.perf_counter()
    host.cmd("send-keys", "Enter")
    t1 = v.read_until(b"DONE-42", 600, keep=False)
    cpu = cpu_seconds(pids) - before
    v.close()
    return data_size / (t1 - t0) / 1e6, cpu


def echo_ms(server: Server, host: TmateHost, rw: str, tmp: Path, n: int) -> float:
    host.cmd("send-keys", "-l", ECHO_LOOP)
    host.cmd("send-keys", "Enter")
    echoes = ssh_echoes(server.port, rw, n, tmp)
    host.cmd("send-keys", "C-c")
    return statistics.median(echoes)


def ssh_echoes(port: int, rw: str, n: int, tmp: Path) -> list[float]:
    """ms from a key typed in an ssh viewer to its echo, n times (three more first, to warm the
    path), while the host runs ECHO_LOOP."""
    time.sleep(0.5)
    v = PtySsh(port, rw, 80, 24, str(tmp))
    v.read_until(b"0:", 10)
    time.sleep(0.3)
    v.drain()
    echoes = []
    for i in range(n + 3):
        ch = bytes([ord("a") + i % 26])
        v.buf.clear()
        t0 = time.perf_counter()
        os.write(v.fd, ch)
        t1 = v.read_until(ch, 5)
        if i >= 3:
            echoes.append((t1 - t0) * 1000)
        time.sleep(0.05)
    v.close()
    return echoes


def join_ms(server: Server, host: TmateHost, rw: str, tmp: Path, n: int) -> float:
    host.cmd("send-keys", "-l", "stty sane; clear; echo JOIN-MARK")
    host.cmd("send-keys", "Enter")
    time.sleep(0.3)
    joins = []
    for _ in range(n):
        v = PtySsh(server.port, rw, 80, 24, str(tmp))
        joins.append((v.read_until(b"JOIN-MARK", 10) - v.t0) * 1000)
        v.close()
        time.sleep(0.1)
    return statistics.median(joins)


def viewer_uss_mb(server: Server, rw: str, tmp: Path, n: int) -> float:
    """USS per idle viewer: what the server's processes hold more with n idle viewers, over n."""
    time.sleep(1.0)
    base = sum(uss_kib(p) for p in descendants(server.pid))
    viewers = [PtySsh(server.port, rw, 80, 24, str(tmp)) for _ in range(n)]
    try:
        for v in viewers:
            v.read_until(b"JOIN-MARK", 10)
        time.sleep(2.0)  # let them go idle
        total = sum(uss_kib(p) for p in descendants(server.pid))
    finally:
        for v in viewers:
            v.close()
    return (total - base) / 1024 / n


def measure(server: Server, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    host = TmateHost(tmp / f"host-{server.name}", server.port, *server.fps).start()
    try:
        host.wait_ready()
        host.leave_messages()
        m = SSH_LINE.match(host.display("#{tmate_ssh}"))
        assert m, host.display("#{tmate_ssh}")
        rw = m.group(2)
        out: dict[str, float] = {}
        out["MB/s"], out["CPU-s"] = throughput(server, host, rw, tmp, args.lines)
        out["echo ms"] = echo_ms(server, host, rw, tmp, args.echo)
        out["join ms"] = join_ms(server, host, rw, tmp, args.joins)
        out["viewer MB"] = viewer_uss_mb(server, rw, tmp, args.viewers)
    finally:
        host.stop()
    print(
        f"{server.name}: seq 1 {args.lines} at {out['MB/s']:.2f} MB/s, {out['CPU-s']:.2f} CPU-s; "
        f"echo median {out['echo ms']:.2f} ms over {args.echo}; join median {out['join ms']:.1f} ms "
        f"over {args.joins}; USS per idle viewer {out['viewer MB']:.2f} MB over {args.viewers}",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=3_000_000)
    ap.add_argument("--echo", type=int, default=20)
    ap.add_argument("--joins", type=int, default=10)
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--c-server", metavar="PATH")
    args = ap.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    with scratch_relay() as (tmp, relay, fps):
        assert relay.proc is not None
        teach(relay, fps, tmp / "teach")
        got = {"relay": measure(Server("relay", relay.port, fps, relay.proc.pid, relay.children), tmp, args)}
    if args.c_server:
        with tempfile.TemporaryDirectory(prefix="pymate-bench-c-") as name, c_server(args.c_server) as c:
            got["C server"] = measure(c, Path(name), args)
        r, c_ = got["relay"], got["C server"]
        print(
            "ratio relay / C server (same run): " + ", ".join(f"{k} {r[k] / c_[k]:.2f}x" for k in r if c_[k])
        )


if __name__ == "__main__":
    main()
