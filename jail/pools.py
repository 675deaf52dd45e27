"""The master's allocators before the first fork: every hole taken, so that what a connection
process allocates lands in pages of its own instead of in pages it shares with the master.

Why. A connection process is forked from the master and shares its memory copy-on-write. Both
of the allocators it inherits serve a new allocation from a hole first: CPython's small-object
allocator (pymalloc: blocks of 16 to 512 bytes in 16 KiB pools of one block size, in 1 MiB
arenas) from a pool that has a free block, then from an arena's unused pool, before it maps a
new arena; the C library's malloc from a free chunk inside its heap before the heap's end. After
the warm-up the master's heap is full of holes (its garbage was collected just before the fork),
scattered over pages every child shares. A child's first objects and buffers would fill them,
copying a whole 4 KiB page for each few bytes. With the holes taken first, a child's own
allocations are packed in fresh pages and the inherited ones stay shared. Measured (Python 3.12,
50 idle host sessions, bench/host_session.py): a session's private memory from 2.75 to 2.64 MB
with pymalloc's holes taken, to 2.42-2.47 MB with the C heap's too.

How.
- pymalloc: `sys._debugmallocstats()` (CPython's own report, written to the C-level stderr,
  read back here through a memfd) gives, per block size, the free blocks in the pools in use,
  and the unused pools in the arenas allocated. `_fill_blocks` allocates that many objects of
  each size (bytes objects, whose allocation is 33 bytes plus their length; `object()` for the
  16-byte class, floats for the 32-byte one), a few rounds (filling starts pools of its own),
  then enough 512-byte blocks to take the unused pools.
- malloc: for sizes from 128 KiB down to 16 bytes, `_fill_c_heap` calls malloc (through ctypes)
  while what it returns lies below the heap's end as it was when this started (`sbrk(0)`): a
  free chunk, or the unused top of the heap; the first block from beyond is freed again and the
  next size is tried. Blocks from mmap (outside the heap) end a size too.
The Python fillers are kept in a list for the master's life and never read again; the C blocks
are never freed. pymalloc's holes are taken first: the fillers' list, as it grows, leaves holes
in the C heap, which the second step then takes.

What it costs: the holes' size in the master's memory (a few MB, shared by every child, logged
as the `immortal heap` event's `filled`), a few milliseconds at start. Where the report or the
heap is missing (another implementation, a build without pymalloc, an allocator without a brk
heap) that part does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from collections.abc import Iterator

POOL_SIZE = 16 * 1024  # pymalloc's pool (3.10+)
MAX_BLOCK = 512  # pymalloc's largest block
_BYTES_OVERHEAD = 33  # a bytes object: header, hash, then its bytes and their NUL
_CLASS = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_UNUSED = re.compile(r"^(\d+) unused pools \* (\d+) bytes")
_ROUNDS = 3
_kept: list[object] = []  # the Python fillers: held, never read


def _report() -> str:
    """What sys._debugmallocstats() writes to file descriptor 2, or ""."""
    debug = getattr(sys, "_debugmallocstats", None)
    if debug is None or not hasattr(os, "memfd_create"):
        return ""
    sys.stderr.flush()
    try:
        fd = os.memfd_create("pymate-mallocstats")
    except OSError:  # a system call filter without it: nothing to fill from
        return ""
    try:
        saved = os.dup(2)
        try:
            os.dup2(fd, 2)
            debug()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("ascii", "replace")
    finally:
        os.close(fd)


def holes() -> tuple[dict[int, int], int]:
    """({block size: free blocks in the pools in use}, unused pools), from pymalloc's report."""
    free: dict[int, int] = {}
    unused = 0
    for line in _report().splitlines():
        m = _CLASS.match(line)
        if m:
            size, avail = int(m.group(2)), int(m.group(5))
            if avail:
                free[size] = avail
            continue
        m = _UNUSED.match(line)
        if m:
            unused = int(m.group(1))
    return free, unused


def _block(size: int, i: int) -> object:
    """A new object whose allocation falls in the block size `size` (16-byte steps to 512)."""
    if size <= 16:
        return object()
    if size <= 32:
        return float(i)  # 24 bytes
    return bytes(size - _BYTES_OVERHEAD)


def _fill_blocks() -> int:
    free, unused = holes()
    taken = 0
    for _ in range(_ROUNDS):
        for size, count in free.items():
            _kept.extend(_block(size, i) for i in range(count))
            taken += size * count
        free = holes()[0]
        if not free:
            break
    per_pool = POOL_SIZE // MAX_BLOCK - 1  # the pool's header takes part of its first block
    _kept.extend(bytes(MAX_BLOCK - _BYTES_OVERHEAD) for _ in range(unused * per_pool))
    return taken + unused * POOL_SIZE


def _heap_start() -> int | None:
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                return int(line.split("-")[0], 16)
    return None


def _c_sizes() -> list[int]:
    sizes = []
    s = 128 * 1024
    while s > 1024:
        sizes.append(s)
        s = int(s * 0.8) // 16 * 16
    return sizes + list(range(1024, 0, -16))


def _fill_c_heap() -> int:
    try:
        libc = ctypes.CDLL(None)
        malloc, free, sbrk = libc.malloc, libc.free, libc.sbrk
    except (OSError, AttributeError):
        return 0
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    sbrk.restype, sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
    start, end = _heap_start(), sbrk(0)
    if start is None or not end:
        return 0
    taken = 0
    for size in _c_sizes():
        while True:
            p = malloc(size)
            if not p:
                break
            if not start <= p < end:  # beyond the heap as it was, or mmap'd: no hole this size
                free(p)
                break
            taken += size  # never freed: the block stays taken (nothing holds its address)
    return taken


M_ARENA_MAX = -8  # glibc's mallopt() parameter (malloc.h)


def one_arena() -> bool:
    """Make every thread of this process (and of its children) allocate from the main heap;
    whether the C library took it. Once in the master, before its first thread starts.

    Why. glibc gives a process's second and later threads arenas of their own (mmap'd heaps of
    64 MiB of address space); a thread that ends leaves its arena for the next one. The master's
    warm-up runs paramiko's transport threads, so each child inherits their arenas, holes and
    all, and its own transport thread is given one: its allocations and frees then write free
    lists and chunk headers into inherited pages all over that arena (measured, 3.13: ~130 KiB
    of a session's pages), where the holes of the main heap are taken (fill) and its new chunks
    land on fresh pages. With one arena a child's threads share the main heap's lock: a session
    has two threads, one of them parked once the handshake is done (relay.conn.wire).
    Measured (50 idle host sessions, bench/host_session.py): 3.12 1.85-1.89 -> 1.82-1.83 MB,
    3.13 2.03 -> 1.92 MB."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to do
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, 1))


class _Allocator(ctypes.Structure):  # PyMemAllocatorEx
    _fields_ = [(name, ctypes.c_void_p) for name in ("ctx", "malloc", "calloc", "realloc", "free")]


_DOMAIN_RAW, _DOMAIN_OBJ = 0, 2  # PyMemAllocatorDomain


@contextlib.contextmanager
def objects_from_malloc() -> Iterator[bool]:
    """Within: new Python objects come from the C library's malloc (the raw domain's allocator)
    instead of pymalloc's pools; whether it could. Frees and reallocations stay pymalloc's
    (which hands what is not in its arenas to the raw domain's, so objects made within are
    freed right whenever they go; objects a type keeps free lists of, such as small tuples, may
    still come from one of those). Only where both domains run CPython's own allocators (no
    debug hooks, no other allocator set: both contexts NULL); in the master, holding the GIL.

    Why. pymalloc serves each block size from pools of its own: code objects copied one after
    the other (jail/hotcode.py) land in some twenty pools by their sizes, each pool holding a
    slice of every group copied, so that a process running one group's code writes into pages
    of all twenty. From malloc, after `fill`, they lie in the heap one after the other."""
    try:
        get, put = ctypes.pythonapi.PyMem_GetAllocator, ctypes.pythonapi.PyMem_SetAllocator
    except AttributeError:
        yield False
        return
    get.restype = put.restype = None
    get.argtypes = put.argtypes = [ctypes.c_int, ctypes.POINTER(_Allocator)]
    raw, obj = _Allocator(), _Allocator()
    get(_DOMAIN_RAW, ctypes.byref(raw))
    get(_DOMAIN_OBJ, ctypes.byref(obj))
    if raw.ctx or obj.ctx or not raw.malloc or not obj.free:
        yield False
        return
    mixed = _Allocator(None, raw.malloc, raw.calloc, obj.realloc, obj.free)
    put(_DOMAIN_OBJ, ctypes.byref(mixed))
    try:
        yield True
    finally:
        put(_DOMAIN_OBJ, ctypes.byref(obj))


def fill() -> int:
    """Take every hole of both allocators now (see the module's docstring); the bytes taken.
    In the master, with no other thread running: just before the heap is frozen, and before and
    after the code a report names is copied (jail/heap.py pack_hot)."""
    return _fill_blocks() + _fill_c_heap()
