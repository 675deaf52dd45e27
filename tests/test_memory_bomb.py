"""The memory bomb at small scale, in process: panes cost what is used, history is shared within a
session's budget, and an allocation the engine cannot make is a MemoryError (the session process
turns it into an end with limit=session-memory; tests/test_memory_bomb_e2e.py end to end)."""

from __future__ import annotations

import os
import resource

import pytest

from relay.screen.terminal import TerminalError, TerminalMemoryError, TerminalModel
from relay.tmate import messages as m
from relay.tmate.session import Session


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def _in_child(fn) -> str:
    """fn() in a forked child (its limits stay there); returns what it returned, or its error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            out = str(fn())
        except BaseException as e:
            out = f"{type(e).__name__}: {e}"
        os.write(w, out.encode()[:4000])
        os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            return f.read().decode()
    finally:
        os.waitpid(pid, 0)


def test_huge_panes_cost_nothing_until_used():
    before = _vm_size()
    models = [TerminalModel(10000, 10000) for _ in range(50)]  # each ~1 GB once allocated
    try:
        assert _vm_size() - before < 8 << 20
        assert not any(t.allocated for t in models)
        assert models[0].size == (10000, 10000) and models[0].history_cap > 0
    finally:
        for t in models:
            t.close()


def test_a_lazy_terminal_behaves_like_an_allocated_one():
    lazy, eager = TerminalModel(20, 5), TerminalModel(20, 5)
    try:
        eager.feed(b"")  # nothing written: still unallocated
        assert not eager.allocated
        eager.rows_text()
        assert eager.allocated
        lazy.resize(30, 6)  # before allocation: only recorded
        lazy.reset()
        assert not lazy.allocated and lazy.size == (30, 6)
        lazy.feed(b"hello\r\nworld")
        assert lazy.allocated and lazy.size == (30, 6)
        assert lazy.rows_text()[:2] == ["hello", "world"] and len(lazy.rows_text()) == 6
        assert lazy.cursor == (5, 1)
        fresh = TerminalModel(30, 6)
        assert fresh.cursor_visible and not fresh.alt_screen and fresh.mode(7)
        fresh.close()
    finally:
        lazy.close()
        eager.close()
    with pytest.raises(TerminalError, match="closed"):
        lazy.feed(b"x")
    never = TerminalModel(5, 5)
    never.close()
    assert never.closed and not never.allocated
    with pytest.raises(TerminalError):
        never.rows_text()


def test_history_budget_bounds_a_wide_pane():
    budget = 4 << 20
    free, capped = TerminalModel(2000, 50), TerminalModel(2000, 50, history_budget=budget)
    try:
        assert capped.history_cap == budget < free.history_cap
        data = (b"y" * 1999 + b"\r\n") * 3000
        free.feed(data)
        capped.feed(data)
        assert 0 < capped.history_size < free.history_size
        capped.set_history_budget(None)
        assert capped.history_cap == free.history_cap
    finally:
        free.close()
        capped.close()


def test_the_engine_out_of_memory_is_a_memory_error():
    """Under an address-space cap (what the jail sets), a terminal the engine cannot allocate
    raises TerminalMemoryError, a MemoryError, and the process goes on."""

    def bomb() -> str:
        cap = _vm_size() + (24 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        t = TerminalModel(2000, 2000)  # ~40 MB of address space once allocated
        try:
            t.feed(b"x")
        except MemoryError as e:
            ok = isinstance(e, TerminalMemoryError) and "out of memory" in str(e)
            small = TerminalModel(20, 5)
            small.feed(b"still here")
            return f"memory error {ok} {small.rows_text()[0]}"
        return "allocated"

    assert _in_child(bomb) == "memory error True still here"


def test_the_session_passes_memory_errors_through():
    """Session.handle does not turn an allocation failure into a protocol violation: the session
    process logs it as the memory cap (relay/conn/host.py run_host)."""

    def bomb() -> str:
        s = Session(rw_token="a" * 25, ro_token="ro-" + "b" * 25, ssh_host="h", ssh_port=22)
        s.handle(m.Header(6, "2.4.0"))
        panes = tuple(m.PaneGeom(p, 2000, 1000, 0, 0) for p in range(2))
        s.handle(m.SyncLayout(2000, 1000, (m.Window(0, "w", panes, 0),), 0))
        cap = _vm_size() + (24 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            for p in range(2):
                s.handle(m.PtyData(p, b"x"))
        except MemoryError as e:
            return type(e).__name__
        return "no error"

    assert _in_child(bomb) == "TerminalMemoryError"
