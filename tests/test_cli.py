"""The serve command line: flags, the docker image's environment variables as fallbacks, --help."""

from __future__ import annotations

import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from relay import cli
from tests.e2e import ROOT


def args(argv: list[str], env: dict[str, str] | None = None):
    return cli._checked_args(argv, env or {})[0]


def test_defaults_without_flags_or_environment():
    a = args([])
    assert (a.keys, a.port, a.bind, a.host, a.ssh_port) == ("keys", 22, "0.0.0.0", None, None)
    assert (a.proxy_protocol, a.require_authorized_keys, a.log_file, a.verbose) == (False, False, None, False)


DOCKER_ENV = {
    "SSH_KEYS_PATH": "/keys",
    "SSH_HOSTNAME": "relay.example.com",
    "SSH_PORT_LISTEN": "2200",
    "SSH_PORT_ADVERTISE": "22",
    "USE_PROXY_PROTOCOL": "1",
}


def test_the_docker_images_variables_are_fallbacks():
    a = args([], DOCKER_ENV)
    assert (a.keys, a.host, a.port, a.ssh_port, a.proxy_protocol) == (
        "/keys",
        "relay.example.com",
        2200,
        22,
        True,
    )


def test_flags_win_over_the_environment():
    a = args(
        ["-k", "k2", "-h", "h2", "-p", "2222", "-q", "443", "-x"], {**DOCKER_ENV, "USE_PROXY_PROTOCOL": "0"}
    )
    assert (a.keys, a.host, a.port, a.ssh_port, a.proxy_protocol) == ("k2", "h2", 2222, 443, True)


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("false", False), ("no", False)],
)
def test_use_proxy_protocol_words(value, on):
    assert args([], {"USE_PROXY_PROTOCOL": value}).proxy_protocol is on


def test_empty_variables_are_unset_and_the_old_advertize_spelling_is_read():
    a = args([], {"SSH_KEYS_PATH": "", "SSH_PORT_LISTEN": " ", "SSH_PORT_ADVERTIZE": "2022"})
    assert (a.keys, a.port, a.ssh_port) == ("keys", 22, 2022)
    a = args([], {"SSH_PORT_ADVERTISE": "23", "SSH_PORT_ADVERTIZE": "2022"})
    assert a.ssh_port == 23


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"SSH_PORT_LISTEN": "ssh"}, "SSH_PORT_LISTEN must be a port number"),
        ([], {"SSH_PORT_LISTEN": "70000"}, "-p must be between 1 and 65535"),
        ([], {"SSH_PORT_ADVERTISE": "-1"}, "SSH_PORT_ADVERTISE must be a port number"),
        ([], {"USE_PROXY_PROTOCOL": "maybe"}, "USE_PROXY_PROTOCOL must be 1/true/yes or 0/false/no"),
        (["-b", "localhost"], {}, "-b must be an IPv4 or IPv6 address"),
        (["-b", "1.2.3"], {}, "-b must be an IPv4 or IPv6 address"),
    ],
)
def test_bad_values_exit_with_usage(argv, env, message, capsys):
    with pytest.raises(SystemExit) as e:
        args(argv, env)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1", "::", "::1", "2001:db8::1"])
def test_bind_takes_ipv4_and_ipv6(bind):
    assert args(["-b", bind]).bind == bind


def test_long_forms():
    a = args(["--proxy-protocol", "--require-authorized-keys", "--log-file", "/tmp/x.json"])
    assert (a.proxy_protocol, a.require_authorized_keys, a.log_file) == (True, True, "/tmp/x.json")
    a = args(["-x", "-A", "-l", "relay.log"])
    assert (a.proxy_protocol, a.require_authorized_keys, a.log_file) == (True, True, "relay.log")


def test_help_documents_every_flag_its_default_and_its_variable():
    out = subprocess.run(
        [sys.executable, "-m", "relay", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for text in (
        "-k DIR",
        "-p PORT",
        "-b ADDR",
        "-h HOST",
        "-q PORT",
        "--proxy-protocol",
        "--require-authorized-keys",
        "--log-file FILE",
        "-v",
        ":: serves IPv6 and IPv4",
        "proxy-header",
    ):
        assert text in flat, text
    for var in (
        "SSH_KEYS_PATH",
        "SSH_HOSTNAME",
        "SSH_PORT_LISTEN",
        "SSH_PORT_ADVERTISE",
        "USE_PROXY_PROTOCOL",
    ):
        assert out.count(var) >= 2, var  # by its flag and in the environment list
    parser = cli._parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and "default" in action.help, action.option_strings


def test_the_master_and_the_connection_get_the_flags(monkeypatch):
    from relay.conn import process

    given: list[process.ConnectionConfig] = []

    def connection(sock, ctl, ip, cfg, accepted):
        given.append(cfg)
        return SimpleNamespace(run=None)

    monkeypatch.setattr(process, "Connection", connection)
    a, uids = cli._checked_args(["-x", "-A", "-b", "::", "-p", "2222"], {})
    master = cli._make_master(a, [], uids)
    assert master.cfg.proxy_protocol is True and (master.cfg.bind, master.cfg.port) == ("::", 2222)
    with socket.socket() as sock, socket.socket() as ctl:
        master.connection(sock, ctl, "203.0.113.7", 0.0)
    assert given[0].require_authorized_keys is True


def test_the_log_file_goes_to_the_masters_log_configuration(monkeypatch, tmp_path, capsys):
    from relay import log

    calls = []
    monkeypatch.setattr(log, "configure_master", lambda *a, **kw: calls.append((a, kw)))
    missing = str(tmp_path / "no-keys")
    assert cli.serve_main(["-k", missing, "-v", "-l", str(tmp_path / "relay.json")]) == 1  # no keys: stops
    assert calls == [((True, str(tmp_path / "relay.json")), {})]
    calls.clear()
    assert cli.serve_main(["-k", missing]) == 1
    assert calls == [((False,), {})]
    assert missing in capsys.readouterr().err
