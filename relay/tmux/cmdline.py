"""The one tmux command-line parser: what a viewer types at a prompt, and what a host sends as a
command string (EXEC_CMD_STR), become commands (tuples of words)."""

from __future__ import annotations

MAX_COMMANDS = 32  # commands one command line may hold


class CommandSyntaxError(Exception):
    """str() is the message tmux would show (capitalised by the caller's status line)."""


def parse_commands(line: str) -> list[tuple[str, ...]]:
    """Split a command line the way tmux's parser does for what a user types: words separated
    by blanks, '...' literal, "..." with backslash escapes, a backslash escaping the next
    character, an unquoted `;` (alone or ending a word) separating commands, `#` at the start
    of a word starting a comment. Environment variables and `~` are not expanded."""
    commands: list[tuple[str, ...]] = []
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(line)

    def end_word():
        nonlocal word
        if word is not None:
            words.append("".join(word))
            word = None

    def end_command():
        end_word()
        if words:
            commands.append(tuple(words))
            words.clear()

    while i < n:
        ch = line[i]
        if ch in " \t\r\n":
            end_word()
            i += 1
        elif ch == ";":
            end_command()
            i += 1
        elif ch == "#" and word is None:
            break
        elif ch == "'":
            j = line.find("'", i + 1)
            if j < 0:
                raise CommandSyntaxError("syntax error: missing '")
            word = (word or []) + [line[i + 1 : j]]
            i = j + 1
        elif ch == '"':
            i += 1
            part = []
            while True:
                if i >= n:
                    raise CommandSyntaxError('syntax error: missing "')
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    part.append(line[i + 1])
                    i += 2
                    continue
                part.append(c)
                i += 1
            word = (word or []) + ["".join(part)]
        elif ch == "\\" and i + 1 < n:
            word = (word or []) + [line[i + 1]]
            i += 2
        else:
            word = (word or []) + [ch]
            i += 1
    end_command()
    if len(commands) > MAX_COMMANDS:
        raise CommandSyntaxError(f"too many commands (limit {MAX_COMMANDS})")
    return commands
