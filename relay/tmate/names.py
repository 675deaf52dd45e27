"""A host's wish for a named session, as its replicated configuration carries it (sans-IO).

`tmate -n NAME -r RONAME -k KEY` (or `set -g tmate-session-name ...` in .tmate.conf) reach the
relay only as replicated `set-option` EXEC_CMDs before READY (tmate 2.4's tmux.c loads them as
headless set-option commands once the configuration is read; an empty value means unset, as
tmate.io filtered them). The session model keeps them in its options; at READY `requested` reads
them and the session process asks the master (control message `name`), which checks them
(relay.master.names). A name option set once the session is ready changes nothing: the host is
told so in tmate.io's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.tmate.replicated import ReplicatedConfig, option_set

# option -> what tmate.io called it in its notices
OPTIONS = {"tmate-session-name": "rw", "tmate-session-name-ro": "ro", "tmate-api-key": "api_key"}
# The notice of a relay started without --api-keys (relay.master.names says the same).
NOT_OFFERED = "This relay does not offer named sessions"


@dataclass(frozen=True)
class NameRequest:
    rw: str | None
    ro: str | None
    api_key: str | None


def requested(config: ReplicatedConfig) -> NameRequest | None:
    """The names the host asked for, or None when it asked for none (a key alone names nothing)."""
    rw, ro, key = (config.option(name) or None for name in OPTIONS)
    if rw is None and ro is None:
        return None
    return NameRequest(rw, ro, key)


def set_after_start(argv: Sequence[str]) -> str | None:
    """tmate.io's notice for a replicated `set-option` of a name option with a value, or None."""
    got = option_set(argv)
    if got is None or got[0] not in OPTIONS or not got[1]:
        return None
    return f"{OPTIONS[got[0]]} can only be set via the command line, or configuration file"
