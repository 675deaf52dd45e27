"""Host key parsing and validation: what a key file must be, fingerprints, new keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import shlex
import socket
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .errors import HostKeyError
from .files import read_regular_file

if TYPE_CHECKING:
    import paramiko

RSA_KEY_FILE = "ssh_host_rsa_key"
ED25519_KEY_FILE = "ssh_host_ed25519_key"
# Size of newly generated RSA keys, and the minimum accepted for existing ones.
RSA_BITS = 3072
# OpenSSH refuses RSA keys larger than this (SSH_RSA_MAXIMUM_MODULUS_SIZE).
RSA_MAX_BITS = 16384

_OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_SELF_TEST_DATA = b"pymate-relay host key check"


@dataclass(frozen=True)
class KeySlot:
    """One of the relay's host keys: its file name, type and classes."""

    name: str  # file name of the private key
    key_type: str  # "rsa" or "ed25519"
    pkey_class_name: str  # paramiko's class for the key type
    crypto_class: type

    @property
    def pkey_class(self) -> type[paramiko.PKey]:
        # Imported when first needed: `pymate-relay keygen` refusing a bad file starts in a third
        # of the time without paramiko (the server has it loaded anyway).
        import paramiko

        cls: type[paramiko.PKey] = getattr(paramiko, self.pkey_class_name)
        return cls


SLOTS = (
    KeySlot(RSA_KEY_FILE, "rsa", "RSAKey", rsa.RSAPrivateKey),
    KeySlot(ED25519_KEY_FILE, "ed25519", "Ed25519Key", ed25519.Ed25519PrivateKey),
)


def fingerprint(pkey: paramiko.PKey) -> str:
    """OpenSSH SHA256 fingerprint of a key: ``SHA256:`` + unpadded base64."""
    return blob_fingerprint(pkey.asbytes())


def blob_fingerprint(blob: bytes) -> str:
    """OpenSSH SHA256 fingerprint of a public key blob (the base64 part of a .pub line, decoded)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def b64_fingerprint(b64: str) -> str | None:
    """OpenSSH SHA256 fingerprint of a public key blob in base64 (as a .pub line or tmate sends
    it); None when it is not base64."""
    try:
        return blob_fingerprint(base64.b64decode(b64, validate=True))
    except (binascii.Error, ValueError):
        return None


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


def _openssh_text(path: str, data: bytes) -> str:
    """The file as text, if it is an OpenSSH private key at all."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise HostKeyError(f"{path}: not an OpenSSH private key (binary data)") from None
    if _OPENSSH_BEGIN not in text:
        problem = _what_is_it(text)
        if "PEM private key" in problem:
            problem += f"; convert it with: ssh-keygen -p -N '' -f {shlex.quote(path)}"
        raise HostKeyError(f"{path}: {problem}")
    return text


def _crypto_key(path: str, data: bytes, slot: KeySlot) -> PrivateKeyTypes:
    """The key as cryptography loads it, of the slot's type and (RSA) an accepted size."""
    key_type = slot.key_type
    try:
        loaded = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for a password-protected key.
        raise HostKeyError(f"{path}: key is passphrase-protected; host keys must be unencrypted") from None
    except UnsupportedAlgorithm:
        raise HostKeyError(f"{path}: unsupported key type (expected {key_type})") from None
    except ValueError:
        raise HostKeyError(f"{path}: corrupt or truncated OpenSSH private key") from None

    if not isinstance(loaded, slot.crypto_class):
        raise HostKeyError(f"{path}: wrong key type: {_crypto_key_type(loaded)} (expected {key_type})")
    if isinstance(loaded, rsa.RSAPrivateKey):
        bits = loaded.key_size
        if bits < RSA_BITS:
            raise HostKeyError(
                f"{path}: RSA key is {bits} bits, minimum is {RSA_BITS} (move it aside and run keygen again)"
            )
        if bits > RSA_MAX_BITS:
            raise HostKeyError(f"{path}: RSA key is {bits} bits, maximum is {RSA_MAX_BITS}")
    return loaded


def _signs_and_verifies(pkey: paramiko.PKey, pkey_class: type[paramiko.PKey]) -> bool:
    """Sign with the private half, verify with the public half alone."""
    try:
        sig = pkey.sign_ssh_data(_SELF_TEST_DATA)
        sig.rewind()
        public = pkey_class(data=pkey.asbytes())
        return bool(public.verify_ssh_sig(_SELF_TEST_DATA, sig))
    except Exception:
        return False


def parse_private_key(path: str, data: bytes, slot: KeySlot) -> paramiko.PKey:
    """Parse and sanity-check an OpenSSH private key of the slot's type."""
    text = _openssh_text(path, data)
    loaded = _crypto_key(path, data, slot)
    # The server loads keys with paramiko, so make sure paramiko agrees.
    try:
        pkey = slot.pkey_class.from_private_key(io.StringIO(text))
    except Exception as exc:  # paramiko raises assorted exceptions on bad input
        raise HostKeyError(f"{path}: paramiko cannot load the key ({type(exc).__name__})") from None
    expected_pub = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if pkey.asbytes() != base64.b64decode(expected_pub.split()[1]):
        raise HostKeyError(f"{path}: private and public parts of the key do not match")
    if not _signs_and_verifies(pkey, slot.pkey_class):
        raise HostKeyError(f"{path}: key fails a signing self-test (corrupt key)")
    return pkey


def load_private_key(
    path: str, slot: KeySlot, *, validated: tuple[bytes, paramiko.PKey] | None = None
) -> paramiko.PKey:
    """Read, check the permissions of, and parse a private key file.

    ``validated`` is (bytes, key) already parsed by `parse_private_key`: a file holding exactly
    those bytes gives that key without parsing them again (RSA validation is the slow part).
    """
    data, st = read_regular_file(path)
    perms = stat.S_IMODE(st.st_mode)
    if perms & 0o077:
        raise HostKeyError(f"{path}: permissions {perms:04o} are too open (want 0600)")
    if validated is not None and data == validated[0]:
        return validated[1]
    return parse_private_key(path, data, slot)


def pub_line(pkey: paramiko.PKey) -> bytes:
    """The one-line ``.pub`` file of a key."""
    comment = "pymate-relay@" + (socket.gethostname() or "localhost")
    comment = re.sub(r"\s", "_", comment)
    return f"{pkey.get_name()} {pkey.get_base64()} {comment}\n".encode("ascii")


def check_pub_file(pub_path: str, key_path: str, pkey: paramiko.PKey) -> None:
    """The ``.pub`` file is one OpenSSH public key line for ``pkey``."""
    data, _ = read_regular_file(pub_path)
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


def generate(key_type: str) -> bytes:
    """A new unencrypted private key in the OpenSSH format."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
