"""The web viewer's sans-IO layer (relay.web): requests, routes, policy, the WebSocket."""

from __future__ import annotations

import json

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from relay.web import http, routes, ws
from relay.web.policy import WebPolicy, origin_of, parse_networks

POLICY = WebPolicy.for_url("https://relay.example.com/", parse_networks("10.0.0.0/8, ::1"))
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade(path="/t/abc", origin="https://relay.example.com", version="13", key=KEY) -> http.Request:
    req = http.RequestReader().feed(
        head(
            f"GET {path} HTTP/1.1",
            "Host: relay.example.com",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            f"Sec-WebSocket-Version: {version}",
            f"Sec-WebSocket-Key: {key}",
            f"Origin: {origin}",
        )
    )
    assert req is not None
    return req


def test_a_request_head_arrives_in_pieces_and_keeps_its_trailing_bytes():
    reader = http.RequestReader()
    data = head("GET /t/abc?x=1 HTTP/1.1", "Host: a", "Upgrade: websocket", "Connection: upgrade") + b"\x81"
    assert reader.feed(data[:10]) is None
    req = reader.feed(data[10:])
    assert req is not None and req.method == "GET" and req.target == "/t/abc"
    assert req.has_token("connection", "Upgrade") and req.trailing == b"\x81"


def test_bad_and_oversized_heads_are_refused_with_their_status():
    with pytest.raises(http.RequestError) as e:
        http.RequestReader().feed(b"NOT HTTP AT ALL\r\n\r\n")
    assert e.value.status == 400
    with pytest.raises(http.RequestError) as e:
        http.RequestReader().feed(b"GET / HTTP/1.1\r\nX: " + b"a" * (http.MAX_REQUEST_HEAD + 10))
    assert e.value.status == 431
    many = head("GET / HTTP/1.1", "Host: a", *(f"X{i}: y" for i in range(http.MAX_HEADERS + 1)))
    with pytest.raises(http.RequestError) as e:
        http.RequestReader().feed(many)
    assert e.value.status == 431
    with pytest.raises(http.RequestError):
        http.RequestReader().feed(b"")  # closed before a request


def test_routes():
    assert routes.route("/t/abcdefghij") == routes.Route(routes.PAGE, "abcdefghij")
    assert routes.route("/t/ro-abcdefghij").name == "ro-abcdefghij"
    assert routes.route("/t/alice/pairing") == routes.Route(routes.PAGE, "alice/pairing")  # a named token
    assert routes.route("/static/app.js") == routes.Route(routes.STATIC, "app.js")
    for path in (
        "/",
        "/t/",
        "/t/ab",
        "/t/a%20b",
        "/t//x",
        "/static/",
        "/static/../x",
        "/etc/passwd",
        "/t/" + "a" * 65,
    ):
        assert routes.route(path).kind == routes.NOT_FOUND, path


def test_every_response_carries_the_security_headers():
    data = http.response(200, b"hi", "text/plain", POLICY.headers())
    text = data.decode()
    assert text.startswith("HTTP/1.1 200 OK\r\n") and text.endswith("\r\n\r\nhi")
    csp = next(line for line in text.split("\r\n") if line.startswith("Content-Security-Policy: "))
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "connect-src wss://relay.example.com;" in csp and "default-src 'none'" in csp
    assert "style-src 'unsafe-inline';" in csp  # inline only: xterm.js writes its own (policy.py)
    assert "X-Content-Type-Options: nosniff" in text and "Referrer-Policy: no-referrer" in text
    assert "Content-Length: 2" in text and "Connection: close" in text


def test_origins_and_links():
    assert origin_of("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"
    assert origin_of("https://relay.example.com:443/") == "https://relay.example.com"
    assert origin_of("http://[::1]:80") == "http://[::1]"
    with pytest.raises(ValueError):
        origin_of("ftp://x")
    assert POLICY.link("ro-abc") == "https://relay.example.com/t/ro-abc"
    assert POLICY.origin_ok("https://relay.example.com")
    assert not POLICY.origin_ok("https://evil.example.com")
    assert not POLICY.origin_ok("http://relay.example.com")
    assert not POLICY.origin_ok(None)


def test_forwarded_for_only_from_a_trusted_proxy():
    assert POLICY.client_ip("10.1.2.3", "203.0.113.7") == "203.0.113.7"
    assert POLICY.client_ip("10.1.2.3", "198.51.100.1, 203.0.113.7, 10.9.9.9") == "203.0.113.7"
    assert POLICY.client_ip("::1", "2001:db8::5") == "2001:db8::5"
    assert POLICY.client_ip("192.0.2.50", "203.0.113.7") == "192.0.2.50"  # not a trusted peer
    assert POLICY.client_ip("10.1.2.3", "not-an-address") == "10.1.2.3"
    assert POLICY.client_ip("10.1.2.3", None) == "10.1.2.3"
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, banana")


def test_the_upgrade_is_checked():
    reply = ws.accept(upgrade(), POLICY.origin_ok("https://relay.example.com"), POLICY.headers())
    assert (
        reply.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in reply
    )
    cases = [
        (upgrade(origin="https://evil.example.com"), 403),
        (upgrade(version="8"), 426),
        (upgrade(key="short"), 400),
    ]
    for req, status in cases:
        with pytest.raises(ws.HandshakeError) as e:
            ws.accept(req, POLICY.origin_ok(req.header("origin")), {})
        assert e.value.status == status
    plain = http.RequestReader().feed(
        head("GET /t/abc HTTP/1.1", "Host: a", "Upgrade: h2c", "Connection: upgrade")
    )
    assert plain is not None and ws.is_upgrade(plain)
    with pytest.raises(ws.HandshakeError) as e:
        ws.accept(plain, True, {})
    assert e.value.status == 400


class Page:
    """The browser's side, in wsproto, past a handshake a wsproto server accepted."""

    def __init__(self) -> None:
        self.conn = WSConnection(ConnectionType.CLIENT)
        server = WSConnection(ConnectionType.SERVER)
        server.receive_data(self.conn.send(Request(host="relay.example.com", target="/t/abc")))
        next(server.events())
        self.events(server.send(AcceptConnection()))

    def send(self, event) -> bytes:
        return self.conn.send(event)

    def events(self, data: bytes) -> list:
        self.conn.receive_data(data)
        return list(self.conn.events())


def opened() -> tuple[Page, ws.WebSocket]:
    """An open page, and our side of its socket."""
    return Page(), ws.WebSocket()


def test_input_size_and_close_messages():
    page, sock = opened()
    got = sock.feed(
        page.send(BytesMessage(b"ls\r")) + page.send(TextMessage('{"cols": 120, "rows": 40}')), 0.0
    )
    assert got == [ws.Input(b"ls\r"), ws.Resize(120, 40)]
    # A message may come in frames; only the whole one counts.
    got = sock.feed(page.send(BytesMessage(b"ab", message_finished=False)), 0.0)
    assert got == []
    assert sock.feed(page.send(BytesMessage(b"c")), 0.0) == [ws.Input(b"abc")]
    # Output and notices reach the page.
    events = page.events(sock.output(b"\x1b[Hhello") + sock.notice("end", "[server exited]") + sock.close())
    assert isinstance(events[0], BytesMessage) and events[0].data == b"\x1b[Hhello"
    assert isinstance(events[1], TextMessage) and json.loads(events[1].data) == {"end": "[server exited]"}
    assert isinstance(events[2], CloseConnection) and events[2].code == ws.NORMAL


def test_the_page_closing_is_answered():
    page, sock = opened()
    got = sock.feed(page.send(CloseConnection(code=1001)), 0.0)
    assert got == [ws.Closed(1001, "")] and sock.closed
    assert isinstance(page.events(sock.to_send())[0], CloseConnection)


@pytest.mark.parametrize(
    "text", ['{"cols": 0, "rows": 10}', '{"cols": 10}', "[1, 2]", "nonsense", '{"cols": true, "rows": 2}']
)
def test_bad_size_messages_break_the_policy(text):
    page, sock = opened()
    with pytest.raises(ws.WsLimit) as e:
        sock.feed(page.send(TextMessage(text)), 0.0)
    assert e.value.code == ws.POLICY


def test_messages_past_the_size_limit_are_refused_before_they_are_whole():
    page, sock = opened()
    frame = page.send(BytesMessage(b"x" * (ws.MAX_MESSAGE + 1)))
    with pytest.raises(ws.WsLimit) as e:
        for i in range(0, len(frame), 4096):  # as the socket delivers it
            sock.feed(frame[i : i + 4096], 0.0)
    assert e.value.code == ws.TOO_BIG and e.value.limit == "web-message-size"
    page, sock = opened()
    with pytest.raises(ws.WsLimit):
        sock.feed(page.send(TextMessage(" " * (ws.MAX_SIZE_TEXT + 1))), 0.0)


def test_input_rate_is_bounded():
    page, sock = opened()
    chunk = b"y" * 60000
    t = 0.0
    for _ in range(ws.INPUT_BURST // len(chunk)):
        assert sock.feed(page.send(BytesMessage(chunk)), t) == [ws.Input(chunk)]
    with pytest.raises(ws.WsLimit) as e:
        sock.feed(page.send(BytesMessage(chunk)), t)
    assert e.value.limit == "web-input-rate"
    budget = ws.InputBudget(rate=100, burst=100)
    assert budget.take(100, 0.0) and not budget.take(1, 0.0) and budget.take(50, 0.5)


# ---------------------------------------------------------------------- flags and metrics
def web_args(argv: list[str]):
    from relay import cli

    return cli._checked_args(["-h", "relay.example.com", *argv], {})[0]


def test_web_flags_and_their_defaults(tmp_path):
    from relay.cli_web import make_web_connection

    a = web_args([])
    assert a.web_port is None and make_web_connection(a, "relay.example.com") == (None, None)
    a = web_args(["--web-port", "8080", "--web-trusted-proxy", "10.0.0.0/8,::1"])
    assert [str(n) for n in a.web_trusted_proxy] == ["10.0.0.0/8", "::1/128"]
    factory, url = make_web_connection(a, "relay.example.com")
    assert callable(factory) and url == "http://relay.example.com:8080"
    a = web_args(["--web-port", "8080", "--web-url", "https://tmate.example.com/"])
    assert make_web_connection(a, "relay.example.com")[1] == "https://tmate.example.com"
    _, url = make_web_connection(web_args(["--web-port", "8443"]), "::1")
    assert url == "http://[::1]:8443"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--web-url", "https://x/"], "need --web-port"),
        (["--web-port", "0"], "--web-port must be between"),
        (["--web-port", "80", "--web-url", "ftp://x"], "--web-url: not an http or https URL"),
        (["--web-port", "80", "--web-trusted-proxy", "banana"], "--web-trusted-proxy"),
        (["--web-port", "80", "--web-key", "k.pem"], "--web-key needs --web-cert"),
    ],
)
def test_bad_web_flags_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit):
        web_args(argv)
    assert message in capsys.readouterr().err


def test_a_missing_certificate_or_xterm_stops_the_relay_with_a_reason(tmp_path, monkeypatch):
    from relay import cli_web
    from relay.web import assets

    a = web_args(["--web-port", "8080", "--web-cert", str(tmp_path / "none.pem")])
    with pytest.raises(SystemExit) as e:
        cli_web.make_web_connection(a, "h")
    assert "none.pem" in str(e.value)
    monkeypatch.setattr(assets, "NODE_MODULES", tmp_path)
    with pytest.raises(SystemExit) as e:
        cli_web.make_web_connection(web_args(["--web-port", "8080"]), "h")
    assert "run `make install`" in str(e.value)


def test_viewers_are_counted_by_role():
    from relay.master.metrics import Metrics, State

    text = Metrics(lambda: State(viewers=3, web_viewers=1)).render().decode()
    assert 'pymate_viewers_by_role{role="ssh"} 3.0' not in text
    assert (
        'pymate_viewers_by_role{role="ssh"} 2.0' in text and 'pymate_viewers_by_role{role="web"} 1.0' in text
    )
    assert "pymate_viewers 3.0" in text


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\x82\x03abc", 1002),  # unmasked: a client must mask
        (b"\x8f\x80\x00\x00\x00\x00", 1002),  # a reserved opcode
        (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # text that is not UTF-8
    ],
)
def test_frames_that_break_the_protocol_are_answered_with_a_close(frame, code):
    page, sock = opened()
    [closed] = sock.feed(frame, 0.0)
    assert isinstance(closed, ws.Closed) and closed.code == code
    reply = page.events(sock.to_send())
    assert isinstance(reply[0], CloseConnection) and reply[0].code == code


def test_a_frame_announcing_more_than_a_message_may_hold_is_refused_as_it_streams():
    _, sock = opened()
    header = b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"\x00\x00\x00\x00"
    with pytest.raises(ws.WsLimit) as e:
        sock.feed(header + b"x" * (ws.MAX_MESSAGE + 1), 0.0)
    assert e.value.code == ws.TOO_BIG
