"""Session-memory benchmark: prints figures, asserts nothing.

1. busy: what a busy session process really needs. A real tmate 2.4 host at 200x50 with
   several windows (one split in two panes) runs `seq` and `ls -laR` in every pane until its
   history is full, with a few viewers attached (paramiko, pty 200x51, reading everything).
   Prints the session process's VmPeak / VmSize (virtual) and VmHWM / VmRSS (resident), USS.
2. bomb: a fake host that speaks the protocol correctly sends one SYNC_LAYOUT of PANES panes of
   SIZExSIZE (a few KB), then output into OUTPUT_PANES of them (three screens of 200-column lines). Prints the session process's peak
   resident (VmHWM) and virtual (VmPeak) size, how the session ended (its log line), and whether
   a bystander session (a real tmate host) still answers a viewer.

Usage: .venv/bin/python bench/session_memory.py [--part busy|bomb|both] [--windows 4]
       [--viewers 3] [--bomb PANES:SIZE:OUTPUT_PANES ...] [--extra "--session-memory 512"]
The relay under test is this tree's (`python -m relay` from the repository root).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import (  # noqa: E402
    Relay,
    TmateHost,
    fake_host,
    make_host_keys,
    session_tokens,
    uss_kib,
    viewer_answer,
    wait_for,
)

FIELDS = ("VmPeak", "VmSize", "VmHWM", "VmRSS")


def status_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = int(value.split()[0]) / 1024
    return out


def fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {d[k]:.0f} MB" for k in FIELDS if k in d)


class Reader:
    """A paramiko viewer (auth none, pty, shell) that reads and discards everything."""

    def __init__(self, port: int, token: str, cols: int, rows: int):
        self.t = paramiko.Transport(("127.0.0.1", port))
        self.t.connect()
        self.t.auth_none(token)
        self.ch = self.t.open_session()
        self.ch.get_pty(width=cols, height=rows)
        self.ch.invoke_shell()
        self.bytes = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.ch.recv(1 << 16)
                if not data:
                    return
                self.bytes += len(data)
        except Exception:
            return

    def close(self) -> None:
        self.t.close()


def session_pid(relay: Relay, before: set[int]) -> int:
    return wait_for(lambda: next(iter(set(relay.children()) - before), None), 10, "the session process")


def busy(tmp: Path, relay: Relay, fps: tuple[str, str], windows: int, viewers: int) -> None:
    before = set(relay.children())
    host = TmateHost(tmp / "busy", relay.port, *fps, sx=200, sy=51).start()
    readers: list[Reader] = []
    try:
        host.wait_ready()
        pid = session_pid(relay, before)
        idle = status_mb(pid)
        rw, _ro = session_tokens(host)
        readers = [Reader(relay.port, rw, 200, 51) for _ in range(viewers)]
        host.cmd("split-window", "-h")
        for _ in range(windows - 1):
            host.cmd("new-window")
        panes = host.cmd("list-panes", "-a", "-F", "#{pane_id}").stdout.split()
        work = "printf '\\033[?1049h'; seq 1 100; printf '\\033[?1049l'; seq 1 300000; ls -laR /usr/lib /usr/share | head -n 100000; clear; ls -laR /usr/lib | head -n 3000"
        for p in panes:
            host.cmd("send-keys", "-t", p, f"{work}; echo MARK-DONE", "Enter")
        peak: dict[str, float] = {}

        def done() -> bool:
            nonlocal peak
            peak = status_mb(pid) or peak
            outs = [host.cmd("capture-pane", "-p", "-t", p).stdout for p in panes]
            return all("MARK-DONE" in o.replace("echo MARK-DONE", "") for o in outs)

        wait_for(done, 300, "every pane's output", interval=0.5)
        time.sleep(1.0)
        end = status_mb(pid)
        print(
            f"busy session ({len(panes)} panes at ~200x50, {windows} windows, {viewers} viewers, "
            f"history full): idle {fmt(idle)}; after {fmt(end)}; USS {uss_kib(pid) / 1024:.0f} MB; "
            f"viewers read {sum(r.bytes for r in readers) / 1e6:.1f} MB"
        )
    finally:
        for r in readers:
            r.close()
        host.stop()


def bomb(relay: Relay, bystander: TmateHost, panes: int, size: int, output_panes: int) -> None:
    """One memory bomb; prints the session process's peak and how the session ended."""
    before = set(relay.children())
    first_line = len(relay.lines)
    t, ch = fake_host(relay.port)
    try:
        ch.sendall(msgpack.packb([0, 6, "2.4.0"]))
        pid = session_pid(relay, before)
        layout = [1, size, size, [[0, "w", [[p, size, size, 0, 0] for p in range(panes)], 0]], 0]
        packed = msgpack.packb(layout)
        t0 = time.monotonic()
        peak: dict[str, float] = {}
        sent = 0
        line = (b"x" * 200 + b"\r\n") * 40
        try:
            ch.sendall(packed)
            for p in range(output_panes):
                for _ in range(max(1, (3 * size) // 40)):  # scroll the whole screen three times
                    ch.sendall(msgpack.packb([2, p, line]))
                    sent += len(line)
                    if sent % (1 << 22) < len(line):
                        peak = status_mb(pid) or peak
        except (OSError, EOFError, paramiko.SSHException):
            pass
        ended = _wait_done(pid, ch, peak)
        took = time.monotonic() - t0

        def end_line() -> str | None:
            return next((ln for ln in relay.lines[first_line:] if "host session ended" in ln), None)

        try:
            end = wait_for(end_line, 2 if ended else 0.1, "the session's last log line")
        except TimeoutError:
            end = "(session still alive)"
        print(
            f"memory bomb: SYNC_LAYOUT of {len(packed)} bytes, {panes} panes of {size}x{size}, "
            f"{sent / 1e6:.1f} MB of output into {output_panes}: session peak {fmt(peak) or '(ended before a sample)'}; "
            f"{'ended' if ended else 'alive'} after {took:.1f} s; {end.strip()[:300]}"
        )
    finally:
        t.close()
    rw, _ = session_tokens(bystander)
    joined, answer = viewer_answer(relay.port, rw, until=b"")
    print(
        f"  bystander session alive: {bystander.alive()}, a viewer joined: its first frame "
        f"({len(answer)} bytes) {joined * 1000:.0f} ms after its shell request; "
        f"master alive: {relay.proc is not None and relay.proc.poll() is None}"
    )


def _wait_done(pid: int, ch: paramiko.Channel, peak: dict[str, float]) -> bool:
    """Until the session process exits (True) or stops using CPU (False); updates `peak`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = status_mb(pid)
        if not now:
            return True
        peak.update(now)
        while ch.recv_ready():
            ch.recv(1 << 16)
        if _idle(pid):
            return False
        time.sleep(0.2)
    return False


_last_cpu: dict[int, tuple[int, float]] = {}


def _idle(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    cpu = int(fields[11]) + int(fields[12])
    now = time.monotonic()
    last = _last_cpu.get(pid)
    if last is None or last[0] != cpu:
        _last_cpu[pid] = (cpu, now)
        return False
    return now - last[1] > 2.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("busy", "bomb", "both"), default="both")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--viewers", type=int, default=3)
    ap.add_argument(
        "--bomb",
        action="append",
        metavar="PANES:SIZE:OUTPUT_PANES",
        help="a bomb: PANES panes of SIZExSIZE, output into OUTPUT_PANES (repeatable; default: "
        "the issue's 200:10000:2, then 1:2000:1 and 1000:63:1000, both at the cells limit)",
    )
    ap.add_argument("--extra", default="", help="extra relay flags, one shell-quoted string")
    args = ap.parse_args()
    args.bomb = args.bomb or ["200:10000:2", "1:2000:1", "1000:63:1000"]
    with tempfile.TemporaryDirectory(prefix="pymate-bench-") as name:
        tmp = Path(name)
        fps = make_host_keys(tmp / "keys")
        with Relay(tmp / "keys", extra=shlex.split(args.extra)) as relay:
            if args.part in ("busy", "both"):
                busy(tmp, relay, fps, args.windows, args.viewers)
            if args.part in ("bomb", "both"):
                with TmateHost(tmp / "bystander", relay.port, *fps) as bystander:
                    bystander.wait_ready()
                    for spec in args.bomb:
                        panes, size, output_panes = (int(x) for x in spec.split(":"))
                        bomb(relay, bystander, panes, size, output_panes)


if __name__ == "__main__":
    main()
