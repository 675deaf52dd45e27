"""The master and `join`'s forwarded_for (a web viewer's client, as its trusted proxy named it):
the viewer's ip from then on only when the connection came through the web listener from a
--web-trusted-proxy peer; otherwise ignored and logged why. End to end (a real proxy header, a real
X-Forwarded-For, the host's join notice): tests/test_web_relays_e2e.py."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from relay import control
from relay.control import TO_MASTER
from relay.master import messages
from tests.test_control import Rig


@pytest.fixture
def joinable():
    """A rig whose master trusts 192.0.2.0/28 (its children's peer is 192.0.2.9), and a ready host."""
    r = Rig()
    trusted = (ipaddress.ip_network("192.0.2.0/28"),)
    r.master.cfg = dataclasses.replace(r.master.cfg, web_trusted_proxies=trusted)
    _, hours, host = r.child()
    r.send(hours, host, control.encode(TO_MASTER, "host"))
    _, (rw, _ro), _ = r.answer(hours)
    r.send(hours, host, control.encode(TO_MASTER, "access", None))
    yield r, rw, control.Client(hours)
    r.close()


def _join(r: Rig, rw: str, forwarded_for: str | None, *, web: bool) -> list:
    _, ours, viewer = r.child()
    viewer.web = web
    logs = r.send(ours, viewer, control.encode(TO_MASTER, "join", rw, None, None, forwarded_for))
    assert r.answer(ours)[0] == "joined"
    return logs


@pytest.mark.parametrize(
    ("web", "forwarded_for", "why"),
    [
        (False, "203.0.113.9", "not a web connection"),
        (True, "not-an-address", "not an IP address"),
    ],
)
def test_forwarded_for_is_ignored_and_logged_unless_web_and_an_address(joinable, web, forwarded_for, why):
    r, rw, session = joinable
    logs = _join(r, rw, forwarded_for, web=web)
    [ignored] = [e for e in logs if e["event"] == "forwarded address ignored"]
    assert ignored["reason"] == why and ignored["ip"] == "192.0.2.9"
    new = session.receive_viewer()
    assert isinstance(new, control.NewViewer) and new.ip == "192.0.2.9"  # the host hears the peer


def test_forwarded_for_from_a_peer_that_is_no_trusted_proxy_is_ignored(joinable):
    r, rw, session = joinable
    r.master.cfg = dataclasses.replace(
        r.master.cfg, web_trusted_proxies=(ipaddress.ip_network("2001:db8::/32"),)
    )
    logs = _join(r, rw, "203.0.113.9", web=True)
    assert [e["reason"] for e in logs if e["event"] == "forwarded address ignored"] == [
        "its peer is not a --web-trusted-proxy"
    ]
    new = session.receive_viewer()
    assert isinstance(new, control.NewViewer) and new.ip == "192.0.2.9"


def test_forwarded_for_from_a_trusted_proxy_is_the_viewers_ip(joinable):
    r, rw, session = joinable
    logs = _join(r, rw, "203.0.113.9", web=True)
    [taken] = [e for e in logs if e["event"] == "forwarded address taken"]
    assert (taken["ip"], taken["proxy"]) == ("203.0.113.9", "192.0.2.9")
    linked = [e for e in logs if e["event"] == "viewer linked"]
    assert linked and linked[0]["ip"] == "203.0.113.9"
    new = session.receive_viewer()
    assert isinstance(new, control.NewViewer) and new.ip == "203.0.113.9"
    plain = _join(r, rw, None, web=True)  # no forwarded_for: nothing to decide, the peer's ip
    assert [e for e in plain if "forwarded" in e["event"]] == []
    again = session.receive_viewer()
    assert isinstance(again, control.NewViewer) and again.ip == "192.0.2.9"


def test_trusted_proxy_matches_by_network_and_family():
    nets = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32"))
    assert messages.trusted_proxy("198.51.100.7", nets) and messages.trusted_proxy("2001:db8::1", nets)
    assert not messages.trusted_proxy("192.0.2.1", nets) and not messages.trusted_proxy("x", nets)
    assert not messages.trusted_proxy("198.51.100.7", ())
