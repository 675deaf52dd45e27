"""Per-connection jail: namespaces, an empty read-only root, no capabilities, a memory cap, seccomp.

Knows nothing of SSH or tmate; every privilege change of the project lives here.
See docs/architecture.md section 6 and jail/jailer.py for the exact sequence (the master's side
there, the children's in jail/child.py, the process title in jail/title.py).
"""

from .jailer import DEFAULT_MEMORY_MB, MIN_MEMORY_MB, JailConfig, JailedProcess, Jailer, JailError
from .title import set_process_title

__all__ = [
    "DEFAULT_MEMORY_MB",
    "MIN_MEMORY_MB",
    "JailConfig",
    "JailError",
    "JailedProcess",
    "Jailer",
    "set_process_title",
]
