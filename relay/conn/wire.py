"""A connection's one channel once it has its role: its bytes moved by the connection's own loop.

paramiko runs a transport thread per connection: it reads every packet, decrypts it, feeds the
channel's buffer and wakes the main thread through a pipe; the main thread's every send builds
a Message, takes three locks and waits on two conditions. For a session printing a line every
50 ms to two viewers, that was a third of its session process's time and two thirds of each
viewer process's (bench/soak.py, py-spy). So paramiko keeps what it does well (the handshake,
the key exchange, auth, the channel's opening and its role's request), and then:

- `Gate` parks paramiko's thread at a packet boundary: the first time it asks for a packet
  after the role was taken (the role's reply is sent by then), it waits instead of reading.
- `Wire` then owns the socket: the connection's select() loop watches it, and the packets are
  opened and sealed here (relay.conn.sshpackets) with the keys and counters paramiko
  negotiated. It handles the messages an established session channel gets: data, window
  adjustments, window-change, keepalives (global requests: refused, as paramiko does), EOF,
  close, disconnect, ignore and debug.
- Anything else (a re-key's KEXINIT, a second channel, ...) goes back to paramiko: the counters
  are copied back, that packet and every later one are handed to the parked thread as if it had
  read them, and from then on the Wire is a plain front for paramiko's channel. Nothing is
  dropped and nothing changes order: data already opened here goes into paramiko's channel
  buffer first.

`Wire` offers the part of paramiko's Channel the loops use (fileno, recv, recv_ready, sendall),
plus `poll()`: after select() saw the socket readable, read what is there; True when recv() has
data or the end to give (a window adjustment alone, or half a packet, gives nothing).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

import paramiko

from relay.conn import sshpackets as sp

READ_CHUNK = 1 << 16
PARK_TIMEOUT = 2.0  # seconds to wait for paramiko's thread to park; else paramiko carries on

_DATA, _ADJUST, _REQUEST, _GLOBAL = 94, 93, 98, 80
_EOF, _CLOSE, _DISCONNECT = 96, 97, 1
_QUIET = {2, 3, 4}  # IGNORE, UNIMPLEMENTED, DEBUG


class Channel(Protocol):
    """What the session and viewer loops use of a role's channel (a Wire; tests' sockets)."""

    mode: str

    def fileno(self) -> int: ...
    def poll(self) -> bool: ...
    def recv(self, n: int) -> bytes: ...
    def recv_ready(self) -> bool: ...
    def sendall(self, data: bytes) -> None: ...


class Gate:
    """Where paramiko's transport thread stops once the connection has its role."""

    def __init__(self, transport: paramiko.Transport, should_park: Callable[[], bool]):
        self.packetizer = transport.packetizer
        self._read = transport.packetizer.read_message
        self.should_park = should_park
        self.parked = threading.Event()
        self._resume = threading.Event()
        self._given: list[tuple[int, paramiko.Message]] = []
        self._spent = False
        transport.packetizer.read_message = self.read_message  # what Transport.run calls

    def read_message(self):
        """paramiko's Packetizer.read_message, on its thread: parks once, when asked to."""
        if not self._spent and self.should_park():
            self._spent = True
            self.parked.set()
            self._resume.wait()
            if not self._given:
                raise EOFError("the connection is ending")
        if self._given:
            return self._given.pop(0)
        return self._read()

    def give_back(self, packets: list[tuple[int, paramiko.Message]], remainder: bytes | None = None) -> None:
        """Resume the thread with these packets first, then the socket (and `remainder`: bytes
        of the next packet already read)."""
        self._given = packets
        if remainder is not None:
            self.packetizer._Packetizer__remainder = remainder
        self._resume.set()

    def release(self) -> None:
        """Let a parked thread end: it reads the end of the connection (for a caller that joins
        paramiko's threads, as the master's warm-up does; a connection process just exits)."""
        self._resume.set()


class Wire:
    """The role's channel: moved here (fast) or by paramiko (after a hand-back, or if the
    thread never parked)."""

    def __init__(self, transport: paramiko.Transport, chan: paramiko.Channel, server: Any, gate: Gate | None):
        self.transport = transport
        self.chan = chan
        self.server = server
        self.gate = gate
        self.data = bytearray()  # opened and not yet read
        self.ended = False  # EOF, close, disconnect or FIN: recv gives b"" once data is read
        self.failure: OSError | None = None  # what ended the connection, when it failed
        self._close_sent = False
        self.fast = False
        self.mode = "paramiko: its thread did not stop"  # for the connection's last log line
        if gate is None or not gate.parked.wait(PARK_TIMEOUT):
            return
        pk = transport.packetizer
        keys_in, keys_out = sp.Keys.load(pk, "in"), sp.Keys.load(pk, "out")
        if keys_in is None or keys_out is None or chan.closed or chan.eof_received:
            self.mode = "paramiko: keys or channel state not handled here"
            gate.give_back([])
            return
        while chan.recv_ready():  # anything paramiko had put in the channel's buffer before
            self.data += chan.in_buffer.read(READ_CHUNK)
        self.opener, self.sealer = sp.Opener(keys_in), sp.Sealer(keys_out)
        self.opener.buf += pk._Packetizer__remainder  # read past the banner, if any
        pk._Packetizer__remainder = b""
        # The socket itself (relay.conn.ssh.QuickAckSocket wraps it), non-blocking while it is
        # moved here; the thread that set its timeout is parked.
        self.sock: socket.socket = getattr(transport.sock, "_sock", transport.sock)
        self._timeout = self.sock.gettimeout()
        self.sock.settimeout(0.0)
        self.quickack = self.sock.family in (socket.AF_INET, socket.AF_INET6)
        self.local_id, self.remote_id = chan.chanid, chan.remote_chanid
        self.out_window = chan.out_window_size
        self.out_packet = max(1, chan.out_max_packet_size - 64)  # as paramiko sizes its data
        self.threshold = chan.in_window_threshold
        self.consumed = chan.in_window_sofar  # read and not yet given back to the peer
        self.room = chan.in_window_size - self.consumed - len(self.data)  # the peer may still send
        self.fast = True
        self.mode = "wire"

    # --- the part of paramiko's Channel the loops use
    def fileno(self) -> int:
        return self.sock.fileno() if self.fast else self.chan.fileno()

    def recv_ready(self) -> bool:
        return bool(self.data) or (not self.fast and self.chan.recv_ready())

    def poll(self) -> bool:
        if not self.fast:
            return True
        if not self.ended:
            self._read()
        return self.recv_ready() or self.ended

    def recv(self, n: int) -> bytes:
        while self.fast and not self.data and not self.ended:
            self._wait()
        if self.data:
            out = bytes(self.data[:n])
            del self.data[:n]
            if self.fast:
                self._consumed(len(out))
            return out
        return b"" if self.fast else self.chan.recv(n)

    def sendall(self, data: bytes) -> None:
        if not self.fast:
            self.chan.sendall(data)
            return
        view = memoryview(data)
        while view:
            if self._close_sent:
                raise OSError("the channel is closed")
            if self.out_window <= 0:
                if self.ended:
                    raise EOFError("the peer left while its window was full")
                self._wait()
                if not self.fast:
                    self.chan.sendall(bytes(view))
                    return
                continue
            n = min(len(view), self.out_window, self.out_packet)
            self._write(sp.channel_data(self.remote_id, bytes(view[:n])))
            self.out_window -= n
            view = view[n:]

    def get_transport(self) -> paramiko.Transport:
        return self.transport

    def lost(self) -> OSError | None:
        """The socket error that ended the connection (a reset, a timeout); None for an end."""
        saved = self.failure if self.fast else getattr(self.transport, "saved_exception", None)
        return saved if isinstance(saved, OSError) else None

    # --- the socket
    def _wait(self) -> None:
        """Block until something arrives and handle it."""
        select.select([self.sock], [], [])
        self._read()

    def _read(self) -> None:
        try:
            if self.quickack:  # as relay.conn.ssh.QuickAckSocket does: not sticky
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            got = self.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            self.failure, self.ended = e, True
            return
        if not got:
            self.ended = True
            return
        try:
            payloads = self.opener.feed(got)
        except sp.PacketError as e:
            raise paramiko.SSHException(f"bad packet from the peer: {e}") from None
        for i, payload in enumerate(payloads):
            if not self._handle(payload):
                self._hand_back(payloads[i:])
                return

    def _write(self, payload: bytes) -> None:
        view = memoryview(self.sealer.seal(payload))
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:  # paramiko's write_all also waits for a peer that reads slowly
                select.select([], [self.sock], [])

    # --- the messages
    def _handle(self, p: bytes) -> bool:
        """Handle one message; False for one that paramiko must handle."""
        kind = p[0]
        if kind == _DATA:
            if sp.u32(p, 1) != self.local_id:
                return False
            data, _ = sp.string(p, 5)
            self.room -= len(data)
            if self.room < 0:
                raise paramiko.SSHException("the peer sent past the channel's window")
            self.data += data
        elif kind == _ADJUST:
            if sp.u32(p, 1) != self.local_id:
                return False
            self.out_window = min(self.out_window + sp.u32(p, 5), 0xFFFFFFFF)
        elif kind == _REQUEST:
            if sp.u32(p, 1) != self.local_id:
                return False
            name, at = sp.string(p, 5)
            want_reply = p[at : at + 1] == b"\x01"
            ok = False
            if name == b"window-change" and len(p) >= at + 17:
                cols, rows, width, height = (sp.u32(p, at + 1 + 4 * i) for i in range(4))
                ok = bool(
                    self.server.check_channel_window_change_request(self.chan, cols, rows, width, height)
                )
            if want_reply:  # every other request after the role is refused (relay.conn.ssh.Server)
                self._write(sp.channel_reply(self.remote_id, ok))
        elif kind == _GLOBAL:
            _, at = sp.string(p, 1)
            if p[at : at + 1] == b"\x01":
                self._write(sp.REQUEST_FAILURE)  # keepalive@openssh.com and the like
        elif kind in (_EOF, _CLOSE):
            if sp.u32(p, 1) != self.local_id:
                return False
            self.ended = True
            if kind == _CLOSE and not self._close_sent:
                self._close_sent = True
                self._write(sp.channel_close(self.remote_id))
        elif kind == _DISCONNECT:
            self.ended = True
        elif kind not in _QUIET:
            return False
        return True

    def _consumed(self, n: int) -> None:
        """Give the peer its window back as paramiko does: once over a tenth of it is read."""
        self.consumed += n
        if self.consumed > self.threshold and not self.ended:
            self._write(sp.window_adjust(self.remote_id, self.consumed))
            self.room += self.consumed
            self.consumed = 0

    def _hand_back(self, payloads: list[bytes]) -> None:
        """paramiko takes the connection back, from the first of `payloads` on."""
        while self.opener._first is not None:  # half a packet, its first block opened: finish it
            self._wait_raw(payloads)
        pk, chan = self.transport.packetizer, self.chan
        keys_in, keys_out = self.opener.keys, self.sealer.keys
        first = (keys_in.seq - len(payloads)) & 0xFFFFFFFF
        packets = []
        for i, payload in enumerate(payloads):
            msg = paramiko.Message(payload[1:])
            msg.seqno = (first + i) & 0xFFFFFFFF
            packets.append((payload[0], msg))
        keys_in.store(pk, "in")
        keys_out.store(pk, "out")
        chan.in_window_sofar = self.consumed
        chan.out_window_size = self.out_window
        if self.data:  # opened here, not read yet: paramiko's channel gives it first, and counts it
            chan.in_buffer.feed(bytes(self.data))
            self.data.clear()
        self.sock.settimeout(self._timeout)
        self.fast = False
        self.mode = f"paramiko: from message {payloads[0][0]}"
        assert self.gate is not None
        self.gate.give_back(packets, bytes(self.opener.buf))

    def _wait_raw(self, payloads: list[bytes]) -> None:
        select.select([self.sock], [], [])
        got = self.sock.recv(READ_CHUNK)
        if not got:
            raise EOFError("connection closed in the middle of a packet")
        payloads += self.opener.feed(got)
