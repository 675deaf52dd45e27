"""relay.tmux.formats: the one format expander (status line, display-message, prompts)."""

from __future__ import annotations

from relay.tmate import messages as m
from relay.tmux.formats import expand, expand_current, window_values

from .test_render import layout, new_session

V = {"window_index": "3", "window_name": "logs", "window_flags": "*", "session_name": ""}


def test_aliases_and_hash():
    assert expand("#I:#W#F", V) == "3:logs*"
    assert expand("## #S|", V) == "# |"
    assert expand("#T#P#D#H#h", V) == ""  # known aliases without a value: empty
    assert expand("100#", V) == "100#"  # a '#' at the end stays
    assert expand("#x #[fg=red]", V) == "#x #[fg=red]"  # not a format: kept (styles come later)
    assert expand("no formats", {}) == "no formats"


def test_names_and_conditionals():
    assert expand("#{window_name}/#{nope}", V) == "logs/"
    default = "#I:#W#{?window_flags,#{window_flags}, }"
    assert expand(default, V) == "3:logs*"
    assert expand(default, V | {"window_flags": ""}) == "3:logs "
    assert expand("#{?window_index,yes,no}", V | {"window_index": "0"}) == "no"  # "0" is false
    assert expand("#{?#{window_name},a,b}", V) == "a"  # a format as condition
    assert expand("#{?window_flags,x,y,z}", {}) == "y,z"  # the else part keeps its commas
    assert expand("#{?window_flags,#{?window_name,n,#{window_index}},e}", V) == "n"
    assert expand("#{?window_flags,x}", V) == ""  # malformed conditional
    assert expand("a#{window_name", V) == "alogs"  # unterminated: the rest is the name


def test_deep_nesting_is_bounded():
    deep = "#{?a," * 5000 + "x" + ",b}" * 5000
    assert expand(deep, {"a": "1"}) == ""
    assert expand("#{?a," * 3 + "x" + ",b}" * 3, {"a": "1"}) == "x"


def test_window_values_from_the_session_model():
    s = new_session()
    assert window_values(s) == {"session_name": "", "session_windows": "0"}
    s.handle(layout(80, 23, (0, "sh", [(0, 80, 23, 0, 0)], 0), (1, "vim", [(1, 80, 23, 0, 0)], 1), active=0))
    s.handle(layout(80, 23, (0, "sh", [(0, 80, 23, 0, 0)], 0), (1, "vim", [(1, 80, 23, 0, 0)], 1), active=1))
    cur = window_values(s)
    assert cur["window_index"] == "1" and cur["window_name"] == "vim" and cur["window_flags"] == "*"
    assert cur["window_active"] == "1" and cur["session_name"] == "" and cur["session_windows"] == "2"
    last = window_values(s, s.windows[0])
    assert last["window_flags"] == "-" and last["window_last_flag"] == "1" and last["window_active"] == "0"
    assert expand_current("#W at #I#F ##S #S.", s) == "vim at 1* #S ."
    assert expand_current("plain", s) == "plain"


def test_display_message_and_prompts_use_it():
    from relay.input.prompt import ViewerPrompt

    s = new_session()
    s.handle(m.SyncLayout(80, 23, (m.Window(2, "top", (m.PaneGeom(0, 80, 23, 0, 0),), 0),), 2))
    p = ViewerPrompt.command_prompt(("command-prompt", "-p", "#{window_name}:#I#F", "-I", "#W"), s)
    assert p.label == "top:2* " and p.buffer == "top"
    c = ViewerPrompt.confirm_before(
        ("confirm-before", "-p", "kill #{?window_active,#W,x}?", "kill-window"), s
    )
    assert c.label == "kill top? "
