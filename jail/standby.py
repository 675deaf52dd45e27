"""Jailed processes made ahead of need: a connection's first bytes find its jail already built.

A spawn (two forks, the namespaces, the jail steps: ~3-6 ms here, bench/jail_spawn.py) used to
lie on the path from a client's first bytes to its first answer. A standby is a jailed process
like any other (jail/child.py took every step: namespaces, empty root, its own uid, no
capabilities, seccomp), spawned while the master has nothing else to do (a turn of its loop
with no event and no connection in its SSH handshake: measured, a spawn during a handshake
slowed that handshake more than the spawn it saved), whose target waits on
a socket of its own for a connection: the master sends the connection's file descriptors and
its arguments (JSON: plain strings and numbers, never an object) and the standby calls its
factory, `factory(fds, args)`, in the jail, then runs what that returns. The factory comes from
`ahead()`, which the standby calls first, in its jail, before it waits: whatever a connection
does before it needs its descriptors is done there, off the connection's path.

What a standby inherits is the master's memory as of its fork. Whatever the master changes later
that a connection must see (the host keys on SIGHUP) is not in it: the master calls `flush()`
then, and the next connections get fresh standbys. A standby whose socket reads end of stream
(flushed, or the master gone) exits at once; one that died on its own is reaped by the master
(`reaped()`) and replaced. The number kept ready (`size`, 1 by default) is the whole cost: one
idle jailed process, sharing the master's pages like every other.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence

from .child import Target
from .jailer import JailedProcess, Jailer, JailError
from .title import set_process_title
from .zygote import Zygote, ZygoteError

Factory = Callable[[list[int], list], Target]  # (the connection's fds, its arguments) -> target
Ahead = Callable[[], Factory]  # run in the standby before it waits: what it does ahead of need
MAX_FDS = 4
MAX_HANDOVER = 4096  # bytes of a hand-over message (title and arguments)
RETRY_AFTER = 1.0  # seconds without a new standby after a spawn failed
TITLE = "pymate-standby"  # not "pymate ...": nothing is connected to it yet


def _await_connection(fd: int, ahead: Ahead) -> int:  # pragma: no cover - runs in the jail
    """A standby's target: prepare, wait for the hand-over, then become that connection."""
    factory = ahead()
    sock = socket.socket(fileno=fd)
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_HANDOVER, MAX_FDS)
    finally:
        sock.close()
    if not data:
        return 0  # flushed, or the master is gone
    title, args = json.loads(data)
    set_process_title(title)
    rc = factory(fds, args)()
    return rc if isinstance(rc, int) else 0


# The master's side, for any jailer it is given (a test's stand-in has no standby: all no-ops).


def keep(jailer: object, ahead: Ahead, size: int = 1) -> None:
    """Keep `size` standbys for connections the factories `ahead()` makes serve (a real Jailer
    only), forked by a zygote (jail/zygote.py)."""
    if isinstance(jailer, Jailer):
        Standby(jailer, ahead, size)


def _of(jailer: object) -> Standby | None:
    return getattr(jailer, "standby", None)


def wait(jailer: object, max_wait: float) -> float:
    """How long the master's loop may sleep: briefly when a standby is missing."""
    sb = _of(jailer)
    return min(max_wait, Standby.QUIET) if sb is not None and sb.short else max_wait


def refill(jailer: object) -> str | None:
    """Spawn a missing standby (the master calls it when a turn had no event); why it failed."""
    sb = _of(jailer)
    return sb.refill() if sb is not None else None


def take(jailer: object, fds: Sequence[int], args: list, title: str) -> JailedProcess | None:
    """Hand a connection to a standby: its process, or None (the master spawns one then)."""
    sb = _of(jailer)
    return sb.take(fds, args, title) if sb is not None else None


def spawn(jailer: object, fds: Sequence[int], args: list, title: str) -> JailedProcess | None:
    """A connection's process forked by the zygote (none ready): its process, or None (the
    master forks one itself then)."""
    sb = _of(jailer)
    return sb.spawn(fds, args, title) if sb is not None else None


def reaped(jailer: object, pid: int) -> bool:
    """The master reaped `pid`: True if it was a standby."""
    sb = _of(jailer)
    return sb is not None and sb.reaped(pid)


def flush(jailer: object) -> None:
    """The master's state changed (SIGHUP): let the standbys made before go."""
    sb = _of(jailer)
    if sb is not None:
        sb.flush()


def sockets(fds: list[int]) -> tuple[socket.socket, socket.socket]:
    """In the standby, after a hand-over: socket objects for the two descriptors it was sent
    (a connection's and its control socket)."""
    first, second = fds
    return socket.socket(fileno=first), socket.socket(fileno=second)


class Standby:
    """Up to `size` jailed processes waiting for a connection, each with the factory `ahead()` made."""

    QUIET = 0.01  # seconds without an event before the master spawns a missing standby

    def __init__(self, jailer: Jailer, ahead: Ahead, size: int = 1):
        self.jailer, self.ahead, self.size = jailer, ahead, size
        self.ready: deque[tuple[JailedProcess, socket.socket]] = deque()
        self.flushed: list[JailedProcess] = []  # let go, not reaped yet
        self.retry_at = 0.0
        # Standbys are forked by a zygote (jail/zygote.py), made at the first refill after each
        # flush: the master's pages as of then, which its later writes leave shared. When it
        # fails, it is let go and the refill retried after RETRY_AFTER with a new one; meanwhile
        # a connection that finds no standby is forked by the master (relay/master/server.py).
        self.zygote: Zygote | None = None
        self.zygotes_gone: set[int] = set()  # let go, not reaped yet
        jailer.standby = self  # Jailer.close() closes it

    @property
    def short(self) -> bool:
        """Fewer standbys than wanted, and spawning one is allowed now."""
        return len(self.ready) < self.size and time.monotonic() >= self.retry_at

    def refill(self) -> str | None:
        """Spawn one standby if short; the reason when the spawn failed (retried after a while)."""
        if not self.short:
            return None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = self.jailer.spawn_by(self._zygote(), keep_fds=[theirs.fileno()], args=None, title=TITLE)
        except (JailError, ZygoteError, OSError) as e:
            mine.close()
            self._let_zygote_go()  # a new one next time
            self.retry_at = time.monotonic() + RETRY_AFTER
            return str(e)
        finally:
            theirs.close()
        self.ready.append((proc, mine))
        return None

    def _zygote(self) -> Zygote:
        """The zygote, made now if there is none (ZygoteError if that fails)."""
        if self.zygote is None:
            self.zygote = Zygote(self.jailer.plan([], TITLE), self._target)
        return self.zygote

    def _target(self, fds: list[int], args: list | None) -> Target:
        """In the zygote: a standby's target (no arguments), or a connection's, run at once."""
        return _Await(fds[0], self.ahead) if args is None else _Now(fds, args, self.ahead)

    def spawn(self, fds: Sequence[int], args: list, title: str) -> JailedProcess | None:
        """A connection's process forked by the zygote when no standby is ready: what a standby
        would have done, without the wait. None when the zygote failed (then the
        caller forks the process itself, and the next refill makes a new zygote)."""
        if len(json.dumps(args)) > MAX_HANDOVER or len(fds) > MAX_FDS:
            return None
        try:
            return self.jailer.spawn_by(self._zygote(), keep_fds=fds, args=args, title=title)
        except (JailError, ZygoteError, OSError):
            self._let_zygote_go()
            return None

    def take(self, fds: Sequence[int], args: list, title: str) -> JailedProcess | None:
        """Hand a connection to a standby: its process, or None when none is ready (spawn then)."""
        data = json.dumps([title, args]).encode()
        if len(data) > MAX_HANDOVER:
            return None
        while self.ready:
            proc, sock = self.ready.popleft()
            try:
                socket.send_fds(sock, [data], list(fds))
                return proc
            except OSError:  # it died: the master reaps it (and then frees its uid)
                _kill(proc)
                self.flushed.append(proc)
            finally:
                sock.close()
        return None

    def reaped(self, pid: int) -> bool:
        """The master reaped `pid`: True if it was a standby (its uid is free again) or a zygote."""
        if self.zygote is not None and pid == self.zygote.pid:
            self._let_zygote_go()
        if pid in self.zygotes_gone:
            self.zygotes_gone.discard(pid)
            return True
        for entry in list(self.ready):
            if entry[0].pid == pid:
                self.ready.remove(entry)
                entry[1].close()
                self.jailer.release(entry[0])
                return True
        for proc in self.flushed:
            if proc.pid == pid:
                self.flushed.remove(proc)
                self.jailer.release(proc)
                return True
        return False

    def _let_zygote_go(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygotes_gone.add(self.zygote.pid)
            self.zygote = None

    def flush(self) -> None:
        """Let every waiting standby and the zygote go (each exits on end of stream; the master
        reaps it)."""
        self._let_zygote_go()
        while self.ready:
            proc, sock = self.ready.popleft()
            sock.close()
            self.flushed.append(proc)

    def close(self) -> None:
        """Kill and reap every standby (the master is stopping)."""
        self.flush()
        for proc in self.flushed:
            _kill(proc)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
            self.jailer.release(proc)
        self.flushed.clear()
        for pid in self.zygotes_gone:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.zygotes_gone.clear()


class _Await:
    """The standby's target, a plain callable (the jail calls it with no arguments)."""

    def __init__(self, fd: int, ahead: Ahead):
        self.fd, self.ahead = fd, ahead

    def __call__(self) -> int:  # pragma: no cover - runs in the jail
        return _await_connection(self.fd, self.ahead)


class _Now:
    """A connection's target when the zygote forks its process directly: `ahead()`, then the
    factory on the descriptors and arguments it came with."""

    def __init__(self, fds: list[int], args: list, ahead: Ahead):
        self.fds, self.args, self.ahead = fds, args, ahead

    def __call__(self) -> int:  # pragma: no cover - runs in the jail
        rc = self.ahead()(self.fds, self.args)()
        return rc if isinstance(rc, int) else 0


def _kill(proc: JailedProcess) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
