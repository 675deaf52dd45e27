"""End-to-end helpers: a real relay process on a loopback port and real tmate hosts.

Every helper stops what it starts (context managers); tests use them through conftest fixtures.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jail import hotcode
from relay import control

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_fingerprint(path: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


def make_host_keys(directory: Path) -> tuple[str, str]:
    """Host keys made with the project's own keygen (a real subprocess); returns the RSA and
    ed25519 fingerprints as ssh-keygen prints them."""
    subprocess.run(
        [sys.executable, "-m", "relay", "keygen", "-k", str(directory), "-h", "127.0.0.1", "-p", "2222"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return (
        ssh_fingerprint(directory / "ssh_host_rsa_key.pub"),
        ssh_fingerprint(directory / "ssh_host_ed25519_key.pub"),
    )


class AcceptingSshServer(paramiko.ServerInterface):
    """Policy of a bare paramiko test server: auth `none` and any session channel."""

    def get_allowed_auths(self, username):
        return "none"

    def check_auth_none(self, username):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED


def ed25519_host_key() -> paramiko.PKey:
    """A fresh in-memory ed25519 host key for such a server."""
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        .decode()
    )
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem))


def cmdline(pid: int) -> bytes:
    """A process's command line, or b"" once it has exited: a child listed a moment ago (a jail's
    short-lived intermediate process, a refused connection's) may be gone when it is read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def children_of(ppid: int, title: bytes = b"") -> list[int]:
    """The processes whose parent is ppid (from each /proc/PID/stat's parent field), live or
    zombie; with a title, only those whose command line starts with it."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == ppid and (not title or cmdline(int(d.name)).startswith(title)):
                out.append(int(d.name))
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def python_fails_as(uid: int) -> str | None:
    """Why this interpreter cannot run as `uid` (a Python installed in a private home, e.g.
    pyenv's under /root, does not), or None when it can."""
    run = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c", ""],
        capture_output=True,
        text=True,
        cwd="/",
    )
    if run.returncode != 0:
        return f"uid {uid} cannot run {sys.executable}: {run.stderr.strip()[-200:]}"
    return None


def fake_host(port: int) -> tuple[paramiko.Transport, paramiko.Channel]:
    """A host the test speaks for: a paramiko client with the tmate subsystem open (it has sent
    no tmate message yet)."""
    t = paramiko.Transport(("127.0.0.1", port))
    t.connect()
    t.auth_none("tmate")
    ch = t.open_session()
    ch.invoke_subsystem("tmate")
    return t, ch


def terminate(proc: subprocess.Popen) -> int:
    """SIGTERM a process started by a test, SIGKILL it if it is still there after 10 s; its exit
    code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


class Relay:
    """A `pymate-relay` process serving on 127.0.0.1:PORT; its log lines are collected."""

    def __init__(
        self, keys: Path, *, port: int | None = None, extra: Sequence[str] = (), user: str | None = None
    ):
        self.keys = keys
        self.port = port or free_port()
        self.extra = list(extra)
        self.user = user
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> Relay:
        cmd = [
            sys.executable,
            "-m",
            "relay",
            "-k",
            str(self.keys),
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-v",
            *self.extra,
        ]
        if self.user:
            cmd = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups", *cmd]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            # key=value lines on the pipe (the tests read them), not JSON lines or the journal
            env={**os.environ, "PYMATE_LOG_FORMAT": "kv"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            wait_for(
                lambda: self.has("event='listening'") or self.proc.poll() is not None,
                15,
                "the relay to listen",
            )
        except TimeoutError:
            terminate(self.proc)  # a relay stuck before it listens is stopped, not left behind
            raise
        if self.proc.poll() is not None:
            raise RuntimeError("relay exited at start:\n" + self.log_text())
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def has(self, needle: str) -> bool:
        with self._lock:
            return any(needle in line for line in self.lines)

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        def find():
            with self._lock:
                return next((line for line in self.lines if needle in line), None)

        return wait_for(find, timeout, f"log line containing {needle!r}")

    def children(self) -> list[int]:
        """The jailed connection processes: the relay's children titled `pymate ...` (a jail's
        short-lived intermediate process still has the relay's own command line)."""
        assert self.proc is not None
        return children_of(self.proc.pid, b"pymate ")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return terminate(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def scratch_relay(prefix: str = "pymate-bench-"):
    """A relay serving fresh host keys from a temporary directory, for scripts outside pytest
    (benches): yields (the directory, the relay, the RSA and ed25519 fingerprints)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        tmp = Path(name)
        fps = make_host_keys(tmp / "keys")
        with Relay(tmp / "keys") as relay:
            yield tmp, relay, fps


class TmateHost:
    """A real tmate client (Debian's tmate 2.4) hosting a session through the relay."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        rsa_fp: str,
        ed25519_fp: str,
        host: str = "127.0.0.1",
        extra_conf: str = "",
        sx: int = 100,
        sy: int = 30,
        args: Sequence[str] = (),
    ):
        self.args = list(args)  # tmate's own flags (-n NAME -k KEY ...), before its command
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home = self.dir / "home"
        self.home.mkdir(exist_ok=True)
        self.sock = self.dir / "tmate.sock"
        self.conf = self.dir / "tmate.conf"
        self.conf.write_text(
            f"set -g tmate-server-host {host}\n"
            f"set -g tmate-server-port {port}\n"
            f'set -g tmate-server-rsa-fingerprint "{rsa_fp}"\n'
            f'set -g tmate-server-ed25519-fingerprint "{ed25519_fp}"\n'
            f"{extra_conf}"
        )
        self.sx, self.sy = sx, sy
        self.outer: Path | None = None
        self.env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TERM": "xterm-256color",
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "TMUX_TMPDIR": str(self.dir),
        }

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run a command where this host's tmate runs (here: this machine's namespaces)."""
        return subprocess.run(argv, **kw)

    def cmd(self, *args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(
            ["tmate", "-S", str(self.sock), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def start(self, attached: bool = False) -> TmateHost:
        """Start the session; `attached` runs the tmate client inside a real tmux terminal, as a
        user at a terminal would (its message log then holds the relay's notices)."""
        if not attached:
            self.cmd(
                "-f", str(self.conf), *self.args, "new-session", "-d", "-x", str(self.sx), "-y", str(self.sy)
            )
            return self
        self.outer = self.dir / "outer-tmux.sock"
        subprocess.run(
            [
                "tmux",
                "-S",
                str(self.outer),
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                str(self.sx),
                "-y",
                str(self.sy),
                f"env -u TMUX {shlex.join(['tmate', '-S', str(self.sock), '-f', str(self.conf), *self.args])}; sleep 60",
            ],
            env=self.env,
            cwd=self.home,
            check=True,
            timeout=10,
        )
        wait_for(lambda: self.sock.exists() and _socket_alive(self.sock), 10, "the tmate server")
        return self

    def client(self) -> str:
        """The name of the first attached tmate client (e.g. /dev/pts/3)."""
        out = wait_for(
            lambda: self.cmd("list-clients", "-F", "#{client_tty}").stdout.strip(),
            5,
            "an attached tmate client",
        )
        return out.splitlines()[0]

    def outer_screen(self) -> str:
        """What the terminal the host client runs in shows."""
        return subprocess.run(
            ["tmux", "-S", str(self.outer), "capture-pane", "-p"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_ready(self, timeout: float = 10) -> None:
        self.cmd("wait", "tmate-ready", timeout=timeout)

    def display(self, fmt: str) -> str:
        return self.cmd("display", "-p", fmt).stdout.rstrip("\n")

    def leave_messages(self, timeout: float = 10) -> None:
        """Dismiss tmate's message view (shown from tmate-ready on) and wait for the shell's
        prompt, so that keys sent next reach a shell that reads them."""
        if self.display("#{pane_in_mode}") == "1":
            self.cmd("send-keys", "q")
            wait_for(lambda: self.display("#{pane_in_mode}") == "0", timeout, "tmate's message view to close")
        wait_for(
            lambda: self.cmd("capture-pane", "-p").stdout.rstrip().endswith(("$", "#")),
            timeout,
            "the host's shell prompt",
        )

    def messages(self) -> str:
        """The attached client's message log (`show-messages`); needs start(attached=True)."""
        return self.cmd("show-messages", "-t", self.client()).stdout

    def alive(self) -> bool:
        return self.sock.exists() and self.cmd("has-session", check=False).returncode == 0

    def stop(self) -> None:
        if self.sock.exists():
            self.cmd("kill-server", check=False)
        if self.outer is not None:
            subprocess.run(
                ["tmux", "-S", str(self.outer), "kill-server"], env=self.env, capture_output=True, timeout=10
            )
        # The tmate server process may linger for a moment after kill-server.
        try:
            wait_for(
                lambda: not self.sock.exists() or not _socket_alive(self.sock), 5, "the tmate server to exit"
            )
        except TimeoutError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


SSH_LINE = re.compile(r"^ssh (?:-p(\d+) )?((?:ro-)?[a-zA-Z0-9]{25})@(\S+)$")


def session_tokens(host: TmateHost) -> tuple[str, str]:
    """The (read-write, read-only) tokens of the host's ssh command lines."""
    lines = host.display("#{tmate_ssh}"), host.display("#{tmate_ssh_ro}")
    matches = [SSH_LINE.match(line) for line in lines]
    assert matches[0] and matches[1], lines
    return matches[0].group(2), matches[1].group(2)


def apikey_add(path: Path | str, user: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real `pymate-relay apikey add USER --api-keys PATH`, run from the checkout."""
    cmd = [sys.executable, "-m", "relay", "apikey", "add", user, "--api-keys", str(path)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=check)


def new_api_key(path: Path | str, user: str) -> str:
    """The key (tmk-...) that `apikey add` wrote to `path` for `user`."""
    out = apikey_add(path, user).stdout
    key = re.search(r"tmk-[a-zA-Z0-9]{26}", out)
    assert key, out
    return key.group(0)


def tmate_available() -> bool:
    return shutil.which("tmate") is not None


class SshViewer:
    """A real OpenSSH client joining a session, running in a real tmux terminal of fixed size."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        token: str,
        cols: int = 80,
        rows: int = 24,
        ssh_opts: Sequence[str] = (),
    ):
        self.ssh_opts = list(ssh_opts)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        self.sock = self.dir / "viewer-tmux.sock"
        self.port, self.token, self.cols, self.rows = port, token, cols, rows
        self.env = {
            "HOME": str(self.dir / "home"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
        }

    def ssh_command(self) -> str:
        return (
            f"ssh -p {self.port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            f"-o LogLevel=ERROR -o BatchMode=yes {' '.join(self.ssh_opts)} {self.token}@127.0.0.1"
        )

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-S", str(self.sock), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )

    def start(self) -> SshViewer:
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(self.cols),
            "-y",
            str(self.rows),
            f'{self.ssh_command()}; echo "[ssh exit $?]"; sleep 120',
        )
        self.tmux("set-option", "-g", "status", "off")
        self.tmux("set-option", "-g", "escape-time", "0")
        return self

    def screen(self, colours: bool = False) -> str:
        args = ["capture-pane", "-p", "-N"] + (["-e"] if colours else [])
        return self.tmux(*args).stdout

    def lines(self) -> list[str]:
        return self.screen().split("\n")[: self.rows]

    def wait_screen(self, text: str, timeout: float = 5) -> str:
        try:
            return wait_for(
                lambda: (lambda s: s if text in s else None)(self.screen()),
                timeout,
                f"{text!r} on the viewer's screen",
            )
        except TimeoutError as e:
            raise TimeoutError(f"{e}; it shows:\n{self.screen()}") from None

    def send(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", *(["-l"] if literal else []), *keys)

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.tmux("resize-window", "-x", str(cols), "-y", str(rows))

    def exited(self) -> bool:
        return "[ssh exit" in self.screen()

    def stop(self) -> None:
        self.tmux("kill-server", check=False)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def paramiko_viewer(sock, token: str, shell: bool = True) -> tuple[paramiko.Transport, paramiko.Channel]:
    """A viewer the way ssh joins (auth none, a pty, then the shell unless `shell` is False) with
    a paramiko client over `sock` (a connected socket, or an (address, port) pair); the caller
    closes the transport."""
    t = paramiko.Transport(sock)
    try:
        t.connect()
        t.auth_none(token)
        ch = t.open_session()
        ch.get_pty()
        if shell:
            ch.invoke_shell()
    except BaseException:
        t.close()
        raise
    return t, ch


def viewer_answer(port: int, token: str, until: bytes = b"\n") -> tuple[float, bytes]:
    """Join as a viewer the way ssh does (auth none, pty, shell) with a paramiko client; returns
    the seconds from the shell request until what arrived holds `until` (a full line by default;
    b"" for the first bytes, e.g. a session's first frame), and what arrived."""
    t, ch = paramiko_viewer(("127.0.0.1", port), token, shell=False)
    try:
        ch.settimeout(5)
        t0 = time.perf_counter()
        ch.invoke_shell()
        data = b""
        while not (data and until in data):
            chunk = ch.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return time.perf_counter() - t0, data
    finally:
        t.close()


def teach(relay: Relay, fps: tuple[str, str], workdir: Path, rounds: int = hotcode.ROUNDS) -> None:
    """Host sessions and viewers that stay until the relay has learnt the code each runs
    (jail/hotcode.py: LEARN_AFTER seconds in, the master copies it for the processes it forks
    from then on; `rounds` reports of each kind), as a relay in service learns it from its first
    ones: benches measure the processes forked after."""
    for r in range(1, rounds + 1):
        with TmateHost(workdir / f"round{r}", relay.port, *fps) as host:
            host.wait_ready()
            rw, _ = session_tokens(host)
            t, _ = paramiko_viewer(("127.0.0.1", relay.port), rw)
            try:
                for kind in control.LEARN_KINDS:
                    wait_for(lambda k=kind, n=r: packed(relay, k) >= n, 15, f"report {r} of the {kind} code")
            finally:
                t.close()


def packed(relay: Relay, kind: str) -> int:
    """How many reports of `kind` the relay's master used (its `code packed` events)."""
    return sum(f"event='code packed' kind='{kind}'" in x for x in relay.log_text().splitlines())


def fresh_interpreter(source: str, python: str | Path = sys.executable) -> dict:
    """Run `source` in a fresh interpreter (this tree on its path) and return the JSON object it
    prints: for steps that change the whole process that runs them (its heap, its functions)."""
    out = subprocess.run(
        [str(python), "-c", source],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def uss_kib(pid: int) -> int:
    """A process's private memory (USS: Private_Clean + Private_Dirty of its smaps_rollup), in
    KiB; 0 for a process that is gone."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except OSError:
        return 0
    return total


def descendants(pid: int) -> list[int]:
    """Every live descendant of a process (from each /proc/PID/stat's parent field)."""
    children: dict[int, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                children[int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])].append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_ticks(pids: list[int]) -> int:
    """The CPU time (user + system, in clock ticks) the processes have used; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether a process's readable memory holds `needle` (root reads any process's memory, the
    jailed ones included)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False
