"""Hostile hosts and viewers: mutated host streams and random keyboard input.

A public relay's normal case is a peer that sends anything. Whatever a host sends, the session
code may only end the session with a reason (ProtocolError, SessionError); whatever a viewer
types, keys, prompts and frames never raise. Seeds are fixed, so a failure names its case.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest

from relay.input.dispatch import KeyDispatcher, Local, Notice
from relay.input.parser import InputParser
from relay.input.prompt import ViewerPrompt
from relay.screen.render import ViewerScreen
from relay.tmate.codec import HostDecoder, ProtocolError
from relay.tmate.session import Session, SessionError
from tests.test_dispatch import _session as session_from_fixture

STREAMS = sorted((Path(__file__).parent / "fixtures").glob("host-stream-*.bin"))
EDGE_INTS = [
    -1,
    0,
    1,
    2,
    255,
    256,
    999,
    1000,
    1001,
    65535,
    65536,
    10**6,
    2**31 - 1,
    2**31,
    2**32,
    2**63 - 1,
    -(2**63),
]
EDGE_STRS = [
    "",
    "x" * 3000,
    "\x1b[2J\x1b[999;999H\x1b[?1049h\x00",
    "#[fg=colour300,bg=#zzzzzz,bright]" * 5,
    "\U0001f600" * 50,
    "%1 %%",
    "\u4e2d\u0301#{pane_id}",
]
EDGE_BYTES = [
    b"",
    b"\x1b[2J" * 100,
    bytes(range(256)) * 10,
    b"\x1b[?1049h\x1b[1;1r\n" * 50,
    b"\x1b[10000;10000r\x1b[99999@\x1b[99999L",
]


def _messages(path: Path) -> list:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(path.read_bytes())
    return list(unpacker)


def _mutate(value, rng: random.Random, depth: int = 0):
    """A value of the same type with an edge-case content, or a value of another shape."""
    if isinstance(value, list) and value and (depth == 0 or rng.random() < 0.7):
        value = list(value)
        i = rng.randrange(1 if depth == 0 and len(value) > 1 else 0, len(value))  # keep the type
        op = rng.random()
        if op < 0.6:
            value[i] = _mutate(value[i], rng, depth + 1)
        elif op < 0.75:
            del value[i]
        elif op < 0.9:
            value.insert(i, _mutate(value[i], rng, depth + 1))
        else:
            value = value * rng.randint(2, 5)
        return value
    if rng.random() < 0.6:
        if isinstance(value, bool):
            return not value
        if isinstance(value, int):
            return rng.choice(EDGE_INTS + [value + 1, value - 1, -value])
        if isinstance(value, str):
            return rng.choice(EDGE_STRS)
        if isinstance(value, bytes):
            return rng.choice(EDGE_BYTES)
    return rng.choice(
        [
            None,
            True,
            1.5,
            rng.choice(EDGE_INTS),
            rng.choice(EDGE_STRS),
            rng.choice(EDGE_BYTES),
            [],
            {1: 2},
            [rng.choice(EDGE_INTS)] * rng.randint(0, 6),
        ]
    )


def _session() -> Session:
    return Session(rw_token="a" * 25, ro_token="ro-" + "b" * 25, ssh_host="relay.example", ssh_port=22)


def _run_host_stream(data: bytes, rng: random.Random) -> str | None:
    """Feed a stream as the session loop does, rendering now and then; the reason it ended, or
    None when it was handled to the end."""
    session = _session()
    screen = ViewerScreen(rng.choice([1, 20, 80]), rng.choice([1, 5, 24]))
    try:
        decoder = HostDecoder()
        for pos in range(0, len(data), step := rng.choice([1, 7, 100, 5000, 100000])):
            for msg in decoder.feed(data[pos : pos + step]):
                session.handle(msg)
                if rng.random() < 0.2:
                    screen.frame(session)
        screen.frame(session, message="note")
        return None
    except (ProtocolError, SessionError) as e:
        assert str(e), "a refusal must carry its reason"
        return str(e)
    finally:
        session.close()


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_mutated_host_streams_end_the_session_with_a_reason_or_are_handled(path):
    messages = _messages(path)
    targets = [i for i, msg in enumerate(messages) if i and isinstance(msg, list) and msg and msg[0] != 12]
    handled = refused = 0
    for seed in range(800):
        rng = random.Random(seed)
        mutated = list(messages)
        for _ in range(rng.randint(1, 2)):
            i = rng.choice(targets)
            mutated[i] = _mutate(mutated[i], rng)
        if rng.random() < 0.1:
            mutated[0] = _mutate(mutated[0], rng)
        data = b"".join(msgpack.packb(msg) for msg in mutated)
        if rng.random() < 0.2:  # and some byte-level damage
            cut = rng.randrange(len(data))
            data = data[:cut] + bytes([rng.randrange(256)]) + data[cut + 1 :]
        if _run_host_stream(data, rng) is None:
            handled += 1
        else:
            refused += 1
    # Both outcomes must be common, or the mutations test only the first check they meet.
    assert handled > 50 and refused > 50, (handled, refused)


KEY_PIECES = [
    b"\x02",
    b"\x1b",
    b"[",
    b"O",
    b"1;5",
    b"A",
    b"~",
    b"\x1b[200~",
    b"\x1b[201~",
    b":",
    b"\r",
    b"\x7f",
    b"\xe4\xb8\xad",
    b"\xff",
    b"\x1b[<0;1;1M",
    b"\x1b[M !!",
    b"c",
    b"%",
    b"&",
    b"y",
    b",",
    b"$",
    b"'",
    b"\x03",
    b"\t",
    b"\x1b[3",
    b"24~",
    b"\x1bO",
    b"P",
    b"9" * 30,
    b"\x1b[" + b"1;" * 40 + b"A",
]


@pytest.mark.parametrize("readonly", [False, True])
def test_random_viewer_input_never_breaks_keys_prompts_or_frames(readonly):
    session = session_from_fixture()  # a recorded host: its bindings and windows
    prompts = commands = 0
    now = 0.0
    try:
        for seed in range(1500):
            rng = random.Random(seed)
            parser, dispatcher = InputParser(), KeyDispatcher(session, 1, readonly)
            screen, prompt = ViewerScreen(80, 24), None
            for _ in range(rng.randint(1, 20)):
                now += rng.choice([0.0, 0.001, 0.6])
                chunk = b"".join(rng.choice(KEY_PIECES) for _ in range(rng.randint(1, 5)))
                for code in parser.feed(chunk, now) + parser.flush(now + 1):
                    if prompt is not None:
                        prompt.display(rng.choice([1, 10, 80]))
                        if prompt.key(code) is not None:
                            prompt = None
                        continue
                    for action in dispatcher.key(code, now):
                        commands += 1
                        # A read-only viewer's keys never reach the host (detaching itself is local).
                        assert not readonly or isinstance(action, (Local, Notice)), action
                        if isinstance(action, Local) and action.name in ("command-prompt", "confirm-before"):
                            make = (
                                ViewerPrompt.command_prompt
                                if action.name == "command-prompt"
                                else ViewerPrompt.confirm_before
                            )
                            prompt = make(action.argv, session)
                            prompts += 1
                dispatcher.expire(now + 5)
                screen.frame(session, prompt=prompt.display(80) if prompt else None)
    finally:
        session.close()
    assert commands > 100 and (prompts == 0 if readonly else prompts > 20), (commands, prompts)
