"""SIGHUP's key rotation: the connection configuration new connection processes get.

relay.cli builds one `KeyReload` and hands the master its `reload` (the master knows nothing of
SSH). `reload()` re-reads the host key directory with relay.hostkeys and, if every key file
there is valid, swaps the keys the next connection processes are started with; the live ones
(sessions included) keep theirs and go on. A key type the master has not served before is warmed
first (relay.conn.warmup, in-process, its threads joined before the next fork), so that the
children that use it share its lazily initialised state as they share the others'. A broken or
missing key keeps the old keys, and the reason is logged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import paramiko

from relay import hostkeys, log
from relay.conn.process import ConnectionConfig
from relay.conn.warmup import warm_up


class KeyReload:
    def __init__(
        self,
        cfg: ConnectionConfig,
        keys_dir: str | os.PathLike[str],
        warm: Callable[[Sequence[paramiko.PKey]], None] = warm_up,
    ):
        self.cfg = cfg  # what the next connection process is given
        self.keys_dir = keys_dir
        self.warm = warm
        self.warmed = {k.get_name() for k in cfg.host_keys}  # key types warmed in this process
        self.log: Any = log.get_logger()

    def reload(self) -> bool:
        """Re-read the host keys; whether new ones are served from now on."""
        try:
            keys = hostkeys.load_host_keys(self.keys_dir)
        except hostkeys.HostKeyError as e:
            self.log.error("host keys not reloaded", reason=f"{e} (the old keys are kept)")
            return False
        new_types = [k for k in keys if k.get_name() not in self.warmed]
        if new_types:
            started = time.monotonic()
            self.warm(new_types)
            self.warmed.update(k.get_name() for k in new_types)
            self.log.info(
                "host key type warmed",
                types=",".join(k.get_name() for k in new_types),
                duration=round(time.monotonic() - started, 3),
            )
        old = {hostkeys.fingerprint(k) for k in self.cfg.host_keys}
        self.cfg = dataclasses.replace(self.cfg, host_keys=tuple(keys))
        for k in keys:
            fp = hostkeys.fingerprint(k)
            self.log.info("host key", type=k.get_name(), fingerprint=fp, new=fp not in old)
        changed = sum(hostkeys.fingerprint(k) not in old for k in keys)
        self.log.info("host keys reloaded", keys=len(keys), changed=changed)
        return True
