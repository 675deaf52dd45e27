"""The one place for tmux command syntax: a command line (what a viewer types at a prompt, what a
host sends as a command string, EXEC_CMD_STR) into commands (tuples of words); a key binding's
words into commands; and one command back into a line the host's tmux parses into the same words.
"""

from __future__ import annotations

MAX_COMMANDS = 32  # commands one command line may hold
_BLANKS = " \t\r\n"


class CommandSyntaxError(Exception):
    """str() is the message tmux would show (capitalised by the caller's status line)."""


def parse_commands(line: str) -> list[tuple[str, ...]]:
    """Split a command line the way tmux's parser does for what a user types: words separated
    by blanks, '...' literal, "..." with backslash escapes, a backslash escaping the next
    character, an unquoted `;` (alone or ending a word) separating commands, `#` at the start
    of a word starting a comment. Environment variables and `~` are not expanded."""
    commands: list[tuple[str, ...]] = []
    words: list[str] = []
    word: list[str] | None = None  # the pieces of the word being read; None between words
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in _BLANKS or ch == ";":
            if word is not None:
                words.append("".join(word))
                word = None
            if ch == ";" and words:
                commands.append(tuple(words))
                words = []
            i += 1
        elif ch == "#" and word is None:
            break
        else:
            piece, i = _piece(line, i)
            if word is None:
                word = []
            word.append(piece)
    if word is not None:
        words.append("".join(word))
    if words:
        commands.append(tuple(words))
    if len(commands) > MAX_COMMANDS:
        raise CommandSyntaxError(f"too many commands (limit {MAX_COMMANDS})")
    return commands


def _piece(line: str, i: int) -> tuple[str, int]:
    """The piece of a word at line[i] (a quoted string, an escaped or a plain character) and the
    index after it."""
    ch = line[i]
    if ch == "'":
        j = line.find("'", i + 1)
        if j < 0:
            raise CommandSyntaxError("syntax error: missing '")
        return line[i + 1 : j], j + 1
    if ch == '"':
        return _double_quoted(line, i + 1)
    if ch == "\\" and i + 1 < len(line):
        return line[i + 1], i + 2
    return ch, i + 1


def _double_quoted(line: str, i: int) -> tuple[str, int]:
    """The text of a "..." string whose first character is line[i], and the index after it."""
    out: list[str] = []
    n = len(line)
    while i < n:
        c = line[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < n:
            out.append(line[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    raise CommandSyntaxError('syntax error: missing "')


def split_commands(argv) -> list[tuple[str, ...]]:
    """Split a binding's command words into commands as tmux's cmd_list_parse does: a word
    ending in ';' ends a command (the ';' removed, a lone ';' dropped); a word ending in '\\;'
    keeps a literal ';'."""
    cmds: list[tuple[str, ...]] = []
    cur: list[str] = []
    for a in argv:
        if a.endswith(";"):
            if a.endswith("\\;"):
                cur.append(a[:-2] + ";")
                continue
            if a != ";":
                cur.append(a[:-1])
            if cur:
                cmds.append(tuple(cur))
            cur = []
        else:
            cur.append(a)
    if cur:
        cmds.append(tuple(cur))
    return cmds


def quote_command(argv) -> str:
    """One command as a string the host's tmux parses back into the same argv (EXEC_CMD_STR,
    protocol < 6): every word double-quoted with \\ " $ escaped; a word ending in ';' written
    with '\\;' so it is not taken for a command separator."""
    words = []
    for a in argv:
        q = a.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        if q.endswith(";"):
            q = q[:-1] + "\\\\;"
        words.append(f'"{q}"')
    return " ".join(words)
