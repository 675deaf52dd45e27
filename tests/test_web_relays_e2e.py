"""The web viewer end to end on relays of their own (TLS, -x, -A, --api-keys, --max-viewers and
--metrics, --max-connections and the jail, a host that leaves), with plain clients
(tests.test_web_e2e's WebClient and http_get) and real tmate hosts."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
from wsproto.utilities import RemoteProtocolError

from tests.e2e import Relay, TmateHost, free_port, new_api_key, session_tokens, tmate_available, wait_for
from tests.forward import Forwarder
from tests.test_admission_e2e import lines_since, mark
from tests.test_jail_e2e import assert_jailed, title, uid
from tests.test_proxy import v1
from tests.test_proxy_e2e import _Via
from tests.test_web_e2e import WebClient, http_get
from tests.tls import self_signed

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs the tmate client")


def test_the_page_hears_when_the_host_leaves(keys_dir, fingerprints, tmp_path):
    port = free_port()
    with Relay(keys_dir, extra=["--web-port", str(port), "--web-bind", "127.0.0.1"]) as relay:
        (tmp_path / "authorized_keys").write_text(Path(keys_dir / "ssh_host_ed25519_key.pub").read_text())
        ssh_only = TmateHost(
            tmp_path / "a",
            relay.port,
            fingerprints[0],
            fingerprints[1],
            extra_conf=f'set -g tmate-authorized-keys "{tmp_path / "authorized_keys"}"\n',
        )
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints)
        try:
            ssh_only.start(attached=True)
            ssh_only.wait_ready()
            # A tmate -a session is ssh only: no web lines, and its page says so.
            assert "web session" not in ssh_only.messages() and ssh_only.display("#{tmate_web}") == ""
            rw_a, _ = session_tokens(ssh_only)
            c = WebClient(port, f"/t/{rw_a}", f"http://127.0.0.1:{port}").open()
            c.wait(lambda: c.texts, what="the refusal")
            assert c.texts == [{"error": "This session is ssh only (tmate -a): join it with ssh"}]
            host.start()
            host.wait_ready()
            rw, _ = session_tokens(host)
            v = WebClient(port, f"/t/{rw}", f"http://127.0.0.1:{port}").open()
            v.size(80, 24)
            v.wait(lambda: "0:" in v.screen_text(), what="the first frame")
            host.stop()
            v.wait(lambda: v.texts, what="the end")
            assert v.texts == [{"end": "[server exited]"}] and "[server exited]" in v.screen_text()
            v.wait(lambda: v.close_code is not None, what="the close")
        finally:
            host.stop()
            ssh_only.stop()


def test_tls_handshake_and_viewer_inside_the_jail(keys_dir, fingerprints, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    url = f"https://localhost:{port}"
    extra = [
        "--web-port",
        str(port),
        "--web-bind",
        "127.0.0.1",
        "--web-cert",
        str(cert),
        "--web-key",
        str(key),
    ]
    with Relay(keys_dir, extra=[*extra, "--web-url", url]) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints).start()
        try:
            host.wait_ready()
            host.leave_messages()
            rw, _ = session_tokens(host)
            assert host.display("#{tmate_web}") == f"{url}/t/{rw}"
            client = ssl.create_default_context(cafile=str(cert))
            v = WebClient(port, f"/t/{rw}", url, tls=client).open()
            assert (
                v.status == 101
                and isinstance(v.sock, ssl.SSLSocket)
                and v.sock.version() in ("TLSv1.2", "TLSv1.3")
            )
            v.size(80, 24)
            v.wait(lambda: "0:" in v.screen_text(), what="the first frame over TLS")
            v.keys("echo over-tls-$((6*7))\r")
            v.wait(lambda: "over-tls-42" in v.screen_text(), timeout=15, what="the echo over TLS")
            v.close()
            plain = WebClient(port, f"/t/{rw}", url)  # plain HTTP to a TLS port: refused, logged
            with pytest.raises((ConnectionError, TimeoutError, RemoteProtocolError)):
                plain.open()
            relay.wait_log("event='web connection closed'")
        finally:
            host.stop()


def test_behind_a_proxy_the_client_address_is_the_proxy_headers_or_a_trusted_forwarded_for(
    keys_dir, make_host
):
    port = free_port()
    extra = [
        "-x",
        "--web-port",
        str(port),
        "--web-bind",
        "127.0.0.1",
        "--web-trusted-proxy",
        "198.51.100.0/24",
    ]
    with Relay(keys_dir, extra=extra) as relay:
        origin = f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(
                b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\nGET /static/x HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            assert s.recv(100).startswith(b"HTTP/1.1 404 ")
        assert "ip='198.51.100.7'" in relay.wait_log("path='/static/x'")
        xff = [(b"X-Forwarded-For", b"192.0.2.44, 203.0.113.9")]
        for source, shown in (("198.51.100.7", "203.0.113.9"), ("192.0.2.1", None)):
            seen = sum("status=101" in x for x in relay.lines)
            proxy = f"PROXY TCP4 {source} 127.0.0.1 5000 80\r\n".encode()
            c = WebClient(port, "/t/" + "q" * 25, origin, preamble=proxy, headers=xff).open()
            c.wait(lambda c=c: c.texts, what="the refusal")
            assert c.texts == [{"error": "Invalid or expired session token"}]
            wait_for(
                lambda n=seen: sum("status=101" in x for x in relay.lines) > n, 5, "the upgrade's log line"
            )
            line = [x for x in relay.lines if "status=101" in x][-1]
            assert f"ip='{source}'" in line
            assert (f"forwarded_for='{shown}'" in line) if shown else "forwarded_for" not in line, line
        # A real session: the host's join notice names the forwarded client only from a trusted proxy.
        host_side = Forwarder(relay.port, lambda: v1("203.0.113.7", "192.0.2.1", 40001, 22))
        try:
            host = make_host(_Via(relay, host_side.port), attached=True)
            host.wait_ready()
            _, ro = session_tokens(host)
            for source, named in (("198.51.100.7", "203.0.113.9"), ("192.0.2.1", "192.0.2.1")):
                proxy = f"PROXY TCP4 {source} 127.0.0.1 5000 80\r\n".encode()
                v = WebClient(port, f"/t/{ro}", origin, preamble=proxy, headers=xff).open()
                v.wait(lambda v=v: v.joined is not None, what="joined")
                notice = f"A mate has joined ({named}, read-only, web) -- 1 client currently connected"
                wait_for(lambda n=notice: n in host.messages(), 5, notice)
                v.close()
            taken = relay.wait_log("event='forwarded address taken'")
            assert "ip='203.0.113.9'" in taken and "proxy='198.51.100.7'" in taken, taken
            assert "A mate has joined (198.51.100.7" not in host.messages()
        finally:
            host_side.close()


def test_no_web_lines_under_require_authorized_keys(keys_dir, fingerprints, tmp_path):
    port = free_port()
    with Relay(keys_dir, extra=["-A", "--web-port", str(port), "--web-bind", "127.0.0.1"]) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints).start(attached=True)
        try:
            host.wait_ready()
            wait_for(lambda: "Server requires authorized_keys" in host.messages(), 5, "the -A refusal")
            assert "web session" not in host.messages() and host.display("#{tmate_web}") == ""
            assert host.display("#{tmate_ssh}").startswith("ssh ")
        finally:
            host.stop()


def test_a_named_session_has_named_web_links(keys_dir, fingerprints, tmp_path):
    keys = tmp_path / "api_keys"
    key = new_api_key(keys, "alice")
    port = free_port()
    extra = ["--api-keys", str(keys), "--web-port", str(port), "--web-bind", "127.0.0.1"]
    with Relay(keys_dir, extra=extra) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints)
        host.cmd("-f", str(host.conf), "-n", "pairing", "-r", "pairing-ro", "-k", key, "new-session", "-d")
        try:
            host.wait_ready()
            url = f"http://127.0.0.1:{port}"
            assert host.display("#{tmate_web}") == f"{url}/t/alice/pairing"
            assert host.display("#{tmate_web_ro}") == f"{url}/t/alice/pairing-ro"
            assert http_get(port, "/t/alice/pairing")[0] == 200
            for name, readonly in (("alice/pairing", False), ("alice/pairing-ro", True)):
                v = WebClient(port, f"/t/{name}", url).open()
                v.size(80, 24)
                v.wait(lambda v=v: "0:" in v.screen_text(), what=f"{name}'s first frame")
                assert v.joined == {"readonly": readonly}
                v.close()
        finally:
            host.stop()


def test_web_viewers_count_in_max_viewers_and_in_the_metrics(keys_dir, fingerprints, tmp_path):
    from tests.test_metrics_e2e import value

    port, metrics = free_port(), free_port()
    extra = [
        "--web-port",
        str(port),
        "--web-bind",
        "127.0.0.1",
        "--max-viewers",
        "1",
        "--metrics",
        str(metrics),
    ]
    with Relay(keys_dir, extra=extra) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints).start()
        try:
            host.wait_ready()
            rw, ro = session_tokens(host)
            url = f"http://127.0.0.1:{port}"
            first = WebClient(port, f"/t/{rw}", url).open()
            first.size(80, 24)
            first.wait(lambda: first.joined is not None, what="the first join")
            wait_for(
                lambda: value(metrics, "pymate_viewers_by_role", role="web") == 1, 5, "a web viewer counted"
            )
            assert value(metrics, "pymate_viewers_by_role", role="ssh") == 0
            assert value(metrics, "pymate_viewers") == 1
            second = WebClient(port, f"/t/{ro}", url).open()
            second.wait(lambda: second.texts, what="the refusal")
            assert second.texts == [{"error": "Too many viewers in this session"}]
            assert "role='ro-web'" in relay.wait_log("limit='max-viewers'")
            first.close()
            wait_for(
                lambda: value(metrics, "pymate_viewers_by_role", role="web") == 0, 5, "the web viewer gone"
            )
            relay.wait_log("event='viewer left'")
        finally:
            host.stop()


def test_web_connections_are_jailed_and_admitted_as_ssh_ones(keys_dir, fingerprints, tmp_path):
    """Each web connection process has a jail of its own (tests.test_jail_e2e's checks: its own
    outside uid, seccomp, no_new_privs, no capabilities, its own namespaces), joined or not, and
    the web port counts in --max-connections: the connection beyond it is refused and logged."""
    port = free_port()
    extra = ["--web-port", str(port), "--web-bind", "127.0.0.1", "--max-connections", "4"]
    with Relay(keys_dir, extra=extra) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints).start()
        pending = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            host.wait_ready()
            [host_pid] = relay.children()
            rw, ro = session_tokens(host)
            url = f"http://127.0.0.1:{port}"
            viewers = [WebClient(port, f"/t/{t}", url).open() for t in (rw, ro)]
            for v in viewers:
                v.size(80, 24)
                v.wait(lambda v=v: "0:" in v.screen_text(), what="the first frame")
            pending.sendall(b"GET /t/")  # a request begun: a connection process, not joined
            expected = {f"pymate [{rw[:4]}...] web 127.0.0.1", f"pymate [{ro[3:7]}...] ro-web 127.0.0.1"}
            expected.add("pymate [web] 127.0.0.1")

            def web_processes() -> list[int] | None:
                pids = [x for x in relay.children() if x != host_pid]
                return pids if {title(x) for x in pids} == expected else None

            web = wait_for(web_processes, 5, "three web connection processes")
            uids = {uid(pid) for pid in [host_pid, *web]}
            assert len(uids) == 4, "each connection has its own outside uid"
            for pid in web:
                assert_jailed(pid, relay.proc.pid, uid(pid))
            # The fifth connection (a host and three web connections are in) is refused at once.
            start = mark(relay)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as fifth:
                assert fifth.recv(100) == b""  # closed unanswered
            wait_for(lambda: lines_since(relay, start, "limit='max-connections'"), 5, "the refusal's line")
            [line] = lines_since(relay, start, "event='connection refused'")
            assert "reason='too many connections (limit 4)'" in line, line
            assert all(v.close_code is None for v in viewers) and host.alive()
        finally:
            pending.close()
            host.stop()


def test_a_page_opened_while_its_host_is_away_waits_for_it(keys_dir, make_host, tmp_path):
    """As an ssh viewer (tests/test_reconnect_e2e.py): a page that joins a held session is shown
    the host-away notice, what it types goes nowhere, and it is linked when the host is back. A
    held tmate -a session stays ssh only."""
    port = free_port()
    (tmp_path / "authorized_keys").write_text(Path(keys_dir / "ssh_host_ed25519_key.pub").read_text())
    with Relay(keys_dir, extra=["--web-port", str(port), "--web-bind", "127.0.0.1"]) as relay:
        fwd = Forwarder(relay.port)
        page = None
        try:
            via = SimpleNamespace(port=fwd.port)
            host = make_host(via, attached=True)
            conf = f'set -g tmate-authorized-keys "{tmp_path / "authorized_keys"}"\n'
            ssh_only = make_host(via, extra_conf=conf)
            for h in (host, ssh_only):
                h.wait_ready()
                wait_for(lambda h=h: h.display("#{tmate_reconnection_data}"), 3, "the host's datum")
            host.leave_messages()
            rw, _ = session_tokens(host)
            fwd.blocked = True  # the hosts stay away until the page waits
            fwd.cut()
            wait_for(lambda: relay.log_text().count("event='session held for reconnection'") == 2, 5, "held")
            refused = WebClient(port, f"/t/{session_tokens(ssh_only)[0]}", f"http://127.0.0.1:{port}").open()
            refused.wait(lambda: refused.texts, what="the refusal")
            assert refused.texts == [{"error": "This session is ssh only (tmate -a): join it with ssh"}]
            page = WebClient(port, f"/t/{rw}", f"http://127.0.0.1:{port}").open()
            page.size(80, 24)
            page.wait(lambda: "The host is reconnecting" in page.screen_text(), what="the notice")
            assert page.joined == {"readonly": False} and not page.texts
            page.keys("echo typed-while-away\r")  # goes nowhere
            relay.wait_log("event='viewer waiting for its host'")
            fwd.blocked = False
            relay.wait_log("event='host reconnected'", timeout=8)
            relay.wait_log("event='viewer relinked'")
            page.keys("echo typed-once-back-$((6*7))\r")
            page.wait(lambda: "typed-once-back-42" in page.screen_text(), timeout=5, what="the echo")
            assert session_tokens(host)[0] == rw and page.close_code is None and not page.texts
            assert "typed-while-away" not in host.cmd("capture-pane", "-p", "-J").stdout
        finally:
            if page is not None:
                page.close()
            fwd.close()
