"""relay.conn.process.Handshake against a real paramiko client over a socket pair: the key
exchange completes on paramiko's transport thread alone, with no timer thread of its own (the
master's grace period bounds a handshake)."""

from __future__ import annotations

import socket
import threading

import paramiko
import pytest

from relay import control
from relay.conn.process import ConnectionConfig, Handshake


def test_the_key_exchange_completes_without_a_timer_thread(monkeypatch: pytest.MonkeyPatch):
    owners: list[object] = []  # whose read_timer each Timer made runs
    real_timer = threading.Timer

    def recording_timer(interval, function, *args, **kwargs):
        owners.append(getattr(function, "__self__", None))
        return real_timer(interval, function, *args, **kwargs)

    monkeypatch.setattr(threading, "Timer", recording_timer)
    host_key = paramiko.RSAKey.generate(2048)
    hs = Handshake(ConnectionConfig(host_keys=(host_key,), ssh_host="h", ssh_port=22, grace_period=5.0))
    ours, theirs = socket.socketpair()
    client = paramiko.Transport(theirs)
    try:
        ours.sendall((control.SSH_BANNER + "\r\n").encode())  # the master writes our banner
        hs.sock.attach(ours)
        client.start_client(timeout=5)
        hs.wait(5)
        assert client.is_active() and hs.transport.is_active()
        assert client.get_remote_server_key().get_fingerprint() == host_key.get_fingerprint()
        assert hs.transport.packetizer not in owners  # the client's own timer only
        assert client.packetizer in owners  # (the recording works)
    finally:
        client.close()
        hs.transport.close()
        ours.close()
        theirs.close()
