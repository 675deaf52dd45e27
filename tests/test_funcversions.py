"""Tests of jail/funcversions.py: function versions given in the master where Python 3.12 gives
them lazily. Run in a fresh interpreter of each CPython 3.11-3.13 on the machine (the module
needs nothing but the standard library), so that 3.12's path is tested even where the suite
runs on 3.11 and 3.13."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.e2e import ROOT, fresh_interpreter

# Functions whose code was set (which takes a 3.12 function's version away) and one never
# called, given versions; then called in a loop (their call sites specialised) and a new
# function specialised after them.
PROBE = """
import ctypes, importlib.util, json, sys, types
spec = importlib.util.spec_from_file_location("funcversions", "jail/funcversions.py")
fv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fv)

def a(x):
    return x + 1

def b(x):
    return x * 2

def call(f):
    return [f(i) for i in range(300)][-1]

call(a), call(b)
a.__code__ = a.__code__.replace()
b.__code__ = b.__code__.replace()
never = types.FunctionType(a.__code__, {}, "never")

def version(f):
    return ctypes.c_uint32.from_address(id(f) + fv._found.offset).value if fv._found else None

fv.give([])  # finds the layout
before = [version(f) for f in (a, b, never)]
given = fv.give([a, b, never, len])  # len is no Python function: left alone
versions = [version(f) for f in (a, b, never)]
again = fv.give([a, b, never])
results = [call(a), call(b), call(never)]
after = [version(f) for f in (a, b, never)]

def c(x):
    return x

call(c)
print(json.dumps({
    "version": sys.version_info[:2], "reason": fv.reason, "given": given, "again": again,
    "before": before, "versions": versions, "after": after, "results": results, "next": version(c),
}))
"""


def _interpreter(minor: str) -> str | None:
    """This interpreter, or the binary the `pythonX.Y` command on PATH runs (through pyenv's
    shims too: they need the environment that selected them), or None."""
    if minor == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return sys.executable
    command = shutil.which(f"python{minor}")
    if command is None:
        return None
    out = subprocess.run([command, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


@pytest.mark.parametrize("minor", ["3.11", "3.12", "3.13"])
def test_functions_get_the_interpreters_next_versions(minor):
    """3.12: each function without a version gets the interpreter's next one (distinct, as the
    interpreter's own), keeps it through its specialised calls, and the interpreter goes on
    after them; one that has one keeps it. 3.11 and 3.13: nothing given, and why."""
    python = _interpreter(minor)
    if python is None:
        pytest.skip(f"no python{minor} on PATH")
    r = fresh_interpreter(PROBE, python)
    assert r["results"] == [300, 598, 300]
    if r["version"] != [3, 12]:
        assert r["given"] == 0 and r["again"] == 0 and "3.12" in r["reason"]
        return
    assert r["reason"] == ""
    assert r["before"] == [0, 0, 0]  # setting __code__ took them away; `never` never had one
    assert r["given"] == 3 and r["again"] == 0
    v = r["versions"]
    assert all(v) and len(set(v)) == 3 and v == sorted(v)
    assert r["after"] == v  # the interpreter specialised the calls on the versions given
    assert r["next"] > v[-1]


def test_the_module_needs_only_the_standard_library():
    source = (ROOT / "jail/funcversions.py").read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "ctypes", "os", "sys", "types", "collections.abc"}, imports
