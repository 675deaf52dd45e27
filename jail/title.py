"""Process title: what ps shows for a jailed process (argv area) and its comm name.

The argv area is found once at import, in the master, while /proc is there; forked children
have the same layout, so `set_process_title` works inside the jail (no file, no allocation
by libc).
"""

from __future__ import annotations

import ctypes

from . import _sys

_ENVIRON_COPIES: list[
    ctypes.Array[ctypes.c_char]
] = []  # libc's environ points here once the originals are freed


def _free_environ_strings(env_start: int, env_end: int) -> bool:
    """Copy libc's environment strings elsewhere and repoint `environ` at the copies, so the
    original strings' memory (right after argv) may carry a longer process title. Python's
    os.environ is a copy made at start-up and is not affected."""
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(_sys.libc, "environ")
        i = 0
        while environ[i]:
            addr = environ[i]
            if addr is not None and env_start <= addr < env_end:
                copy = ctypes.create_string_buffer(ctypes.string_at(addr))
                _ENVIRON_COPIES.append(copy)
                environ[i] = ctypes.addressof(copy)
            i += 1
        return True
    except (ValueError, OSError):
        return False


def _argv_area() -> tuple[int, int] | None:
    """The memory ps shows as this process's command line: the original argv strings and, when
    they follow them directly, the environment strings (moved out of the way first).

    (python-prctl's set_proctitle finds the area by walking back from environ[0] instead, and
    segfaults when the environment is empty.)
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        # stat fields 48-51: arg_start, arg_end, env_start, env_end
        start, end, env_start, env_end = (int(x) for x in fields[45:49])
    except (OSError, ValueError, IndexError):
        return None
    if not 0 < start < end:
        return None
    if env_start == end and env_end > env_start and _free_environ_strings(env_start, env_end):
        end = env_end
    return start, end


_ARGV_AREA = _argv_area()


def set_process_title(title: str) -> None:
    """Title in ps (argv and environment area, truncated to its length) and
    comm (PR_SET_NAME, 15 bytes). Works inside the jail: no file, no allocation by libc."""
    raw = title.encode("utf-8", "replace")
    if _ARGV_AREA is not None:
        start, end = _ARGV_AREA
        size = end - start
        text = raw[: size - 1].decode("utf-8", "ignore").encode()
        ctypes.memmove(start, text + b"\0" * (size - len(text)), size)
    name = ctypes.create_string_buffer(raw[:15].decode("utf-8", "ignore").encode(), 16)
    _sys.prctl(_sys.PR_SET_NAME, ctypes.addressof(name))
