"""relay.conn.wire over real TCP against paramiko's client: after the role, the connection's own
loop moves the channel's bytes (relay.conn.sshpackets) under each framing paramiko negotiates,
and gives the connection back to paramiko, in order, for what it does not handle (a re-key)."""

from __future__ import annotations

import os
import socket
import threading
import time

import paramiko
import pytest

from relay.conn.ssh import HOST_SUBSYSTEM, Server
from relay.conn.wire import Gate, Wire

SUITES = {
    "aes256-gcm": ("aes256-gcm@openssh.com", None),
    "aes128-ctr etm": ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    "aes256-ctr hmac-sha2-512": ("aes256-ctr", "hmac-sha2-512"),
    "aes128-cbc hmac-sha1": ("aes128-cbc", "hmac-sha1"),
}


class Pair:
    """A paramiko client connected over loopback TCP to a server side set up as the connection
    process sets it up (relay.conn.process): a Gate, the relay's Server, the role, a Wire."""

    def __init__(self, cipher: str, mac: str | None, role: str = "host"):
        listener = socket.create_server(("127.0.0.1", 0))
        self.client_sock = socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
        listener.close()
        self.server_t = paramiko.Transport(server_sock)
        self.server_t.add_server_key(paramiko.Ed25519Key.from_private_key_file(_key()))
        self.server = Server()
        gate = Gate(self.server_t, lambda: self.server.role is not None)
        self.server_t.start_server(event=threading.Event(), server=self.server)
        self.client_t = paramiko.Transport(self.client_sock)
        opts = self.client_t.get_security_options()
        if cipher not in opts.ciphers:
            pytest.skip(f"this paramiko offers no {cipher}")
        opts.ciphers = (cipher,)
        if mac:
            opts.digests = (mac,)
        self.client_t.start_client(timeout=10)
        self.client_t.auth_none("tmate")
        self.chan = self.client_t.open_session()
        server_chan = self.server_t.accept(10)
        if role == "host":
            self.chan.invoke_subsystem(HOST_SUBSYSTEM)
        else:
            self.chan.get_pty(width=100, height=30)
            self.chan.invoke_shell()
        assert self.server.role_event.wait(10) and self.server.role == role
        self.server_sock = server_sock
        self.wire = Wire(self.server_t, server_chan, self.server, gate)

    def recv_all(self, n: int, timeout: float = 20) -> bytes:
        """n bytes through the Wire, driven as the session loop drives it."""
        import select

        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            if not self.wire.recv_ready():
                select.select([self.wire], [], [], 0.2)
            if self.wire.poll():
                got = self.wire.recv(65536)
                if not got:
                    break
                out += got
        return bytes(out)

    def close(self) -> None:
        self.client_t.close()
        self.server_t.close()
        self.client_sock.close()


_KEY: list[str] = []


def _key() -> str:
    if not _KEY:
        import tempfile

        path = os.path.join(tempfile.mkdtemp(), "ed25519")
        os.system(f"ssh-keygen -q -t ed25519 -N '' -f {path}")
        _KEY.append(path)
    return _KEY[0]


def _client_read(chan: paramiko.Channel, n: int) -> bytes:
    chan.settimeout(20)
    out = bytearray()
    while len(out) < n:
        got = chan.recv(65536)
        if not got:
            break
        out += got
    return bytes(out)


@pytest.mark.parametrize("suite", SUITES)
def test_bytes_both_ways_past_both_windows(suite):
    """5 MB each way: more than either side's 2 MB window, so both sides' adjustments count."""
    p = Pair(*SUITES[suite])
    try:
        assert p.wire.fast
        up, down = os.urandom(5 << 20), os.urandom(5 << 20)
        sender = threading.Thread(target=p.chan.sendall, args=(up,))
        sender.start()
        got_up = p.recv_all(len(up))
        sender.join(20)
        assert got_up == up
        reader = threading.Thread(
            target=lambda: p.__dict__.setdefault("down", _client_read(p.chan, len(down)))
        )
        reader.start()
        p.wire.sendall(down)
        reader.join(20)
        assert p.__dict__["down"] == down
        assert p.wire.fast  # nothing needed paramiko
    finally:
        p.close()


def test_window_change_and_keepalive_stay_on_the_wire():
    p = Pair("aes128-ctr", "hmac-sha2-256-etm@openssh.com", role="viewer")
    try:
        assert p.server.size == (100, 30)
        p.chan.resize_pty(width=132, height=43)
        answer: list = []
        asking = threading.Thread(  # waits for the answer, which the Wire gives as the loop reads
            target=lambda: answer.append(p.client_t.global_request("keepalive@openssh.com", wait=True))
        )
        asking.start()
        time.sleep(0.2)
        p.chan.sendall(b"x")
        assert p.recv_all(1) == b"x"
        asking.join(10)
        assert answer == [None]  # refused, and answered
        assert p.server.size == (132, 43)
        assert p.wire.fast
    finally:
        p.close()


@pytest.mark.parametrize("suite", ["aes256-gcm", "aes128-cbc hmac-sha1"])
def test_rekey_goes_back_to_paramiko_in_order(suite):
    """A re-key's KEXINIT is paramiko's: it gets it and what follows; no byte is lost or moved."""
    p = Pair(*SUITES[suite])
    try:
        p.chan.sendall(b"before ")
        assert p.recv_all(7) == b"before "
        p.chan.sendall(b"queued ")  # opened by the Wire before the KEXINIT: read first
        rekey = threading.Thread(target=lambda: (p.client_t.renegotiate_keys(), p.chan.sendall(b"after")))
        rekey.start()  # waits for the new keys, which paramiko's thread makes once given the KEXINIT
        assert p.recv_all(12) == b"queued after"
        rekey.join(10)
        assert not p.wire.fast
        p.wire.sendall(b"and back")
        assert _client_read(p.chan, 8) == b"and back"
    finally:
        p.close()


def test_eof_and_close_end_the_reads():
    p = Pair("aes256-gcm@openssh.com", None)
    try:
        p.chan.sendall(b"last")
        p.chan.shutdown_write()
        assert p.recv_all(10) == b"last"
        assert p.wire.poll() and p.wire.recv(10) == b""
        p.wire.sendall(b"still heard")  # EOF is half a close: the relay may still write
        assert _client_read(p.chan, 11) == b"still heard"
    finally:
        p.close()


def test_a_reset_is_a_failure_and_a_fin_is_not():
    p = Pair("aes256-gcm@openssh.com", None)
    try:
        p.client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        p.client_sock.close()  # linger 0: an RST
        assert p.recv_all(1) == b""
        assert isinstance(p.wire.lost(), OSError)
    finally:
        p.close()
    q = Pair("aes256-gcm@openssh.com", None)
    try:
        q.client_sock.shutdown(socket.SHUT_WR)
        assert q.recv_all(1) == b""
        assert q.wire.lost() is None
    finally:
        q.close()


def test_a_second_channel_goes_to_paramiko_which_refuses_it():
    p = Pair("aes256-gcm@openssh.com", None)
    try:
        outcome: list = []

        def second():
            try:
                p.client_t.open_session(timeout=10)
                outcome.append("opened")
            except paramiko.ChannelException as e:
                outcome.append(e.code)
            p.chan.sendall(b"first still works")

        opener = threading.Thread(target=second)
        opener.start()
        assert p.recv_all(17) == b"first still works"
        opener.join(10)
        assert outcome == [paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED]
        assert p.wire.mode == "paramiko: from message 90"
    finally:
        p.close()
