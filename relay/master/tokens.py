"""Session tokens: 25 characters from an alphabet without look-alike characters (no i, l, o,
I, O, 0, 1); the read-only token is `ro-` followed by 25 more. Drawn with `secrets`."""

from __future__ import annotations

import secrets

ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
TOKEN_LENGTH = 25
RO_PREFIX = "ro-"


def new_token() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))


def new_token_pair() -> tuple[str, str]:
    """A fresh (read-write, read-only) pair."""
    return new_token(), RO_PREFIX + new_token()
