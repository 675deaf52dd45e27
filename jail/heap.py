"""The master's heap before the first fork: frozen for the collector and, where the interpreter
honours it, made immortal, so that a connection process never writes into the pages it inherits.

Why. Every connection process is forked from the master and shares its memory copy-on-write,
but CPython writes into every object it touches: the reference count on each INCREF/DECREF
(loading a constant, calling a function, looking up a method, creating an instance of a class:
the class's count), and the collector's header when it walks a generation. One write copies a
whole 4 KiB page into the child. gc.freeze() stops the collector's writes; PEP 683 (Python
3.12) stops the reference counts' writes for objects that are *immortal*: Py_INCREF and Py_DECREF
leave their count alone, and they are never deallocated. The interpreter makes only its own
static objects and interned strings immortal; `prepare_heap()` makes the rest of the warm heap
immortal too (measured on this project, Python 3.12, 20-50 idle sessions: an idle host session
from 5.2 to 2.8 MB of private memory, an idle ssh viewer from 4.5 to 2.3 MB; bench/host_session.py,
bench/viewer.py). The same idea is what Instagram built into Cinder for its pre-fork servers.

Which objects. Everything the collector tracks at the freeze point (gc.get_objects(): module
dicts, classes, functions, instances, lists, dicts, most tuples), everything reachable from those
through their referents (gc.get_referents: strings, ints, floats, bytes, untracked tuples), the
module table itself, and what code objects hold (they are not tracked by the collector, so their
constants, names, file names and line tables, and the code of nested functions in their
constants, are walked here by hand). Objects that C libraries keep outside Python's object
graph (libghostty's tables, OpenSSL's contexts) are not objects and are not touched.

Why it is safe.
- An immortal object is never freed. The master keeps nearly all of that heap for its whole life
  anyway (modules, classes, functions, the warm-up's caches). What it later drops (a host key
  replaced on SIGHUP, an entry replaced in a cache that existed at the freeze) stays allocated:
  a leak in the master bounded by what existed at the freeze point (a few KB per key reload),
  never growing with connections: objects created after the freeze are ordinary.
- Nothing here holds a resource the master releases by dropping its last reference: the warm-up
  closed its sockets and joined its threads, and the garbage was collected just before; the
  listener, the selector and the wake pipe are closed explicitly.
- The value is the interpreter's own (Include/object.h of 3.12 and 3.13, the default build, not
  free-threaded): on 64-bit, `_Py_IMMORTAL_REFCNT` is UINT_MAX, the low 32 bits of the 64-bit
  `ob_refcnt` all set; Py_INCREF adds 1 to those 32 bits only and skips the store when they wrap
  to 0 (saturated), Py_DECREF skips objects whose low 32 bits read as a negative int32. On
  32-bit it is UINT_MAX >> 2 (0x3FFFFFFF) and both compare against it exactly. An extension
  built for the limited API of an older Python increments the whole 64-bit field: the object
  then counts 2**32, is no longer immortal (its page gets copied), and still is never freed,
  the correctness PEP 683 designed that value for. 3.13's free-threaded build keeps the count
  in `ob_ref_local` (another offset) and 3.14 splits the field again (flags in the high bytes):
  neither layout is written here, both are left without, as is any debug build (Py_TRACE_REFS
  moves the field) or another implementation.
- The master checks at start that the interpreter honours it (`check()`): a fresh probe object
  is given the immortal value and a reference taken and dropped must leave its count unchanged.
  Python 3.11 has no immortal objects: its counts move, and the master runs without (logged).

What it costs: one walk of the heap at start (0.14-0.43 s for the ~140k objects a warmed master
makes immortal, logged as the `immortal heap` event's duration), its transient list of roots,
and the leak above.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import sys
import sysconfig
import time
import types
from collections.abc import Iterable
from dataclasses import dataclass

from . import funcversions, hotcode, pools

# What Include/object.h calls _Py_IMMORTAL_REFCNT (3.12 and 3.13, default build).
IMMORTAL_REFCNT = 0xFFFFFFFF if sys.maxsize > 2**32 else 0xFFFFFFFF >> 2
# The versions whose object layout was read for this (Include/object.h); 3.11 is probed, and fails.
VERSIONS = ((3, 11), (3, 12), (3, 13))
_CODE_FIELDS = (
    "co_consts",
    "co_names",
    "co_filename",
    "co_name",
    "co_qualname",
    "co_linetable",
    "co_exceptiontable",
)


@dataclass(frozen=True)
class HeapReport:
    """What prepare_heap() did: immortal (and how many objects, in how long) or why not."""

    immortal: bool
    objects: int = 0
    seconds: float = 0.0
    reason: str = ""
    filled: int = 0  # bytes of the allocators' holes taken (jail/pools.py)
    versions: int = 0  # functions given a version (jail/funcversions.py)


def layout_reason() -> str:
    """Why this interpreter's reference count is not the plain `ob_refcnt` at offset 0 that
    Include/object.h of 3.11-3.13 describes, or "" when it is."""
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if sys.version_info[:2] not in VERSIONS:
        return f"Python {sys.version_info[0]}.{sys.version_info[1]}'s object layout was not checked"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "the free-threaded build keeps reference counts in ob_ref_local"
    if hasattr(sys, "gettotalrefcount"):
        return "a debug build (Py_REF_DEBUG/Py_TRACE_REFS)"
    return ""


def _set_refcnt(obj: object, value: int) -> None:
    ctypes.c_ssize_t.from_address(id(obj)).value = value


def _is_immortal(obj: object) -> bool:
    n = sys.getrefcount(obj)
    return n & 0x80000000 != 0 if IMMORTAL_REFCNT == 0xFFFFFFFF else n == IMMORTAL_REFCNT


def check() -> str:
    """ "" when the interpreter honours an immortal reference count, else why not.

    A fresh probe object (deliberately leaked: its true count is overwritten) gets the immortal
    value; three references taken and dropped must leave sys.getrefcount() at that value."""
    why = layout_reason()
    if why:
        return why
    probe = bytearray(b"probe")
    _set_refcnt(probe, IMMORTAL_REFCNT)
    before = sys.getrefcount(probe)
    held = [probe, probe, probe]
    during = sys.getrefcount(probe)
    del held
    after = sys.getrefcount(probe)
    if before == during == after == IMMORTAL_REFCNT:
        return ""
    return f"reference counts still move on an immortal object ({before} -> {during} -> {after})"


def _referents(obj: object) -> list[object]:
    if isinstance(obj, types.CodeType):
        return [getattr(obj, f) for f in _CODE_FIELDS if hasattr(obj, f)]
    return gc.get_referents(obj)


def _settle(obj: object) -> None:
    """Fill in what the interpreter computes on first use and keeps in the object itself: a
    string's, bytes object's or frozenset's hash; a class's version tag (its key in the attribute
    cache, given on its first attribute look-up: a missing name, through type's own look-up,
    which calls nothing of the class's). Else each child would write it into a shared page."""
    t = type(obj)
    if t is str or t is bytes or t is frozenset:
        hash(obj)
    elif issubclass(t, type):  # not isinstance(): a weakref proxy to a class passes that
        try:
            type.__getattribute__(obj, "__pymate_never_an_attribute__")
        except AttributeError:
            pass


def immortalize(roots: list[object]) -> int:
    """Make every object reachable from `roots` immortal (and settled: `_settle`); the count of
    objects it changed.

    An object already immortal is not walked again (that is the visited set: the interpreter's
    own immortal objects, None, small ints and interned strings, reference nothing mortal that
    the roots do not hold themselves)."""
    stack = roots
    done = 0
    while stack:
        obj = stack.pop()
        if _is_immortal(obj):
            continue
        _set_refcnt(obj, IMMORTAL_REFCNT)
        done += 1
        _settle(obj)
        stack.extend(_referents(obj))
    return done


def prepare_heap(learn: Iterable[str] = ()) -> HeapReport:
    """Once in the master, after the warm-up and a gc.collect(), just before the first fork:
    make the heap immortal where check() passes, take the allocators' holes (jail/pools.py, on
    every interpreter), then freeze it (gc.freeze: the collector never walks it again, in the
    master or in a child)."""
    # The table connection processes compare their code against, and the kinds of report wanted
    # (jail/hotcode.py): made before the walk, so it is immortal and frozen with the rest.
    hotcode.baseline(learn)
    # Their versions, where a child would give each function it calls one (jail/funcversions.py).
    versions = funcversions.give(hotcode.functions())
    why = check()
    report = HeapReport(immortal=False, reason=why, versions=versions)
    if not why:
        t0 = time.perf_counter()
        n = _immortalize_unfrozen()  # before the freeze; its roots are freed before the holes are taken
        report = HeapReport(immortal=True, objects=n, seconds=time.perf_counter() - t0, versions=versions)
    # Then take the allocators' holes (jail/pools.py): a child's own allocations go to pages
    # of its own, not into the inherited ones.
    report = dataclasses.replace(report, filled=pools.fill())
    gc.freeze()
    return report


def immortalize_the_rest() -> int:
    """In a fork server (jail/zygote.py), once, before its first fork: the objects the master
    made since its last freeze (its books as they stood: children, sockets, log events, ...),
    made immortal as prepare_heap() made the rest; how many. A child that dropped one would free
    it in a page it inherited; immortal, it stays, in the fork server's memory, which nothing
    frees anyway. (A socket among them stays open in no process: the fork server closes the
    descriptors themselves, by number.) Nothing where check() fails."""
    return 0 if check() else _immortalize_unfrozen()


def _immortalize_unfrozen() -> int:
    """`immortalize` from every object the collector lists (frozen ones are not listed: made
    immortal before they were frozen) and the module table; how many it changed."""
    roots = gc.get_objects()
    roots.append(sys.modules)
    return immortalize(roots)


def pack_hot(kind: str, ids: Iterable[int], immortal: bool) -> int:
    """In the master, after a connection process told which code it ran (jail/hotcode.py): copy
    that code next to each other (in fresh memory: the holes are taken first), settle the copies
    as prepare_heap() settled the heap (immortal too when it made the heap immortal), take the
    holes again; the number of code objects copied."""
    copies = hotcode.learn(kind, ids, pools.fill)
    if not copies:
        return 0
    if immortal:
        immortalize(list(copies))
    gc.collect()  # what the master made since the start and dropped: not frozen with the copies
    pools.fill()
    gc.freeze()
    return len(copies)
