"""Tests of jail/hotcode.py: the code a connection process ran, learnt from it and copied by the
master. The steps that walk every function run in a fresh interpreter; the end-to-end test runs
a real relay, a real tmate host and a viewer."""

from __future__ import annotations

import time

from jail import hotcode
from relay import control
from tests.e2e import (
    TmateHost,
    fresh_interpreter,
    packed,
    paramiko_viewer,
    session_tokens,
    teach,
    viewer_answer,
)

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
after_one = hotcode.wanted("host")
for _ in range(hotcode.ROUNDS - 1):
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
    "wanted_after_one": after_one,
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
    assert r["wanted_after_one"] is (hotcode.ROUNDS > 1)  # each kind is used ROUNDS times
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


def test_the_relay_learns_from_its_first_hosts_and_viewers(relay, fingerprints, tmp_path):
    """ROUNDS reports of each kind: host sessions (ready, then viewed) and viewers that stay
    LEARN_AFTER seconds report the code they ran, the master copies what it has not copied yet
    (logged per report used), and the sessions forked after work from the copies: a real tmate
    host gets ready, a viewer gets its screen, and their reports are no longer wanted."""
    teach(relay, fingerprints, tmp_path / "teach")
    kinds = ("host", "viewer", "host-viewed")
    assert {k: packed(relay, k) for k in kinds} == {k: hotcode.ROUNDS for k in kinds}
    lines = [x for x in relay.log_text().splitlines() if "event='code packed' kind='host'" in x]
    copied = [int(x.split("copied=")[1].split()[0]) for x in lines]
    # The first: the hundreds an SSH session runs; the second only what the first had not run.
    assert copied[0] > 100 and copied[1] < copied[0], copied
    # A host session reports before its first viewer's code runs (relay.conn.host), so the code
    # that serves viewers comes with the host-viewed report, copied apart: about a hundred.
    viewed = [x for x in relay.log_text().splitlines() if "event='code packed' kind='host-viewed'" in x]
    assert int(viewed[0].split("copied=")[1].split()[0]) > 30, viewed
    with TmateHost(tmp_path / "after", relay.port, *fingerprints) as host:
        host.wait_ready()
        rw, _ = session_tokens(host)
        _, screen = viewer_answer(relay.port, rw, until=b"")
        assert screen
        t, _ = paramiko_viewer(("127.0.0.1", relay.port), rw)
        try:
            time.sleep(control.LEARN_AFTER + 1.5)  # past every moment a report would go
        finally:
            t.close()
    assert {k: packed(relay, k) for k in kinds} == {k: hotcode.ROUNDS for k in kinds}


def test_arrange_keeps_each_reports_code_in_one_run():
    # As a relay's first reports: a viewer's code, a host session's, and a viewed host
    # session's (all of the host's and more), sharing what every SSH process runs.
    viewer, host = list(range(0, 60)), list(range(40, 120))
    viewed = list(range(40, 140)) + list(range(20, 30))
    reports = {"host": host, "viewer": viewer, "host-viewed": viewed}
    order = hotcode.arrange(reports)
    assert sorted(order) == sorted(set(viewer + host + viewed))
    at = {key: i for i, key in enumerate(order)}
    for name, ids in reports.items():
        places = sorted(at[key] for key in ids)
        assert places[-1] - places[0] + 1 == len(set(ids)), name  # one run, nothing between
    assert hotcode.arrange({}) == []


LAYOUT_PROBE = """
import json
from jail import hotcode

def warm(f, n=50):
    for i in range(n):
        f(i)

def one(x):
    return x + 1

def both(x):
    return x * 2

def other(x):
    return x - 1

hotcode.baseline(["a", "b"])
code = {f.__name__: f.__code__ for f in (one, both, other)}
first = hotcode.learn("a", [id(code["one"]), id(code["both"])])
copy_a = one.__code__
laid = hotcode.learn("b", [id(code["both"]), id(code["other"]), 12345])
later = hotcode.learn("a", [id(code["one"])])  # copied already: nothing
print(json.dumps({
    "first": len(first), "laid": len(laid), "later": len(later),
    "relaid": one.__code__ is not copy_a and one.__code__ == code["one"],
    "all_copied": all(f.__code__ is not code[f.__name__] for f in (one, both, other)),
    "works": [one(1), both(2), other(3)],
    "wanted": [hotcode.wanted("a"), hotcode.wanted("b")],
}))
"""


def test_the_report_completing_the_kinds_lays_out_all_their_code_again():
    """The first kind's report is copied at once; the one that completes every kind copies all
    the reports named once more, from the originals (functions run the new copies); a later
    report of code copied already copies nothing."""
    r = fresh_interpreter(LAYOUT_PROBE)
    assert r["first"] == 2 and r["laid"] == 3 and r["later"] == 0
    assert r["relaid"] and r["all_copied"]
    assert r["works"] == [2, 4, 2]
    assert r["wanted"] == [hotcode.ROUNDS > 2, hotcode.ROUNDS > 1]  # "a" reported twice
