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

Modules: `files` (safe file I/O: read a small regular file, create one without
clobbering), `parse` (key parsing, validation, fingerprints, generation),
`store` (the key directory: `ensure_host_keys`, `load_host_keys`), `command`
(the ``keygen`` command and the tmate.conf lines it prints).
"""

from .command import keygen_main, tmate_conf_lines
from .errors import HostKeyError
from .parse import (
    ED25519_KEY_FILE,
    RSA_BITS,
    RSA_KEY_FILE,
    RSA_MAX_BITS,
    b64_fingerprint,
    blob_fingerprint,
    fingerprint,
)
from .store import HostKeyInfo, ensure_host_keys, load_host_keys

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
    "b64_fingerprint",
    "blob_fingerprint",
    "tmate_conf_lines",
    "keygen_main",
]
