"""Tests of jail/pools.py: the allocators' holes taken before the first fork, so that a child's
own allocations do not copy the pages it shares with its parent.

The whole-process steps run in a fresh interpreter (fill() keeps what it takes for the life of
the process that runs it).
"""

from __future__ import annotations

import sys

from jail import pools
from tests.e2e import fresh_interpreter

# A parent full of holes (every other small object and every other C block freed), then a child
# forked before and one forked after fill(), each allocating the same new objects and C blocks:
# the child's private memory, from its smaps_rollup, in KiB.
PROBE = """
import ctypes, json, os, sys
from jail import pools

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def private_kib():
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total

def child_cost():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        before = private_kib()
        new = [bytes(40 + i % 400) for i in range(20000)]
        blocks = [libc.malloc(600 + i % 400) for i in range(2000)]
        for p in blocks:
            ctypes.memset(p, 1, 600)
        os.write(w, str(private_kib() - before).encode())
        os._exit(0)
    os.close(w)
    cost = int(os.read(r, 100))
    os.waitpid(pid, 0)
    return cost

objects = [bytes(40 + i % 400) for i in range(60000)]
del objects[::2]
blocks = [libc.malloc(600 + i % 400) for i in range(6000)]
for p in blocks[::2]:
    libc.free(p)
free_before = sum(pools.holes()[0].values())
without = child_cost()
taken = pools.fill()
with_fill = child_cost()
print(json.dumps({"free_before": free_before, "taken": taken, "without": without, "with": with_fill}))
"""


def test_a_child_allocates_in_pages_of_its_own_once_the_holes_are_taken():
    r = fresh_interpreter(PROBE)
    assert r["free_before"] > 20000  # the parent's pools were full of holes
    assert r["taken"] > 5_000_000  # 30,000 blocks of ~240 bytes and 3,000 C blocks of ~800
    # Without: the child's objects and blocks land in the holes, copying their pages (15 MB
    # here); with: in fresh pages, about what it allocated (6.4 MB; 7.5 MB here).
    assert r["with"] < 0.7 * r["without"], r


def test_holes_reads_the_allocators_report():
    free, unused = pools.holes()
    if not hasattr(sys, "_debugmallocstats"):
        assert (free, unused) == ({}, 0)
        return
    assert free and all(16 <= size <= pools.MAX_BLOCK and size % 16 == 0 for size in free)
    assert all(n > 0 for n in free.values()) and unused >= 0


# Where a thread's malloc lands: in the main heap ([heap], from brk) or in an arena of its own.
ARENA_PROBE = """
import ctypes, json, threading
from jail import pools

took = pools.one_arena() if MODE == "one" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]

def in_heap(p):
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                return lo <= p < hi
    return False

where = {}
def thread():
    where["in_heap"] = in_heap(libc.malloc(1000))  # never freed: the probe ends
t = threading.Thread(target=thread)
t.start()
t.join()
print(json.dumps({"took": took, **where}))
"""


def test_one_arena_puts_every_threads_allocations_in_the_main_heap():
    default = fresh_interpreter('MODE = "default"' + ARENA_PROBE)
    one = fresh_interpreter('MODE = "one"' + ARENA_PROBE)
    assert default["in_heap"] is False  # glibc: a second thread gets an arena of its own
    assert one["took"] is True and one["in_heap"] is True


# Where new objects land within objects_from_malloc() and after it, and that they are freed.
MALLOC_PROBE = """
import gc, json
from jail import pools

def in_heap(p):
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                return lo <= p < hi
    return False

with pools.objects_from_malloc() as took:
    within = [bytes(60 + i % 400) for i in range(3000)]
after = [bytes(60 + i % 400) for i in range(3000)]
inside = sum(in_heap(id(x)) for x in within)
outside = sum(not in_heap(id(x)) for x in after)
del within, after  # freed through pymalloc's free, which gives malloc's blocks back to malloc
gc.collect()
again = [bytes(60 + i % 400) for i in range(30000)]
print(json.dumps({"took": took, "inside": inside, "outside": outside, "again": len(again)}))
"""


def test_objects_made_within_come_from_malloc_and_are_freed():
    r = fresh_interpreter(MALLOC_PROBE)
    assert r["took"] is True
    assert r["inside"] == 3000  # every one in the C heap, none in pymalloc's arenas
    assert r["outside"] == 3000  # after it: pymalloc's again (its arenas are mapped elsewhere)
    assert r["again"] == 30000
