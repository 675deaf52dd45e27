"""tmux formats: the one expander for every format the relay shows (window-status formats in
the status line, display-message, prompt labels and inputs).

Supported: `##` (a '#'), the single-letter aliases (`#I` window index, `#W` window name, `#F`
window flags, `#S` session name, `#P`, `#D`, `#T`, `#H`, `#h`), `#{name}` and conditionals
`#{?cond,then,else}` (cond is a name, or a format when it holds a '#'; true when not empty and
not "0"). Unknown names expand to ''. Anything else after '#' is kept as it is, so `#[style]`
markup is left for the style pass.

Values come in a dict; `window_values` builds it from the session model (duck-typed: this
package imports only the standard library).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ALIASES", "expand", "window_values", "expand_current"]

ALIASES = {
    "D": "pane_id",
    "F": "window_flags",
    "H": "host",
    "h": "host_short",
    "I": "window_index",
    "P": "pane_index",
    "S": "session_name",
    "T": "pane_title",
    "W": "window_name",
}
MAX_DEPTH = 16  # nested #{...} deeper than this (only a hostile host writes them) expand to ''


def expand(fmt: str, values: Mapping[str, str]) -> str:
    """`fmt` with its formats replaced from `values`."""
    return _expand(fmt, values, 0)


def _expand(fmt: str, values: Mapping[str, str], depth: int) -> str:
    if "#" not in fmt:
        return fmt
    if depth > MAX_DEPTH:
        return ""
    out: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("#", i)
        if j < 0 or j + 1 >= n:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        d = fmt[j + 1]
        if d == "#":
            out.append("#")
            i = j + 2
        elif d in ALIASES:
            out.append(values.get(ALIASES[d], ""))
            i = j + 2
        elif d == "{":
            end, closed = _brace_end(fmt, j + 2)
            body = fmt[j + 2 : end - 1] if closed else fmt[j + 2 :]
            out.append(_body(body, values, depth + 1))
            i = end
        else:
            out.append("#")
            i = j + 1
    return "".join(out)


def _brace_end(fmt: str, start: int) -> tuple[int, bool]:
    """The index after the '}' closing a '#{' whose body starts at `start`; whether it closed."""
    depth, j, n = 1, start, len(fmt)
    while j < n and depth:
        if fmt.startswith("#{", j):
            depth += 1
            j += 2
            continue
        if fmt[j] == "}":
            depth -= 1
        j += 1
    return j, depth == 0


def _split_top(body: str) -> list[str]:
    """`body` split at the commas outside nested #{...}."""
    parts: list[str] = []
    depth = start = i = 0
    while i < len(body):
        if body.startswith("#{", i):
            depth += 1
            i += 2
            continue
        if body[i] == "}" and depth:
            depth -= 1
        elif body[i] == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return parts


def _body(body: str, values: Mapping[str, str], depth: int) -> str:
    if not body.startswith("?"):
        return values.get(body, "")
    parts = _split_top(body[1:])
    if len(parts) < 3:
        return ""
    cond = _expand(parts[0], values, depth) if "#" in parts[0] else values.get(parts[0], "")
    pick = parts[1] if cond and cond != "0" else ",".join(parts[2:])
    return _expand(pick, values, depth)


def window_values(session, window=None) -> dict[str, str]:
    """Format values for `window` (default: the session's current window) of a session model.

    `window_flags` is "*" for the current window and "-" for the last one (the relay knows no
    activity, bell or zoom flags). `session_name` is empty: the relay does not know the host's
    session name."""
    if window is None:
        window = session.current_window
    values = {"session_name": "", "session_windows": str(len(session.windows))}
    if window is None:
        return values
    current = window.idx == session.active_window
    last = window.idx == session.last_window
    values |= {
        "window_index": str(window.idx),
        "window_name": window.name,
        "window_flags": "*" if current else "-" if last else "",
        "window_active": "1" if current else "0",
        "window_last_flag": "1" if last else "0",
        "window_panes": str(len(window.pane_ids)),
    }
    return values


def expand_current(text: str, session) -> str:
    """`text` expanded for the session's current window (display-message, prompts)."""
    if "#" not in text:
        return text
    return expand(text, window_values(session))
