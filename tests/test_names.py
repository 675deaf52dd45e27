"""Named sessions, unit by unit: name validation and the master's answer (relay.master.names),
the api keys file, `pymate-relay apikey add` (a real subprocess), the session model's side
(relay.tmate.names, Session) and the control messages."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog

from relay import control
from relay.master import names
from relay.master.names import ApiKeys, Naming
from relay.tmate import messages as m
from relay.tmate import names as session_names
from relay.tmate.session import Session
from tests.e2e import apikey_add

KEY = "tmk-" + "a1B2c3D4e5" * 2 + "f6G7h8"
OTHER = "tmk-" + "Z" * 26


def h(key: str) -> str:
    """What a session process sends the master for an api key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["a", "pairing", "pair-ing", "a-b-c", "A9", "x" * 50, "0"])
def test_names_tmate_io_accepted(name):
    assert names.name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("x" * 51, names.TOO_LONG),
        ("-a", names.BAD_CHARS),
        ("a-", names.BAD_CHARS),
        ("a--b", names.BAD_CHARS),
        ("a_b", names.BAD_CHARS),
        ("a/b", names.BAD_CHARS),
        ("a b", names.BAD_CHARS),
        ("é", names.BAD_CHARS),
        ("", names.BAD_CHARS),
    ],
)
def test_names_tmate_io_refused(name, problem):
    assert names.name_problem(name) == problem


def test_the_texts_are_tmate_ios():
    assert names.TOO_LONG == "The session name length too long (max 50 chars)"
    assert names.BAD_CHARS == (
        "The session name may only contain alphanumeric characters or single hyphens, "
        "and cannot begin or end with a hyphen"
    )
    assert names.SAME_NAMES.startswith("The same session name for write and read-only access were provided")
    assert names.MISSING_KEY.startswith("To name sessions, specify your api key with -k")
    assert names.INVALID_KEY.startswith("The provided api key is invalid")
    assert "session name already in use" in names.IN_USE
    assert names.NOT_OFFERED == session_names.NOT_OFFERED  # the session process has its own copy


# ---------------------------------------------------------------------- the master's answer
@dataclass(eq=False)
class FakeChild:
    tokens: tuple[str, ...]
    proc: SimpleNamespace
    seen: set[str] = field(default_factory=set)


class FakeMaster(Naming):
    def __init__(self, api_keys: ApiKeys):
        self.api_keys = api_keys
        self.registry: dict = {}
        self.log = structlog.get_logger()
        self.log_context: dict = {}
        self.sent: list = []

    def _send(self, child, name, *args):
        self.sent.append((child, name, *args))

    def host(self, rw: str, ro: str):
        child = FakeChild((rw, ro), SimpleNamespace(pid=len(self.registry) + 100))
        self.registry[rw] = self.registry[ro] = child
        return child


@pytest.fixture
def keys_file(tmp_path) -> Path:
    path = tmp_path / "api_keys"
    path.write_text(f"alice {KEY}\n")
    return path


def test_the_master_names_a_session_and_keeps_it(keys_file):
    master = FakeMaster(ApiKeys(str(keys_file)))
    a = master.host("r" * 25, "ro-" + "s" * 25)
    master._on_name(a, "pairing", "pairing-ro", h(KEY))
    assert master.sent[-1] == (a, "named", "alice/pairing", "alice/pairing-ro", None)
    assert set(master.registry) == {"alice/pairing", "alice/pairing-ro"} and a.tokens[0] == "alice/pairing"
    # The same name for a second host: random tokens, and why; the first keeps everything.
    b = master.host("t" * 25, "ro-" + "u" * 25)
    master._on_name(b, "pairing", None, h(KEY))
    assert master.sent[-1] == (b, "named", "t" * 25, "ro-" + "u" * 25, names.IN_USE)
    assert master.registry["alice/pairing"] is a and master.registry["t" * 25] is b
    # A taken read-only name refuses the whole request too.
    c = master.host("v" * 25, "ro-" + "w" * 25)
    master._on_name(c, "free", "pairing-ro", h(KEY))
    assert master.sent[-1][-1] == names.IN_USE and "alice/free" not in master.registry
    with pytest.raises(control.ControlError, match="sent twice"):
        master._on_name(c, None, "watch", h(KEY))  # once per session: the master kills the sender
    # Only -r: the read-write token stays random.
    c.seen.clear()
    master._on_name(c, None, "watch", h(KEY))
    assert master.sent[-1] == (c, "named", "v" * 25, "alice/watch", None)
    assert master.registry["v" * 25] is c and "ro-" + "w" * 25 not in master.registry


@pytest.mark.parametrize(
    ("rw", "ro", "key", "why"),
    [
        ("ok", None, None, names.MISSING_KEY),
        ("ok", None, OTHER, names.INVALID_KEY),
        ("ok", None, KEY[:-1], names.INVALID_KEY),
        ("ok", None, KEY + "x", names.INVALID_KEY),
        ("same", "same", KEY, names.SAME_NAMES),
        ("ok", "bad-", KEY, names.BAD_CHARS),
        ("x" * 51, None, KEY, names.TOO_LONG),
    ],
)
def test_the_master_refuses_with_tmate_ios_reason(keys_file, rw, ro, key, why):
    master = FakeMaster(ApiKeys(str(keys_file)))
    assert master._named_tokens(rw, ro, key and h(key)) == (None, why)


def test_without_api_keys_no_name_is_given():
    master = FakeMaster(ApiKeys(None))
    assert master._named_tokens("ok", None, h(KEY)) == (None, names.NOT_OFFERED)


# ---------------------------------------------------------------------- the file
def test_api_keys_file_lines(tmp_path):
    text = (
        "# comment\n\n   \n"
        f"alice {KEY}\n"
        f"  bob\t{OTHER}  \r\n"
        "carol\n"
        f"da/ve {KEY}\n"
        "erin tmk-short\n"
        f"frank {KEY[:-1]}!\n"
        f"{'g' * 33} {KEY}\n"
        f"alice {KEY.lower()}"  # a second key for alice, no newline at the end
    )
    parsed = names.parse(bytearray(text.encode()))
    assert sorted(parsed.users.values()) == ["alice", "alice", "bob"]
    assert parsed.users[names.digest(OTHER)] == "bob"
    assert [n for n, _ in parsed.bad] == [6, 7, 8, 9, 10]
    assert all(KEY not in why for _, why in parsed.bad)


def test_api_keys_load_reload_and_keep_only_digests(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"alice {KEY}\n")
    keys = ApiKeys(str(path))
    assert keys.enabled and keys.user(KEY) == "alice" and keys.user(OTHER) is None
    assert keys.user_by_digest(h(KEY)) == "alice" and keys.user_by_digest("not hex") is None
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys.users)  # digests, no key text
    path.write_text(f"bob {OTHER}\n")
    keys.reload()
    assert keys.user(OTHER) == "bob" and keys.user(KEY) is None
    path.unlink()
    with structlog.testing.capture_logs() as logs:
        keys.reload()  # unreadable: the keys stay
    assert keys.user(OTHER) == "bob"
    assert logs[-1]["event"] == "api keys not reloaded"
    with pytest.raises(OSError):
        ApiKeys(str(path))  # at start an unreadable file is an error


def test_apikey_add_makes_appends_and_keeps_0600(tmp_path):
    path = tmp_path / "api_keys"
    path.write_text(f"bob {OTHER}")  # no final newline
    os.chmod(path, 0o644)

    def add(user: str) -> subprocess.CompletedProcess:
        return apikey_add(path, user, check=False)

    first, second = add("alice"), add("alice")
    assert first.returncode == second.returncode == 0, first.stderr
    k1, k2 = (r.stdout.split("api key for alice: ")[1].split()[0] for r in (first, second))
    assert k1 != k2 and all(session_names_key_ok(k) for k in (k1, k2))
    assert f'set -g tmate-api-key "{k1}"' in first.stdout
    assert path.read_text() == f"bob {OTHER}\nalice {k1}\nalice {k2}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = ApiKeys(str(path))
    assert keys.user(k1) == keys.user(k2) == "alice" and keys.user(OTHER) == "bob"
    bad = add("no/slash")
    assert bad.returncode == 2 and "USER must be" in bad.stderr
    fresh = tmp_path / "new_file"
    run = apikey_add(fresh, "zed", check=False)
    assert run.returncode == 0 and stat.S_IMODE(fresh.stat().st_mode) == 0o600


def session_names_key_ok(key: str) -> bool:
    return names.API_KEY_RE.fullmatch(key) is not None


# ---------------------------------------------------------------------- the session model
def _session(named: bool | None) -> Session:
    return Session(
        rw_token="r" * 25, ro_token="ro-" + "s" * 25, ssh_host="h", ssh_port=2222, named_sessions=named
    )


def _set(name: str, value: str) -> m.ExecCmd:
    return m.ExecCmd(("set-option", "-g", name, value))


def test_a_named_session_waits_for_ready_and_the_master():
    s = _session(True)
    assert s.handle(m.Header(6, "2.4.0")) == []  # names may still come
    assert s.handle(_set("tmate-session-name", "pairing")) == []
    assert s.handle(m.ExecCmd(("set-option", "tmate-api-key", KEY))) == []
    assert s.handle(m.HostReady()) == [] and s.host_ready
    assert s.names_wanted == session_names.NameRequest("pairing", None, KEY)
    out = s.names_given("alice/pairing", "ro-" + "s" * 25, None)
    assert out[-1] == m.RelayReady() and s.names_wanted is None
    assert m.SetEnv("tmate_ssh", "ssh -p2222 alice/pairing@h") in out
    assert m.Notify("ssh session: ssh -p2222 alice/pairing@h") in out
    # Set once the session runs: tmate.io's notice, nothing else changes.
    late = s.handle(_set("tmate-session-name-ro", "other"))
    assert late == [m.Notify("ro can only be set via the command line, or configuration file")]
    assert s.handle(_set("tmate-session-name", "")) == []  # empty: unset, as tmate.io filtered it


def test_a_refused_name_is_told_before_the_lines():
    s = _session(True)
    s.handle(m.Header(6, "2.4.0"))
    s.handle(_set("tmate-session-name", "pairing"))
    s.handle(m.HostReady())
    out = s.names_given(s.rw_token, s.ro_token, names.MISSING_KEY)
    assert out[0] == m.Notify(names.MISSING_KEY) and out[-1] == m.RelayReady()
    assert m.SetEnv("tmate_ssh", "ssh -p2222 " + "r" * 25 + "@h") in out


def test_no_name_asked_means_lines_at_ready():
    s = _session(True)
    s.handle(m.Header(6, "2.4.0"))
    s.handle(m.ExecCmd(("set-option", "tmate-api-key", KEY)))  # a key alone names nothing
    out = s.handle(m.HostReady())
    assert s.names_wanted is None and out[-1] == m.RelayReady() and len(out) == 6
    old = _session(True)
    assert old.handle(m.Header(5, "2.2.0"))[-1] == m.RelayReady()  # no READY before protocol 6


def test_a_relay_without_names_says_so_at_once():
    s = _session(False)
    assert s.handle(m.Header(6, "2.4.0"))[-1] == m.RelayReady()  # the lines at HEADER, as today
    assert s.handle(_set("tmate-session-name", "pairing")) == [m.Notify(session_names.NOT_OFFERED)]
    assert s.handle(_set("tmate-api-key", KEY)) == []  # once


def test_set_after_start_reads_set_option():
    f = session_names.set_after_start
    assert (
        f(("set", "tmate-api-key", "k"))
        == "api_key can only be set via the command line, or configuration file"
    )
    assert f(("set-option", "-gu", "tmate-session-name")) is None
    assert f(("set-option", "-g", "status", "on")) is None
    assert f(("bind-key", "tmate-session-name", "x")) is None


# ---------------------------------------------------------------------- the control messages
def test_name_messages_are_bounded_and_host_only():
    spec, args = control.decode(
        control.TO_MASTER, control.encode(control.TO_MASTER, "name", "a", None, h(KEY))
    )
    assert spec.roles == frozenset({control.HOST}) and args == ["a", None, h(KEY)]
    with pytest.raises(control.ControlError):
        control.encode(control.TO_MASTER, "name", "x" * (control.MAX_NAME_FIELD + 1), None, None)
    with pytest.raises(control.ControlError):
        control.encode(control.TO_MASTER, "name", None, None, "k" * (control.KEY_SHA256 + 1))
    named = control.TO_CONNECTION["named"]
    assert named.once and named.roles == frozenset({control.HOST})


def test_the_longest_named_token_passes_the_viewers_shape_check():
    from relay.conn.viewer import token_is_valid

    longest = "u" * names.MAX_USERNAME + "/" + "n" * names.MAX_NAME
    assert names.USERNAME_RE.fullmatch("u" * names.MAX_USERNAME) and names.name_problem("n" * 50) is None
    assert token_is_valid(longest) and len(longest) <= control.MAX_USER


def test_the_flag_wants_a_readable_file_of_bounded_size(tmp_path, capsys):
    from relay.cli import _checked_args

    path = tmp_path / "api_keys"
    with pytest.raises(SystemExit):
        _checked_args(["--api-keys", str(path)], env={})
    assert "--api-keys: cannot read" in capsys.readouterr().err
    path.write_bytes(b"#" * (names.MAX_API_KEYS_FILE + 1))
    with pytest.raises(SystemExit):
        _checked_args(["--api-keys", str(path)], env={})
    assert "is larger than" in capsys.readouterr().err
    path.write_text(f"alice {KEY}\n")
    args, _ = _checked_args(["--api-keys", str(path)], env={})
    assert args.api_keys == str(path.resolve())
