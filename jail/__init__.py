"""Per-connection jail: namespaces, an empty read-only root, no capabilities, seccomp.

Knows nothing of SSH or tmate; every privilege change of the project lives here.
See ARCHITECTURE.md section 2 and jail/_core.py for the exact sequence.
"""

from ._core import JailConfig, JailedProcess, Jailer, JailError, set_process_title

__all__ = ["JailConfig", "JailError", "JailedProcess", "Jailer", "set_process_title"]
