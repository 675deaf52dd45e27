import pytest

from relay.input.keycodes import KEY_ENTER, KEY_ESCAPE, KEYC_BSPACE, KEYC_HOME, KEYC_LEFT
from relay.input.prompt import (
    Cancelled,
    Done,
    Failed,
    ViewerPrompt,
    template_replace,
)
from relay.tmate import messages as m
from relay.tmate.session import Session
from relay.tmux.cmdline import CommandSyntaxError, parse_commands
from relay.tmux.formats import expand_current as expand_formats


def session_with_window(name="bash") -> Session:
    s = Session(rw_token="a" * 25, ro_token="ro-" + "b" * 25, ssh_host="h", ssh_port=22)
    s.handle(m.Header(6, "2.4.0"))
    s.handle(m.SyncLayout(80, 23, (m.Window(3, name, (m.PaneGeom(0, 80, 23, 0, 0),), 0),), 3))
    return s


def type_text(p: ViewerPrompt, text: str):
    out = None
    for ch in text:
        out = p.key(ord(ch))
    return out


@pytest.mark.parametrize(
    "template, text, idx, want",
    [
        ("rename-window '%%'", "new name", 1, "rename-window 'new name'"),
        ("select-window -t ':%%'", "4", 1, "select-window -t ':4'"),
        ("%1", "new-window", 1, "new-window"),
        ("a %1 b %2", "x", 2, "a %1 b x"),
        ("%% and %%", "x", 1, "x and %%"),
        ("no template", "x", 1, "no template"),
        ("100%", "x", 1, "100%"),
    ],
)
def test_template_replace(template, text, idx, want):
    assert template_replace(template, text, idx) == want


@pytest.mark.parametrize(
    "line, want",
    [
        ("new-window", [("new-window",)]),
        ("split-window -h ; select-pane -L", [("split-window", "-h"), ("select-pane", "-L")]),
        ("rename-window 'a b c'", [("rename-window", "a b c")]),
        ('rename-window "say \\"hi\\""', [("rename-window", 'say "hi"')]),
        ("send-keys a\\;b", [("send-keys", "a;b")]),
        ("kill-pane; new-window", [("kill-pane",), ("new-window",)]),
        ("new-window # a comment", [("new-window",)]),
        ("   ", []),
        ("x'y'z", [("xyz",)]),
    ],
)
def test_parse_commands(line, want):
    assert parse_commands(line) == want


@pytest.mark.parametrize("line", ["rename-window 'open", 'rename-window "open'])
def test_parse_commands_refuses_unterminated_quotes(line):
    with pytest.raises(CommandSyntaxError, match="missing"):
        parse_commands(line)


def test_command_prompt_defaults_to_a_colon_and_runs_what_is_typed():
    p = ViewerPrompt.command_prompt(("command-prompt",), session_with_window())
    assert p.display(80) == (":", 1)
    assert type_text(p, "new-window -n logs") is None
    assert p.display(80) == (":new-window -n logs", 19)
    assert p.key(KEY_ENTER) == Done((("new-window", "-n", "logs"),))


def test_rename_window_prompt_starts_with_the_current_name():
    s = session_with_window("vim")
    p = ViewerPrompt.command_prompt(("command-prompt", "-I#W", "rename-window '%%'"), s)
    assert p.label == "(rename-window) "
    assert p.buffer == "vim" and p.cursor == 3
    p.key(0x15)  # C-u clears to the start
    type_text(p, "editor")
    assert p.key(KEY_ENTER) == Done((("rename-window", "editor"),))


def test_prompt_labels_and_several_prompts():
    s = session_with_window()
    p = ViewerPrompt.command_prompt(("command-prompt", "-p", "first,second", "-I", "a,b", "x %1 %2"), s)
    assert p.label == "first " and p.buffer == "a"
    assert p.key(KEY_ENTER) is None  # on to the second prompt
    assert p.label == "second " and p.buffer == "b"
    type_text(p, "c")
    assert p.key(KEY_ENTER) == Done((("x", "a", "bc"),))


def test_editing_keys():
    p = ViewerPrompt.command_prompt(("command-prompt",), session_with_window())
    type_text(p, "abcd")
    p.key(KEYC_LEFT)
    p.key(KEYC_BSPACE)  # deletes 'c'
    assert p.buffer == "abd" and p.cursor == 2
    p.key(KEYC_HOME)
    type_text(p, "X")
    assert p.buffer == "Xabd"
    p.key(0x0B)  # C-k kills to the end
    assert p.buffer == "X"
    type_text(p, " word more")
    p.key(0x17)  # C-w deletes the word before the cursor
    assert p.buffer == "X word "
    assert p.key(KEY_ESCAPE) == Cancelled()


def test_confirm_before():
    s = session_with_window("top")
    p = ViewerPrompt.confirm_before(("confirm-before", "-p", "kill-window #W? (y/n)", "kill-window"), s)
    assert p.label == "kill-window top? (y/n) "
    assert p.key(ord("y")) == Done((("kill-window",),))
    p = ViewerPrompt.confirm_before(("confirm-before", "kill-pane"), s)
    assert p.label == "Confirm 'kill-pane'? (y/n) "
    assert p.key(ord("n")) == Cancelled()


def test_syntax_error_is_reported():
    p = ViewerPrompt.command_prompt(("command-prompt",), session_with_window())
    type_text(p, "rename-window 'oops")
    assert p.key(KEY_ENTER) == Failed("Syntax error: missing '")


def test_long_input_scrolls_to_keep_the_cursor_visible():
    p = ViewerPrompt.command_prompt(("command-prompt",), session_with_window())
    type_text(p, "x" * 100)
    text, col = p.display(40)
    assert col <= 39 and text.startswith(":") and text.endswith("x")


def test_expand_formats():
    s = session_with_window("logs")
    assert expand_formats("#W at #I ##", s) == "logs at 3 #"
