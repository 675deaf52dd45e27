"""The web viewer in a real browser: Debian's chromium driven by playwright (no browser
download) opens the links a real tmate host shows, through a real relay.

xterm.js comes from node_modules (`make install` runs `npm ci`): without it this test fails and
says so, it does not skip.
"""

from __future__ import annotations

import re
import struct
import time
import zlib

import pytest

from relay.web.assets import NODE_MODULES
from tests.e2e import Relay, TmateHost, free_port, session_tokens, tmate_available, wait_for

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not tmate_available(), reason="needs the tmate client")


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * channels, []
    prev = bytearray(stride)
    for y in range(height):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(filt)
            if pred is None:  # Paeth
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


@pytest.fixture(scope="module")
def browser():
    if not (NODE_MODULES / "@xterm" / "xterm" / "lib" / "xterm.js").exists():
        pytest.fail(f"xterm.js is not installed in {NODE_MODULES}: run `make install` (it runs npm ci)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def session(keys_dir, fingerprints, tmp_path_factory):
    port = free_port()
    with Relay(keys_dir, extra=["--web-port", str(port), "--web-bind", "127.0.0.1"]) as relay:
        host = TmateHost(tmp_path_factory.mktemp("browserhost"), relay.port, *fingerprints)
        host.start()
        try:
            host.wait_ready()
            host.leave_messages()
            yield relay, host
        finally:
            host.stop()


def terminal_text(page) -> str:
    return page.inner_text(".xterm-rows")


def page_rows(page) -> list[str]:
    """The terminal's rows as xterm.js drew them (one element each)."""
    return page.eval_on_selector_all(".xterm-rows > div", "rows => rows.map(r => r.textContent)")


# The computed colour of the cell that shows TRUERED, or null.
TRUE_RED = """() => {
  const cell = [...document.querySelectorAll(".xterm-rows span")].find(s => s.textContent.startsWith("TRUERED"));
  return cell ? getComputedStyle(cell).color : null;
}"""


def wait_text(page, text: str, timeout: float = 10) -> None:
    wait_for(lambda: text in terminal_text(page), timeout, f"{text!r} on the page")


def host_screen(host) -> str:
    return host.cmd("capture-pane", "-p", "-J").stdout


def test_a_browser_joins_types_opens_a_window_and_follows_its_size(browser, session, tmp_path):
    relay, host = session
    url, ro_url = host.display("#{tmate_web}"), host.display("#{tmate_web_ro}")
    page = browser.new_page(viewport={"width": 1000, "height": 600})
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    wait_text(page, "0:")  # the status line's window list
    prompt = host_screen(host).splitlines()[0].strip()  # the host's shell prompt (`#` or `$`)
    assert prompt, host_screen(host)
    wait_for(lambda: page_rows(page)[0].strip() == prompt, 5, f"the host's prompt {prompt!r} on the page")
    host.cmd(
        "send-keys", "-l", "echo from-the-host-$((6*7)); printf '\\033[38;2;255;0;0mTRUE''RED\\033[m\\n'"
    )
    host.cmd("send-keys", "Enter")
    wait_text(page, "from-the-host-42")
    # A true-colour cell: xterm.js gives it a style attribute (which the CSP must allow).
    wait_for(lambda: page.evaluate(TRUE_RED) == "rgb(255, 0, 0)", 5, "the true-colour cell drawn red")

    # Typing in the page runs on the host.
    page.locator(".xterm").click()
    page.keyboard.type("echo typed-in-the-browser-$((6*7))")
    page.keyboard.press("Enter")
    wait_for(lambda: "typed-in-the-browser-42" in host_screen(host), 5, "the host to run it")
    wait_text(page, "typed-in-the-browser-42")

    # The host's prefix bindings: C-b c opens a window, which the page then shows.
    page.keyboard.press("Control+b")
    page.keyboard.press("c")
    wait_for(lambda: host.display("#{session_windows}") == "2", 5, "a second window")
    wait_text(page, "1:")

    # Split panes with their border, copy mode's indicator, a tmux prompt on the status line.
    host.cmd("split-window", "-h")
    wait_for(lambda: sum("\u2502" in r for r in page_rows(page)) >= 10, 5, "the panes' border on the page")
    page.keyboard.press("Control+b")
    page.keyboard.press("[")
    wait_for(lambda: re.search(r"\[0/\d+\]", terminal_text(page)), 5, "copy mode's [0/N] on the page")
    page.keyboard.press("q")
    wait_for(lambda: not re.search(r"\[0/\d+\]", terminal_text(page)), 5, "copy mode left")
    page.keyboard.press("Control+b")
    page.keyboard.press(":")
    wait_for(lambda: page_rows(page)[-1].startswith(":"), 5, "the command prompt on the status line")
    page.keyboard.press("Escape")
    wait_for(lambda: "0:" in page_rows(page)[-1], 5, "the status line back")

    # The session follows the browser window's size.
    wait_for(lambda: host.display("#{window_width}") not in ("", "100"), 5, "the session at the page's size")
    wide = int(host.display("#{window_width}"))
    page.set_viewport_size({"width": 640, "height": 480})
    wait_for(lambda: int(host.display("#{window_width}")) < wide, 5, "the session to shrink with the page")
    host.cmd("kill-window")
    wait_for(lambda: host.display("#{session_windows}") == "1", 5, "one window again")

    # A read-only page shows the session and sends no keys.
    ro = browser.new_page(viewport={"width": 800, "height": 500})
    ro.goto(ro_url)
    wait_text(ro, "0:")
    # Wider than the session (the read-write page sets its size): tmux's fill beyond the window.
    wait_text(ro, "\u00b7")
    ro.locator(".xterm").click()
    ro.keyboard.type("echo read-only-typed")
    ro.keyboard.press("Enter")
    ro.keyboard.press("Control+b")
    ro.keyboard.press("c")
    time.sleep(0.5)
    assert "read-only-typed" not in host_screen(host) and host.display("#{session_windows}") == "1"

    shot = tmp_path / "web-viewer.png"  # kept in the test's temporary directory
    page.screenshot(path=str(shot))
    width, height, rows = png_pixels(shot.read_bytes())
    colours = {row[i : i + 3] for row in rows[:: max(1, height // 60)] for i in range(0, len(row), 12)}
    lit = sum(1 for row in rows for i in range(0, len(row), 48) if max(row[i : i + 3]) > 128)
    assert len(colours) > 2 and lit > 50, (len(colours), lit)  # text on the background, not blank
    assert violations == []
    assert "role='web'" in relay.log_text() and "role='ro-web'" in relay.log_text()
    page.close()
    ro.close()


def test_the_page_says_when_the_host_leaves(browser, session, fingerprints, tmp_path):
    relay, _ = session
    host = TmateHost(tmp_path / "h", relay.port, *fingerprints).start()
    try:
        host.wait_ready()
        rw, _ = session_tokens(host)
        page = browser.new_page()
        page.goto(host.display("#{tmate_web}"))
        wait_text(page, "0:")
        unknown = browser.new_page()
        unknown.goto(host.display("#{tmate_web}").rsplit("/", 1)[0] + "/" + "z" * 25)
        wait_for(
            lambda: unknown.inner_text("#status") == "Invalid or expired session token", 5, "the refusal"
        )
        host.stop()
        wait_for(lambda: page.is_visible("#status"), 10, "the end notice")
        assert page.inner_text("#status") == "[server exited]"
        assert rw not in relay.log_text()
    finally:
        host.stop()
