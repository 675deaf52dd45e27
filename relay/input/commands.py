"""The tmux 2.4 command table as the relay needs it for a viewer's commands: canonical names and
aliases, the commands the relay runs itself and those a read-only viewer may run.

The syntax of commands (a line into commands, a binding's words into commands, a command back
into a line) is relay.tmux.cmdline's.
"""

from __future__ import annotations

# tmux 2.4's commands and aliases (cmd-*.c), for resolving a binding's command name.
_COMMANDS = {
    "attach-session": "attach",
    "bind-key": "bind",
    "break-pane": "breakp",
    "capture-pane": "capturep",
    "choose-buffer": None,
    "choose-client": None,
    "choose-session": None,
    "choose-tree": None,
    "choose-window": None,
    "clear-history": "clearhist",
    "clock-mode": None,
    "command-prompt": None,
    "confirm-before": "confirm",
    "copy-mode": None,
    "delete-buffer": "deleteb",
    "detach-client": "detach",
    "display-message": "display",
    "display-panes": "displayp",
    "find-window": "findw",
    "has-session": "has",
    "if-shell": "if",
    "join-pane": "joinp",
    "kill-pane": "killp",
    "kill-server": None,
    "kill-session": None,
    "kill-window": "killw",
    "last-pane": "lastp",
    "last-window": "last",
    "link-window": "linkw",
    "list-buffers": "lsb",
    "list-clients": "lsc",
    "list-commands": "lscm",
    "list-keys": "lsk",
    "list-panes": "lsp",
    "list-sessions": "ls",
    "list-windows": "lsw",
    "load-buffer": "loadb",
    "lock-client": "lockc",
    "lock-server": "lock",
    "lock-session": "locks",
    "move-pane": "movep",
    "move-window": "movew",
    "new-session": "new",
    "new-window": "neww",
    "next-layout": "nextl",
    "next-window": "next",
    "paste-buffer": "pasteb",
    "pipe-pane": "pipep",
    "previous-layout": "prevl",
    "previous-window": "prev",
    "refresh-client": "refresh",
    "rename-session": "rename",
    "rename-window": "renamew",
    "resize-pane": "resizep",
    "respawn-pane": "respawnp",
    "respawn-window": "respawnw",
    "rotate-window": "rotatew",
    "run-shell": "run",
    "save-buffer": "saveb",
    "select-layout": "selectl",
    "select-pane": "selectp",
    "select-window": "selectw",
    "send-keys": "send",
    "send-prefix": None,
    "server-info": "info",
    "set-buffer": "setb",
    "set-environment": "setenv",
    "set-hook": None,
    "set-option": "set",
    "set-window-option": "setw",
    "show-buffer": "showb",
    "show-environment": "showenv",
    "show-hooks": None,
    "show-messages": "showmsgs",
    "show-options": "show",
    "show-window-options": "showw",
    "source-file": "source",
    "split-window": "splitw",
    "start-server": "start",
    "suspend-client": "suspendc",
    "swap-pane": "swapp",
    "swap-window": "swapw",
    "switch-client": "switchc",
    "unbind-key": "unbind",
    "unlink-window": "unlinkw",
    "wait-for": "wait",
}
_ALIASES = {alias: name for name, alias in _COMMANDS.items() if alias}


def canonical_command(name: str) -> str | None:
    """A command name, alias or unambiguous prefix as tmux 2.4 resolves it; None if unknown or
    ambiguous."""
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _COMMANDS:
        return name
    if not name:
        return None
    found = [c for c in _COMMANDS if c.startswith(name)]
    return found[0] if len(found) == 1 else None


# Commands the relay runs itself (returned as `Local`), never sent to the host.
LOCAL_COMMANDS = frozenset(
    {
        # The C server runs these on its own copy of the state (tmate_should_exec_cmd_locally).
        "bind-key",
        "unbind-key",
        "set-option",
        "set-window-option",
        "detach-client",
        "attach-session",
        # They act on "the client": on the host no client runs the command, so tmux would pick the
        # host's own terminal (a prompt, a menu, a message or a suspend on the host's screen).
        "command-prompt",
        "confirm-before",
        "display-message",
        "display-panes",
        "choose-buffer",
        "choose-client",
        "choose-session",
        "choose-tree",
        "choose-window",
        "refresh-client",
        "suspend-client",
        "lock-client",
        "switch-client",
        # They print to the client: the host discards the output of a client-less command.
        "list-keys",
        "list-clients",
        "list-commands",
        "list-buffers",
        "list-panes",
        "list-sessions",
        "list-windows",
        "show-messages",
        "show-options",
        "show-window-options",
        "show-buffer",
        "show-environment",
        "show-hooks",
        "server-info",
    }
)
# What a read-only viewer may run: the commands tmux flags CMD_READONLY (tmate-ssh-server's tmux:
# detach-client, list-clients, switch-client), as key_bindings_dispatch allows them.
READONLY_COMMANDS = frozenset({"detach-client", "list-clients", "switch-client"})
