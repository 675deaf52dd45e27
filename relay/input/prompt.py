"""Status-line prompts for viewers: `command-prompt` and `confirm-before`, as tmux 2.4 runs them
for a client (the C server runs a real tmux, so a viewer's `C-b :` or `C-b ,` opens a prompt
in that viewer's own status line).

Pure logic: keys in, outcomes out. The session routes a viewer's keys here while it has a
prompt open, draws `display(cols)` in its status line, and runs the commands of a `Done`
through the viewer's KeyDispatcher (so read-only and local-command rules apply as for bindings).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.input.keycodes import (
    KEY_ENTER,
    KEY_ESCAPE,
    KEY_PASTE_END,
    KEY_PASTE_START,
    KEY_TAB,
    KEYC_BASE,
    KEYC_BSPACE,
    KEYC_DC,
    KEYC_END,
    KEYC_HOME,
    KEYC_LEFT,
    KEYC_MASK_MOD,
    KEYC_RIGHT,
)
from relay.screen.width import display_width
from relay.tmux.args import getopt
from relay.tmux.cmdline import CommandSyntaxError, parse_commands
from relay.tmux.formats import expand_current

MAX_INPUT = 4096  # characters a prompt holds

_C = {c: ord(c) - 96 for c in "abcdefghkuw"}  # control keys arrive as their byte
_CANCEL = {KEY_ESCAPE, 0x03, 0x07}  # Escape, C-c, C-g


@dataclass(frozen=True, slots=True)
class Done:
    commands: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Cancelled:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


def template_replace(template: str, text: str, idx: int) -> str:
    """tmux's template substitution: `%N` (N = idx) and the first `%%` become `text`."""
    if "%" not in template:
        return template
    out = []
    replaced = False
    i = 0
    while i < len(template):
        ch = template[i]
        i += 1
        if ch == "%" and i <= len(template):
            nxt = template[i] if i < len(template) else ""
            if nxt.isdigit() and nxt != "0" and int(nxt) == idx:
                out.append(text)
                i += 1
                continue
            if nxt == "%" and not replaced:
                replaced = True
                out.append(text)
                i += 1
                continue
        out.append(ch)
    return "".join(out)


class ViewerPrompt:
    """One open prompt of one viewer."""

    def __init__(
        self, *, labels: list[str], inputs: list[str], template: str, single: bool, confirm: bool = False
    ):
        self.labels = labels
        self.inputs = inputs
        self.template = template
        self.single = single
        self.confirm = confirm
        self.idx = 1
        self.label = labels[0]
        self.buffer = inputs[0] if inputs else ""
        self.cursor = len(self.buffer)

    @classmethod
    def command_prompt(cls, argv: tuple[str, ...], session) -> ViewerPrompt:
        """From `command-prompt [-1] [-I inputs] [-p prompts] [-t client] [template]`."""
        flags, rest = getopt(argv[1:], "Ipt")
        template = rest[0] if rest else "%1"
        if "p" in flags:
            labels = [expand_current(p, session) + " " for p in str(flags["p"]).split(",")]
        elif rest:
            first = template.replace(",", " ").split(" ", 1)[0]
            labels = [f"({first}) "]
        else:
            labels = [":"]
        inputs = [expand_current(x, session) for x in str(flags["I"]).split(",")] if "I" in flags else []
        return cls(labels=labels, inputs=inputs, template=template, single="1" in flags)

    @classmethod
    def confirm_before(cls, argv: tuple[str, ...], session) -> ViewerPrompt:
        """From `confirm-before [-p prompt] [-t client] command`."""
        flags, rest = getopt(argv[1:], "pt")
        command = rest[0] if rest else ""
        if "p" in flags:
            label = expand_current(str(flags["p"]), session) + " "
        else:
            label = f"Confirm '{command.split(None, 1)[0] if command.strip() else command}'? (y/n) "
        return cls(labels=[label], inputs=[], template=command, single=True, confirm=True)

    # ------------------------------------------------------------------ keys
    def key(self, code: int) -> Done | Cancelled | Failed | None:
        """Handle one key; None while the prompt stays open."""
        if code in (KEY_PASTE_START, KEY_PASTE_END):
            return None
        if self.single:
            if code in _CANCEL and not self.confirm:
                return Cancelled()
            if code >= KEYC_BASE or code & KEYC_MASK_MOD:
                return Cancelled() if self.confirm else None
            return self._submit(chr(code))
        if code in _CANCEL:
            return Cancelled()
        if code in (KEY_ENTER, 0x0A):
            return self._submit(self.buffer)
        b, c = self.buffer, self.cursor
        if code == KEYC_BSPACE or code == 0x08:
            if c > 0:
                self.buffer, self.cursor = b[: c - 1] + b[c:], c - 1
        elif code == KEYC_DC or code == _C["d"]:
            self.buffer = b[:c] + b[c + 1 :]
        elif code == KEYC_LEFT or code == _C["b"]:
            self.cursor = max(0, c - 1)
        elif code == KEYC_RIGHT or code == _C["f"]:
            self.cursor = min(len(b), c + 1)
        elif code == KEYC_HOME or code == _C["a"]:
            self.cursor = 0
        elif code == KEYC_END or code == _C["e"]:
            self.cursor = len(b)
        elif code == _C["u"]:
            self.buffer, self.cursor = b[c:], 0
        elif code == _C["k"]:
            self.buffer = b[:c]
        elif code == _C["w"]:
            start = len(b[:c].rstrip(" "))
            start = b.rfind(" ", 0, start) + 1
            self.buffer, self.cursor = b[:start] + b[c:], start
        elif code == KEY_TAB:
            pass  # no completion
        elif code < KEYC_BASE and not code & KEYC_MASK_MOD and code >= 0x20 and code != 0x7F:
            if len(b) < MAX_INPUT:
                self.buffer, self.cursor = b[:c] + chr(code) + b[c:], c + 1
        return None

    def _submit(self, text: str) -> Done | Cancelled | Failed | None:
        if self.confirm:
            if text.lower() != "y":
                return Cancelled()
            line = self.template
        else:
            self.template = template_replace(self.template, text, self.idx)
            if self.idx < len(self.labels):  # the next of several prompts
                self.idx += 1
                self.label = self.labels[self.idx - 1]
                self.buffer = self.inputs[self.idx - 1] if self.idx - 1 < len(self.inputs) else ""
                self.cursor = len(self.buffer)
                return None
            line = self.template
        try:
            return Done(tuple(parse_commands(line)))
        except CommandSyntaxError as e:
            return Failed(str(e)[:1].upper() + str(e)[1:])

    # ------------------------------------------------------------------ drawing
    def display(self, cols: int) -> tuple[str, int]:
        """The status-line text and the cursor's column, scrolled so the cursor is visible."""
        label_w = display_width(self.label)
        before = self.buffer[: self.cursor]
        room = max(1, cols - label_w - 1)
        start = 0
        while display_width(before[start:]) > room:
            start += 1
        shown = self.buffer[start:]
        return self.label + shown, label_w + display_width(before[start:])
