"""systemd socket activation: the listening socket handed over by `pymate-relay.socket`.

The protocol of sd_listen_fds(3): systemd binds the port, starts the service with the socket as
fd 3 and sets LISTEN_PID (the service's pid) and LISTEN_FDS (how many sockets). A master started
so needs no CAP_NET_BIND_SERVICE and no network of its own (systemd/pymate-relay.service runs it
with PrivateNetwork=yes); the accepted connections are the host's.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import MutableMapping

LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited_listener(environ: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The listening TCP socket systemd passed to this process, non-blocking; None when none was
    passed (no LISTEN_PID, or one naming another process). Raises OSError when what was passed is
    not exactly one listening TCP socket."""
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    if not pid.isdigit() or int(pid) != os.getpid():
        return None
    for name in _VARIABLES:  # meant for this process only
        environ.pop(name, None)
    if count != "1":
        raise OSError(
            errno.EINVAL, f"socket activation passed {count or 'no'} sockets; pymate-relay takes exactly one"
        )
    s = socket.socket(fileno=LISTEN_FDS_START)
    if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET, socket.AF_INET6):
        s.detach()
        raise OSError(errno.EINVAL, "socket activation passed a socket that is not TCP")
    if not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        s.detach()
        raise OSError(errno.EINVAL, "socket activation passed a socket that is not listening")
    s.set_inheritable(False)
    s.setblocking(False)
    return s
