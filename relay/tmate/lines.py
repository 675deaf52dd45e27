"""What a host is told about its session's links, and when (sans-IO).

The connection lines are the NOTIFYs a tmate host shows (`tmate show-messages`) and the SET_ENVs
its `tmate display -p '#{tmate_ssh}'` reads: the note, each read-only link then each read-write
link (web first when the relay has a web viewer and the session is not `tmate -a`), READY last;
a host whose RECONNECT took over its old tokens is told `Reconnected` instead of the NOTIFYs.

When they go: at the host's HEADER, unless names or `tmate -a` keys may still come as replicated
options before READY (named sessions, web links); then at READY, or, when the host asked for
names (relay.tmate.names), once the master answered (`Session.names_given`), after the
master's notice when the session keeps its random tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.tmate import messages as m
from relay.tmate.names import NameRequest, requested, set_after_start
from relay.tmate.replicated import ReplicatedConfig

__all__ = [
    "RECONNECTED",
    "NOTE",
    "ssh_connection_string",
    "web_links",
    "connection_lines",
    "wait_for_ready",
    "names_at_ready",
    "late_name_notice",
    "after_names",
]

RECONNECTED = "Reconnected"  # what a host whose RECONNECT took over its session is told
NOTE = "Note: clear your terminal before sharing readonly access"

Replies = list[m.RelayMessage]


def ssh_connection_string(token: str, host: str, port: int) -> str:
    """`ssh -pPORT TOKEN@HOST`, without the port part for port 22 (as the C server prints it)."""
    port_arg = "" if port == 22 else f" -p{port}"
    return f"ssh{port_arg} {token}@{host}"


def web_links(web_url: str | None, ro_token: str, rw_token: str) -> tuple[str, str] | None:
    """The web links (read only, read-write) URL/t/TOKEN, or None without a web viewer."""
    if web_url is None:
        return None
    return f"{web_url}/t/{ro_token}", f"{web_url}/t/{rw_token}"


def _link(protocol: int, what: str, env: str, link: str) -> Replies:
    # SET_ENV and READY do not exist before protocol 4: the C server skips them.
    out: Replies = [m.Notify(f"{what}: {link}")]
    if protocol >= 4:
        out.append(m.SetEnv(env, link))
    return out


def connection_lines(
    protocol: int, ssh: tuple[str, str], web: tuple[str, str] | None, *, resumed: bool
) -> Replies:
    """The note and the links in tmate.io's order, each link's SET_ENV after it, then READY.

    `ssh` and `web` are (read only, read-write) links; `resumed`: `Reconnected` and the SET_ENVs."""
    out: Replies = [m.Notify(NOTE)]
    if web is not None:
        out += _link(protocol, "web session read only", "tmate_web_ro", web[0])
    out += _link(protocol, "ssh session read only", "tmate_ssh_ro", ssh[0])
    if web is not None:
        out += _link(protocol, "web session", "tmate_web", web[1])
    out += _link(protocol, "ssh session", "tmate_ssh", ssh[1])
    if protocol >= 4:
        out.append(m.RelayReady())
    if resumed:  # the host has its lines: it is told it is back, its SET_ENVs kept
        out = [m.Notify(RECONNECTED)] + [x for x in out if not isinstance(x, m.Notify)]
    return out


def wait_for_ready(named_sessions: bool | None, web_url: str | None, host_ready: bool) -> bool:
    """At HEADER: whether the lines wait for the host's READY. Names come as replicated options
    before READY; so do `tmate -a` keys, which make a session ssh only (no web links, as
    tmate.io)."""
    return not host_ready and (bool(named_sessions) or web_url is not None)


def names_at_ready(
    config: ReplicatedConfig, named_sessions: bool | None, resumed: bool
) -> NameRequest | None:
    """At READY: the names to ask the master for, or None (the lines go at once). A resumed
    session keeps the tokens the master gave back."""
    if not named_sessions or resumed:
        return None
    return requested(config)


def late_name_notice(argv: Sequence[str], named_sessions: bool | None, host_ready: bool) -> Replies:
    """tmate.io's notice for a name option set once the session is ready (it changes nothing)."""
    late = set_after_start(argv) if named_sessions and host_ready else None
    return [m.Notify(late)] if late else []


def after_names(notice: str | None, lines: Replies) -> Replies:
    """The lines after the master's answer to a name request: its notice first, if any."""
    return ([m.Notify(notice)] if notice else []) + lines
