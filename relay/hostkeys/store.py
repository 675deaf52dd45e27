"""The host key directory: create what is missing (`ensure_host_keys`), load what is there
(`load_host_keys`). Existing files are validated before anything is written; nothing is ever
overwritten. The directory also holds the reconnection key (`ensure_reconnect_key`): the secret
the master authenticates its hosts' reconnection data with (relay.master.reconnect)."""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import HostKeyError
from .files import check_directory, lexists, oserror_text, write_new_file
from .parse import (
    SLOTS,
    KeySlot,
    check_pub_file,
    fingerprint,
    generate,
    load_private_key,
    parse_private_key,
    pub_line,
)

if TYPE_CHECKING:
    import paramiko


@dataclass(frozen=True)
class HostKeyInfo:
    path: str  # path of the private key file (directory as given + file name)
    key_type: str  # "rsa" or "ed25519"
    fingerprint: str  # "SHA256:<43 base64 chars>", as `ssh-keygen -l -E sha256`
    created: bool  # True if this call generated the key
    pub_created: bool = False  # True if this call (re)wrote the missing .pub


@dataclass
class _Existing:
    """What one slot's files are before `ensure_host_keys` writes anything."""

    slot: KeySlot
    path: str
    pkey: paramiko.PKey | None  # None: the private key is missing
    pub_exists: bool


def _validate_existing(directory: str) -> list[_Existing]:
    """Phase 1: validate everything that exists."""
    plan = []
    for slot in SLOTS:
        path = os.path.join(directory, slot.name)
        pub_path = path + ".pub"
        pkey = None
        if lexists(path):
            pkey = load_private_key(path, slot)
            pub_exists = lexists(pub_path)
            if pub_exists:
                check_pub_file(pub_path, path, pkey)
        elif lexists(pub_path):
            raise HostKeyError(
                f"{pub_path}: exists without its private key {slot.name} (remove it or restore the private key)"
            )
        else:
            pub_exists = False
        plan.append(_Existing(slot, path, pkey, pub_exists))
    return plan


def _generate_missing(plan: list[_Existing]) -> dict[str, tuple[bytes, paramiko.PKey]]:
    """Phase 2: generate (and check) every missing key before writing any."""
    generated = {}
    for e in plan:
        if e.pkey is None:
            private = generate(e.slot.key_type)
            generated[e.slot.name] = (private, parse_private_key(e.path, private, e.slot))
    return generated


def _write_missing(directory: str, e: _Existing, new: tuple[bytes, paramiko.PKey] | None) -> HostKeyInfo:
    """Phase 3, one slot: write its key (if generated) and its .pub (if missing)."""
    name, path, pkey, pub_exists = e.slot.name, e.path, e.pkey, e.pub_exists
    created = False
    if pkey is None:
        assert new is not None
        created = write_new_file(directory, name, new[0], 0o600)
        # Read back what is now in place; if a concurrent keygen won the
        # race this is its key, reported as existing.
        pkey = load_private_key(path, e.slot, validated=new)
        pub_exists = lexists(path + ".pub")
        if pub_exists:
            check_pub_file(path + ".pub", path, pkey)
    pub_created = False
    if not pub_exists:
        pub_created = write_new_file(directory, name + ".pub", pub_line(pkey), 0o644)
        if not pub_created:
            check_pub_file(path + ".pub", path, pkey)
    return HostKeyInfo(
        path=path,
        key_type=e.slot.key_type,
        fingerprint=fingerprint(pkey),
        created=created,
        pub_created=pub_created,
    )


def ensure_host_keys(directory: str | os.PathLike[str]) -> list[HostKeyInfo]:
    """Create whichever host keys (and .pub files) are missing in ``directory``.

    Existing files are validated first; on any problem `HostKeyError` is
    raised and nothing is created or modified.  Returns one `HostKeyInfo` per
    key, RSA first.
    """
    directory = os.fspath(directory)
    check_directory(directory, create=True)
    plan = _validate_existing(directory)
    generated = _generate_missing(plan)
    return [_write_missing(directory, e, generated.get(e.slot.name)) for e in plan]


def load_host_keys(directory: str | os.PathLike[str]) -> list[paramiko.PKey]:
    """Load the host keys present in ``directory`` (RSA first).

    Raises `HostKeyError` if the directory is missing, holds neither key, or
    any present key (or .pub) fails validation.  Never modifies anything.
    """
    directory = os.fspath(directory)
    check_directory(directory, create=False)
    keys = []
    for slot in SLOTS:
        path = os.path.join(directory, slot.name)
        if not lexists(path):
            continue
        pkey = load_private_key(path, slot)
        if lexists(path + ".pub"):
            check_pub_file(path + ".pub", path, pkey)
        keys.append(pkey)
    if not keys:
        raise HostKeyError(
            f"{directory}: no host keys found (run: pymate-relay keygen -k {shlex.quote(directory)})"
        )
    return keys


RECONNECT_KEY_FILE = "reconnect.key"
RECONNECT_KEY_BYTES = 32  # an HMAC-SHA256 key, raw bytes


def check_reconnect_key(path: str) -> None:
    """HostKeyError unless `path` is a regular file of RECONNECT_KEY_BYTES that only its owner
    may read (its bytes are not read here: only the master reads them)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot access ({oserror_text(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise HostKeyError(f"{path}: not a regular file")
    if st.st_size != RECONNECT_KEY_BYTES:
        raise HostKeyError(f"{path}: {st.st_size} bytes, a reconnection key has {RECONNECT_KEY_BYTES}")
    if st.st_mode & 0o077:
        raise HostKeyError(f"{path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)")


def ensure_reconnect_key(directory: str | os.PathLike[str]) -> tuple[str, bool]:
    """The reconnection key's path in `directory` and whether this call created it (32 random
    bytes, mode 0600; an existing one is checked, never replaced). The new bytes live only in a
    buffer wiped once written, so no copy stays in the heap a forked child would inherit."""
    directory = os.fspath(directory)
    path = os.path.join(directory, RECONNECT_KEY_FILE)
    if lexists(path):
        check_reconnect_key(path)
        return path, False
    check_directory(directory, create=True)
    key = bytearray(RECONNECT_KEY_BYTES)
    try:
        fd = os.open("/dev/urandom", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.readv(fd, [key]) != RECONNECT_KEY_BYTES:
                raise HostKeyError("/dev/urandom: short read")
        finally:
            os.close(fd)
        created = write_new_file(directory, RECONNECT_KEY_FILE, key, 0o600)  # type: ignore[arg-type]  # written as is
    finally:
        key[:] = bytes(RECONNECT_KEY_BYTES)
    check_reconnect_key(path)
    return path, created
