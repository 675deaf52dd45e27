"""SSH binary packets (RFC 4253 section 6) under keys paramiko negotiated: sans-IO.

paramiko does the handshake, the key exchange and auth; once a connection has its role, the
connection process moves its channel's bytes itself (relay.conn.wire), in its own thread, with
the keys and sequence numbers paramiko's packetizer holds. This module is that packet layer:
`Opener.feed(bytes)` gives the payloads of the whole packets received so far (message number
first), `Sealer.seal(payload)` the bytes of one packet to send. The three framings paramiko
negotiates are covered:

- AEAD (aes128-gcm@openssh.com, aes256-gcm@openssh.com, RFC 5647): the length is clear and is
  the associated data; the 12-byte nonce's last 8 bytes count packets.
- Encrypt-then-MAC (hmac-*-etm@openssh.com): the length is clear; the MAC covers the sequence
  number, the length and the ciphertext.
- The original framing: everything encrypted; the MAC covers the sequence number and the
  plaintext. The first block must be decrypted to learn the length.

The cipher objects are paramiko's own (a CTR or CBC context that keeps its position, or an
AESGCM), so whichever side moves a direction's bytes, the stream stays one stream; the nonce and
the sequence numbers are copied back when paramiko takes a connection back (`Keys.store`).
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass
from typing import Any

MAX_PACKET = 1 << 18  # bytes of one packet's length field at most (RFC 4253 asks for 35000)

_U32 = struct.Struct(">I")
_U32_2 = struct.Struct(">II")
_HEAD = struct.Struct(">IB")


class PacketError(Exception):
    """The peer's bytes are not a packet under these keys (a bad MAC, tag, length or padding)."""


@dataclass
class Keys:
    """One direction's keys and counters, as paramiko's packetizer holds them."""

    engine: Any  # a cryptography CipherContext (.update), or an AESGCM (.encrypt / .decrypt)
    block: int
    aead: bool
    etm: bool
    mac_key: bytes
    mac_digest: Any  # a hashlib constructor (hmac.digest takes it)
    mac_size: int
    iv: bytes | None  # AEAD's nonce
    seq: int
    zero_padding: bool = False  # counter mode: paramiko pads with zeros, else with random bytes

    @classmethod
    def load(cls, packetizer: Any, way: str) -> Keys | None:
        """`way`'s ("in" or "out") keys from a paramiko Packetizer; None when the connection uses
        something this module does not frame (no cipher yet, compression)."""
        get = lambda name: getattr(packetizer, f"_Packetizer__{name}_{way}")  # noqa: E731
        engine = get("block_engine")
        if engine is None or get("compress_engine") is not None:
            return None
        aead = bool(get("aead"))
        if not aead and get("mac_engine") is None:
            return None
        return cls(
            engine=engine,
            block=get("block_size"),
            aead=aead,
            etm=bool(get("etm")),
            mac_key=get("mac_key"),
            mac_digest=get("mac_engine"),
            mac_size=get("mac_size"),
            iv=get("iv"),
            seq=get("sequence_number"),
            zero_padding=bool(getattr(packetizer, "_Packetizer__sdctr_out", False))
            if way == "out"
            else False,
        )

    def store(self, packetizer: Any, way: str) -> None:
        """Give the counters back to paramiko (the engines are shared and already in step)."""
        setattr(packetizer, f"_Packetizer__sequence_number_{way}", self.seq)
        setattr(packetizer, f"_Packetizer__iv_{way}", self.iv)

    def next_iv(self) -> None:
        assert self.iv is not None
        self.iv = self.iv[:4] + ((int.from_bytes(self.iv[4:], "big") + 1) & (2**64 - 1)).to_bytes(8, "big")

    def mac(self, data: bytes) -> bytes:
        return hmac.digest(self.mac_key, data, self.mac_digest)[: self.mac_size]


class Opener:
    """Received bytes in, whole packets' payloads out."""

    def __init__(self, keys: Keys):
        self.keys = keys
        self.buf = bytearray()
        self._first: bytes | None = None  # the original framing: the first block, decrypted

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            payload = self._one()
            if payload is None:
                return out
            out.append(payload)

    def pending(self) -> bool:
        """Bytes of a packet not whole yet."""
        return bool(self.buf) or self._first is not None

    def _one(self) -> bytes | None:
        k, buf = self.keys, self.buf
        if k.aead or k.etm:
            if len(buf) < 4:
                return None
            (length,) = _U32.unpack_from(buf)
            _check_length(length)
            total = 4 + length + k.mac_size
            if len(buf) < total:
                return None
            head = bytes(buf[:4])
            body = bytes(buf[4:total])
            del buf[:total]
            if k.aead:
                assert k.iv is not None
                try:
                    packet = k.engine.decrypt(k.iv, body, head)
                except Exception as e:  # cryptography's InvalidTag
                    raise PacketError("bad AEAD tag") from e
                k.next_iv()
            else:
                cipher, mac = body[:length], body[length:]
                if not hmac.compare_digest(k.mac(_U32_2.pack(k.seq, length) + cipher), mac):
                    raise PacketError("bad MAC")
                packet = k.engine.update(cipher)
        else:
            if self._first is None:
                if len(buf) < k.block:
                    return None
                self._first = k.engine.update(bytes(buf[: k.block]))
                del buf[: k.block]
            first = self._first
            (length,) = _U32.unpack_from(first)
            _check_length(length)
            if (length + 4) % k.block:
                raise PacketError("packet length not a multiple of the cipher block")
            rest = length + 4 - k.block
            if len(buf) < rest + k.mac_size:
                return None
            packet = first[4:] + k.engine.update(bytes(buf[:rest]))
            mac = bytes(buf[rest : rest + k.mac_size])
            del buf[: rest + k.mac_size]
            self._first = None
            if not hmac.compare_digest(k.mac(_U32_2.pack(k.seq, length) + packet), mac):
                raise PacketError("bad MAC")
        k.seq = (k.seq + 1) & 0xFFFFFFFF
        padding = packet[0]
        if padding < 4 or padding + 1 >= len(packet):
            raise PacketError("bad padding")
        return packet[1 : len(packet) - padding]


class Sealer:
    """A payload in, the bytes of its packet out."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def seal(self, payload: bytes) -> bytes:
        k = self.keys
        # Padding of 4 or more bytes makes the encrypted part a multiple of the block: with the
        # length field in the clear (AEAD, EtM) that part starts after it.
        padding = 3 + k.block - ((len(payload) + (4 if k.aead or k.etm else 8)) % k.block)
        head = _HEAD.pack(len(payload) + padding + 1, padding)
        pad = bytes(padding) if k.zero_padding else os.urandom(padding)
        if k.aead:
            assert k.iv is not None
            out = head[:4] + k.engine.encrypt(k.iv, head[4:] + payload + pad, head[:4])
            k.next_iv()
        elif k.etm:
            out = head[:4] + k.engine.update(head[4:] + payload + pad)
            out += k.mac(_U32.pack(k.seq) + out)
        else:
            packet = head + payload + pad
            out = k.engine.update(packet) + k.mac(_U32.pack(k.seq) + packet)
        k.seq = (k.seq + 1) & 0xFFFFFFFF
        return out


def _check_length(length: int) -> None:
    if length > MAX_PACKET or length < 5:
        raise PacketError(f"packet length {length} out of bounds (max {MAX_PACKET})")


# --- the few messages the channel path reads and writes (RFC 4254)
def u32(data: bytes, at: int) -> int:
    return _U32.unpack_from(data, at)[0]


def string(data: bytes, at: int) -> tuple[bytes, int]:
    """The SSH string at `at`, and where the next field starts."""
    n = u32(data, at)
    end = at + 4 + n
    if end > len(data):
        raise PacketError("string runs past the packet")
    return data[at + 4 : end], end


def channel_data(recipient: int, data: bytes) -> bytes:
    return b"\x5e" + _U32_2.pack(recipient, len(data)) + data


def window_adjust(recipient: int, n: int) -> bytes:
    return b"\x5d" + _U32_2.pack(recipient, n)


def channel_reply(recipient: int, ok: bool) -> bytes:
    return (b"\x63" if ok else b"\x64") + _U32.pack(recipient)


def channel_close(recipient: int) -> bytes:
    return b"\x61" + _U32.pack(recipient)


REQUEST_FAILURE = b"\x52"
