"""Per-source admission limits, end to end, with connections from test hosts of their own address
(network namespaces, tests/netns.py) rather than faked addresses.

Test host A floods: more idle connections than --per-source-max-startups, then a burst beyond
--per-source-rate; the excess is refused with those limit names and A's address in the log. Test
host B meanwhile hosts a session with a real tmate client and joins it with a real ssh viewer,
both inside B: neither is refused, and the relay logs B's own address for them.
"""

from __future__ import annotations

import re
import select
import socket
import time

import pytest

from tests import netns
from tests.e2e import Relay, session_tokens, tmate_available, wait_for

REASON = netns.unavailable()
pytestmark = [
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
    pytest.mark.skipif(not tmate_available(), reason="tmate is not installed"),
]

MAX_STARTUPS = 3  # --per-source-max-startups
RATE = 4  # --per-source-rate: a burst of 5 * 4 = 20 new connections, then 4 a second
IDLE = 6  # idle connections from A: 3 admitted, 3 refused per-source-max-startups
BURST = 40  # then, with A's 3 still held: 20 - 6 tokens left, so ~14 refused
# per-source-max-startups and the rest per-source-rate


def refusals(relay: Relay, ip: str, limit: str | None = None) -> list[str]:
    """The relay's refusal lines for connections from `ip` (by `limit`, or by any limit)."""
    name = re.escape(limit) if limit else r"[\w-]+"
    pattern = re.compile(rf"limit=['\"]?{name}['\"]?(\s|$)")
    ip_field = re.compile(rf"\bip=['\"]?{re.escape(ip)}['\"]?(\s|$)")
    return [
        line
        for line in relay.log_text().splitlines()
        if "refused" in line and pattern.search(line) and ip_field.search(line)
    ]


def outcome(socks: list[socket.socket], quiet: float = 1.0, cap: float = 5.0) -> list[tuple[bytes, bool]]:
    """Per connection, what the relay sent on it and whether it closed it: read them all until each
    is closed, or nothing happened for `quiet` s (at most `cap` s)."""
    data = {s: b"" for s in socks}
    closed: set[socket.socket] = set()
    start = last = time.monotonic()
    while len(closed) < len(socks) and time.monotonic() - last < quiet and time.monotonic() - start < cap:
        readable, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.05)
        for s in readable:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                data[s] += chunk
            else:
                closed.add(s)
            last = time.monotonic()
    return [(data[s], s in closed) for s in socks]


def test_per_source_limits_refuse_the_flooding_address_only(keys_dir, fingerprints, tmp_path):
    extra = ["-b", "0.0.0.0", "--per-source-max-startups", str(MAX_STARTUPS)]
    extra += ["--per-source-rate", str(RATE), "--grace-period", "30"]
    with netns.netns_host() as a, netns.netns_host() as b, Relay(keys_dir, extra=extra) as relay:
        idle = [a.connect(relay.port) for _ in range(IDLE)]
        burst: list[socket.socket] = []
        host = b.tmate_host(tmp_path / "host", relay.port, *fingerprints)
        viewer = None
        try:
            first = outcome(idle)
            held = [s for s, (data, closed) in zip(idle, first, strict=True) if not closed]
            assert len(held) == MAX_STARTUPS, first
            assert all(data.startswith(b"SSH-2.0-") for data, closed in first if not closed), first
            wait_for(
                lambda: len(refusals(relay, a.address, "per-source-max-startups")) >= IDLE - MAX_STARTUPS,
                5,
                "the per-source-max-startups refusals",
            )

            t0 = time.monotonic()
            burst = [a.connect(relay.port) for _ in range(BURST)]
            assert time.monotonic() - t0 < 1.0, "the burst must be faster than the bucket refills"
            assert all(closed for _, closed in outcome(burst)), "every connection of the burst is refused"
            wait_for(
                lambda: len(refusals(relay, a.address)) == IDLE - MAX_STARTUPS + BURST,
                5,
                "a refusal line for every refused connection from A",
            )
            by_rate = refusals(relay, a.address, "per-source-rate")
            assert len(by_rate) >= BURST - 5 * RATE, by_rate  # at least the burst beyond the bucket
            assert re.search(r"count=['\"]?\d+", by_rate[-1]), by_rate[-1]

            # B is not refused while A is: a real tmate host in B gets ready, a viewer in B joins.
            host.start()
            host.wait_ready(timeout=10)
            host.leave_messages()
            viewer = b.ssh_viewer(tmp_path / "viewer", relay.port, session_tokens(host)[0]).start()
            host.cmd("send-keys", "-l", "echo PER-SOURCE-$((6*7))")
            host.cmd("send-keys", "Enter")
            viewer.wait_screen("PER-SOURCE-42", timeout=10)
            log = relay.log_text()
            assert re.search(rf"host session started.*ip=['\"]?{re.escape(b.address)}\b", log), log
            assert re.search(rf"viewer joined.*ip=['\"]?{re.escape(b.address)}\b", log), log
            assert not refusals(relay, b.address), refusals(relay, b.address)
            assert not any(closed for _, closed in outcome(held, quiet=0.2)), "A's admitted ones are held"
        finally:
            if viewer is not None:
                viewer.stop()
            host.stop()
            for s in idle + burst:
                s.close()
