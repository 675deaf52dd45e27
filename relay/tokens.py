"""Session tokens: 25 characters from an alphabet without look-alike characters (no i, l, o,
I, O, 0, 1); the read-only token is `ro-` followed by 25 more. Drawn with `secrets`."""
from __future__ import annotations

import secrets

ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
TOKEN_LENGTH = 25
RO_PREFIX = "ro-"
_ALPHABET_SET = frozenset(ALPHABET)


def new_token() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))


def new_token_pair() -> tuple[str, str]:
    """A fresh (read-write, read-only) pair."""
    return new_token(), RO_PREFIX + new_token()


def is_well_formed(token: str) -> bool:
    """Whether `token` has the shape of a token we hand out (it may still match nothing)."""
    if token.startswith(RO_PREFIX):
        token = token[len(RO_PREFIX):]
    return len(token) == TOKEN_LENGTH and all(c in _ALPHABET_SET for c in token)
