"""The fork server: jailed processes forked from a still copy of the master, not from the master.

Why. A child forked from the master shares the master's pages until one of them writes a page;
then the writer gets a copy and the other keeps the original, which from then on is private to
it. The master writes: every session it serves moves its own books (children, tokens, sockets,
selectors, logs), and those objects lie in pages of the heap the earlier children share. Measured
with /proc/PID/pagemap on 3.12 (2026-12-03): the master copied 103-111 of its pages for each host
session it served (about 53 of the brk heap, 47 of pymalloc's arenas), none while idle, and each
page it copied stayed private to the child forked before: ~0.4 MB per session that the session
never wrote.

How. After the warm-up (and again after each change the children must see: the learnt code, the
host keys), the master forks one process, the zygote, and asks it for the jailed processes it
would have forked itself. The zygote first lets go of what a child would otherwise free in
inherited pages and takes the allocators' holes (`_clean_slate`), closes every descriptor it
inherited but its own socket, then only waits: for a request (the spawn's socket and the
descriptors its target keeps, sent with SCM_RIGHTS, and a few plain values), it forks C1, which
reads the request and goes on where the master's own C1 would have (jail/child.py: the same
steps, the same messages to the master); the zygote answers C1's pid and again once it has
reaped C1. C2, once C1 has exited, is the master's child as before (PR_SET_CHILD_SUBREAPER: the
nearest subreaper among its ancestors). Idle, the zygote writes nothing, so its pages stay what
every child forked from it shares; a request costs the few pages its short loop writes (3-20
measured, 3.13).

What it costs: one idle process, sharing the master's pages as of its fork; a spawn waits for one
more message on a local socket. It is not jailed (it is the master's own copy: root, or the
invoking user) and reads nothing but the master's requests. It exits when its socket reads end of
stream (the master let it go, or died) and, should the master die otherwise, on PR_SET_PDEATHSIG.

This module knows nothing of what the targets are: `make_target(fds, args)` (called in C1 with
the descriptors a request brought and its plain arguments) gives the callable C2 runs.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from . import _sys, heap, pools
from .child import ChildPlan, Target, close_fds_except, reap, run_child1
from .title import set_process_title

MakeTarget = Callable[[list[int], list | None], Target]  # (kept descriptors, arguments) -> target
MAX_REQUEST = 4096  # bytes of a request's plain values
MAX_KEEP = 4  # descriptors a target keeps besides the spawn's socket
TITLE = "pymate-zygote"
READY_WITHIN = 2.0  # seconds for a new zygote to be set up


class ZygoteError(Exception):
    """The zygote did not fork: it is gone or refused; str(e) says why."""


class Zygote:
    """The master's handle on one fork server (see the module's docstring)."""

    def __init__(self, base: ChildPlan, make_target: MakeTarget):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        master = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the zygote
            try:
                mine.close()
                _serve(theirs, master, base, make_target)
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock = pid, mine
        self._answer(b"R", time.monotonic() + READY_WITHIN)  # set up: it holds nothing of ours

    def fork(
        self, c: socket.socket, fds: Sequence[int], plan: ChildPlan, args: list | None, deadline: float
    ) -> int:
        """Have the zygote fork C1 with `plan`, whose C2 runs `make_target(fds, args)` (`fds`:
        the descriptors it keeps, in this order, sent along with `c`, the spawn's socket; `args`:
        plain values, JSON); C1's pid."""
        values = {"title": plan.title, "fail": plan.fail_step, "hang": plan.hang_step, "args": args}
        try:
            socket.send_fds(self.sock, [json.dumps(values).encode()], [c.fileno(), *fds])
        except OSError as e:
            self.close()
            raise ZygoteError(f"{type(e).__name__}: {e}") from None
        answer = self._answer(b"F", deadline)
        return int(answer[1:])

    def exited(self, c1: int, deadline: float) -> None:
        """Wait until the zygote has reaped C1 (then C2 is this process's child)."""
        self._answer(b"X%d" % c1, deadline)

    def _answer(self, expect: bytes, deadline: float) -> bytes:
        """The next answer starting with `expect`; earlier ones (of a spawn given up) skipped."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not poller.poll(left * 1000):
                    raise ZygoteError("no answer in time")
                answer = self.sock.recv(256)
            except OSError as e:
                self.close()
                raise ZygoteError(f"{type(e).__name__}: {e}") from None
            if not answer or answer.startswith(b"E"):
                self.close()
                raise ZygoteError(answer[1:].decode("utf-8", "replace") or "gone")
            if answer.startswith(expect) and answer[1:].isdigit():
                return answer

    def close(self) -> None:
        """Let it go: it exits on end of stream (the master reaps it)."""
        self.sock.close()


def _serve(
    sock: socket.socket, master: int, base: ChildPlan, make_target: MakeTarget
) -> None:  # pragma: no cover
    """The zygote's loop."""
    gc.disable()  # nothing here makes garbage worth a collection (which would write GC headers)
    _clean_slate()
    gc.freeze()
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != master:
        os._exit(0)  # the master died before PDEATHSIG was set
    signal.set_wakeup_fd(-1)  # the master's wake-up pipe is the master's
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _close_all_but(sock.fileno())
    set_process_title(TITLE)
    sock.send(b"R0")
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, 1 + MAX_KEEP)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # let go, or the master is gone
        if not fds:
            sock.send(b"E no spawn socket")
            continue
        # Between two forks the zygote runs as little Python as it can: each object it makes and
        # each bytecode cache it writes is a page the child forked before keeps to itself. So the
        # request is read in C1 (its plan, its target), not here.
        try:
            pid = os.fork()
        except OSError as e:
            pid = -1
            sock.send(b"E" + str(e).encode("utf-8", "replace")[:200])
        if pid == 0:
            try:
                sock.close()
                _c1(base, make_target, data, fds)
            finally:
                os._exit(127)
        for n in fds:
            os.close(n)
        if pid < 0:
            continue
        sock.send(b"F%d" % pid)
        # C1 exits once it has forked C2 and told the master its pid (or the master kills it):
        # then C2 is the master's child, which the master waits for before it goes on.
        reap(pid)
        sock.send(b"X%d" % pid)


def _clean_slate() -> None:  # pragma: no cover - runs in the zygote
    """Once, before the first fork: free what a child would otherwise free in inherited pages,
    then take the holes that leaves (and every other), so that a child's own objects land in
    pages of its own. Measured with bench/host_session.py, 50 idle host sessions, 2026-12-04:
    3.13 1.67 -> 1.51 MB per session, 3.12 1.48 -> 1.38 MB; new-session -> tmate-ready
    unchanged (0.99x / 0.95x of the C server's -> 0.96x / 0.92x). Page by page (3.13): the
    pymalloc pages a session changed went from 116 to 62; none of the three steps alone helps
    (the first two alone make holes a child then fills: 2.33 MB with the type cache cleared alone).

    - What the master made since its last freeze, made immortal (heap.immortalize_the_rest:
      3.13, 30 sessions, 1.49-1.50 -> 1.43-1.46 MB), so that no child frees it.
    - The type attribute cache: each entry holds a reference to its name. A name made at run
      time (paramiko's `"_preferred_" + kind`, a mangled attribute name built by getattr, ...)
      may have no other, and is mortal: the immortal heap (jail/heap.py) is walked from the
      collector's objects and the modules, which never reach the cache. A child's look-up that
      evicts such an entry frees the name: it writes the block and its pool's header, two
      inherited pages. Cleared, every entry holds None, which is immortal.
    - A full collection: it empties the interpreter's free lists (tuples, lists, dicts, ...:
      objects freed and kept for reuse, which a child would take first, in pages it inherited)
      and frees what the master dropped since its last one.
    - pools.fill(): takes the blocks both freed, and every other hole in both allocators.

    What it costs: the master waits for a new zygote's ready 6-15 ms instead of 3-4 (3.13,
    measured around Zygote()), at each flush: when the learnt code is packed (a few times, early
    in the relay's life) and at each SIGHUP; and the zygote's own memory, which it keeps."""
    heap.immortalize_the_rest()
    sys._clear_type_cache()
    gc.collect()
    pools.fill()


def _c1(base: ChildPlan, make_target: MakeTarget, data: bytes, fds: list[int]) -> None:  # pragma: no cover
    """In C1, forked by the zygote: the request's plan and target, then jail/child.py's C1.
    A request it cannot read is reported on the spawn's socket, as a failed jail step is."""
    c = socket.socket(fileno=fds[0])
    try:
        values = json.loads(data)
        keep = fds[1:]
        plan = replace(
            base, keep=sorted(keep), title=values["title"], fail_step=values["fail"], hang_step=values["hang"]
        )
        target = make_target(keep, values["args"])
    except Exception as e:  # noqa: BLE001 - the master reads the reason
        c.send(b"E" + f"zygote request: {type(e).__name__}: {e}".encode("utf-8", "replace")[:200])
        return
    run_child1(plan, c, target, None)


def _close_all_but(keep: int) -> None:  # pragma: no cover - runs in the zygote
    """Every inherited descriptor but stdio and `keep`: the zygote must hold no client's socket,
    no listener, nothing of the master's open (a connection the master closes must close)."""
    close_fds_except({0, 1, 2, keep})
