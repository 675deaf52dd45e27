"""What a request's path names: a session's page (or its WebSocket), a static asset, or nothing.

/t/TOKEN, /t/ro-TOKEN, /t/USER/NAME   the session's page; with `Upgrade: websocket`, its socket
/static/NAME                          one of the assets read before the first fork
anything else                         404
"""

from __future__ import annotations

from dataclasses import dataclass

SESSION_PREFIX = "/t/"
STATIC_PREFIX = "/static/"
MAX_TOKEN_LENGTH = 64  # as relay.conn.viewer's check of an ssh user name
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/")

PAGE = "page"
STATIC = "static"
NOT_FOUND = "not-found"


@dataclass(frozen=True)
class Route:
    kind: str  # PAGE, STATIC or NOT_FOUND
    name: str = ""  # PAGE: the token as typed; STATIC: the asset's name


def token_shape_ok(token: str) -> bool:
    """The C server's shape check of a token: more than 2 characters of [A-Za-z0-9-_/]."""
    return 2 < len(token) <= MAX_TOKEN_LENGTH and all(c in _TOKEN_CHARS for c in token)


def route(path: str) -> Route:
    if path.startswith(SESSION_PREFIX):
        token = path[len(SESSION_PREFIX) :]
        if token_shape_ok(token) and not token.startswith("/") and "//" not in token:
            return Route(PAGE, token)
        return Route(NOT_FOUND)
    if path.startswith(STATIC_PREFIX):
        name = path[len(STATIC_PREFIX) :]
        if name and "/" not in name:
            return Route(STATIC, name)
    return Route(NOT_FOUND)
