"""Jail benchmark: spawn-to-ready latency and private memory (USS) of jailed children.

    .venv/bin/python bench/jail_spawn.py [--spawns 50]

Root mode when run as root, rootless otherwise. paramiko (and cryptography, msgpack) are
imported in the master before Jailer.prepare(), as the relay does. USS is
Private_Clean + Private_Dirty from /proc/PID/smaps_rollup.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import signal
import socket
import statistics
import sys
import threading
import time

import msgpack  # noqa: F401  (warm, like the relay)
import paramiko

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jail import JailConfig, Jailer  # noqa: E402
from jail.zygote import TITLE, Zygote  # noqa: E402
from tests.e2e import AcceptingSshServer, ed25519_host_key  # noqa: E402


def smaps(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def uss_kb(pid: int) -> int:
    s = smaps(pid)
    return s["Private_Clean"] + s["Private_Dirty"]


def idle(fd: int) -> int:
    """Target: block until the socket closes."""
    os.read(fd, 1)
    return 0


def ssh_idle(fd: int, key: paramiko.PKey) -> int:
    """Target: a paramiko server session, then idle in it."""
    t = paramiko.Transport(socket.socket(fileno=fd))
    t.add_server_key(key)
    t.start_server(server=AcceptingSshServer())
    chan = t.accept(10)
    if chan is None:
        return 2
    chan.sendall(b"ready\n")
    chan.recv(1)  # until the client closes
    return 0


def report(what: str, times: list[float]) -> None:
    times = sorted(times)
    print(
        f"{what} over {len(times)} spawns: median {statistics.median(times):.2f} ms, "
        f"p90 {times[int(len(times) * 0.9) - 1]:.2f} ms, min {times[0]:.2f}, max {times[-1]:.2f} ms"
    )


def stop(j: Jailer, p) -> None:
    try:
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(p.pid, 0)
    except ChildProcessError:
        pass
    j.release(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=50)
    args = ap.parse_args()

    j = Jailer(JailConfig(uid_base=3_300_000, uid_count=1000))
    j.prepare()
    print(
        f"mode: {'rootless' if j.rootless else 'root'}; python {sys.version.split()[0]}; "
        f"master RSS {smaps(os.getpid())['Rss'] / 1024:.1f} MB"
    )

    # 1. spawn-to-ready latency
    times = []
    for _ in range(args.spawns):
        a, b = socket.socketpair()
        t0 = time.perf_counter()
        p = j.spawn(functools.partial(idle, b.fileno()), keep_fds=[b.fileno()], title="pymate [bench]")
        times.append((time.perf_counter() - t0) * 1000)
        b.close()
        a.close()
        stop(j, p)
    report("spawn-to-ready (forked by this process)", times)

    # 1b. the same, forked by a zygote (jail/zygote.py), as the relay's standbys and connections are
    zygote = Zygote(j.plan([], TITLE), lambda fds, args: functools.partial(idle, fds[0]))
    times = []
    for _ in range(args.spawns):
        a, b = socket.socketpair()
        t0 = time.perf_counter()
        p = j.spawn_by(zygote, keep_fds=[b.fileno()], args=None, title="pymate [bench]")
        times.append((time.perf_counter() - t0) * 1000)
        b.close()
        a.close()
        stop(j, p)
    zygote.close()
    os.waitpid(zygote.pid, 0)
    report("spawn-to-ready (forked by a zygote)", times)

    # 2. USS of idle jailed children (several at once: they share the master's pages)
    held = []
    for _ in range(5):
        a, b = socket.socketpair()
        p = j.spawn(functools.partial(idle, b.fileno()), keep_fds=[b.fileno()], title="pymate [bench idle]")
        b.close()
        held.append((p, a))
    time.sleep(0.3)
    usses = [uss_kb(p.pid) for p, _ in held]
    s = smaps(held[0][0].pid)
    print(
        f"idle jailed child (paramiko imported in master): USS {statistics.median(usses)} kB "
        f"(all: {usses}), Rss {s['Rss']} kB, Pss {s['Pss']} kB"
    )
    for p, a in held:
        a.close()
        stop(j, p)

    # 3. The master's own writes after a fork turn the child's copies of those pages
    #    private. Measured on ONE child: with several, a page the master rewrote stays
    #    shared among the older children and USS hides it (Pss shows it).
    a, b = socket.socketpair()
    p = j.spawn(functools.partial(idle, b.fileno()), keep_fds=[b.fileno()], title="pymate [bench idle]")
    b.close()
    time.sleep(0.2)
    s0 = smaps(p.pid)
    gc.collect()  # the warm heap is frozen by prepare(): only newer objects are walked
    s1 = smaps(p.pid)
    gc.unfreeze()
    gc.collect()  # what an unfrozen master would do now and then: walk the whole heap
    gc.freeze()
    s2 = smaps(p.pid)
    u = [x["Private_Clean"] + x["Private_Dirty"] for x in (s0, s1, s2)]
    print(
        f"single idle child: USS {u[0]} kB; after gc.collect() in the master (heap frozen) "
        f"{u[1]} kB; after an unfrozen full collection in the master {u[2]} kB"
    )
    a.close()
    stop(j, p)

    # 4. USS of a jailed child that served an SSH handshake and idles in the session.
    key = ed25519_host_key()
    sessions = []
    for _ in range(3):
        a, b = socket.socketpair()
        p = j.spawn(
            functools.partial(ssh_idle, b.fileno(), key), keep_fds=[b.fileno()], title="pymate [bench ssh]"
        )
        b.close()
        sessions.append((p, a))
    clients = []
    for _p, a in sessions:  # clients start threads: only after all forks are done
        c = paramiko.Transport(a)
        c.start_client(timeout=10)
        c.auth_none("tmate")
        ch = c.open_session(timeout=10)
        assert ch.recv(6) == b"ready\n"
        clients.append((c, ch))
    time.sleep(0.3)
    usses = [uss_kb(p.pid) for p, _ in sessions]
    print(
        f"jailed child idle in a paramiko SSH session: USS median "
        f"{statistics.median(usses)} kB (all: {usses}); threads "
        f"{open(f'/proc/{sessions[0][0].pid}/status').read().split('Threads:')[1].split()[0]}"
    )
    for c, ch in clients:
        ch.close()
        c.close()
    for p, a in sessions:
        a.close()
        stop(j, p)
    assert threading.active_count() >= 1
    j.close()


if __name__ == "__main__":
    main()
