"""The web viewer end to end without a browser: a real relay with --web-port, real tmate hosts,
and plain HTTP / WebSocket clients (sockets and wsproto) as a browser or an attacker would
speak."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from relay.conn.viewer import REFUSAL_DELAY
from tests.e2e import ROOT, Relay, TmateHost, free_port, session_tokens, tmate_available, wait_for

pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs the tmate client")


class WebClient:
    """A WebSocket client on one socket: `open()` then messages; what a page's script does."""

    def __init__(
        self,
        port: int,
        path: str,
        origin: str | None,
        rcvbuf: int | None = None,
        tls: ssl.SSLContext | None = None,
        preamble: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(preamble)  # a PROXY header
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [*(headers or []), *([(b"Origin", origin.encode())] if origin else [])]
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=path, extra_headers=headers)))
        self.status: int | None = None
        self.binary = bytearray()
        self.texts: list[dict] = []
        self.close_code: int | None = None
        self.joined: dict | None = None  # {"readonly": ...} once the relay joined it to a session

    def _pump(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except ConnectionResetError:
            data = b""
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.status = 101
            elif isinstance(event, RejectConnection):
                self.status = event.status_code
            elif isinstance(event, RejectData):
                pass
            elif isinstance(event, BytesMessage):
                self.binary += event.data
            elif isinstance(event, TextMessage):
                message = json.loads(event.data)
                if "joined" in message:
                    self.joined = message["joined"]
                else:
                    self.texts.append(message)
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
        return bool(data)

    def wait(self, predicate, timeout: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: got {bytes(self.binary[-300:])!r} {self.texts}")
            if not self._pump(min(left, 0.2)) and not predicate():
                raise ConnectionError(f"closed while waiting for {what}: {self.texts} {self.close_code}")

    def open(self) -> WebClient:
        self.wait(lambda: self.status is not None, what="the handshake")
        return self

    def send(self, event) -> None:
        self.sock.sendall(self.ws.send(event))

    def keys(self, text: str) -> None:
        self.send(BytesMessage(text.encode()))

    def size(self, cols: int, rows: int) -> None:
        self.send(TextMessage(json.dumps({"cols": cols, "rows": rows})))

    def screen_text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.binary.decode("utf-8", "replace"))

    def close(self) -> None:
        self.sock.close()


def http_get(port: int, path: str, headers: str = "", method: str = "GET") -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{headers}\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, body


class Web:
    def __init__(self, relay: Relay, port: int, host, rw: str, ro: str):
        self.relay, self.port, self.host, self.rw, self.ro = relay, port, host, rw, ro
        self.origin = f"http://127.0.0.1:{port}"

    def client(self, token: str, origin: str | None = "", rcvbuf: int | None = None) -> WebClient:
        return WebClient(self.port, f"/t/{token}", self.origin if origin == "" else origin, rcvbuf)

    def viewer(self, token: str, cols: int = 80, rows: int = 24, rcvbuf: int | None = None) -> WebClient:
        c = self.client(token, rcvbuf=rcvbuf).open()
        assert c.status == 101
        c.size(cols, rows)
        return c


def host_run(host, command: str) -> None:
    host.cmd("send-keys", "-l", command)
    host.cmd("send-keys", "Enter")


def host_screen(host) -> str:
    return host.cmd("capture-pane", "-p", "-J").stdout


@pytest.fixture(scope="module")
def web(keys_dir, fingerprints, tmp_path_factory):
    """A relay with --web-port, and a ready host (attached, message view dismissed)."""
    port = free_port()
    with Relay(keys_dir, extra=["--web-port", str(port), "--web-bind", "127.0.0.1"]) as relay:
        host = TmateHost(tmp_path_factory.mktemp("webhost"), relay.port, *fingerprints)
        host.start(attached=True)
        try:
            host.wait_ready()
            host.leave_messages()
            rw, ro = session_tokens(host)
            yield Web(relay, port, host, rw, ro)
        finally:
            host.stop()


def test_the_hosts_lines_hold_the_web_links_in_tmateios_order(web):
    url = web.origin
    assert web.host.display("#{tmate_web}") == f"{url}/t/{web.rw}"
    assert web.host.display("#{tmate_web_ro}") == f"{url}/t/{web.ro}"
    lines = [
        line.split("] ", 1)[-1]
        for line in web.host.messages().splitlines()
        if "session" in line or "Note" in line
    ]
    assert lines[:5] == [
        "Note: clear your terminal before sharing readonly access",
        f"web session read only: {url}/t/{web.ro}",
        f"ssh session read only: ssh -p{web.relay.port} {web.ro}@127.0.0.1",
        f"web session: {url}/t/{web.rw}",
        f"ssh session: ssh -p{web.relay.port} {web.rw}@127.0.0.1",
    ], lines


def test_pages_assets_and_headers(web):
    status, fields, body = http_get(web.port, f"/t/{web.rw}")
    assert status == 200 and fields["Content-Type"].startswith("text/html")
    assert b"<script>" not in body  # no inline script
    csp = fields["Content-Security-Policy"]
    assert "script-src 'self';" in csp and f"connect-src ws://127.0.0.1:{web.port};" in csp
    assert fields["X-Content-Type-Options"] == "nosniff" and fields["Referrer-Policy"] == "no-referrer"
    # The style inside the page; two scripts named by their hash, cached for good: the socket's
    # opener, then xterm.js, its fit addon and ours.
    assert b".xterm" in body.split(b"<style>", 1)[1].split(b"</style>", 1)[0]
    scripts = re.findall(rb'<script src="(/static/pymate-[0-9a-f]{16}\.js)"></script>', body)
    assert len(scripts) == 2 and body.count(b"<script") == 2, body
    status, fields, opener = http_get(web.port, scripts[0].decode())
    assert status == 200 and b"new WebSocket(" in opener and len(opener) < 2000
    status, fields, js = http_get(web.port, scripts[1].decode())
    assert status == 200 and fields["Content-Type"].startswith("text/javascript") and len(js) > 100_000
    assert b"FitAddon" in js and b"xterm-rows" in js and b"msg.joined" in js and b"sourceMappingURL" not in js
    assert "immutable" in fields["Cache-Control"] and "Content-Security-Policy" in fields
    assert http_get(web.port, "/static/xterm.js")[0] == 404  # nothing from node_modules by its own name
    assert http_get(web.port, "/static/nope.js")[0] == 404
    assert http_get(web.port, "/")[0] == 404
    assert http_get(web.port, "/t/a b")[0] in (400, 404)
    assert http_get(web.port, f"/t/{web.rw}", method="POST", headers="Content-Length: 0\r\n")[0] == 405
    big = http_get(web.port, "/t/x", headers="X-Big: " + "a" * 9000 + "\r\n")
    assert big[0] == 431
    # Request logs carry a token's first characters only.
    web.relay.wait_log("event='web request' transport='web' status=200 path='/t/" + web.rw[:4] + "...'")
    assert web.rw not in web.relay.log_text() and web.ro not in web.relay.log_text()


def test_a_connection_serves_a_page_and_its_files_then_closes_when_idle(web):
    status, _, page = http_get(web.port, f"/t/{web.rw}")
    script = re.search(rb'src="(/static/[^"]+)"', page)
    assert status == 200 and script
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as s:
        host = f"Host: 127.0.0.1:{web.port}\r\n"
        s.sendall(
            f"GET /t/{web.rw} HTTP/1.1\r\n{host}\r\nGET {script.group(1).decode()} HTTP/1.1\r\n{host}\r\n".encode()
        )
        data, t0 = b"", time.monotonic()
        while chunk := s.recv(65536):
            data += chunk
        idle = time.monotonic() - t0
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2 and data.count(b"Connection: keep-alive") == 2
    assert 0.8 < idle < 3, idle  # closed by the relay after KEEPALIVE_IDLE without a third request


def test_bad_upgrades_and_foreign_origins_are_refused(web):
    base = f"Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: {web.origin}\r\n"
    assert (
        http_get(web.port, f"/t/{web.rw}", headers=base + "Sec-WebSocket-Version: 13\r\n")[0] == 400
    )  # no key
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    assert http_get(web.port, f"/t/{web.rw}", headers=base + key + "Sec-WebSocket-Version: 8\r\n")[0] == 426
    assert (
        http_get(web.port, "/static/app.js", headers=base + key + "Sec-WebSocket-Version: 13\r\n")[0] == 404
    )
    for origin in ("http://evil.example.com", None):
        c = web.client(web.rw, origin=origin).open()
        assert c.status == 403, origin
    web.relay.wait_log("origin not allowed: http://evil.example.com")
    assert web.host.alive()


def test_unknown_tokens_get_the_ssh_refusal_after_its_delay(web):
    for token in ("x" * 25, "ro-" + "y" * 25):
        c = web.client(token).open()
        assert c.status == 101
        t0 = time.monotonic()
        c.wait(lambda c=c: c.texts, what="the refusal")
        elapsed = time.monotonic() - t0
        assert c.texts == [{"error": "Invalid or expired session token"}]
        assert REFUSAL_DELAY[0] - 0.005 <= elapsed <= REFUSAL_DELAY[1] + 0.3, elapsed
        c.wait(lambda c=c: c.close_code is not None, what="the close")
        c.close()


def test_a_web_viewer_sees_the_session_and_types_into_it(web):
    v = web.viewer(web.rw, 90, 30)
    try:
        v.wait(lambda: "0:" in v.screen_text(), what="the status line")
        assert v.joined == {"readonly": False}
        v.keys("echo typed-in-$((6*7))-web\r")
        wait_for(lambda: "typed-in-42-web" in host_screen(web.host), 5, "the host to run it")
        v.wait(lambda: "typed-in-42-web" in v.screen_text(), what="the echo on the page")
        # Prefix bindings work: C-b c opens a window, which the status line then lists.
        v.keys("\x02c")
        wait_for(lambda: web.host.display("#{session_windows}") == "2", 5, "a second window")
        v.wait(lambda: "1:" in v.screen_text(), what="the new window in the status line")
        web.relay.wait_log("event='viewer linked'")
        assert "role='web'" in web.relay.wait_log("event='viewer linked'")
        # Its size is the session's while it is the only read-write viewer.
        wait_for(lambda: web.host.display("#{window_width}") == "90", 5, "the session at the page's width")
        v.size(100, 28)
        wait_for(lambda: web.host.display("#{window_width}") == "100", 5, "the session to follow the page")
        web.host.cmd("kill-window")
    finally:
        v.close()


def test_a_readonly_web_viewer_cannot_type(web):
    v = web.viewer(web.ro)
    try:
        v.wait(lambda: "0:" in v.screen_text(), what="the status line")
        assert v.joined == {"readonly": True}  # the page then sends no keys; these are the relay's test
        v.keys("echo should-not-run\r")
        v.keys("\x02c")
        time.sleep(0.5)
        assert "should-not-run" not in host_screen(web.host)
        assert web.host.display("#{session_windows}") == "1"
        assert "role='ro-web'" in web.relay.wait_log("role='ro-web'")
    finally:
        v.close()


def test_oversized_messages_close_that_viewer_only(web):
    v = web.viewer(web.rw)
    other = web.viewer(web.rw)
    try:
        v.wait(lambda: "0:" in v.screen_text(), what="the first frame")
        v.send(BytesMessage(b"x" * (64 * 1024 + 1)))
        v.wait(lambda: v.close_code is not None, what="the close")
        assert v.close_code == 1009
        web.relay.wait_log("limit='web-message-size'")
        host_run(web.host, "echo still-$((40+2))")
        other.wait(lambda: "still-42" in other.screen_text(), what="the other viewer to go on")
    finally:
        v.close()
        other.close()


def test_a_browser_that_never_reads_blocks_nobody(web):
    stalled = web.viewer(web.rw, rcvbuf=4096)  # then never read again
    live = web.viewer(web.rw)
    try:
        live.wait(lambda: "0:" in live.screen_text(), what="the first frame")
        t0 = time.monotonic()
        host_run(web.host, "seq 1 300000; echo SEQ-DONE-$((40+2))")
        live.wait(lambda: "SEQ-DONE-42" in live.screen_text(), timeout=30, what="the live viewer")
        assert time.monotonic() - t0 < 20
        wait_for(lambda: "SEQ-DONE-42" in host_screen(web.host), 5, "the host's own screen")
    finally:
        stalled.close()
        live.close()
    host_run(web.host, "clear")


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


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` and its key, PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


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


def test_behind_a_proxy_the_client_address_is_the_proxy_headers_or_a_trusted_forwarded_for(keys_dir):
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
    out = subprocess.run(
        [sys.executable, "-m", "relay", "apikey", "add", "alice", "--api-keys", str(keys)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = re.search(r"tmk-[a-zA-Z0-9]{26}", out)
    assert key, out
    port = free_port()
    extra = ["--api-keys", str(keys), "--web-port", str(port), "--web-bind", "127.0.0.1"]
    with Relay(keys_dir, extra=extra) as relay:
        host = TmateHost(tmp_path / "h", relay.port, *fingerprints)
        host.cmd(
            "-f", str(host.conf), "-n", "pairing", "-r", "pairing-ro", "-k", key.group(0), "new-session", "-d"
        )
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


def test_a_web_viewer_waits_for_its_host_to_come_back(web):
    v = web.viewer(web.rw)
    try:
        v.wait(lambda: "0:" in v.screen_text(), what="the first frame")
        wait_for(lambda: web.host.display("#{tmate_reconnection_data}"), 3, "the host's datum")
        [pid] = [
            p
            for p in web.relay.children()
            if f"[{web.rw[:4]}...] host".encode() in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        os.kill(pid, signal.SIGKILL)  # the session process dies, its host's TCP connection with it
        v.wait(lambda: "The host is reconnecting" in v.screen_text(), what="the notice on the page")
        host_run(web.host, "echo back-on-the-web-$((6*7))")
        v.wait(lambda: "back-on-the-web-42" in v.screen_text(), timeout=10, what="the host back on the page")
        assert session_tokens(web.host)[0] == web.rw and v.close_code is None and not v.texts
        v.keys("echo typed-after-$((6*7))\r")
        wait_for(lambda: "typed-after-42" in host_screen(web.host), 5, "the page's keys on the new session")
        web.relay.wait_log("event='viewer relinked'")
    finally:
        v.close()
