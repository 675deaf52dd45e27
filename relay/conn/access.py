"""`-A` (`--require-authorized-keys`): every session must restrict its viewers to authorized keys.

A host that reaches READY without `tmate -a` keys (none, or an empty list) is told so in the C
server's words, on its status line and in its message log, and its session is never joinable:
the session process never tells the master the host is ready (relay.conn.host), so every join
gets "no session". Unlike the C server, whose session then ends and whose host reconnects every
few seconds to be refused again, the host stays connected until its user leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.tmate import messages as m

# The C server's three lines, then an empty one (as it sends them).
KEYS_REQUIRED = (
    "Server requires authorized_keys but none are given.",
    "Use '-a FILENAME' to specify an authorized_keys file.",
    "Press <Ctrl-c><Ctrl-d> to exit.",
    "",
)


def refuse_without_keys(send_host: Callable[[m.Notify], None], log: Any) -> bool:
    """Tell the host why nobody can join; True (the session is now unjoinable)."""
    for line in KEYS_REQUIRED:
        send_host(m.Notify(line))
    log.warning("host session refused", reason="authorized keys required (-A), the host gave none")
    return True
