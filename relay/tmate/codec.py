"""Sans-IO codec for the tmate protocol (protocol version 6, tmate 2.4; older hosts accepted).

Bytes in, typed messages (`relay.tmate.messages`) out, and the reverse. No sockets, no threads, no
clocks. Layouts: docs/architecture.md section 6; the tmate sources are the only specification.
This module is the codec's public face; the parts live in `wire` (framing, limits, field checks),
`host_decoder`, `relay_decoder` and `encoder`.

Wire format: every message is a msgpack array whose first element is the message type. Text,
including pane output, travels as msgpack *str* that may hold invalid UTF-8, so everything is
unpacked with ``raw=True``: pane output stays ``bytes``; names and texts are decoded as UTF-8
with ``errors='replace'``. The *bin* type is accepted wherever a string is expected (the C
server accepts both).

Decoding is strict: a message with the wrong number of fields, a field of the wrong type or out
of range, an unknown type or a message over its size limit raises `ProtocolError`, and the
decoder refuses any further input (the session ends). The C server ignores trailing fields; this
codec does not, since no tmate client sends any.

Header variants accepted (`HostDecoder`, the only place the protocol version matters):
- ``[0, proto]`` for protocol 1 and 2 (tmate 1.8.3-1.8.5): `Header(proto, "1.8.5")`, the version
  the C server assumes for them.
- ``[0, proto, version]`` for protocol 3 to 6 (tmate 1.8.6 up to 2.4).
Other protocol numbers are refused. After a header with protocol 1, SYNC_COPY_MODE carries no
``backing`` field (`CopyMode.backing` is then reported as 1, the C server's default) and its
``sely`` is the raw value the client sent (protocol >= 2 sends it counted from the bottom).

Limits (all module constants, all enforced, each with a clear `ProtocolError.reason`):
- `MAX_MESSAGE_SIZE`: one encoded message, except SNAPSHOT which has `MAX_SNAPSHOT_SIZE` (a
  reconnecting host sends its panes with up to 300 lines of history in one message, which no
  17 KiB limit can hold). An incomplete message is refused as soon as the buffered part of it
  exceeds its limit, so a declared-huge string is never buffered beyond the limit.
- `MAX_PANES` panes in one SYNC_LAYOUT (all windows) or SNAPSHOT, `MAX_WINDOWS` windows.
- `MAX_DIMENSION` for sizes and offsets, `MAX_ID` for pane ids, window indexes and client ids.
- `MAX_ARGV` strings in an EXEC_CMD, `MAX_SNAPSHOT_LINES` lines per snapshot grid,
  `MAX_SNAPSHOT_LINE_CELLS` cells per snapshot line.
String lengths need no limit of their own: the message size bounds them.
"""

from relay.tmate.encoder import encode, encode_host
from relay.tmate.host_decoder import HostDecoder
from relay.tmate.relay_decoder import RelayDecoder
from relay.tmate.wire import (
    LEGACY_CLIENT_VERSION,
    MAX_ARGV,
    MAX_DIMENSION,
    MAX_ID,
    MAX_MESSAGE_SIZE,
    MAX_PANES,
    MAX_SNAPSHOT_LINE_CELLS,
    MAX_SNAPSHOT_LINES,
    MAX_SNAPSHOT_SIZE,
    MAX_WINDOWS,
    MIN_PROTOCOL_VERSION,
    MSGPACK_STR8_VERSION,
    PROTOCOL_VERSION,
    STRING_HEADER_VERSION,
    ProtocolError,
)

__all__ = [
    "ProtocolError",
    "HostDecoder",
    "RelayDecoder",
    "encode",
    "encode_host",
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "STRING_HEADER_VERSION",
    "MSGPACK_STR8_VERSION",
    "LEGACY_CLIENT_VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_SNAPSHOT_SIZE",
    "MAX_PANES",
    "MAX_WINDOWS",
    "MAX_DIMENSION",
    "MAX_ID",
    "MAX_ARGV",
    "MAX_SNAPSHOT_LINES",
    "MAX_SNAPSHOT_LINE_CELLS",
]
