"""The web viewer's command-line flags (--web-*) and what the master's web listener runs: the
assets and the TLS context are loaded here, in the master, before the first fork."""

from __future__ import annotations

import argparse
import socket
import sys


def _port(value: int, parser: argparse.ArgumentParser, what: str) -> int:
    if not 0 < value < 65536:
        parser.error(f"{what} must be between 1 and 65535")
    return value


def web_options(p: argparse.ArgumentParser) -> None:
    """The web viewer's flags (relay.master.web, relay.conn.web)."""
    p.add_argument(
        "--web-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the web viewer (a browser joins URL/t/TOKEN) on this port (default: off)",
    )
    p.add_argument("--web-bind", default="0.0.0.0", metavar="ADDR", help="its address (default: 0.0.0.0)")
    p.add_argument(
        "--web-url",
        default=None,
        metavar="URL",
        help="the web viewer's public URL, in the host's links and checked as the WebSocket's Origin "
        "(default: http://HOST:PORT from -h and --web-port, https with --web-cert)",
    )
    p.add_argument(
        "--web-cert",
        default=None,
        metavar="FILE",
        help="TLS certificate chain (PEM) for the web port (default: plain HTTP)",
    )
    p.add_argument(
        "--web-key",
        default=None,
        metavar="FILE",
        help="its private key (PEM) (default: in the --web-cert file)",
    )
    p.add_argument(
        "--web-trusted-proxy",
        default="",
        metavar="CIDR,...",
        help="peers whose X-Forwarded-For names the web client (default: none)",
    )


def web_checked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from relay.web.policy import origin_of, parse_networks

    if args.web_port is None:
        if args.web_url or args.web_cert or args.web_key or args.web_trusted_proxy:
            parser.error("--web-url, --web-cert, --web-key and --web-trusted-proxy need --web-port")
        return
    _port(args.web_port, parser, "--web-port")
    if args.web_key and not args.web_cert:
        parser.error("--web-key needs --web-cert")
    try:
        args.web_trusted_proxy = parse_networks(args.web_trusted_proxy)
    except ValueError as e:
        parser.error(f"--web-trusted-proxy: {e}")
    if args.web_url is not None:
        try:
            origin_of(args.web_url)
        except ValueError as e:
            parser.error(f"--web-url: {e}")


def make_web_connection(args: argparse.Namespace, ssh_host: str):
    """What a connection of the web listener runs (None without --web-port), and its links'
    URL; the assets and the TLS context are loaded here, before the first fork."""
    if args.web_port is None:
        return None, None
    import ssl

    from relay.conn.web import WebConfig, WebConnection
    from relay.web.assets import Assets, AssetsMissing
    from relay.web.policy import WebPolicy

    tls = None
    try:
        if args.web_cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(args.web_cert, args.web_key)
        assets = Assets.load()
    except ssl.SSLError as e:
        sys.exit(f"pymate-relay: error: --web-cert/--web-key: {e.reason or e}")
    except OSError as e:
        files = " / ".join(f for f in (args.web_cert, args.web_key) if f)
        sys.exit(f"pymate-relay: error: cannot read --web-cert/--web-key {files}: {e.strerror}")
    except AssetsMissing as e:
        sys.exit(f"pymate-relay: error: {e}")
    host = f"[{ssh_host}]" if ":" in ssh_host else ssh_host
    url = args.web_url or f"{'https' if tls else 'http'}://{host}:{args.web_port}"
    policy = WebPolicy.for_url(url, args.web_trusted_proxy)
    cfg = WebConfig(policy, assets, tls, args.grace_period, args.verbose, args.reconnect_window)

    def web_connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
        return WebConnection(sock, ctl, ip, cfg, accepted).run

    return web_connection, cfg.policy.url
