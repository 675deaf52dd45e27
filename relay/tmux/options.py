"""Reading tmux option values (the host's replicated `set-option`s) as tmux does.

Every option value the relay acts on is interpreted here (styles aside: relay.screen.style), so
the session's sizing and the viewer's screen never read one option two ways.
"""

from __future__ import annotations

__all__ = ["flag", "number", "choice", "status_rows", "status_at_top", "justify", "vi_keys"]


def flag(value: object, default: bool) -> bool:
    """A flag option: on/off, yes/no, 1/0 (any case); anything else is `default`."""
    if value is None:
        return default
    v = str(value).lower()
    if v in ("on", "yes", "1"):
        return True
    if v in ("off", "no", "0"):
        return False
    return default


def number(value: object, default: int, lo: int = 0, hi: int = 32767) -> int:
    """A number option within [lo, hi]; anything else is `default`."""
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return default
    return n if lo <= n <= hi else default


def choice(value: object, choices: dict[str, str], default: str) -> str:
    """A choice option: `choices` maps each accepted spelling (lower case) to its meaning."""
    if value is None:
        return default
    return choices.get(str(value).lower(), default)


def status_rows(value: object) -> int:
    """Rows the status line takes for a `status` value: 1 when on (the default), 0 when off."""
    return 1 if flag(value, True) else 0


def status_at_top(value: object) -> bool:
    """`status-position`: top or bottom (the default)."""
    return choice(value, {"top": "top", "bottom": "bottom"}, "bottom") == "top"


_JUSTIFY = {"left": "left", "0": "left", "centre": "centre", "center": "centre", "1": "centre"}
_JUSTIFY |= {"right": "right", "2": "right"}


def justify(value: object) -> str:
    """`status-justify`: "left" (the default), "centre" or "right"."""
    return choice(value, _JUSTIFY, "left")


def vi_keys(value: object) -> bool:
    """`mode-keys`: vi, or emacs (the default)."""
    return choice(value, {"vi": "vi", "emacs": "emacs"}, "emacs") == "vi"
