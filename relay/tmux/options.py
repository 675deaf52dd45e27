"""Reading tmux option values (the host's replicated `set-option`s) as tmux does."""

from __future__ import annotations


def flag(value, default: bool) -> bool:
    if value is None:
        return default
    v = str(value).lower()
    if v in ("on", "yes", "1"):
        return True
    if v in ("off", "no", "0"):
        return False
    return default


def number(value, default: int, lo: int = 0, hi: int = 32767) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return n if lo <= n <= hi else default
