"""Reconnection benchmark: prints figures, asserts nothing.

A real tmate 2.4 host (attached in a real terminal) reaches the relay through a TCP forwarder
that resets both sides on `cut` (tests/test_reconnect_e2e.py's); one read-write OpenSSH viewer
watches. ROUNDS times: cut, then time
  - host back: the relay's log says the viewer is relinked (the host reconnected, the new
    session process is ready and holds the viewer again);
  - new output: `echo` typed on the host after that shows on the viewer's screen
(both from the cut; tmate waits 2 s before it retries, which is most of it). Then the memory a
held session costs: the session process's USS before the first cut (freed: a held session has
no process), and the master's records of one held session (its Child record with its
ReconnectState, two viewers' pids and one address of a viewer that left, the two registry
entries and its log context), measured with tracemalloc over 1000 such records made in this
process, not in the relay's master (whose USS moves by whole pages: it is not printed). Last, the
host's show-messages after the rounds.

Usage: .venv/bin/python bench/reconnect.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import Relay, SshViewer, TmateHost, make_host_keys, session_tokens, uss_kib, wait_for  # noqa: E402
from tests.test_reconnect_e2e import Forwarder  # noqa: E402


def _session_pid(relay: Relay) -> int:
    for pid in relay.children():
        if b" host " in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("no session process")


def _held_record_bytes(n: int = 1000) -> float:
    """What the master keeps for one held session, measured with tracemalloc: its Child record
    (with its ReconnectState, two viewers' pids, the address of one that left, a socket object
    closed as the master's is), the two registry entries and its log context. No process: the
    session process is gone."""
    import socket
    import tracemalloc
    from types import SimpleNamespace

    from relay.master.server import Child

    registry: dict[str, Child] = {}
    context: dict[Child, dict[str, str]] = {}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ctl.close()
        c = Child(proc=SimpleNamespace(pid=10_000 + i), ip="203.0.113.7", ctl=ctl, started=0.0)  # type: ignore[arg-type]
        c.role, c.tokens, c.viewers = "host", (f"{i:025d}", f"ro-{i:025d}"), {1, 2}
        c.rc.sid, c.rc.held_until, c.rc.end = f"{i:016x}", 1.0, True
        c.rc.left.append(f"198.51.100.{i % 256}")  # a viewer that left while its host was away
        registry[c.tokens[0]] = registry[c.tokens[1]] = c
        context[c] = {"role": "host", "session": c.tokens[0][:4]}
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pymate-reconnect-") as name:
        tmp = Path(name)
        fps = make_host_keys(tmp / "keys")
        with Relay(tmp / "keys") as relay:
            fwd = Forwarder(relay.port)
            host = TmateHost(tmp / "host", fwd.port, *fps).start(attached=True)
            viewer = None
            try:
                host.wait_ready()
                host.leave_messages()
                rw, _ = session_tokens(host)
                viewer = SshViewer(tmp / "viewer", relay.port, rw).start()
                viewer.wait_screen("0:")
                back, shown = [], []
                for i in range(args.rounds):
                    relinked = relay.log_text().count("event='viewer relinked' session=")
                    session_uss = uss_kib(_session_pid(relay))
                    cut = time.monotonic()
                    fwd.cut()
                    wait_for(
                        lambda n=relinked: relay.log_text().count("event='viewer relinked' session=") > n,
                        10,
                        "the viewer relinked",
                    )
                    back.append(time.monotonic() - cut)
                    host.cmd("send-keys", f"echo round-$((1000+{i}))", "Enter")
                    viewer.wait_screen(f"round-{1000 + i}", timeout=5)
                    shown.append(time.monotonic() - cut)
                    if i == 0:
                        freed = session_uss
                same = "the same" if session_tokens(host)[0] == rw else "NOT the same"
                print(f"rounds: {args.rounds} ({same} tokens after the last)")
                print(
                    f"cut -> host back, viewer relinked: median {statistics.median(back) * 1000:.0f} ms "
                    f"(min {min(back) * 1000:.0f}, max {max(back) * 1000:.0f})"
                )
                print(
                    f"cut -> new output on the viewer: median {statistics.median(shown) * 1000:.0f} ms "
                    f"(min {min(shown) * 1000:.0f}, max {max(shown) * 1000:.0f})"
                )
                print(f"session process USS before the cut (freed while held): {freed} KiB")
                print(
                    f"the master's records of a held session: {_held_record_bytes():.0f} bytes (tracemalloc)"
                )
                print("host's show-messages:")
                print(host.messages())
            finally:
                if viewer is not None:
                    viewer.stop()
                host.stop()
                fwd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
