"""Tests of jail/heap.py: the immortal pre-fork heap (Python 3.12+), on every interpreter present.

The whole-heap steps run in subprocesses (they freeze and immortalize the heap of the process
that runs them); the end-to-end test runs a real relay on 3.12+ (build/venv-313 or build/venv-312)
serving a real tmate host and a viewer from children forked off an immortal heap.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import cast

import pytest

from jail import heap
from tests.e2e import ROOT, Relay, TmateHost, fresh_interpreter, session_tokens, viewer_answer

IMMORTAL = sys.version_info >= (3, 12)
# Every interpreter this machine has a venv for (this one; the dev venvs; .ci/run's), by path.
INTERPRETERS = {
    "this": Path(sys.executable),
    "venv": ROOT / ".venv/bin/python",
    "venv-311": ROOT / "build/venv-311/bin/python",
    "venv-312": ROOT / "build/venv-312/bin/python",
    "venv-313": ROOT / "build/venv-313/bin/python",
    "ci-newest": ROOT / "build/ci-newest/bin/python",
    "ci-3.11": ROOT / "build/ci-3.11/bin/python",
}

# Runs in a fresh interpreter: the master's steps (import what the children run, prepare_heap),
# then what a child does to the inherited heap (take and drop references), printed as JSON.
PROBE = """
import gc, json, sys
import relay.cli, relay.conn.warmup, paramiko
from jail import heap
def f():
    return "a constant that is not interned " + "!"
before = sys.getrefcount(f), sys.getrefcount(f.__code__.co_consts[1]), sys.getrefcount(paramiko.Transport)
report = heap.prepare_heap()
settled = sys.getrefcount(f), sys.getrefcount(f.__code__.co_consts[1]), sys.getrefcount(paramiko.Transport)
held = [f, f.__code__.co_consts[1], paramiko.Transport, f()]
during = sys.getrefcount(f), sys.getrefcount(f.__code__.co_consts[1]), sys.getrefcount(paramiko.Transport)
del held
after = sys.getrefcount(f), sys.getrefcount(f.__code__.co_consts[1]), sys.getrefcount(paramiko.Transport)
print(json.dumps({"version": list(sys.version_info[:2]), "immortal": report.immortal,
    "objects": report.objects, "reason": report.reason, "frozen": gc.get_freeze_count(),
    "before": before, "settled": settled, "during": during, "after": after}))
"""


def run_probe(python: Path) -> dict:
    return fresh_interpreter(PROBE, python)


def test_check_on_this_interpreter():
    """3.12+ honours an immortal count; 3.11's counts move (the probe says so, not a version table)."""
    why = heap.check()
    if IMMORTAL:
        assert why == ""
    else:
        assert "still move" in why, why


def test_layout_refuses_what_was_not_read(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 14, 0, "final", 0))
    assert "not checked" in heap.layout_reason()
    assert "not checked" in heap.check()


@pytest.mark.skipif(not IMMORTAL, reason="Python 3.11 has no immortal objects")
def test_immortalize_reaches_code_constants_and_nested_code():
    """Code objects are not tracked by the collector: their constants and nested code are
    walked by hand, and nothing reachable is left mortal."""

    # Compiled here, not at import: an in-process Jailer.prepare() (tests/test_jail.py) makes
    # everything that exists then immortal, this module's code objects included.
    source = (
        "def outer():\n"
        "    def inner():\n"
        "        return \"inner's constant, not interned \" + '.'\n"
        "    return inner, ['a list', 12345678901234567890]\n"
    )
    scope: dict[str, object] = {}
    exec(compile(source, "<test_heap>", "exec"), scope)
    outer = cast(types.FunctionType, scope["outer"])
    data: list[object] = [bytes(range(5)) * 3, 3.5, ("tuple", object())]
    root = {"fn": outer, "data": data}
    n = heap.immortalize([root])
    inner_code = next(c for c in outer.__code__.co_consts if hasattr(c, "co_consts"))
    objects = [
        root,
        outer,
        outer.__code__,
        inner_code,
        inner_code.co_consts[1],
        data,
        data[0],
    ]
    assert n >= len(objects)
    for obj in objects:
        assert sys.getrefcount(obj) == heap.IMMORTAL_REFCNT, obj
    held = [obj for obj in objects for _ in range(3)]
    assert all(sys.getrefcount(obj) == heap.IMMORTAL_REFCNT for obj in objects)
    del held
    assert heap.immortalize([root]) == 0  # already immortal: not walked again


def test_settling_an_object_runs_none_of_its_code():
    """The class's version tag comes from type's own look-up of a missing name: a metaclass's
    __getattr__ (or anything else of the class's) is never called; hashes are the built-in
    types' own."""
    called: list[str] = []

    class Meta(type):
        def __getattr__(cls, name):
            called.append(name)
            raise AttributeError(name)

    class C(metaclass=Meta):
        pass

    for obj in (C, Meta, "a string " + str(id(C)), b"bytes" * 3, frozenset({1, "x"})):
        heap._settle(obj)
    assert called == []


@pytest.mark.parametrize("name", sorted(INTERPRETERS))
def test_prepare_heap_on_each_interpreter(name):
    """On each interpreter present: 3.12+ makes the warm heap immortal (references taken and
    dropped leave the counts of a function, a code constant and a class alone) and freezes it;
    3.11 runs without, says why, and still freezes."""
    python = INTERPRETERS[name]
    if not python.exists():
        pytest.skip(f"{python} absent")
    r = run_probe(python)
    assert r["frozen"] > 10000
    if tuple(r["version"]) >= (3, 12):
        assert r["immortal"] and r["reason"] == ""
        assert r["objects"] > 50000
        assert r["during"] == r["after"] == [heap.IMMORTAL_REFCNT] * 3
    else:
        assert tuple(r["version"]) == (3, 11)
        assert not r["immortal"] and "still move" in r["reason"]
        assert r["objects"] == 0
        # Counts move, and come back (to what they were once the heap was prepared: jail/hotcode.py
        # keeps a reference to every function).
        assert r["during"][0] > r["after"][0] == r["settled"][0]


def newest_immortal_python() -> Path | None:
    for name in ("venv-313", "venv-312", "ci-newest"):
        python = INTERPRETERS[name]
        if (
            python.exists()
            and subprocess.run([str(python), "-c", VERSION_CHECK], check=False).returncode == 0
        ):
            return python
    return None


VERSION_CHECK = "import sys; sys.exit(sys.version_info < (3, 12))"


@pytest.fixture(scope="module")
def relay_312(keys_dir, tmp_path_factory):
    """A real relay on Python 3.12+ (this interpreter if it is one, else build/venv-31x)."""
    python = Path(sys.executable) if IMMORTAL else newest_immortal_python()
    if python is None:
        pytest.skip("no Python 3.12+ here")
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "executable", str(python))  # tests.e2e.Relay runs sys.executable -m relay
    mp.setenv("PYTHONPATH", str(ROOT))
    try:
        r = Relay(keys_dir).start()
    finally:
        mp.undo()  # only this relay: the other fixtures' relays run this interpreter
    try:
        yield r
    finally:
        r.stop()


def test_relay_serves_from_an_immortal_heap(relay_312, fingerprints, tmp_path):
    """The master logs the immortal heap before it listens; a real tmate host gets ready and a
    viewer gets the host's screen from children forked off it."""
    line = relay_312.wait_log("event='immortal heap'")
    assert int(line.split("objects=")[1].split()[0]) > 50000
    assert relay_312.log_text().index("immortal heap") < relay_312.log_text().index("event='listening'")
    with TmateHost(tmp_path / "h", relay_312.port, *fingerprints) as host:
        host.wait_ready()
        rw, _ = session_tokens(host)
        _, screen = viewer_answer(relay_312.port, rw, until=b"")
        assert screen


def test_relay_on_311_runs_without(relay):
    """On 3.11 the master says it runs without an immortal heap, and why, and goes on."""
    if IMMORTAL:
        pytest.skip("this interpreter has immortal objects")
    line = relay.wait_log("running without an immortal heap")
    assert "still move" in line
