"""Command line: `pymate-relay keygen ...` and `pymate-relay [serve options]`."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Mapping

from relay.apikeys import api_key_options, api_keys_checked
from relay.cli_web import make_web_connection, web_checked, web_options
from relay.master import proxy
from relay.master.admission import MaxStartups

# jail's own defaults, not imported from it: `pymate-relay keygen` must not load the jail (ctypes);
# tests/test_jail.py checks that they agree.
DEFAULT_SESSION_MEMORY_MB = 1024
MIN_SESSION_MEMORY_MB = 64

USAGE = """\
pymate-relay [-k DIR] [-p PORT] [-b ADDR] [-h HOST] [-q PORT] [-x] [-A] [-l FILE] [-v] [options]
       pymate-relay keygen -k DIR [-h HOST] [-p PORT]
       pymate-relay apikey add USER --api-keys FILE"""

# The environment variables of tmate-ssh-server's docker image, read when the flag is not given
# (a flag always wins): dest -> variables, first set (non-empty) one wins.
ENV_FALLBACKS: dict[str, tuple[str, ...]] = {
    "keys": ("SSH_KEYS_PATH",),
    "host": ("SSH_HOSTNAME",),
    "port": ("SSH_PORT_LISTEN",),
    "ssh_port": ("SSH_PORT_ADVERTISE", "SSH_PORT_ADVERTIZE"),  # the image's entrypoint takes both
    "proxy_protocol": ("USE_PROXY_PROTOCOL",),
}
DEFAULT_KEYS = "keys"
DEFAULT_PORT = 22
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

EPILOG = """\
environment (read when the flag is not given; a flag always wins), as tmate-ssh-server's
docker image names them:
  SSH_KEYS_PATH       -k DIR
  SSH_HOSTNAME        -h HOST
  SSH_PORT_LISTEN     -p PORT
  SSH_PORT_ADVERTISE  -q PORT (SSH_PORT_ADVERTIZE also read)
  USE_PROXY_PROTOCOL  -x when 1, true or yes (0, false, no: off)
and the relay's own:
  PYMATE_LOG_FORMAT   journal, console, json or kv: the log output (default: journald under
                      systemd, coloured lines on a terminal, JSON lines otherwise)

signals: SIGTERM stops the relay (every host is told); SIGHUP re-reads the keys directory and --api-keys.
`pymate-relay keygen --help` makes the host keys."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pymate-relay",
        usage=USAGE,
        add_help=False,
        description="A jailed relay server for tmate terminal sharing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument(
        "-k",
        dest="keys",
        default=None,
        metavar="DIR",
        help="directory with ssh_host_rsa_key / ssh_host_ed25519_key "
        f"(env SSH_KEYS_PATH; default: {DEFAULT_KEYS})",
    )
    p.add_argument(
        "-p",
        dest="port",
        type=int,
        default=None,
        metavar="PORT",
        help=f"port to listen on (env SSH_PORT_LISTEN; default: {DEFAULT_PORT})",
    )
    p.add_argument(
        "-b",
        dest="bind",
        default="0.0.0.0",
        metavar="ADDR",
        help="IPv4 or IPv6 address to listen on; :: serves IPv6 and IPv4 (default: 0.0.0.0)",
    )
    p.add_argument(
        "-h",
        dest="host",
        default=None,
        metavar="HOST",
        help="host name shown in the ssh command lines (env SSH_HOSTNAME; default: the bind "
        "address, or this machine's host name when binding every address)",
    )
    p.add_argument(
        "-q",
        dest="ssh_port",
        type=int,
        default=None,
        metavar="PORT",
        help="port shown in the ssh command lines (env SSH_PORT_ADVERTISE; default: the listening port)",
    )
    p.add_argument(
        "-x",
        "--proxy-protocol",
        dest="proxy_protocol",
        action="store_const",
        const=True,
        default=None,
        help="every connection starts with a PROXY protocol header (v1 or v2, as HAProxy sends it) "
        "whose client address the relay uses in logs, limits and notices; one without a valid "
        "header within --proxy-timeout is refused (limit proxy-header) (env USE_PROXY_PROTOCOL; "
        "default: off)",
    )
    p.add_argument(
        "--proxy-timeout",
        type=float,
        default=proxy.HEADER_TIMEOUT,
        metavar="S",
        help=f"with -x, seconds from accept a connection has to send its whole PROXY header "
        f"(default: {proxy.HEADER_TIMEOUT:g})",
    )
    p.add_argument(
        "-A",
        "--require-authorized-keys",
        dest="require_authorized_keys",
        action="store_true",
        help="every session must restrict its viewers to authorized keys (tmate -a FILE): a host "
        "without them is told so and nobody can join it (default: off)",
    )
    p.add_argument(
        "-l",
        "--log-file",
        dest="log_file",
        default=None,
        metavar="FILE",
        help="also append every log event to FILE as JSON lines (default: none)",
    )
    p.add_argument("-v", dest="verbose", action="store_true", help="log debug events (default: off)")
    p.add_argument(
        "--uid-range",
        default="100000:50000",
        metavar="START:COUNT",
        help="outside uids given to jailed connections, one per live connection "
        "(default: 100000:50000; ignored in rootless mode)",
    )
    p.add_argument(
        "--reconnect-window",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="seconds a session whose host lost its connection waits for it, tokens reserved and "
        "viewers kept (default: 600)",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="seconds a connection has to take a role (default: 20)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="connections served at once; more are refused and logged (default: 1000)",
    )
    p.add_argument(
        "--max-startups",
        default="20:30:60",
        metavar="START:RATE:FULL",
        help="connections that have sent bytes but not taken a role yet, as sshd's MaxStartups: beyond START a new "
        "one is refused with probability RATE%%, rising linearly to 100%% at FULL (default: 20:30:60)",
    )
    p.add_argument(
        "--per-source-max-startups",
        type=int,
        default=10,
        metavar="N",
        help="connections without a role from one address at once (default: 10)",
    )
    p.add_argument(
        "--per-source-rate",
        type=float,
        default=20.0,
        metavar="N",
        help="new connections per second from one address, with bursts of 5*N (default: 20)",
    )
    p.add_argument(
        "--max-sessions", type=int, default=1000, metavar="N", help="host sessions at once (default: 1000)"
    )
    p.add_argument(
        "--max-viewers", type=int, default=64, metavar="N", help="viewers per session (default: 64)"
    )
    p.add_argument(
        "--session-memory",
        type=int,
        default=DEFAULT_SESSION_MEMORY_MB,
        metavar="MB",
        help="hard memory cap (address space) of every jailed connection process; a session that "
        f"reaches it ends with the reason logged (default: {DEFAULT_SESSION_MEMORY_MB})",
    )
    p.add_argument(
        "--metrics",
        default=None,
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics and /healthz (ADDR defaults to "
        "127.0.0.1, [::1] for IPv6; default: off). SIGHUP re-reads the host keys in -k",
    )
    api_key_options(p)
    web_options(p)
    return p


def _port(value: int, parser: argparse.ArgumentParser, what: str) -> int:
    if not 0 < value < 65536:
        parser.error(f"{what} must be between 1 and 65535")
    return value


def _from_env(args: argparse.Namespace, env: Mapping[str, str], parser: argparse.ArgumentParser) -> None:
    """Fill the flags not given from the docker image's environment variables, then defaults."""
    for dest, names in ENV_FALLBACKS.items():
        if getattr(args, dest) is not None:
            continue
        name = next((n for n in names if env.get(n, "").strip()), None)
        if name is None:
            continue
        value = env[name].strip()
        if dest in ("port", "ssh_port"):
            if not value.isdigit():
                parser.error(f"{name} must be a port number, not {value!r}")
            setattr(args, dest, int(value))
        elif dest == "proxy_protocol":
            if value.lower() not in TRUE_WORDS + FALSE_WORDS:
                parser.error(f"{name} must be 1/true/yes or 0/false/no, not {value!r}")
            args.proxy_protocol = value.lower() in TRUE_WORDS
        else:
            setattr(args, dest, value)
    if args.keys is None:
        args.keys = DEFAULT_KEYS
    if args.port is None:
        args.port = DEFAULT_PORT
    args.proxy_protocol = bool(args.proxy_protocol)


def _checked_args(
    argv: list[str], env: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, tuple[int, int]]:
    """The serve options, and the uid range as (start, count); exits with usage when invalid.
    `env` (default: os.environ) gives the fallbacks of the flags not given."""
    parser = _parser()
    args = parser.parse_args(argv)
    _from_env(args, os.environ if env is None else env, parser)
    _port(args.port, parser, "-p")
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        parser.error(f"-b must be an IPv4 or IPv6 address, not {args.bind!r}")
    if args.ssh_port is not None:
        _port(args.ssh_port, parser, "-q")
    try:
        uid_start, uid_count = (int(x) for x in args.uid_range.split(":"))
    except ValueError:
        parser.error("--uid-range must look like START:COUNT")
    if args.reconnect_window <= 0:
        parser.error("--reconnect-window must be positive")
    if args.grace_period <= 0:
        parser.error("--grace-period must be positive")
    for name in ("max_connections", "per_source_max_startups", "max_sessions", "max_viewers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.session_memory < MIN_SESSION_MEMORY_MB:
        parser.error(f"--session-memory must be at least {MIN_SESSION_MEMORY_MB}")
    if not args.per_source_rate > 0:
        parser.error("--per-source-rate must be positive")
    try:
        args.max_startups = MaxStartups.parse(args.max_startups)
    except ValueError as e:
        parser.error(f"--max-startups: {e}")
    if args.metrics is not None:
        from relay.master.metrics import parse_address

        try:
            args.metrics = parse_address(args.metrics)
        except ValueError as e:
            parser.error(f"--metrics: {e}")
    api_keys_checked(args, parser)
    web_checked(args, parser)
    return args, (uid_start, uid_count)


def _make_master(args: argparse.Namespace, host_keys: list, uid_range: tuple[int, int]):
    """The master, handed what its jailed children run and the warm-up: it knows nothing of SSH."""
    from jail import JailConfig
    from relay.conn import metrics_http
    from relay.conn.keyreload import KeyReload
    from relay.conn.process import Connection, ConnectionConfig
    from relay.conn.warmup import warm_up
    from relay.master.server import Master, RelayConfig

    bind_any = args.bind in ("0.0.0.0", "::", "")
    cfg = RelayConfig(
        port=args.port,
        bind=args.bind,
        ssh_host=args.host or (socket.gethostname() if bind_any else args.bind),
        ssh_port=args.ssh_port or args.port,
        grace_period=args.grace_period,
        max_connections=args.max_connections,
        max_startups=args.max_startups,
        per_source_max_startups=args.per_source_max_startups,
        per_source_rate=args.per_source_rate,
        max_sessions=args.max_sessions,
        max_viewers=args.max_viewers,
        metrics=args.metrics,
        proxy_protocol=args.proxy_protocol,
        proxy_timeout=args.proxy_timeout,
        reconnect_window=args.reconnect_window,
        reconnect_key=getattr(args, "reconnect_key", None),  # serve_main's _reconnect_key
        jail=JailConfig(uid_base=uid_range[0], uid_count=uid_range[1], memory_mb=args.session_memory),
        api_keys=args.api_keys,
        web_port=args.web_port,
        web_bind=args.web_bind,
        web_trusted_proxies=args.web_trusted_proxy or (),  # parsed with --web-port (relay.cli_web)
    )
    web_connection, web_url = make_web_connection(args, cfg.ssh_host)
    conn_cfg = ConnectionConfig(
        host_keys=tuple(host_keys),
        ssh_host=cfg.ssh_host,
        ssh_port=cfg.ssh_port,
        grace_period=cfg.grace_period,
        verbose=args.verbose,
        max_viewers=cfg.max_viewers,
        require_authorized_keys=args.require_authorized_keys,
        named_sessions=args.api_keys is not None,
        reconnect_window=args.reconnect_window,
        web_url=web_url,
    )

    keyset = KeyReload(conn_cfg, args.keys)  # SIGHUP swaps the keys new connections get

    def connection(sock: socket.socket, ctl: socket.socket, ip: str, accepted: float):
        return Connection(sock, ctl, ip, keyset.cfg, accepted).run

    return Master(
        cfg,
        connection=connection,
        warm_up=lambda: warm_up(conn_cfg.host_keys),
        reload=keyset.reload,
        metrics_server=metrics_http.serve,
        web_connection=web_connection,
        connection_ahead=lambda: Connection.ahead(keyset.cfg),
    )


def _reconnect_key(directory: str, logger) -> str | None:
    """The reconnection key's file in -k, created if missing; None (a key for this run only)
    where it cannot be. Logged either way."""
    from relay.hostkeys import HostKeyError
    from relay.hostkeys.store import ensure_reconnect_key

    try:
        path, created = ensure_reconnect_key(directory)
    except HostKeyError as e:
        logger.warning("reconnection key unusable", reason=f"{e}; a restart forgets reconnection data")
        return None
    if created:
        logger.info("reconnection key created", path=path)
    return path


def serve_main(argv: list[str]) -> int:
    args, uid_range = _checked_args(argv)
    # Heavy imports happen here, once, in the master: the jailed children cannot import.
    from jail import JailError
    from relay import hostkeys as keys
    from relay import log

    if args.log_file is not None:
        try:
            log.configure_master(args.verbose, args.log_file)
        except OSError as e:
            print(
                f"pymate-relay: error: cannot write the log file {args.log_file}: {e.strerror}",
                file=sys.stderr,
            )
            return 1
    else:
        log.configure_master(args.verbose)
    try:
        host_keys = keys.load_host_keys(args.keys)
    except keys.HostKeyError as e:
        print(f"pymate-relay: error: {e}", file=sys.stderr)
        return 1
    try:
        args.reconnect_key = _reconnect_key(args.keys, log.get_logger())
        master = _make_master(args, host_keys, uid_range)
        from relay.master.activation import inherited_listener

        master.listener = inherited_listener() or master.bind()  # systemd's socket (.socket unit), or ours
    except JailError as e:
        print(f"pymate-relay: error: cannot jail connections: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        hint, shown = "", f"[{args.bind}]" if ":" in args.bind else args.bind
        if e.errno == errno.EACCES and args.port < 1024:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or use -p 2222)"
        print(
            f"pymate-relay: error: cannot listen on {shown}:{args.port}: {e.strerror}{hint}",
            file=sys.stderr,
        )
        return 1
    try:
        master.bind_web()
    except OSError as e:
        print(
            f"pymate-relay: error: cannot listen on {args.web_bind}:{args.web_port}: {e.strerror}",
            file=sys.stderr,
        )
        return 1
    try:
        master.bind_metrics()
    except OSError as e:
        addr, port = args.metrics
        print(
            f"pymate-relay: error: cannot listen for metrics on {addr}:{port}: {e.strerror}", file=sys.stderr
        )
        return 1
    for k in host_keys:
        log.get_logger().info("host key", type=k.get_name(), fingerprint=keys.fingerprint(k))
    try:
        master.serve_forever()
    except JailError as e:  # e.g. --session-memory below what the warmed-up master holds
        print(f"pymate-relay: error: cannot jail connections: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        from relay.hostkeys import keygen_main

        return keygen_main(argv[1:])
    if argv and argv[0] == "apikey":
        from relay.apikeys import apikey_main

        return apikey_main(argv[1:])
    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
