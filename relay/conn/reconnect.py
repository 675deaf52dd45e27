"""Reconnection, the session process's side: it asks, the master decides.

- The host gets `SET_ENV tmate_reconnection_data` after its connection lines, and a fresh one
  every control.RECONNECT_REFRESH: the session process asks the master (`rdata`) and passes the
  datum on; it never sees the key, and cannot make or check a datum itself.
- A host that sends `[RECONNECT, data]` right after its HEADER: the replies to that HEADER are
  held until the next message shows whether it is a RECONNECT (or the burst of data they came
  in ends: tmate writes both at once); the master answers `resume` with
  the session's old tokens (the host is then told `Reconnected`, not its lines again) or with a
  reason (forged, expired, stale: the host is told it and keeps the new tokens). The session
  model is rebuilt from what the host sends next (SYNC_LAYOUT, SNAPSHOT); the viewers that waited
  are linked to this process by the master once it is ready (`access`), and send their sizes
  again, so the host gets its RESIZE again.
- How a session ends decides whether the master holds it (`end`): a connection lost (reset,
  timeout: any socket error) is kept for the reconnect window, and the viewers are let go
  without a last line (they wait for the master's relink, showing that the host is
  reconnecting); the host's FIN (tmate's message, or the TCP FIN of its exit), a protocol
  violation, the memory cap or the relay stopping end it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay import control
from relay.tmate import messages as m

if TYPE_CHECKING:
    from relay.conn.host import HostSession

__all__ = ["HostReconnection", "connection_lost"]


class HostReconnection:
    """The reconnection part of one session process (HostSession.recon)."""

    def __init__(self, hs: HostSession):
        self.hs = hs
        self.held: list | None = None  # the HEADER's replies, until the next message
        self.due: float | None = None  # when to ask for a fresh datum
        self.asked = False
        self.tried = False  # a RECONNECT was handled (the master takes one per connection)
        self.lines_out = False  # the HEADER's replies (the lines, when they go then) were sent
        self.resumed = False

    def replies(self, msg: m.HostMessage, replies: list) -> list:
        """What to send the host for `msg` (the session model's `replies`)."""
        if isinstance(msg, m.Header):
            self.held = replies
            return []
        if isinstance(msg, m.Reconnect) and not self.tried:  # one per connection
            self.tried = True
            held, self.held = self.held, None
            return self._resume(msg.data, bool(held) or self.lines_out) + replies
        return self.flush() + replies

    def flush(self) -> list:
        """The HEADER's replies, if still held: at the next message that is no RECONNECT, or at
        the end of the burst of data they came in (tmate writes HEADER and RECONNECT at once)."""
        held, self.held = self.held or [], None
        self.lines_out = self.lines_out or bool(held)
        return held

    def _resume(self, data: str, lines_now: bool) -> list:
        hs = self.hs
        rw, ro, reason = hs.conn.master.resume(data)
        self.resumed = reason is None
        if reason is None:
            hs.conn.log = hs.conn.log.bind(session=rw[:4])
            hs.log = hs.conn.log
            hs.log.info("host reconnected", reason="the master took the datum")
        else:
            hs.log.info("reconnection refused", reason=reason)
        s = hs.session
        s.resumed = reason is None
        notice = f"Reconnection refused ({reason}): a new session" if reason else None
        out = s.names_given(rw, ro, notice)  # the session's tokens from now on, then the lines
        hs._update_title()
        if lines_now:
            return out
        return [m.Notify(notice)] if notice else []  # the lines wait for READY

    def after(self, now: float) -> None:
        """After each host message: once the lines are out, ask for the first datum."""
        s = self.hs.session
        if not self.asked and self.held is None and s.host_ready and (s.protocol or 0) >= 4:
            self.asked = True
            self._ask(now)

    def tick(self, now: float) -> None:
        if self.due is not None and now >= self.due:
            self._ask(now)

    def _ask(self, now: float) -> None:
        self.due = now + control.RECONNECT_REFRESH
        self.hs.conn.master.ask_reconnection_data()

    def datum(self, data: str) -> None:
        """The master's datum: on to the host, which keeps the latest."""
        if not self.hs.closing:
            self.hs.send_host(m.SetEnv("tmate_reconnection_data", data))


def connection_lost(chan) -> str | None:
    """How the host's connection failed (reset, timeout), or None when it ended (FIN, SSH
    disconnect, channel closed). `chan` is the host's relay.conn.wire.Wire, which keeps the
    socket error that stopped it (or paramiko's thread does, once paramiko moves the bytes);
    what the session loop itself sees of either is only the end of the channel."""
    lost = getattr(chan, "lost", None)
    saved = lost() if lost is not None else None
    if isinstance(saved, OSError):  # a FIN is no error
        return f"connection lost: {saved.strerror or type(saved).__name__}"
    return None
