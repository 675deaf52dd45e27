"""Tests of jail/hotcode.py: the code a connection process ran, learnt from it and copied by the
master. The steps that walk every function run in a fresh interpreter; the end-to-end test runs
a real relay, a real tmate host and a viewer."""

from __future__ import annotations

from jail import hotcode
from relay import control
from tests.e2e import TmateHost, fresh_interpreter, session_tokens, teach, viewer_answer

PROBE = """
import json, os
from jail import hotcode

def outer():
    def inner(x):
        return x + 1
    return inner

def ran_here(n):
    return sum(range(n)) + outer()(n)

def never_run(n):
    return n * 2

roles = hotcode.baseline(["host"])
for i in range(50):  # enough calls for the interpreter to write the inline caches
    ran_here(i)
ran = hotcode.ran()
wanted_before = hotcode.wanted("host"), hotcode.wanted("viewer")
original = ran_here.__code__, outer.__code__, never_run.__code__, outer().__code__
copies = hotcode.pack(ran + [12345, -1, id(object())])  # ids the table does not hold are ignored
hotcode.done("host")
print(json.dumps({
    "ran_here": id(original[0]) in ran,
    "inner": id(original[3]) in ran,  # outer itself may write no cache: its nested code does
    "never_run": id(original[2]) in ran,
    "copied": len(copies),
    "rebound": ran_here.__code__ is not original[0] and ran_here.__code__ == original[0],
    "untouched": never_run.__code__ is original[2],
    "nested": outer()(1) == 2,
    "inner_is_copy": any(k is outer().__code__ for k in outer.__code__.co_consts)
        and not any(k is outer().__code__ for k in original[1].co_consts),
    "works": ran_here(10) == 45 + 11 and never_run(3) == 6,
    "wanted_before": wanted_before,
    "wanted_after": hotcode.wanted("host"),
    "empty": hotcode.pack([]),
}))
"""


def test_the_code_that_ran_is_found_copied_and_still_runs():
    r = fresh_interpreter(PROBE)
    assert r["ran_here"] and r["inner"] and not r["never_run"]
    assert r["copied"] >= 2
    assert r["rebound"] and r["untouched"]
    assert r["inner_is_copy"]  # a closure made after the copy runs the nested code's copy
    assert r["works"] and r["nested"]
    assert r["wanted_before"] == [True, False] and r["wanted_after"] is False
    assert r["empty"] == []


def test_a_report_fits_a_control_message():
    assert control.MAX_HOT_CODE == hotcode.MAX_HOT
    ids = [(1 << 64) - 1 - i for i in range(control.MAX_HOT_CODE)]
    data = control.encode(control.TO_MASTER, "hot", "host-viewed", ids)
    assert len(data) <= control.MAX_CONTROL_MESSAGE
    for bad in ([-1], [1 << 64], ["1"], list(range(control.MAX_HOT_CODE + 1))):
        try:
            control.encode(control.TO_MASTER, "hot", "host", bad)
        except control.ControlError:
            continue
        raise AssertionError(f"{bad[:3]} was accepted")


def test_the_relay_learns_from_its_first_host_and_viewer(relay, fingerprints, tmp_path):
    """Once per kind: a host session (ready, then viewed) and a viewer that stay LEARN_AFTER
    seconds each report the code they ran, the master copies it (logged once per kind), and the
    sessions forked after work from the copies: a real tmate host gets ready and a viewer gets
    its screen."""
    teach(relay, fingerprints, tmp_path / "teach")
    lines = [x for x in relay.log_text().splitlines() if "event='code packed'" in x]
    assert sorted(x.split("kind='")[1].split("'")[0] for x in lines) == ["host", "host-viewed", "viewer"], (
        lines
    )
    copied = {x.split("kind='")[1].split("'")[0]: int(x.split("copied=")[1].split()[0]) for x in lines}
    # The first: the hundreds an SSH session runs; then what is new (code the warm-up left
    # specialised and hitting writes nothing and is not reported).
    assert copied["host"] > 100 and copied["viewer"] >= 1 and copied["host-viewed"] >= 1, copied
    with TmateHost(tmp_path / "after", relay.port, *fingerprints) as host:
        host.wait_ready()
        rw, _ = session_tokens(host)
        _, screen = viewer_answer(relay.port, rw, until=b"")
        assert screen
    teach(relay, fingerprints, tmp_path / "again")  # taught already: nothing packed again
    assert sum("event='code packed'" in x for x in relay.log_text().splitlines()) == 3
