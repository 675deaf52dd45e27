"""Presence: the host sees who joins and leaves its session, and may send a viewer away.

On every viewer join and leave the host gets a NOTIFY in tmate.io's words (its status line and
`show-messages`), `A mate has joined (1.2.3.4, read-only) -- 2 clients currently connected`
(`read-only, web` for a browser's page; with the key's fingerprint when the viewer
authenticated with one) and `A mate has left (1.2.3.4) -- 1 client currently connected`, just
after SET_ENV `tmate_num_clients` (the count) and `tmate_clients` (who: `1.2.3.4 rw since 12:03:01,
5.6.7.8 ro web since 12:04:10`, relay-local time, at most MAX_CLIENTS_TEXT characters), so `tmate
display -p '#{tmate_clients}'` answers "who is watching".

The two SET_ENVs are set from the host's READY on (`0` and empty before the first viewer), so a
status line that shows `#{tmate_num_clients}` never shows a blank (protocols before 6 send no
READY: theirs are set at the first join).

After its host reconnected, the master links the viewers that waited to the new session process
again (`viewer` with relinked): they never left, so the host gets no join notice for them, and
each is listed since its first join (the master's time, `since`). A viewer that joined while the
host was away is new to the host: announced when it is linked, listed from then. Then the master
says the relinks are done (`relinked`) with the addresses of the viewers the host had that left
while it was away: the host gets the count and list as they are now, then `A mate has left` for
each (its old process could not tell it, and its tmate still shows the SET_ENVs of before the cut).
A resumed session publishes nothing at READY: its relinks follow, and a `0` before them would be
wrong for as long as they take.

The host disconnects the viewers of one address with `tmate set -g @pymate-kick ADDRESS`: tmate
replicates every `set-option` it runs (its cmdq hands each bind-key, unbind-key, set-option and
set-window-option to the relay as EXEC_CMD), so the option reaches the session process. Only a
command the host runs once the session is ready counts: a reconnecting client replays its
replicated commands before READY, and an old kick must not hit whoever joined since.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from relay.conn import viewers  # a cycle: viewers calls presence; read at call time only
from relay.hostkeys import b64_fingerprint
from relay.tmate import messages as m
from relay.tmate.replicated import option_set

if TYPE_CHECKING:
    from relay.conn.viewers import Viewer

KICK_OPTION = "@pymate-kick"
KICKED = b"[disconnected by the host]\r\n"  # the kicked viewer's last line
MAX_CLIENTS_TEXT = 1024  # characters of SET_ENV tmate_clients; the rest is counted, not listed
NUM_CLIENTS_VAR = "tmate_num_clients"
CLIENTS_VAR = "tmate_clients"


# ---------------------------------------------------------------------- texts
def _count(n: int) -> str:
    return f"{n} client{'s' if n > 1 else ''} currently connected"


def joined_text(ip: str, readonly: bool, fingerprint: str | None, n: int, web: bool = False) -> str:
    who = [ip, "read-only" if readonly else "read-write"]
    if web:
        who.append("web")
    if fingerprint:
        who.append(f"key {fingerprint}")
    return f"A mate has joined ({', '.join(who)}) -- {_count(n)}"


def left_text(ip: str, n: int) -> str:
    return f"A mate has left ({ip}) -- {_count(n)}"


def clients_text(viewers: Iterable[Viewer], limit: int = MAX_CLIENTS_TEXT) -> str:
    """`ADDRESS rw|ro since HH:MM:SS, ...` oldest first, cut at `limit` characters with the
    number of viewers left out."""
    entries = [
        f"{v.ip} {'ro' if v.readonly else 'rw'}{' web' if v.web else ''} since {time.strftime('%H:%M:%S', time.localtime(v.since))}"
        for v in sorted(viewers, key=lambda v: (v.since, v.id))
    ]
    text = ", ".join(entries)
    if len(text) <= limit:
        return text
    room = limit - len(", and 99999 more")
    shown: list[str] = []
    while len(shown) < len(entries) and len(", ".join([*shown, entries[len(shown)]])) <= room:
        shown.append(entries[len(shown)])
    return ", ".join([*shown, f"and {len(entries) - len(shown)} more"])


def fingerprint_of(pubkey: str | None) -> str | None:
    """SHA256 fingerprint of `type base64` as the master passes a viewer's key; None without one."""
    if not pubkey:
        return None
    parts = pubkey.split(" ")
    return b64_fingerprint(parts[1]) if len(parts) >= 2 else None


def kick_address(argv: Sequence[str]) -> str | None:
    """The address a replicated `set-option [-g] @pymate-kick ADDRESS` names, else None."""
    got = option_set(argv)
    if got is None or got[0] != KICK_OPTION:
        return None
    return got[1].strip() or None


# ---------------------------------------------------------------------- the session's side
def joined(hs: Any, v: Viewer, pubkey: str | None, relinked: bool = False, since: float = 0) -> None:
    """A viewer joined the session `hs` (relay.conn.host.HostSession): tell the host. `since`:
    when it first joined (the master's clock; 0: now). A relinked viewer (linked again after its
    host reconnected: it never left) is counted and listed as before, without a join notice."""
    v.since = since or time.time()
    v.fingerprint = fingerprint_of(pubkey)
    if not relinked:  # a relinked one is published with the rest, at `relinked` (back)
        _announce(hs, joined_text(v.ip, v.readonly, v.fingerprint, len(hs.viewers), v.web))


def left(hs: Any, v: Viewer) -> None:
    """A viewer left (detached, dropped, kicked): tell the host, unless the session is ending."""
    _announce(hs, left_text(v.ip, len(hs.viewers)))


def ready(hs: Any) -> None:
    """The host is ready (a fresh session, not a resumed one): nobody is watching yet."""
    _publish(hs)


def back(hs: Any, left: Sequence[str], more: int) -> None:
    """A resumed session's viewers are relinked: tell the host who left while it was away (at
    most control.MAX_LEFT by address, `more` counted), then who is connected now."""
    if hs.closing:
        return
    n = len(hs.viewers)
    _publish(hs)  # first, as in _announce
    for ip in left:
        hs.send_host(m.Notify(left_text(ip, n)))
    if more:
        hs.send_host(m.Notify(f"{more} more mate{'s' if more > 1 else ''} left meanwhile -- {_count(n)}"))


def _announce(hs: Any, text: str) -> None:
    if hs.closing:
        return  # the session is over: the host gets nothing more
    # The count and the list before the notice: the host's tmate applies messages in order, so
    # once the notice shows, `#{tmate_num_clients}` already says what the notice says.
    _publish(hs)
    hs.send_host(m.Notify(text))


def _publish(hs: Any) -> None:
    """SET_ENV tmate_num_clients and tmate_clients: who is connected now."""
    if not hs.closing and (hs.session.protocol or 0) >= 4:  # no SET_ENV before protocol 4
        hs.send_host(m.SetEnv(NUM_CLIENTS_VAR, str(len(hs.viewers))))
        hs.send_host(m.SetEnv(CLIENTS_VAR, clients_text(hs.viewers.values())))


def maybe_kick(hs: Any, msg: m.HostMessage, ready: bool) -> None:
    """The host ran `set -g @pymate-kick ADDRESS` (`ready`: the session was ready when it came):
    every viewer from ADDRESS gets a last line and goes; the host gets a notice either way."""
    if not ready or not isinstance(msg, m.ExecCmd):
        return
    address = kick_address(msg.argv)
    if address is None:
        return
    gone = [v for v in hs.viewers.values() if v.ip == address]
    for v in gone:
        hs.log.info("viewer kicked", client=v.id, viewer_ip=v.ip, reason="the host disconnected it")
        hs._remove_viewer(v, viewers.LEAVE_TERMINAL + KICKED)
    if gone:
        text = f"Disconnected {len(gone)} mate{'s' if len(gone) > 1 else ''} from {address}"
    else:
        text = f"No mate from {address} is connected"
    hs.send_host(m.Notify(text[:200]))
