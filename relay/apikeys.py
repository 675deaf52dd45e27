"""`--api-keys FILE` on the command line, and `pymate-relay apikey add USER --api-keys FILE`.

`apikey add` makes a key as tmate.io made them (`tmk-` and 26 letters and digits, from
`secrets`), appends `USER KEY` to the file (created if need be, always left at mode 0600) and
prints the key and the `.tmate.conf` line that uses it. The relay reads the file in its master
(relay.master.names), before forking and on SIGHUP.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import sys

from relay.master.names import API_KEY_PREFIX, API_KEY_RANDOM, MAX_API_KEYS_FILE, MAX_USERNAME, USERNAME_RE

KEY_ALPHABET = string.ascii_letters + string.digits


def api_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-keys",
        dest="api_keys",
        default=None,
        metavar="FILE",
        help="named sessions (tmate -n NAME -k KEY gets the tokens USER/NAME): FILE holds "
        "`USER KEY` lines, made with `pymate-relay apikey add USER --api-keys FILE`; re-read on "
        "SIGHUP (default: off, a host asking for a name is told this relay does not offer them)",
    )


def api_keys_checked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The file must be readable now: the master reads it before it forks anything."""
    if args.api_keys is None:
        return
    try:
        with open(args.api_keys, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        parser.error(f"--api-keys: cannot read {args.api_keys}: {e.strerror}")
    if size > MAX_API_KEYS_FILE:
        parser.error(f"--api-keys: {args.api_keys} is larger than {MAX_API_KEYS_FILE} bytes")
    args.api_keys = os.path.abspath(args.api_keys)  # SIGHUP reads it again, wherever the cwd is


def new_key() -> str:
    return API_KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(API_KEY_RANDOM))


def add(path: str, user: str) -> str:
    """Append a new key for `user` to the file at `path` (0600); the key."""
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file too: it holds secrets
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                prefix = b"" if f.read(1) == b"\n" else b"\n"
        os.write(fd, prefix + f"{user} {key}\n".encode())
    finally:
        os.close(fd)
    return key


def apikey_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="pymate-relay apikey", description="Api keys for named sessions (--api-keys FILE)."
    )
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="make a key for USER and append it to FILE")
    a.add_argument("user", metavar="USER", help=f"1-{MAX_USERNAME} letters, digits, - and _")
    a.add_argument("--api-keys", dest="api_keys", required=True, metavar="FILE")
    args = p.parse_args(argv)
    if not USERNAME_RE.fullmatch(args.user):
        p.error(f"USER must be 1-{MAX_USERNAME} letters, digits, - and _ (starting with a letter or digit)")
    try:
        key = add(args.api_keys, args.user)
    except OSError as e:
        print(f"pymate-relay: error: cannot write {args.api_keys}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"api key for {args.user}: {key}")
    print("in ~/.tmate.conf (then tmate -n NAME names the session USER/NAME):")
    print(f'set -g tmate-api-key "{key}"')
    print("(send SIGHUP to a running relay to load it)")
    return 0
