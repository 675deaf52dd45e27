"""The control channel between the master and one connection process: its one table of messages.

A SOCK_SEQPACKET socketpair: every send is one message, a msgpack array whose first element
names it, at most MAX_CONTROL_MESSAGE bytes. `TO_MASTER` and `TO_CONNECTION` below are the whole
interface; every message is encoded (`encode`) and decoded (`decode`) against them, so a field of
the wrong type or past its bound is refused on either side, and nothing else packs a control
message. The master treats what it receives as untrusted (a connection process parses client
bytes and could be compromised): it dispatches through `TO_MASTER`, and a message that fails the
check (unknown, malformed, from a role that may not send it, or a second instance of a once-only
message) gets the sender killed, and only the sender.

A connection process starts with no role; its first `host` or `join` gives it one.

Connection -> master (`TO_MASTER`):
  log     level, event, fields      any role, repeatable. A log event the master re-emits with
                                    the connection's pid and ip (rate-limited; fields reduced to
                                    32 short scalars, reserved keys dropped; an unknown level is
                                    logged as info; the event is cut to 512 characters).
  auth    user, fingerprint|nil     no role yet, repeatable (paramiko allows a few attempts). May
                                    this SSH user (a token) log in with this key? Answer: auth.
  host    (no fields)               no role yet, once: the connection becomes a session process
                                    (a tmate host). Answer: tokens.
  join    token, pubkey|nil,        no role yet, once: the connection becomes an ssh viewer
          fingerprint|nil,          connection of the session `token` names. Answer: joined (with
          forwarded_for|nil         the link's fd) or no-session. forwarded_for: a web viewer's
                                    address as X-Forwarded-For named it; the master takes it as
                                    the viewer's ip only from a --web-trusted-proxy peer.
  access  [fingerprint]|nil         host only, repeatable: the host is ready, viewers may join
                                    from now on; nil lets any key in, a list (at most
                                    MAX_AUTHORIZED_KEYS) only those keys.
  stats   bytes_in, bytes_out       host only, repeatable (at most every STATS_INTERVAL): the
                                    session's running totals of bytes received and sent (the
                                    master's metrics move by what is new, never back).
  name    rw|nil, ro|nil, key|nil   host only, once, at READY: the names its host asked for
                                    (tmate -n/-r) and its key's SHA-256 (-k). Answer: named.
  resume  data                      host only, once (a second kills it): the host sent RECONNECT
                                    with this datum (at most MAX_RECONNECT_DATA). Answer: resumed.
  rdata   (no fields)               host only, repeatable (the session asks after its lines and
                                    every RECONNECT_REFRESH): a fresh datum. Answer: rdata.
  end     keep                      host only, as it ends: keep, its host was lost (hold the
                                    session); not, it is over. Dying without it also holds.
  hot     kind, [code id]           host (kinds host, host-viewed) or viewer (kind viewer), once
                                    per kind, LEARN_AFTER s after READY, the first viewer's join
                                    or its own join, if forked while the master still wanted that
                                    kind (LEARN_KINDS): the master's code objects it ran (at most
                                    MAX_HOT_CODE; jail/hotcode.py). The master copies what it has
                                    not copied yet from the first ROUNDS reports of each kind.
Master -> connection (`TO_CONNECTION`):
  auth        allowed               to a connection with no role yet, per auth.
  tokens      rw_token, ro_token    to a host, once.
  joined      readonly  + fd        to a viewer, once: its end of the link to the session.
  no-session  (no fields)           to a viewer, once: no joinable session has that token (or the
                                    key is not one the session allows).
  refused     line                  to a connection that asked for the host role (max-sessions)
                                    or to join (max-viewers), once, instead of tokens or joined:
                                    the line to show its client before the connection closes.
  viewer      readonly, ip, pubkey, to a session process, repeatable: a viewer joins on the fd (relinked:
              relinked, since + fd  back after its host reconnected, not announced; since: first joined).
  named       rw, ro, notice|nil    to a host, once, per name: its tokens from now on (USER/NAME
                                    if named) or its random ones and the notice that says why.
  resumed     rw, ro, reason|nil    to a host, per resume: nil, it took over these, its old
                                    tokens; a reason (forged, expired, stale): its new tokens.
  rdata       data                  to a host, per rdata: for SET_ENV tmate_reconnection_data.
  relinked    left, more            to a host that resumed a session, once, at its first access,
                                    after the `viewer`s of those that waited: the addresses (at
                                    most MAX_LEFT; `more` counts the rest) of the viewers its host
                                    had that left while it was away. The host is told of them.
  relink      readonly  + fd        to a viewer, repeatable: its new link (its host is back).
  ended       line                  to a viewer waiting for its host, once: the session is over.
Only the master passes file descriptors. It reads with plain recv(), which discards (and closes)
any that a compromised connection process would try to pass.

`Client` is the connection side: one wrapper per message (`request_tokens`, `join`, `authorize`,
`publish_access`, `report_stats`, `log`, `receive_viewer`, `master_gone`, `resume`,
`ask_reconnection_data`, `end_session`, `viewer_event`); `refused` reaches it as `Refused`.

The package: `table` (the two tables, their bounds, the roles), `codec` (encode, decode, the
socketpair, log fields), `client` (the connection side); every name is re-exported here.

`SSH_BANNER` is here because both sides need it: the master writes it to every connection it
accepts (before forking anything), and the connection process's SSH server must not write it
again (relay.conn.ssh).
"""

from __future__ import annotations

from relay.control.client import (
    Client,
    MasterGone,
    NewViewer,
    ReconnectionData,
    Refused,
    Relinked,
)
from relay.control.codec import (
    decode,
    encode,
    log_fields,
    send_with_fd,
    socketpair,
)
from relay.control.table import (
    ANSWER_TIMEOUT,
    ANY_ROLE,
    FIRST,
    HOST,
    KEY_SHA256,
    LEARN_AFTER,
    LEARN_KINDS,
    LOG_LEVELS,
    MAX_AUTHORIZED_KEYS,
    MAX_CONTROL_MESSAGE,
    MAX_COUNT,
    MAX_FINGERPRINT,
    MAX_HOT_CODE,
    MAX_IP,
    MAX_LEFT,
    MAX_LOG_EVENT,
    MAX_NAME_FIELD,
    MAX_PUBKEY,
    MAX_REASON,
    MAX_RECONNECT_DATA,
    MAX_REFUSAL,
    MAX_USER,
    NO_ROLE,
    RECONNECT_REFRESH,
    RESERVED_LOG_KEYS,
    SSH_BANNER,
    STATS_INTERVAL,
    TO_CONNECTION,
    TO_MASTER,
    VIEWER,
    ControlError,
    Field,
    Message,
    Role,
    count,
    flag,
    is_fingerprint,
    optional_fingerprint,
    optional_text,
    text,
)

__all__ = [
    "SSH_BANNER",
    "MAX_CONTROL_MESSAGE",
    "MAX_AUTHORIZED_KEYS",
    "MAX_USER",
    "MAX_FINGERPRINT",
    "MAX_HOT_CODE",
    "MAX_PUBKEY",
    "MAX_IP",
    "MAX_LEFT",
    "MAX_LOG_EVENT",
    "MAX_REFUSAL",
    "LOG_LEVELS",
    "RESERVED_LOG_KEYS",
    "ANSWER_TIMEOUT",
    "STATS_INTERVAL",
    "MAX_COUNT",
    "MAX_NAME_FIELD",
    "KEY_SHA256",
    "MAX_RECONNECT_DATA",
    "MAX_REASON",
    "RECONNECT_REFRESH",
    "NO_ROLE",
    "HOST",
    "LEARN_AFTER",
    "LEARN_KINDS",
    "VIEWER",
    "Role",
    "ControlError",
    "Field",
    "Message",
    "ANY_ROLE",
    "FIRST",
    "TO_MASTER",
    "TO_CONNECTION",
    "text",
    "optional_text",
    "flag",
    "count",
    "optional_fingerprint",
    "is_fingerprint",
    "encode",
    "decode",
    "socketpair",
    "send_with_fd",
    "log_fields",
    "Client",
    "MasterGone",
    "Refused",
    "NewViewer",
    "ReconnectionData",
    "Relinked",
]
