"""The web viewer end to end without a browser: one real relay with --web-port and a real tmate
host for the module, and plain HTTP / WebSocket clients (sockets and wsproto) as a browser or an
attacker would speak. Tests that need a relay of their own are in tests/test_web_relays_e2e.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import time

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

from relay.conn.viewer import REFUSAL_DELAY
from tests.e2e import Relay, TmateHost, cmdline, free_port, session_tokens, tmate_available, wait_for

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


def test_a_closed_page_stops_counting_toward_the_size(web):
    """A page's size counts while it is open: once it is closed the session grows back to the
    host's own terminal (100 columns)."""
    wait_for(lambda: web.host.display("#{window_width}") == "100", 5, "the host's own width")
    v = web.viewer(web.rw, 60, 20)
    try:
        wait_for(lambda: web.host.display("#{window_width}") == "60", 5, "the session at the page's width")
    finally:
        v.close()
    wait_for(lambda: web.host.display("#{window_width}") == "100", 5, "the session back at the host's width")


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


def test_a_web_viewer_waits_for_its_host_to_come_back(web):
    v = web.viewer(web.rw)
    try:
        v.wait(lambda: "0:" in v.screen_text(), what="the first frame")
        wait_for(lambda: web.host.display("#{tmate_reconnection_data}"), 3, "the host's datum")
        [pid] = [p for p in web.relay.children() if f"[{web.rw[:4]}...] host".encode() in cmdline(p)]
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
