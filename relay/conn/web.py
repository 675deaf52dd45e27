"""The web viewer connection: one HTTP connection inside its own jailed connection process.

The master accepted it on the web listener (--web-port) and forked this process before reading a
byte, exactly as for SSH, but wrote no banner. Here: the TLS handshake (with --web-cert, the
context made before the fork), then requests (relay.web.http; up to MAX_REQUESTS, the next
within KEEPALIVE_IDLE), each answered with the page, a static asset or an error, until one is
`GET /t/TOKEN` with a WebSocket upgrade from the page's own origin: a viewer. The master joins
it to the session its token names (control `join`; the master knows it came from the web
listener and counts it as a `web` viewer), and from then on relay.conn.web_viewer moves
WebSocket messages to link records and back, as relay.conn.viewer does for an SSH channel. The
session process treats it as any other viewer.

A token that names no session gets the ssh viewer's refusal: the same random delay and the same
line (`Invalid or expired session token`). A `tmate -a` session is ssh-only: the master refuses
the join with a line that says so.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from jail import set_process_title
from relay import control, log
from relay.conn import link
from relay.conn.process import _renumbered
from relay.conn.viewer import EXPIRED_TOKEN, WAIT_MARGIN, wait_refusal
from relay.conn.web_viewer import WebViewer
from relay.web import http, routes, ws
from relay.web.assets import Assets
from relay.web.policy import WebPolicy

READ_CHUNK = 16384
GRACE_BACKSTOP = 0.5  # as relay.conn.process: after the master's grace period, give up alone
MAX_REQUESTS = 8  # requests one connection serves (a page, then its script or style)
KEEPALIVE_IDLE = 1.0  # seconds a served connection waits for its next request (then closes)


@dataclass(frozen=True)
class WebConfig:
    policy: WebPolicy
    assets: Assets
    tls: ssl.SSLContext | None = None  # --web-cert/--web-key, loaded by the master
    grace_period: float = 20.0
    verbose: bool = False
    reconnect_window: float = 600.0  # --reconnect-window: how long a viewer waits for its lost host


class WebConnection:
    def __init__(
        self, sock: socket.socket, ctl: socket.socket, peer_ip: str, cfg: WebConfig, accepted: float
    ):
        self.sock: socket.socket = sock
        self.master = control.Client(ctl)
        self.peer_ip = peer_ip
        self.cfg = cfg
        self.deadline = accepted + cfg.grace_period + GRACE_BACKSTOP
        self.log = log.get_logger()

    def run(self) -> int:
        self.sock = _renumbered(self.sock)
        self.master = control.Client(_renumbered(self.master.sock))
        log.configure_child(self.master.log, self.cfg.verbose)
        self.log = log.get_logger().bind(transport="web")
        set_process_title(f"pymate [web] {self.peer_ip}")
        try:
            if self.cfg.tls is not None:
                self._handshake(self.cfg.tls)
            req, served = self._request(), 0
            while req is not None:
                served += 1
                if not self._serve(req, keep_alive=served < MAX_REQUESTS):
                    break
                req = self._request(req.trailing, KEEPALIVE_IDLE)
        except (http.RequestError, ws.HandshakeError) as e:
            self._answer(http.error(e.status, self.cfg.policy.headers()), e.status, str(e))
        except (OSError, ssl.SSLError, TimeoutError) as e:
            self.log.info("web connection closed", reason=f"{type(e).__name__}: {e}"[:200])
        except Exception as e:  # noqa: BLE001 - the last word of a connection is a logged reason
            self.log.error("connection failed", reason=f"{type(e).__name__}: {e}"[:300])
            return 1
        finally:
            self.sock.close()
        return 0

    # ------------------------------------------------------------------ HTTP
    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no request within the grace period")
        return left

    def _handshake(self, ctx: ssl.SSLContext) -> None:
        self.sock.settimeout(self._left())
        self.sock = ctx.wrap_socket(self.sock, server_side=True)

    def _request(self, leftover: bytes = b"", idle: float | None = None) -> http.Request | None:
        """The next request (its first bytes may be `leftover`); with `idle`, None when none
        begins within that many seconds or the client closes first."""
        reader = http.RequestReader()
        req = reader.feed(leftover) if leftover else None
        begun = bool(leftover)
        while req is None:
            wait = self._left() if begun or idle is None else min(idle, self._left())
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(READ_CHUNK)
            except TimeoutError:
                if not begun and idle is not None:
                    return None
                raise
            if not data and not begun and idle is not None:
                return None
            begun = True
            req = reader.feed(data)
        self.sock.settimeout(None)
        return req

    def _answer(self, data: bytes, status: int, reason: str = "", path: str = "") -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass
        level = self.log.info if status < 400 else self.log.warning
        level("web request", status=status, path=path[:200], **({"reason": reason[:200]} if reason else {}))

    def _serve(self, req: http.Request, keep_alive: bool) -> bool:
        """Answer one request; True when the connection may serve another."""
        route = routes.route(req.target)
        headers = self.cfg.policy.headers()
        if ws.is_upgrade(req):
            if route.kind != routes.PAGE:
                raise ws.HandshakeError(404, "no websocket here")
            self._viewer(req, route.name)
            return False
        if req.method != "GET":
            self._answer(http.error(405, headers), 405, f"method {req.method[:16]}", req.target)
            return False
        keep_alive = keep_alive and not req.has_token("connection", "close")
        asset = None
        if route.kind == routes.PAGE:
            asset = self.cfg.assets.page
        elif route.kind == routes.STATIC:
            asset = self.cfg.assets.files.get(route.name)
        if asset is None:
            self._answer(http.error(404, headers, keep_alive), 404, "not found", req.target)
            return keep_alive
        if asset.cache is not None:
            headers["Cache-Control"] = asset.cache
        body = http.response(200, asset.body, asset.content_type, headers, keep_alive)
        self._answer(body, 200, path=req.target)
        return keep_alive

    # ------------------------------------------------------------------ the viewer
    def _viewer(self, req: http.Request, token: str) -> None:
        asked_at = time.monotonic()
        policy = self.cfg.policy
        reply = ws.accept(req, policy.origin_ok(req.header("origin")), policy.headers())
        client = policy.client_ip(self.peer_ip, req.header("x-forwarded-for"))
        lg = self.log if client == self.peer_ip else self.log.bind(forwarded_for=client)
        sock_ws = ws.WebSocket(req.trailing)
        self.sock.sendall(reply)
        forwarded = {} if client == self.peer_ip else {"forwarded_for": client}
        self.log.info("web request", status=101, path=req.target[:200], **forwarded)
        try:
            joined = self.master.join(token, None, None, forwarded.get("forwarded_for"))
        except control.Refused as e:  # a limit or an ssh-only session; the master logged it
            self.sock.sendall(sock_ws.notice("error", str(e)) + sock_ws.close())
            return
        if joined is None:
            wait_refusal(asked_at)
            line = EXPIRED_TOKEN.decode().strip()
            self.sock.sendall(sock_ws.notice("error", line) + sock_ws.close())
            return
        readonly, fd = joined
        lk = socket.socket(fileno=fd)
        shown = token[3:] if token.startswith("ro-") else token
        role = "ro-web" if readonly else "web"
        set_process_title(f"pymate [{shown[:4]}...] {role} {client}")
        if not readonly:
            lg = lg.bind(session=shown[:4])
        lg.info("viewer joined", readonly=readonly, web=True)
        joined_at = time.monotonic()
        viewer = WebViewer(self.sock, sock_ws, lk, self.master, self.cfg.reconnect_window + WAIT_MARGIN, lg)
        try:
            self.sock.sendall(sock_ws.joined(readonly))  # the page sends no keys when read-only
            reason = viewer.run()
        except ws.WsLimit as e:
            self._send_quietly(sock_ws.close(e.code, str(e)))
            lg.warning("viewer dropped", limit=e.limit, reason=str(e))
            reason = f"limit {e.limit}"
        except (OSError, ssl.SSLError, link.LinkError) as e:
            reason = f"connection lost: {e or type(e).__name__}"
        finally:
            viewer.close()
        lg.info("viewer left", reason=reason, duration=round(time.monotonic() - joined_at, 3))

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass
