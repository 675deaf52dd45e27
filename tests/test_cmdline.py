"""relay.tmux.cmdline: the one parser of command lines, a binding's words into commands, and a
command quoted back into a line (the three agree)."""

from __future__ import annotations

import random

import pytest

from relay.tmux.cmdline import MAX_COMMANDS, CommandSyntaxError, parse_commands, quote_command, split_commands

ODD_WORDS = ["", " ", ";", "a;", "a\\;", "\\", '"', "'", "$HOME", "#x", "-t=;", "é 日", "\t\n", "a b;c"]


@pytest.mark.parametrize("word", ODD_WORDS)
def test_a_quoted_command_parses_back_into_its_words(word):
    argv = ("rename-window", word, "-t", word)
    line = quote_command(argv)
    # One command, whatever the words hold; a word ending in ';' is written '\;', which the
    # host's tmux (as split_commands) turns back into ';'.
    (words,) = parse_commands(line)
    assert split_commands(words) == [argv]


def test_quoted_commands_round_trip_random_words():
    rng = random.Random(6)
    alphabet = " ;\\\"'$#\t\nab-é"
    for _ in range(2000):
        argv = tuple("".join(rng.choice(alphabet) for _ in range(rng.randrange(6))) for _ in range(3))
        argv = ("send-keys", *argv)
        (words,) = parse_commands(quote_command(argv))
        assert split_commands(words) == [argv], argv


def test_parse_commands_and_split_commands_separate_alike():
    # An unquoted ';' in a line and a word ending in ';' in a binding both end a command.
    assert parse_commands("select-pane -t0; kill-pane") == [("select-pane", "-t0"), ("kill-pane",)]
    assert split_commands(("select-pane", "-t0;", "kill-pane")) == [("select-pane", "-t0"), ("kill-pane",)]
    assert parse_commands("a ; ; b") == [("a",), ("b",)]
    assert split_commands(("a", ";", ";", "b")) == [("a",), ("b",)]


def test_too_many_commands():
    assert len(parse_commands("a;" * MAX_COMMANDS)) == MAX_COMMANDS
    with pytest.raises(CommandSyntaxError, match="too many commands"):
        parse_commands("a;" * (MAX_COMMANDS + 1))


def test_long_words_parse_in_linear_time():
    word = "x" * 200_000
    assert parse_commands(f"{word} '{word}' \"{word}\"") == [(word, word, word)]
