"""Warm-up before the first fork.

Every connection process is forked from the master and shares its memory copy-on-write. What a
library initialises lazily on first use (libghostty's global tables, OpenSSL's algorithm
objects, paramiko's and Python's caches) would otherwise be initialised again, privately, in
every session: measured here, a first terminal in a cold child costs ~3.8 MB, in a warm one
~0.65 MB. So the master runs one complete host session in-process first, through the same code
the children run: an SSH handshake with each host key type and the cipher suite real tmate
clients negotiate, auth, the tmate subsystem, a scripted host stream over the connection's own
packet path (relay.conn.wire), and the terminal engine's
rendering calls. All of it is closed and its threads joined before the master forks anything.
"""

from __future__ import annotations

import socket
import threading

import paramiko

from relay.conn.ssh import HOST_SUBSYSTEM, SSH_BANNER, Server
from relay.conn.wire import Gate, Wire
from relay.tmate import messages as m
from relay.tmate.codec import HostDecoder, RelayDecoder, encode, encode_host
from relay.tmate.session import Session

# What the real clients negotiate with paramiko: Debian's tmate 2.4 (libssh) takes aes256-gcm
# (docs/architecture.md section 6); OpenSSH 9.2, whose chacha20-poly1305 paramiko lacks, takes aes128-ctr
# with hmac-sha2-256-etm.
_KEX = ("curve25519-sha256@libssh.org", "curve25519-sha256")
_SUITES = {
    "tmate": (("aes256-gcm@openssh.com", "aes128-ctr"), None),
    "openssh": (("aes128-ctr",), ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256")),
}
_KEY_TYPES = {"ssh-ed25519": ("ssh-ed25519",), "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def _host_stream() -> bytes:
    msgs: list[m.HostMessage] = [
        m.Header(6, "2.4.0"),
        m.ExecCmd(("bind-key", "C-b", "send-prefix")),
        m.ExecCmd(("set-option", "-g", "status-keys", "emacs")),
        m.Uname("Linux", "warmup", "6", "#1", "x86_64"),
        m.HostReady(),
        m.SyncLayout(
            80, 24, (m.Window(0, "sh", (m.PaneGeom(0, 40, 24, 0, 0), m.PaneGeom(1, 39, 24, 41, 0)), 0),), 0
        ),
        m.WriteCopyMode(0, "Connecting..."),
        m.SyncCopyMode(0, None),
        m.Status("[tmate] ", "warmup"),
        m.PtyData(
            0,
            b"\x1b[?2004h\x1b[1;32muser@host\x1b[0m:~$ ls --color\r\n"
            b"\x1b[01;34mdir\x1b[0m  file \xe6\x97\xa5\xe6\x9c\xac\r\n" * 30,
        ),
        m.PtyData(1, b"\x1b[?1049h\x1b[2J\x1b[H\x1b[38;5;208mtop\x1b[48;2;10;20;30m x\x1b[?1049l"),
        m.SyncCopyMode(0, m.CopyMode(1, 3, 0, 0, None, None)),
        m.Fin(),
    ]
    return b"".join(encode_host(x) for x in msgs)


def _one_session(host_keys, key_type: str, suite: str, closed: list[paramiko.Transport]) -> None:
    """One session; its two transports are closed and put on `closed` (their threads are joined by
    the caller: each takes up to ~0.1 s to notice, so they are waited for all at once)."""
    a, b = socket.socketpair()
    server_t = paramiko.Transport(a)
    client_t = paramiko.Transport(b)
    server = Server()
    gate = Gate(server_t, lambda: server.role is not None)
    try:
        server_t.local_version = SSH_BANNER
        for k in host_keys:
            server_t.add_server_key(k)
        opts = client_t.get_security_options()
        opts.kex = [k for k in _KEX if k in opts.kex] or opts.kex
        ciphers, macs = _SUITES[suite]
        opts.ciphers = [c for c in ciphers if c in opts.ciphers] or opts.ciphers
        if macs:
            opts.digests = [d for d in macs if d in opts.digests] or opts.digests
        opts.key_types = [k for k in _KEY_TYPES[key_type] if k in opts.key_types] or opts.key_types
        done = threading.Event()
        server_t.start_server(event=done, server=server)
        client_t.start_client()
        done.wait(10)
        client_t.auth_none("tmate")
        client_chan = client_t.open_session()
        chan = server_t.accept(10)
        client_chan.invoke_subsystem(HOST_SUBSYSTEM)
        server.role_event.wait(10)
        wire = Wire(server_t, chan, server, gate)

        session = Session(rw_token="w" * 25, ro_token="ro-" + "r" * 25, ssh_host="localhost", ssh_port=22)
        client_chan.sendall(_host_stream())
        decoder, replies = HostDecoder(), RelayDecoder()
        while not session.finished:
            data = wire.recv(65536)
            if not data:
                break
            for msg in decoder.feed(data):
                for out in session.handle(msg):
                    wire.sendall(encode(out))
        client_chan.settimeout(5)
        replies.feed(client_chan.recv(65536))
        for pane in session.panes.values():
            pane.model.screen_vt()
            pane.model.view_vt(2)
            pane.model.rows_text()
        session.close()
    finally:
        client_t.close()
        server_t.close()
        gate.release()
        closed += (client_t, server_t)


def warm_up(host_keys) -> None:
    """Run a full host session in-process for each host key type we serve; every thread they
    started is joined before this returns (the master forks only after)."""
    types = {k.get_name() for k in host_keys}
    closed: list[paramiko.Transport] = []
    try:
        for key_type in ("ssh-ed25519", "ssh-rsa"):
            if key_type in types:
                for suite in _SUITES:
                    _one_session(host_keys, key_type, suite, closed)
    finally:
        for t in closed:
            if t.is_alive():
                t.join(5)
