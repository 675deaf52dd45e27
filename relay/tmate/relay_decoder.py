"""Decoding the relay -> host stream (TMATE_IN_*), what a tmate client reads: for tests and tools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.tmate.messages import (
    LegacyPaneKey,
    Notify,
    PaneKey,
    RelayMessage,
    RelayMsg,
    RelayReady,
    Resize,
    SetEnv,
    ViewerExecCmd,
    ViewerExecCmdStr,
)
from relay.tmate.wire import (
    INT_MAX,
    INT_MIN,
    MAX_DIMENSION,
    MAX_ID,
    MAX_MESSAGE_SIZE,
    UINT64_MAX,
    FieldError,
    StreamDecoder,
    argv_field,
    check_arity,
    int_field,
    text_field,
)


class RelayDecoder(StreamDecoder[RelayMessage]):
    """Decodes the relay -> host stream (what a tmate client reads); for tests and tools."""

    names = {t.value: t.name for t in RelayMsg}

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE):
        super().__init__(max_message_size)

    def _decode_fields(self, t: int, m: list[Any]) -> RelayMessage:
        return _DECODERS[t](m)


def _notify(m: list[Any]) -> Notify:
    check_arity(m, 1)
    return Notify(text_field(m[1], "message"))


def _legacy_pane_key(m: list[Any]) -> LegacyPaneKey:
    check_arity(m, 1)
    return LegacyPaneKey(int_field(m[1], 0, INT_MAX, "key"))


def _resize(m: list[Any]) -> Resize:
    check_arity(m, 2)
    return Resize(int_field(m[1], -1, MAX_DIMENSION, "sx"), int_field(m[2], -1, MAX_DIMENSION, "sy"))


def _exec_cmd_str(m: list[Any]) -> ViewerExecCmdStr:
    check_arity(m, 2)
    return ViewerExecCmdStr(int_field(m[1], INT_MIN, INT_MAX, "client id"), text_field(m[2], "command"))


def _set_env(m: list[Any]) -> SetEnv:
    check_arity(m, 2)
    return SetEnv(text_field(m[1], "name"), text_field(m[2], "value"))


def _ready(m: list[Any]) -> RelayReady:
    check_arity(m, 0)
    return RelayReady()


def _pane_key(m: list[Any]) -> PaneKey:
    check_arity(m, 2)
    return PaneKey(int_field(m[1], -1, MAX_ID, "pane id"), int_field(m[2], 0, UINT64_MAX, "key"))


def _exec_cmd(m: list[Any]) -> ViewerExecCmd:
    if len(m) < 2:
        raise FieldError("missing client id")
    return ViewerExecCmd(int_field(m[1], INT_MIN, INT_MAX, "client id"), argv_field(m[2:]))


_DECODERS: dict[int, Callable[[list[Any]], RelayMessage]] = {
    RelayMsg.NOTIFY: _notify,
    RelayMsg.LEGACY_PANE_KEY: _legacy_pane_key,
    RelayMsg.RESIZE: _resize,
    RelayMsg.EXEC_CMD_STR: _exec_cmd_str,
    RelayMsg.SET_ENV: _set_env,
    RelayMsg.READY: _ready,
    RelayMsg.PANE_KEY: _pane_key,
    RelayMsg.EXEC_CMD: _exec_cmd,
}
