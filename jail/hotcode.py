"""The code a connection process runs, learnt from one of them and copied by the master into
pages of its own, so that the next ones write into fewer inherited pages.

Why. CPython's adaptive interpreter writes into the bytecode of every code object it runs (each
instruction's inline cache: the counters that decide when to specialise it, then what it was
specialised for), on every interpreter, immortal heap or not, and each such write into an
inherited code object copies its 4 KiB page. The master's code objects were made at import, one
module after the other, each beside its constants and names: the few hundred an idle host
session runs (~180 KB) lay on ~400 pages, which every session copied (measured, 3.12: two
thirds of a session's private memory were inherited pages it had changed by 64 bytes or
fewer, nearly all in code objects).

How it is learnt. Just before the first fork, `baseline()` keeps every function's code object
(and the code nested in their constants) with a checksum of its bytecode as it is then (the
inline caches included), and the kinds of report still wanted (opaque names: relay.control's
LEARN_KINDS, a host session 2 s after its READY or as its first viewer joins if that comes
first, the same 2 s after its first viewer joined, a viewer 2 s after it joined: so a session
nobody views runs code packed without the code that serves viewers between it). A connection
process inherits that table; in each of those states it reports, if `wanted(kind)` held when it
was forked, `ran()`: the code objects whose bytecode changed since the baseline, the code it ran
(and what the master ran between the baseline and the fork) and not copied yet (what was copied
runs from its copy).

How the master uses it. `learn(kind, ids)` takes only code objects of its own table (an id it
does not know is ignored: the list comes from a jailed process and is never trusted for more
than which of the master's own code objects to copy, at most MAX_HOT of them: a first session
that ran unusual code, or a process that lied, costs the master a few hundred KB and the later
sessions some sharing, nothing else). Until every kind has reported once, `pack` copies what a
report names and was not copied before (`code.replace()`: the same code, a new object, with
fresh inline caches), and the code objects holding one in their constants (so that a nested
function made at run time gets the copy too), then points every function at its copy. The
report that completes the set copies everything the reports named once more, from the
originals, in `arrange`'s order: grouped by which kinds ran it, the groups so that each kind's
code is one run (a viewer's code then lies apart from what only host sessions run, instead of
between it), the code the master ran itself apart from the rest. Copies are made with the
allocators' holes taken (jail/pools.py `fill`) and from malloc (`objects_from_malloc`: pymalloc
would put them in a pool per block size, a slice of each group in every pool), so they lie one
after the other in fresh heap. The originals stay where they were (the master's frames that are
running keep theirs until they return); an earlier copy no function runs any more stays
allocated (immortal) in the master. The copies are then made immortal and frozen like the rest
of the heap (jail/heap.py), the functions given versions again where setting their code took
them away (jail/funcversions.py, 3.12), the holes taken again, and the report is used (`done`):
connection processes forked from then on (the master lets its standbys go) run the copies.
ROUNDS reports per kind and master (the second, from a process forked from the copies, adds
what the first had not run); a report that comes later is ignored.

Safe because a copy is equal to its original in everything but its address and its inline
caches (which the interpreter fills in again); code objects compare by value, and nothing in the
relay or its libraries keys anything on a code object's identity. What it costs the master: the
copies (twice a few hundred KB) and the table (~11,000 code objects, ~15,000 functions: ~1.5 MB).
"""

from __future__ import annotations

import gc
import itertools
import types
import zlib
from collections.abc import Callable, Iterable

from . import funcversions, pools

CodeType = types.CodeType
MAX_HOT = 700  # code objects a report may name (it fits a control message)

_table: dict[int, tuple[CodeType, int]] = {}  # id -> (code, checksum at the baseline)
ROUNDS = 2  # reports used per kind: the second, from a process that ran the first's copies, adds
# what the first did not run yet (measured, 3.12: 435 code objects, then ~50 more)
_wanted: dict[str, int] = {}  # kind -> reports still wanted
_functions: list[types.FunctionType] = []  # every function at the baseline (the frozen heap's)
_packed: set[int] = set()  # ids of the table's code objects copied already
_origin: dict[int, int] = {}  # id(copy) -> id(its original), for the copies functions run
_kinds: tuple[str, ...] = ()  # every kind wanted at the baseline
_reports: dict[str, dict[int, None]] = {}  # kind -> the ids its reports named, in order
_laid_out = False  # every kind has reported once, and all they named was laid out again
MAX_GROUPS = 7  # groups of code `arrange` tries every order of (3 kinds make at most 7)


def _checksum(code: CodeType) -> int:
    return zlib.crc32(getattr(code, "_co_code_adaptive", b""))


def _all_code(functions: list[types.FunctionType]) -> list[CodeType]:
    """The functions' code objects and the code nested in their constants."""
    out: list[CodeType] = []
    seen: set[int] = set()
    stack = [f.__code__ for f in functions]
    while stack:
        code = stack.pop()
        if id(code) in seen:
            continue
        seen.add(id(code))
        out.append(code)
        stack.extend(k for k in code.co_consts if isinstance(k, CodeType))
    return out


def baseline(kinds: Iterable[str]) -> int:
    """In the master, just before the first fork (and before the heap is frozen: frozen
    functions are not listed): the table the children compare against, and the kinds of report
    wanted."""
    _functions[:] = [obj for obj in gc.get_objects() if type(obj) is types.FunctionType]
    _table.clear()
    _packed.clear()
    _origin.clear()
    _reports.clear()
    global _kinds, _laid_out
    _kinds = tuple(kinds)
    _laid_out = False
    for code in _all_code(_functions):
        _table[id(code)] = (code, _checksum(code))
    _wanted.clear()
    _wanted.update((kind, ROUNDS) for kind in _kinds)
    return len(_table)


def functions() -> list[types.FunctionType]:
    """Every function at the baseline."""
    return _functions


def wanted(kind: str) -> bool:
    return _wanted.get(kind, 0) > 0


def done(kind: str) -> None:
    """One report of `kind` used."""
    if kind in _wanted:
        _wanted[kind] -= 1


def ran() -> list[int]:
    """In a connection process: the ids of the code objects of the table whose bytecode changed
    since the baseline (at most MAX_HOT)."""
    out = []
    for key, (code, state) in _table.items():
        if _checksum(code) != state:
            out.append(key)
            if len(out) >= MAX_HOT:
                break
    return out


def learn(kind: str, ids: Iterable[int], fill: Callable[[], object] | None = None) -> list[CodeType]:
    """In the master: a report of `kind` used (`done`). Until every kind wanted at the baseline
    has reported once, its code not copied yet is copied as `pack` does (a relay nobody views
    has its host sessions' code packed all the same); the report that completes that set lays
    every reported code object out again, from the originals, in `arrange`'s order, so that
    each kind's code lies in one run of pages (a viewer no longer writes into pages of host
    code copied between the viewer's own). The copies made."""
    done(kind)
    valid = [k for k in dict.fromkeys(ids) if type(k) is int and k in _table][:MAX_HOT]
    seen = _reports.setdefault(kind, {})
    seen.update(dict.fromkeys(valid))
    global _laid_out
    if not _laid_out and all(k in _reports for k in _kinds):
        _laid_out = True
        # Code the master ran itself since the baseline was changed before the reporters were
        # forked, so every report names it, run there or not: it goes apart, after the rest.
        mine = {
            key for ids in _reports.values() for key in ids if _checksum(_table[key][0]) != _table[key][1]
        }
        order = arrange({k: [key for key in v if key not in mine] for k, v in _reports.items()})
        order += arrange({k: [key for key in v if key in mine] for k, v in _reports.items()})
        copies = _copy([_table[key][0] for key in order], fill)
        _origin.clear()  # the earlier copies are no function's code any more
        _origin.update((id(new), key) for key, new in copies.items())
        _packed.update(copies)
        return list(copies.values())
    return pack(valid, fill)


def arrange(reports: dict[str, list[int]]) -> list[int]:
    """The ids of every report, in an order that keeps each report's in as few runs as it can:
    grouped by the set of reports naming them, the groups in the order with the fewest runs
    (every order is tried for up to MAX_GROUPS groups, the groups in a fixed order past that),
    each group in its reports' order."""
    sets = {kind: set(ids) for kind, ids in reports.items()}
    groups: dict[frozenset[str], dict[int, None]] = {}
    for ids in reports.values():
        for key in ids:
            groups.setdefault(frozenset(k for k, v in sets.items() if key in v), {})[key] = None
    names = sorted(groups, key=lambda g: (-len(g), sorted(g)))
    if len(names) <= MAX_GROUPS:

        def runs(groups_in_order: Iterable[frozenset[str]]) -> int:
            order = list(groups_in_order)
            return sum(
                sum(1 for i, g in enumerate(order) if kind in g and (i == 0 or kind not in order[i - 1]))
                for kind in reports
            )

        names = list(min(itertools.permutations(names), key=runs))
    return [key for g in names for key in groups[g]]


def pack(ids: Iterable[int], fill: Callable[[], object] | None = None) -> list[CodeType]:
    """In the master: copy the code objects of the table named by `ids`, in that order, and the
    code objects holding one in their constants; point every function at its copy. The copies.
    `fill`, if given, is called just before the first copy is made."""
    order: list[CodeType] = []
    wanted_ids: set[int] = set()
    for key in ids:
        entry = _table.get(key) if type(key) is int else None
        if entry is not None and key not in wanted_ids and key not in _packed and len(order) < MAX_HOT:
            wanted_ids.add(key)
            order.append(entry[0])
    if not order:
        return []
    copies = _copy(order, fill)
    _origin.update((id(new), key) for key, new in copies.items())
    _packed.update(copies)
    return list(copies.values())


def _copy(order: list[CodeType], fill: Callable[[], object] | None) -> dict[int, CodeType]:
    """Copy the originals `order` names, in that order, and the originals holding one in their
    constants (the nested code's copies in the parent's); point every function whose code is
    one of them, or an earlier copy of one, at its copy. id(original) -> copy."""
    wanted_ids = {id(code) for code in order}
    holds: dict[int, bool] = {}  # id(code) -> it is wanted or holds one that is

    def needed(code: CodeType) -> bool:
        r = holds.get(id(code))
        if r is None:
            holds[id(code)] = False
            r = id(code) in wanted_ids or any(isinstance(k, CodeType) and needed(k) for k in code.co_consts)
            holds[id(code)] = r
        return r

    copies: dict[int, CodeType] = {}

    def copy(code: CodeType) -> CodeType:
        new = copies.get(id(code))
        if new is None:
            consts = code.co_consts
            if any(isinstance(k, CodeType) and needed(k) for k in consts):
                # The nested code's copies first: the parent's copy holds them.
                consts = tuple(copy(k) if isinstance(k, CodeType) and needed(k) else k for k in consts)
            new = copies[id(code)] = code.replace(co_consts=consts)
        return new

    def make_bytecode(code: CodeType) -> None:
        code.co_code  # noqa: B018 - the interpreter makes it and keeps it on the original
        for k in code.co_consts:
            if isinstance(k, CodeType) and needed(k):
                make_bytecode(k)

    # replace() makes the original's co_code (a bytes object as big as the bytecode, cached on
    # the original) when it copies: made in the same pass, each would sit between two copies,
    # so that a child's writes into the copies spread over twice the pages. Made first, they
    # lie together elsewhere; then `fill` (jail/pools.py's) takes the allocators' holes, so that
    # the copies go to fresh pools and heap, one after the other, not into holes all over the
    # heap (measured, 3.13: 182 -> 159 -> 148 pages of code a session writes into).
    for code in order:
        make_bytecode(code)
    if fill is not None:
        fill()
    with pools.objects_from_malloc():
        for code in order:
            copy(code)
    moved = []
    for obj in _functions:  # the frozen heap's: gc.get_objects() no longer lists them
        code = obj.__code__
        new = copies.get(_origin.get(id(code), id(code)))
        if new is not None:
            obj.__code__ = new  # which takes its version away, on 3.12: given back here
            moved.append(obj)
    funcversions.give(moved)
    return copies
