"""Per-connection jail: namespaces, an empty read-only root, no capabilities, seccomp.

Knows nothing of SSH or tmate; every privilege change of the project lives here.
See docs/architecture.md section 6 and jail/jailer.py for the exact sequence (the master's side
there, the children's in jail/child.py, the process title in jail/title.py).
"""

from .jailer import JailConfig, JailedProcess, Jailer, JailError
from .title import set_process_title

__all__ = ["JailConfig", "JailError", "JailedProcess", "Jailer", "set_process_title"]
