"""Function versions given in the master, before it forks, where the interpreter gives them
lazily (Python 3.12), so that a connection process does not write one into every
function it calls.

Why. The specialising interpreter guards what it specialised a call for by the callee's
`func_version`. On 3.12 a function has none (0) until the first call site is
specialised for it: then the interpreter takes the next number of its counter and stores it in
the function object. Setting `__code__` sets it back to 0, so every function jail/hotcode.py
points at a copy has none. A child that specialises a call to such a function writes its
version into the inherited function object, copying the page it lies on (measured, 3.12, an
idle host session: the changed words of 37 + 15 of its pages were function versions).
Python 3.13 gives every function its code object's version when it is made or its code set:
nothing to do there. Python 3.11 is left alone: its heap is not immortal (jail/heap.py), so its
children write into every function they call anyway (reference counts).

How. `give(functions)` does for each function what the interpreter would at its first
specialised call (CPython 3.12 Objects/funcobject.c, _PyFunction_GetVersionForCurrentState):
a function whose version is 0 and whose vectorcall is the interpreter's own gets the counter's
value, and the counter moves on; never past its end (the counter's 0: versions ran out, as the
interpreter itself stops). Neither field is public API, so `_probe()` finds both first, on
functions of its own, and checks what it found: the version's offset is where a fresh probe
function's 4 bytes went from 0 to a number once a call to it was specialised; the counter is
the one 4-byte word of libpython's writable memory that held a second probe's version + 1 and,
once a third probe was specialised, the third's version + 1. If anything does not hold, `give`
does nothing (and says why).

Why it is safe: every version given is the counter's next, as the interpreter's own, so no two
functions share one; a function that has one keeps it. In the master only, holding the GIL, with
no other thread running (before the first fork, and after each pack of jail/hotcode.py).
"""

from __future__ import annotations

import ctypes
import os
import sys
import types
from collections.abc import Iterable

_SPECIALISE_AFTER = 200  # calls after which the call site is surely specialised for the probe
# called (3.12: at its second call; for a later probe, once the earlier one's version has missed
# 52 times)


def _probe_target() -> None:
    return None


def _call_often(f: types.FunctionType) -> None:
    for _ in range(_SPECIALISE_AFTER):
        f()


def _fresh() -> types.FunctionType:
    """A new function object (version 0 where versions are lazy)."""
    return types.FunctionType(_probe_target.__code__, {}, "pymate_version_probe")


def _writable_ranges() -> list[tuple[int, int]]:
    """The writable mappings of libpython (or of the python binary, when it is linked in
    statically) and the anonymous one right after them (their .bss)."""
    out = []
    exe = os.path.realpath(sys.executable)
    ours = False
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            a, b = (int(x, 16) for x in fields[0].split("-"))
            if name:
                ours = "libpython" in name or name == exe
            if ours and "w" in fields[1]:
                out.append((a, b))
            if not name:
                ours = False
    return out


def _find(word: bytes) -> list[int]:
    """The 4-byte aligned addresses in _writable_ranges() holding `word`."""
    out = []
    for a, b in _writable_ranges():
        data = (ctypes.c_char * (b - a)).from_address(a).raw
        i = data.find(word)
        while i >= 0:
            if i % 4 == 0:
                out.append(a + i)
            i = data.find(word, i + 1)
    return out


class _Layout:
    def __init__(self, offset: int, counter: int, vectorcall: bytes):
        self.offset = offset  # of func_version in a function object
        self.counter = counter  # address of the interpreter's next version
        self.vectorcall = vectorcall  # the 8 bytes before the version in a plain function


_found: _Layout | None = None
reason = "not probed"  # why give() does nothing, or ""


def _probe() -> _Layout | None:
    global reason
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 12):
        reason = "only CPython 3.12's lazy function versions are given here"
        return None
    p = _fresh()
    size = type(p).__basicsize__
    before = ctypes.string_at(id(p), size)
    _call_often(p)
    after = ctypes.string_at(id(p), size)
    zero = bytes(4)
    moved = [o for o in range(16, size - 3, 4) if before[o : o + 4] == zero and after[o : o + 4] != zero]
    if len(moved) != 1:
        reason = f"no single field took a version ({len(moved)} changed)"
        return None
    offset = moved[0]
    _find(b"pymate")  # once first: whatever version the search itself takes, it takes now
    q = _fresh()
    _call_often(q)
    qv = ctypes.c_uint32.from_address(id(q) + offset).value
    candidates = _find((qv + 1).to_bytes(4, "little"))
    r = _fresh()
    _call_often(r)
    rv = ctypes.c_uint32.from_address(id(r) + offset).value
    found = [c for c in candidates if ctypes.c_uint32.from_address(c).value == rv + 1]
    if not 0 < qv < rv or len(found) != 1:
        reason = f"the version counter was not found ({len(found)} candidates)"
        return None
    vectorcall = ctypes.string_at(id(p) + offset - 8, 8)
    if vectorcall != ctypes.string_at(id(q) + offset - 8, 8):
        reason = "the probes' vectorcalls differ"
        return None
    reason = ""
    return _Layout(offset, found[0], vectorcall)


def give(functions: Iterable[types.FunctionType]) -> int:
    """Give every function in `functions` that has no version yet the interpreter's next, as
    its first specialised call would; the number given (0 where the probe failed: `reason`)."""
    global _found
    if _found is None and reason == "not probed":
        _found = _probe()
    layout = _found
    if layout is None:
        return 0
    counter = ctypes.c_uint32.from_address(layout.counter)
    given = 0
    for f in functions:
        if type(f) is not types.FunctionType:
            continue
        version = ctypes.c_uint32.from_address(id(f) + layout.offset)
        if version.value or ctypes.string_at(id(f) + layout.offset - 8, 8) != layout.vectorcall:
            continue
        nxt = counter.value
        if nxt == 0:  # the interpreter ran out of versions: so does this
            break
        version.value = nxt
        counter.value = (nxt + 1) & 0xFFFFFFFF
        given += 1
    return given
