"""The layering rules of relay/ and jail/, checked on the source with `ast`.

Every import counts: module level or inside a function, `import x` or `from x import y`
(`from x import y` counts as importing both x and x.y, since y may be a module), relative
imports resolved against the importing module's package.

Rules (README, issue 6 "Structure for growth"):
  sans-io      relay.tmate, relay.screen, relay.input, relay.tmux, relay.web import no socket, select,
               selectors, threading, asyncio or paramiko
  tmux-stdlib  relay.tmux imports only the standard library (and itself)
  master       relay.master imports nothing that parses client bytes: no paramiko,
               cryptography, pyghostty, relay.conn, relay.tmate, relay.screen, relay.input,
               relay.tmux, relay.hostkeys, relay.web, h11, wsproto
  layers       within relay, each layer imports only the layers below it (as its package
               docstring says): relay.tmate -> relay.tmux, relay.screen.terminal; relay.screen
               -> relay.tmux, relay.tmate; relay.input -> relay.tmux, relay.tmate,
               relay.screen.width; relay.web nothing else of relay; relay.conn never
               relay.master or relay.cli
  jail         jail imports nothing from relay
  control      relay.control (the interface both sides share) imports nothing else of relay
  size         no module over 500 lines

and only relay.control.codec packs a control message (`msgpack.packb`; relay.tmate's encoder packs
the tmate protocol's).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relay", "jail")
MAX_LINES = 500

SANS_IO = ("relay.tmate", "relay.screen", "relay.input", "relay.tmux", "relay.web", "relay.conn.sshpackets")
IO_MODULES = ("socket", "select", "selectors", "threading", "asyncio", "paramiko")
MASTER_FORBIDDEN = (
    "paramiko",
    "cryptography",
    "pyghostty",
    "relay.conn",
    "relay.tmate",
    "relay.screen",
    "relay.input",
    "relay.tmux",
    "relay.hostkeys",
    "relay.web",  # the web viewer's HTTP and WebSocket: the master parses no HTTP either
    "h11",
    "wsproto",
)

# What each layer may import from the rest of relay (besides itself and the bare `relay` package).
LAYER_ALLOWS = {
    "relay.tmate": ("relay.tmux", "relay.screen.terminal"),
    "relay.screen": ("relay.tmux", "relay.tmate"),
    "relay.input": ("relay.tmux", "relay.tmate", "relay.screen.width"),
    "relay.web": (),
}
CONN_FORBIDDEN = ("relay.master", "relay.cli")


def within(name: str, packages: tuple[str, ...] | str) -> bool:
    """Whether a dotted name is one of `packages` or inside one of them."""
    if isinstance(packages, str):
        packages = (packages,)
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. relay.tmate.codec (a package's __init__ is the package)
    path: Path
    is_package: bool
    source: str


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # absolute dotted name


@dataclass(frozen=True)
class ImportRule:
    name: str
    text: str
    applies: Callable[[str], bool]  # to the importing module
    forbidden: Callable[[str, str], bool]  # (importing module, imported name)


IMPORT_RULES = [
    ImportRule(
        "sans-io",
        "the sans-IO packages import no " + ", ".join(IO_MODULES),
        lambda mod: within(mod, SANS_IO),
        lambda mod, target: within(target, IO_MODULES),
    ),
    ImportRule(
        "tmux-stdlib",
        "relay.tmux imports only the standard library",
        lambda mod: within(mod, "relay.tmux"),
        lambda mod, target: (
            not (within(target, "relay.tmux") or target.split(".")[0] in sys.stdlib_module_names)
        ),
    ),
    ImportRule(
        "master",
        "relay.master imports nothing that parses client bytes (" + ", ".join(MASTER_FORBIDDEN) + ")",
        lambda mod: within(mod, "relay.master"),
        lambda mod, target: within(target, MASTER_FORBIDDEN),
    ),
    ImportRule(
        "layers",
        "a layer imports only the layers below it",
        lambda mod: within(mod, (*LAYER_ALLOWS, "relay.conn")),
        lambda mod, target: _crosses_layers(mod, target),
    ),
    ImportRule(
        "control",
        "relay.control imports nothing else of relay",
        lambda mod: within(mod, "relay.control"),
        lambda mod, target: (
            within(target, "relay") and target != "relay" and not within(target, "relay.control")
        ),
    ),
    ImportRule(
        "jail",
        "jail imports nothing from relay",
        lambda mod: within(mod, "jail"),
        lambda mod, target: within(target, "relay"),
    ),
]
RULE_NAMES = [r.name for r in IMPORT_RULES] + ["size"]


def _crosses_layers(mod: str, target: str) -> bool:
    if within(mod, "relay.conn"):
        return within(target, CONN_FORBIDDEN)
    if not within(target, "relay") or target == "relay":
        return False
    (layer,) = [p for p in LAYER_ALLOWS if within(mod, p)]
    return not within(target, (layer, *LAYER_ALLOWS[layer]))


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> Iterator[Module]:
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            yield Module(".".join(parts), path, is_package, path.read_text(encoding="utf-8"))


def imports(module: Module) -> Iterator[Import]:
    """Every import in the module, anywhere in it, as absolute names."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(module.source, str(module.path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield Import(node.lineno, target)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(node.lineno, f"{target}.{alias.name}")


def violations(root: Path, rule_name: str) -> list[str]:
    """One message per violation of the rule: "path:line: module ...: rule [name]"."""
    found = []
    for module in modules(root):
        rel = module.path.relative_to(root)
        if rule_name == "size":
            lines = len(module.source.splitlines())
            if lines > MAX_LINES:
                found.append(
                    f"{rel}:{lines}: {module.name} has {lines} lines: no module over {MAX_LINES} [size]"
                )
            continue
        (rule,) = [r for r in IMPORT_RULES if r.name == rule_name]
        if not rule.applies(module.name):
            continue
        seen = set()
        for imp in imports(module):
            if rule.forbidden(module.name, imp.target) and (imp.line, imp.target) not in seen:
                seen.add((imp.line, imp.target))
                found.append(
                    f"{rel}:{imp.line}: {module.name} imports {imp.target}: {rule.text} [{rule.name}]"
                )
    return found


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_rule_holds(rule):
    found = violations(ROOT, rule)
    assert not found, f"{len(found)} violation(s) of rule {rule}:\n" + "\n".join(found)


MSGPACK_PACKERS = ("relay.control.codec", "relay.tmate.encoder")


def test_only_the_codecs_pack_msgpack():
    packers = {m.name for m in modules(ROOT, ("relay",)) if "msgpack.packb" in m.source}
    assert packers == set(MSGPACK_PACKERS), packers


def test_the_tree_is_found():
    names = {m.name for m in modules(ROOT)}
    assert {"relay", "relay.master", "relay.tmate.codec", "jail", "relay.hostkeys"} <= names


# --------------------------------------------------------------------------
# the checker itself


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def broken_tree(tmp_path) -> Path:
    """A small relay/ + jail/ tree that breaks every rule once, and a few imports that are fine."""
    for pkg in (
        "relay",
        "relay/tmate",
        "relay/master",
        "relay/tmux",
        "relay/conn",
        "relay/screen",
        "relay/control",
        "jail",
    ):
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "relay/screen/z.py", "from relay import log\nfrom relay.tmate import session\n")
    _write(tmp_path, "relay/screen/keys.py", "from relay.input.parser import InputParser\n")
    _write(tmp_path, "relay/conn/c.py", "from relay.tmate import session\nfrom relay.master import server\n")
    _write(tmp_path, "relay/tmate/x.py", "from __future__ import annotations\n\nimport socket\n")
    _write(
        tmp_path,
        "relay/master/y.py",
        "import os\n\nfrom relay.conn.host import HostSession\n\n\ndef f():\n    from ..tmate import x\n",
    )
    _write(tmp_path, "relay/master/__init__.py", "from . import y\nfrom relay import conn\n")
    _write(tmp_path, "relay/tmux/w.py", "import re\n\nfrom . import args\nimport msgpack\n")
    _write(tmp_path, "relay/tmux/args.py", "from .w import re\n")
    _write(tmp_path, "jail/a.py", "import os\n\n\ndef g():\n    from relay import log\n")
    _write(
        tmp_path,
        "relay/control/codec.py",
        "from relay.control import table\nfrom relay.master import tokens\n",
    )
    _write(tmp_path, "jail/big.py", "x = 1\n" * (MAX_LINES + 1))
    _write(tmp_path, "jail/ok.py", "x = 1\n" * MAX_LINES)
    return tmp_path


def test_checker_catches_each_broken_rule(broken_tree):
    got = {rule: violations(broken_tree, rule) for rule in RULE_NAMES}
    assert got["sans-io"] == [
        "relay/tmate/x.py:3: relay.tmate.x imports socket: the sans-IO packages import no "
        "socket, select, selectors, threading, asyncio, paramiko [sans-io]"
    ]
    assert got["tmux-stdlib"] == [
        "relay/tmux/w.py:4: relay.tmux.w imports msgpack: relay.tmux imports only the standard library [tmux-stdlib]"
    ]
    master = [line.split(": relay.master imports nothing")[0] for line in got["master"]]
    assert master == [
        "relay/master/__init__.py:2: relay.master imports relay.conn",  # from relay import conn
        "relay/master/y.py:3: relay.master.y imports relay.conn.host",
        "relay/master/y.py:3: relay.master.y imports relay.conn.host.HostSession",
        "relay/master/y.py:7: relay.master.y imports relay.tmate",  # relative, in a function
        "relay/master/y.py:7: relay.master.y imports relay.tmate.x",
    ]
    assert all(line.endswith("[master]") for line in got["master"])
    assert [line.split(": a layer imports")[0] for line in got["layers"]] == [
        "relay/conn/c.py:2: relay.conn.c imports relay.master",
        "relay/conn/c.py:2: relay.conn.c imports relay.master.server",
        "relay/screen/keys.py:1: relay.screen.keys imports relay.input.parser",
        "relay/screen/keys.py:1: relay.screen.keys imports relay.input.parser.InputParser",
        "relay/screen/z.py:1: relay.screen.z imports relay.log",
    ]
    assert [line.split(": jail imports")[0] for line in got["jail"]] == [
        "jail/a.py:5: jail.a imports relay",
        "jail/a.py:5: jail.a imports relay.log",
    ]
    assert [line.split(": relay.control imports")[0] for line in got["control"]] == [
        "relay/control/codec.py:2: relay.control.codec imports relay.master",
        "relay/control/codec.py:2: relay.control.codec imports relay.master.tokens",
    ]
    assert got["size"] == [f"jail/big.py:{MAX_LINES + 1}: jail.big has 501 lines: no module over 500 [size]"]


def test_relative_imports_resolve_against_the_package():
    pkg = Module(
        "relay.tmux", Path("relay/tmux/__init__.py"), True, "from . import args\nfrom .. import log\n"
    )
    mod = Module(
        "relay.tmux.w", Path("relay/tmux/w.py"), False, "from .args import split\nfrom ..tmate import x\n"
    )
    assert [i.target for i in imports(pkg)] == ["relay.tmux", "relay.tmux.args", "relay", "relay.log"]
    assert [i.target for i in imports(mod)] == [
        "relay.tmux.args",
        "relay.tmux.args.split",
        "relay.tmate",
        "relay.tmate.x",
    ]
