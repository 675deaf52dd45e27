"""``pymate-relay keygen``: create or check the host keys and the reconnection key, print the host
keys' fingerprints and the ``~/.tmate.conf`` lines that point tmate at this relay."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys

from .errors import HostKeyError
from .files import lexists
from .parse import RSA_BITS
from .store import (
    RECONNECT_KEY_BYTES,
    RECONNECT_KEY_FILE,
    check_reconnect_key,
    ensure_host_keys,
    ensure_reconnect_key,
)

_FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_PLAIN_HOST_RE = re.compile(r"[A-Za-z0-9.:-]+")


def _quote_host(host: str) -> str:
    if not host or any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in host):
        raise ValueError(f"invalid host name: {host!r}")
    if _PLAIN_HOST_RE.fullmatch(host):
        return host
    escaped = host.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def tmate_conf_lines(host: str, port: int, rsa_fp: str, ed25519_fp: str) -> list[str]:
    """The four ``~/.tmate.conf`` lines pointing tmate at this relay."""
    host_word = _quote_host(host)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"invalid port: {port!r}")
    for fp in (rsa_fp, ed25519_fp):
        if not isinstance(fp, str) or not _FINGERPRINT_RE.fullmatch(fp):
            raise ValueError(f"invalid SHA256 fingerprint: {fp!r}")
    return [
        f"set -g tmate-server-host {host_word}",
        f"set -g tmate-server-port {port}",
        f'set -g tmate-server-rsa-fingerprint "{rsa_fp}"',
        f'set -g tmate-server-ed25519-fingerprint "{ed25519_fp}"',
    ]


def _host_arg(value: str) -> str:
    try:
        _quote_host(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid host name: {value!r}") from None
    return value


def _port_arg(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port: {value!r} (want 1-65535)")
    return port


def _default_host() -> str:
    host = socket.gethostname()
    try:
        return _host_arg(host)
    except argparse.ArgumentTypeError:
        return "127.0.0.1"


def _keygen_parser() -> argparse.ArgumentParser:
    default_host = _default_host()
    parser = argparse.ArgumentParser(
        prog="pymate-relay keygen",
        add_help=False,
        description=(
            "Create the relay's SSH host keys (ssh_host_rsa_key, RSA "
            f"{RSA_BITS} bits, and ssh_host_ed25519_key, with .pub files) and the "
            f"reconnection key ({RECONNECT_KEY_FILE}, {RECONNECT_KEY_BYTES} random bytes, "
            "mode 0600) where missing, validate existing ones, and print the host "
            "keys' fingerprints and the ~/.tmate.conf lines for tmate clients. "
            "Existing files are never overwritten."
        ),
    )
    parser.add_argument(
        "-k",
        "--keys-dir",
        metavar="DIR",
        default="keys",
        help="host key directory, created mode 0700 if missing (default: keys)",
    )
    parser.add_argument(
        "-h",
        "--host",
        metavar="HOST",
        type=_host_arg,
        default=default_host,
        help="host name tmate clients connect to, for the printed tmate.conf lines "
        f"(default: this machine's host name, {default_host})",
    )
    parser.add_argument(
        "-p",
        "--port",
        metavar="PORT",
        type=_port_arg,
        default=22,
        help="port tmate clients connect to, for the printed tmate.conf lines (default: 22)",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    return parser


def _check_reconnect_key(directory: str) -> None:
    """HostKeyError if the directory holds a reconnection key that is not one (never read here)."""
    path = os.path.join(directory, RECONNECT_KEY_FILE)
    if os.path.isdir(directory) and lexists(path):
        check_reconnect_key(path)


def keygen_main(argv: list[str]) -> int:
    """``pymate-relay keygen -k DIR [-h HOST] [-p PORT]``; returns the exit code."""
    parser = _keygen_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2

    try:
        _check_reconnect_key(args.keys_dir)  # before anything is written, as the host keys are
        infos = ensure_host_keys(args.keys_dir)
        _, reconnect_created = ensure_reconnect_key(args.keys_dir)
    except HostKeyError as exc:
        print(f"pymate-relay: error: {exc}", file=sys.stderr)
        return 1

    by_type = {}
    out = []
    for info in infos:
        by_type[info.key_type] = info.fingerprint
        status = "created" if info.created else "existing"
        if info.pub_created and not info.created:
            status += f"; wrote missing {os.path.basename(info.path)}.pub"
        out.append(f"{os.path.basename(info.path)}: {info.fingerprint} ({status})")
    status = "created" if reconnect_created else "existing"
    out.append(f"{RECONNECT_KEY_FILE}: the hosts' reconnection key, mode 0600 ({status})")
    out.append("")
    out.append("Add these lines to ~/.tmate.conf on each host:")
    out.extend(tmate_conf_lines(args.host, args.port, by_type["rsa"], by_type["ed25519"]))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return 0
