"""The tmate stream decoder's unpacker buffer (relay.tmate.wire.READ_BUFFER): small at first, so
that a long stream of small messages touches at most that much of it, and grown when a message
needs more."""

from __future__ import annotations

import tracemalloc

from relay.tmate import messages as m
from relay.tmate import wire
from relay.tmate.codec import HostDecoder, encode_host

from .test_protocol import big_snapshot


def test_decoder_buffer_starts_small():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoder = HostDecoder()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert decoder.failed is None
    # msgpack's own default is a 1 MiB buffer, every page of which a session's stream touched
    assert wire.READ_BUFFER <= grown < 2 * wire.READ_BUFFER


def test_many_small_messages_then_one_larger_than_the_buffer():
    decoder = HostDecoder()
    stream = b"".join(encode_host(m.PtyData(0, b"line %d\r\n" % i)) for i in range(20_000))
    got: list = []
    for off in range(0, len(stream), 1000):
        got += decoder.feed(stream[off : off + 1000])
    assert len(got) == 20_000 and got[-1] == m.PtyData(0, b"line 19999\r\n")
    snap = big_snapshot(1200, 100)
    data = encode_host(snap)
    assert len(data) > 2 * wire.READ_BUFFER
    assert decoder.feed(data[:-1]) == [] and decoder.feed(data[-1:]) == [snap]
    assert decoder.feed(encode_host(m.PtyData(1, b"after"))) == [m.PtyData(1, b"after")]
