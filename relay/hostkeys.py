"""SSH host key management for the relay.

The relay has two host keys, kept in one directory (``keys`` by default):

* ``ssh_host_rsa_key``     -- RSA, at least ``RSA_BITS`` (3072) bits
* ``ssh_host_ed25519_key`` -- Ed25519

each with a ``.pub`` companion in the usual one-line OpenSSH form.  Private
keys are unencrypted, in the OpenSSH private key format (``-----BEGIN OPENSSH
PRIVATE KEY-----``, what ``ssh-keygen`` writes), mode 0600.

Rules:

* Nothing is ever overwritten.  New files are written to a temporary file
  (mode 0600 from creation) in the same directory and then hard-linked into
  place, which fails instead of clobbering if the name appeared meanwhile
  (e.g. a concurrent ``keygen``).
* Existing keys are validated before anything is created: a file that is not
  a regular file, a private key readable or writable by group/other, a file
  that is not an unencrypted OpenSSH private key, a key of the wrong type for
  its file name, an RSA key outside 3072..16384 bits, or a ``.pub`` that does
  not match its private key is an error (`HostKeyError`) and nothing is
  modified.  There is no grandfathering of smaller RSA keys: move such a key
  aside and run ``keygen`` again.
* A missing ``.pub`` next to a valid private key is recreated (that is not
  overwriting anything).

`load_host_keys` is what the server uses; `keygen_main` is the
``pymate-relay keygen`` command.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import errno
import hashlib
import io
import os
import re
import shlex
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

__all__ = [
    "RSA_KEY_FILE",
    "ED25519_KEY_FILE",
    "RSA_BITS",
    "RSA_MAX_BITS",
    "HostKeyError",
    "HostKeyInfo",
    "ensure_host_keys",
    "load_host_keys",
    "fingerprint",
    "tmate_conf_lines",
    "keygen_main",
]

RSA_KEY_FILE = "ssh_host_rsa_key"
ED25519_KEY_FILE = "ssh_host_ed25519_key"
# Size of newly generated RSA keys, and the minimum accepted for existing ones.
RSA_BITS = 3072
# OpenSSH refuses RSA keys larger than this (SSH_RSA_MAXIMUM_MODULUS_SIZE).
RSA_MAX_BITS = 16384

# Host key files are small (a 16384-bit RSA key is ~12 KiB); refuse to slurp
# anything much bigger.
_MAX_FILE_SIZE = 64 * 1024

_SLOTS = (
    # (file name, key type, paramiko class, cryptography private key class)
    (RSA_KEY_FILE, "rsa", paramiko.RSAKey, rsa.RSAPrivateKey),
    (ED25519_KEY_FILE, "ed25519", paramiko.Ed25519Key, ed25519.Ed25519PrivateKey),
)

_OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_PLAIN_HOST_RE = re.compile(r"[A-Za-z0-9.:-]+")


class HostKeyError(Exception):
    """A host key (or its directory) is unusable; str() is a one-line message
    of the form ``"<path>: <problem>"``."""


@dataclass(frozen=True)
class HostKeyInfo:
    path: str  # path of the private key file (directory as given + file name)
    key_type: str  # "rsa" or "ed25519"
    fingerprint: str  # "SHA256:<43 base64 chars>", as `ssh-keygen -l -E sha256`
    created: bool  # True if this call generated the key
    pub_created: bool = False  # True if this call (re)wrote the missing .pub


# --------------------------------------------------------------------------
# Helpers


def fingerprint(pkey: paramiko.PKey) -> str:
    """OpenSSH SHA256 fingerprint of a key: ``SHA256:`` + unpadded base64."""
    return blob_fingerprint(pkey.asbytes())


def blob_fingerprint(blob: bytes) -> str:
    """OpenSSH SHA256 fingerprint of a public key blob (the base64 part of a .pub line, decoded)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _oserror_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _lexists(path: str) -> bool:
    """Whether a directory entry exists (a dangling symlink counts)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot access ({_oserror_text(exc)})") from None
    return True


def _read_regular_file(path: str) -> tuple[bytes, os.stat_result]:
    """Read a small regular file (symlinks to regular files are followed).

    The type check is done both before opening (so that we never open a FIFO
    or device) and on the open descriptor (so a swap in between is caught).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HostKeyError(f"{path}: dangling symbolic link") from None
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot access ({_oserror_text(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise HostKeyError(f"{path}: is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot read ({_oserror_text(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostKeyError(f"{path}: is {_kind(st.st_mode)}, not a regular file")
        chunks = []
        total = 0
        while total <= _MAX_FILE_SIZE:
            chunk = os.read(fd, _MAX_FILE_SIZE + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot read ({_oserror_text(exc)})") from None
    finally:
        os.close(fd)
    if total > _MAX_FILE_SIZE:
        raise HostKeyError(f"{path}: file is too large to be a host key")
    return b"".join(chunks), st


def _what_is_it(text: str) -> str:
    """A short description of a file that is not an OpenSSH private key."""
    stripped = text.strip()
    if not stripped:
        return "file is empty"
    first = stripped.splitlines()[0].strip()
    if "-----BEGIN CERTIFICATE-----" in text:
        return "not an OpenSSH private key (it is a PEM certificate)"
    if re.search(r"-----BEGIN (RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----", text):
        return "not an OpenSSH private key (it is a PEM private key)"
    if (
        "-----BEGIN PUBLIC KEY-----" in text
        or "-----BEGIN RSA PUBLIC KEY-----" in text
        or "---- BEGIN SSH2 PUBLIC KEY ----" in text
        or re.match(r"(ssh-|ecdsa-|sk-)\S+ AAAA", first)
    ):
        return "not an OpenSSH private key (it is a public key)"
    if first.startswith("PuTTY-User-Key-File"):
        return "not an OpenSSH private key (it is a PuTTY key)"
    return "not an OpenSSH private key"


def _crypto_key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa"
    if isinstance(key, dsa.DSAPrivateKey):
        return "dsa"
    return type(key).__name__


def _parse_private_key(path: str, data: bytes, key_type: str, pkey_class, crypto_class):
    """Parse and sanity-check an OpenSSH private key of the expected type."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise HostKeyError(f"{path}: not an OpenSSH private key (binary data)") from None
    if _OPENSSH_BEGIN not in text:
        problem = _what_is_it(text)
        if "PEM private key" in problem:
            problem += f"; convert it with: ssh-keygen -p -N '' -f {shlex.quote(path)}"
        raise HostKeyError(f"{path}: {problem}")

    try:
        loaded = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for a password-protected key.
        raise HostKeyError(f"{path}: key is passphrase-protected; host keys must be unencrypted") from None
    except UnsupportedAlgorithm:
        raise HostKeyError(f"{path}: unsupported key type (expected {key_type})") from None
    except ValueError:
        raise HostKeyError(f"{path}: corrupt or truncated OpenSSH private key") from None

    if not isinstance(loaded, crypto_class):
        raise HostKeyError(f"{path}: wrong key type: {_crypto_key_type(loaded)} (expected {key_type})")
    if key_type == "rsa":
        bits = loaded.key_size
        if bits < RSA_BITS:
            raise HostKeyError(
                f"{path}: RSA key is {bits} bits, minimum is {RSA_BITS} (move it aside and run keygen again)"
            )
        if bits > RSA_MAX_BITS:
            raise HostKeyError(f"{path}: RSA key is {bits} bits, maximum is {RSA_MAX_BITS}")

    # The server loads keys with paramiko, so make sure paramiko agrees.
    try:
        pkey = pkey_class.from_private_key(io.StringIO(text))
    except Exception as exc:  # paramiko raises assorted exceptions on bad input
        raise HostKeyError(f"{path}: paramiko cannot load the key ({type(exc).__name__})") from None
    expected_pub = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if pkey.asbytes() != base64.b64decode(expected_pub.split()[1]):
        raise HostKeyError(f"{path}: private and public parts of the key do not match")
    # Sign with the private half, verify with the public half alone.
    try:
        sig = pkey.sign_ssh_data(b"pymate-relay host key check")
        sig.rewind()
        public = pkey_class(data=pkey.asbytes())
        ok = public.verify_ssh_sig(b"pymate-relay host key check", sig)
    except Exception:
        ok = False
    if not ok:
        raise HostKeyError(f"{path}: key fails a signing self-test (corrupt key)")
    return pkey


def _load_private_key(path: str, key_type: str, pkey_class, crypto_class) -> paramiko.PKey:
    data, st = _read_regular_file(path)
    perms = stat.S_IMODE(st.st_mode)
    if perms & 0o077:
        raise HostKeyError(f"{path}: permissions {perms:04o} are too open (want 0600)")
    return _parse_private_key(path, data, key_type, pkey_class, crypto_class)


def _pub_line(pkey: paramiko.PKey) -> bytes:
    comment = "pymate-relay@" + (socket.gethostname() or "localhost")
    comment = re.sub(r"\s", "_", comment)
    return f"{pkey.get_name()} {pkey.get_base64()} {comment}\n".encode("ascii")


def _check_pub_file(pub_path: str, key_path: str, pkey: paramiko.PKey) -> None:
    data, _ = _read_regular_file(pub_path)
    try:
        lines = data.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        lines = []
    fields = lines[0].split() if len(lines) == 1 else []
    blob = None
    if len(fields) >= 2:
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            blob = None
    if blob is None:
        raise HostKeyError(f"{pub_path}: not an OpenSSH public key")
    if fields[0] != pkey.get_name() or blob != pkey.asbytes():
        raise HostKeyError(f"{pub_path}: does not match {key_path}")


def _check_directory(directory: str, *, create: bool) -> None:
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not create:
            if isinstance(exc, NotADirectoryError):
                raise HostKeyError(f"{directory}: cannot access (Not a directory)") from None
            raise HostKeyError(
                f"{directory}: directory does not exist "
                f"(run: pymate-relay keygen -k {shlex.quote(directory)})"
            ) from None
        try:
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)
        except FileExistsError:
            pass  # created concurrently; checked below
        except OSError as exc:
            raise HostKeyError(f"{directory}: cannot create directory ({_oserror_text(exc)})") from None
        try:
            st = os.stat(directory)
        except OSError as exc:
            raise HostKeyError(f"{directory}: cannot access ({_oserror_text(exc)})") from None
    except OSError as exc:
        raise HostKeyError(f"{directory}: cannot access ({_oserror_text(exc)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise HostKeyError(f"{directory}: not a directory")


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_into_place(tmp: str, final: str) -> bool:
    """Give the complete temp file its final name without clobbering anything.

    Returns False if ``final`` already exists (nothing is changed then).
    """
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    # The file system has no hard links: fall back to an exclusive create of
    # the final name (not atomic for readers, but still never clobbers).
    with open(tmp, "rb") as src:
        content = src.read()
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(final)
        raise
    os.close(fd)
    return True


def _write_new_file(directory: str, name: str, content: bytes, mode: int) -> bool:
    """Atomically create ``directory/name`` with ``content``; never overwrite.

    Returns False if the file already exists (e.g. a concurrent keygen won).
    """
    final = os.path.join(directory, name)
    try:
        # mkstemp creates the file with O_EXCL and mode 0600.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise HostKeyError(f"{directory}: directory is not writable ({_oserror_text(exc)})") from None
        raise HostKeyError(f"{final}: cannot create ({_oserror_text(exc)})") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # exact, whatever the umask
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        linked = _link_into_place(tmp, final)
    except OSError as exc:
        raise HostKeyError(f"{final}: cannot create ({_oserror_text(exc)})") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    if linked:
        _fsync_dir(directory)
    return linked


def _generate(key_type: str) -> bytes:
    """A new unencrypted private key in the OpenSSH format."""
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------
# Public API


def ensure_host_keys(directory) -> list[HostKeyInfo]:
    """Create whichever host keys (and .pub files) are missing in ``directory``.

    Existing files are validated first; on any problem `HostKeyError` is
    raised and nothing is created or modified.  Returns one `HostKeyInfo` per
    key, RSA first.
    """
    directory = os.fspath(directory)
    _check_directory(directory, create=True)

    # Phase 1: validate everything that exists.
    plan = []  # (slot, path, pkey or None, pub exists)
    for name, key_type, pkey_class, crypto_class in _SLOTS:
        path = os.path.join(directory, name)
        pub_path = path + ".pub"
        pkey = None
        if _lexists(path):
            pkey = _load_private_key(path, key_type, pkey_class, crypto_class)
            pub_exists = _lexists(pub_path)
            if pub_exists:
                _check_pub_file(pub_path, path, pkey)
        elif _lexists(pub_path):
            raise HostKeyError(
                f"{pub_path}: exists without its private key {name} (remove it or restore the private key)"
            )
        else:
            pub_exists = False
        plan.append(((name, key_type, pkey_class, crypto_class), path, pkey, pub_exists))

    # Phase 2: generate (and check) every missing key before writing any.
    generated = {}
    for (name, key_type, pkey_class, crypto_class), path, pkey, _ in plan:
        if pkey is None:
            private = _generate(key_type)
            _parse_private_key(path, private, key_type, pkey_class, crypto_class)
            generated[name] = private

    # Phase 3: write what is missing.
    result = []
    for (name, key_type, pkey_class, crypto_class), path, pkey, pub_exists in plan:
        created = False
        if pkey is None:
            created = _write_new_file(directory, name, generated[name], 0o600)
            # Read back what is now in place; if a concurrent keygen won the
            # race this is its key, reported as existing.
            pkey = _load_private_key(path, key_type, pkey_class, crypto_class)
            pub_exists = _lexists(path + ".pub")
            if pub_exists:
                _check_pub_file(path + ".pub", path, pkey)
        pub_created = False
        if not pub_exists:
            pub_created = _write_new_file(directory, name + ".pub", _pub_line(pkey), 0o644)
            if not pub_created:
                _check_pub_file(path + ".pub", path, pkey)
        result.append(
            HostKeyInfo(
                path=path,
                key_type=key_type,
                fingerprint=fingerprint(pkey),
                created=created,
                pub_created=pub_created,
            )
        )
    return result


def load_host_keys(directory) -> list[paramiko.PKey]:
    """Load the host keys present in ``directory`` (RSA first).

    Raises `HostKeyError` if the directory is missing, holds neither key, or
    any present key (or .pub) fails validation.  Never modifies anything.
    """
    directory = os.fspath(directory)
    _check_directory(directory, create=False)
    keys = []
    for name, key_type, pkey_class, crypto_class in _SLOTS:
        path = os.path.join(directory, name)
        if not _lexists(path):
            continue
        pkey = _load_private_key(path, key_type, pkey_class, crypto_class)
        if _lexists(path + ".pub"):
            _check_pub_file(path + ".pub", path, pkey)
        keys.append(pkey)
    if not keys:
        raise HostKeyError(
            f"{directory}: no host keys found (run: pymate-relay keygen -k {shlex.quote(directory)})"
        )
    return keys


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


# --------------------------------------------------------------------------
# `pymate-relay keygen`


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
            f"{RSA_BITS} bits, and ssh_host_ed25519_key, with .pub files) where "
            "missing, validate existing ones, and print their fingerprints and "
            "the ~/.tmate.conf lines for tmate clients. Existing files are never "
            "overwritten."
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


def keygen_main(argv: list[str]) -> int:
    """``pymate-relay keygen -k DIR [-h HOST] [-p PORT]``; returns the exit code."""
    parser = _keygen_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0)
        return exc.code if isinstance(exc.code, int) else 2

    try:
        infos = ensure_host_keys(args.keys_dir)
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
    out.append("")
    out.append("Add these lines to ~/.tmate.conf on each host:")
    out.extend(tmate_conf_lines(args.host, args.port, by_type["rsa"], by_type["ed25519"]))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return 0
