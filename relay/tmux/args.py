"""tmux-style command flags, shared by the session (replicated commands), key dispatch and
prompts: single-letter flags until the first word that is not one (or `--`), grouped (`-nr`),
values attached (`-Tname`) or in the next word (`-T name`)."""

from __future__ import annotations


class UsageError(ValueError):
    """An unknown flag or a missing value, in strict mode; str() says which."""


def getopt(args, with_value: str, known: str | None = None) -> tuple[dict[str, str | bool], list[str]]:
    """(flags, remaining words). `with_value` lists the flags that take a value. With `known`
    (the flags without a value), an unknown flag or a missing value raises UsageError; without
    it both are tolerated (an unknown flag counts as set, a missing value is '')."""
    flags: dict[str, str | bool] = {}
    args = tuple(args)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if len(a) < 2 or a[0] != "-":
            break
        j = 1
        while j < len(a):
            c = a[j]
            if c in with_value:
                if j + 1 < len(a):
                    flags[c] = a[j + 1 :]
                elif i + 1 < len(args):
                    i += 1
                    flags[c] = args[i]
                elif known is not None:
                    raise UsageError(f"-{c} needs an argument")
                else:
                    flags[c] = ""
                break
            if known is not None and c not in known:
                raise UsageError(f"unknown flag -{c}")
            flags[c] = True
            j += 1
        i += 1
    return flags, list(args[i:])
