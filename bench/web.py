"""Web viewer benchmarks beside the ssh viewer's, in the same run: print figures, assert nothing.

1. Join: ssh start -> host text on the viewer (a real OpenSSH client on a pty), and page load ->
   host text visible in the browser's terminal (Debian's chromium through playwright: a fresh
   page each time; the page, its two scripts and the WebSocket take three jailed connection
   processes, the page's connection serving one script), median of --joins.
2. Keystroke echo through a raw pty on the host (`stty raw -echo` and a byte-echo loop): ssh
   (write to the pty -> the byte back), and the browser (its keydown -> the frame's WebSocket
   message, and -> the byte drawn in xterm.js's rows, which waits for its next animation frame;
   both on the page's own clock), median of --echo.
3. Memory: the private memory (USS) of an idle ssh viewer's and web viewer's jailed process.

Usage: .venv/bin/python bench/web.py [--joins 10] [--echo 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from viewer import ECHO_LOOP, PtySsh, ssh_echoes  # noqa: E402

from tests.e2e import SSH_LINE, Relay, TmateHost, free_port, make_host_keys, uss_kib  # noqa: E402

CHROMIUM = "/usr/bin/chromium"

# Before the page's own scripts: the page's clock (from navigation start) when its terminal first
# shows MARK.
WATCH_JOIN = """(() => {
  const seen = () => {
    const rows = document.querySelector(".xterm-rows");
    if (rows && rows.textContent.includes("JOIN-MARK-42")) { window.__seen = performance.now(); return true; }
    return false;
  };
  new MutationObserver((_, obs) => { if (seen()) obs.disconnect(); })
    .observe(document, {childList: true, subtree: true, characterData: true});
})();"""

# Resolves, on the page's clock, once the terminal's rows hold `expected` after the next keydown.
WATCH_ECHO = """expected => {
  window.__echo = new Promise(resolve => {
    let t0 = null, arrived = null;
    document.addEventListener("keydown", () => { t0 = performance.now(); }, {capture: true, once: true});
    window.pymateEarly.socket.addEventListener("message", () => {
      if (t0 !== null && arrived === null) arrived = performance.now() - t0;
    });
    const rows = document.querySelector(".xterm-rows");
    const obs = new MutationObserver(() => {
      if (t0 !== null && rows.textContent.includes(expected)) {
        obs.disconnect();
        resolve([performance.now() - t0, arrived]);
      }
    });
    obs.observe(rows, {childList: true, subtree: true, characterData: true});
  });
}"""


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(values):.1f} ms over {len(values)} "
        f"(min {min(values):.1f}, max {max(values):.1f})"
    )


def host_run(host: TmateHost, line: str) -> None:
    host.cmd("send-keys", "-l", line)
    host.cmd("send-keys", "Enter")


def joins(host: TmateHost, port: int, rw: str, browser, url: str, n: int, tmp: Path) -> None:
    host_run(host, "clear; echo JOIN-MARK-$((6*7))")
    time.sleep(0.3)
    ssh, web, outside = [], [], []
    for _ in range(n):
        v = PtySsh(port, rw, 80, 24, str(tmp))
        ssh.append((v.read_until(b"JOIN-MARK-42", 10) - v.t0) * 1000)
        v.close()
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.add_init_script(WATCH_JOIN)
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function("() => window.__seen !== undefined", timeout=10_000)
        outside.append((time.perf_counter() - t0) * 1000)
        web.append(page.evaluate("window.__seen"))
        page.close()
        time.sleep(0.1)
    print(summary("join, ssh: start -> host text", ssh))
    print(summary("join, web: navigation -> host text drawn (the page's clock)", web))
    print(summary("join, web: as playwright sees it (goto -> seen, its own round trips included)", outside))


def echoes(host: TmateHost, port: int, rw: str, browser, url: str, n: int, tmp: Path) -> None:
    host_run(host, ECHO_LOOP)
    ssh = ssh_echoes(port, rw, n, tmp)
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    page.wait_for_function("() => document.querySelector('.xterm-rows')?.textContent.includes('0:')")
    page.locator(".xterm").click()
    time.sleep(0.3)
    web, frames, typed = [], [], ""
    for i in range(n + 3):
        key = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26]
        typed += key
        page.evaluate(WATCH_ECHO, typed[-8:])
        page.keyboard.press(key)
        drawn, arrived = page.evaluate("window.__echo")
        if i >= 3:
            web.append(drawn)
            frames.append(arrived)
        time.sleep(0.05)
    page.close()
    host.cmd("send-keys", "C-c")
    host_run(host, "stty sane; clear")
    print(summary("keystroke echo, ssh: write -> byte back", ssh))
    print(summary("keystroke echo, web: keydown -> the frame's message in the page", frames))
    print(summary("keystroke echo, web: keydown -> byte drawn (xterm.js's next animation frame)", web))


def titled(relay: Relay, word: str) -> list[int]:
    out = []
    for pid in relay.children():
        try:
            if f" {word} ".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def memory(relay: Relay, rw: str, browser, url: str, tmp: Path) -> None:
    v = PtySsh(relay.port, rw, 80, 24, str(tmp))
    v.read_until(b"0:", 10)
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.goto(url)
    page.wait_for_function("() => document.querySelector('.xterm-rows')?.textContent.includes('0:')")
    time.sleep(1.0)
    for role in ("viewer", "web"):
        pids = titled(relay, role)
        print(
            f"USS of an idle {role} connection process: {', '.join(f'{uss_kib(p) / 1024:.2f} MiB' for p in pids)}"
        )
    page.close()
    v.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--joins", type=int, default=10)
    ap.add_argument("--echo", type=int, default=20)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="pymate-bench-web-") as name:
        tmp = Path(name)
        fps = make_host_keys(tmp / "keys")
        web_port = free_port()
        with Relay(tmp / "keys", extra=["--web-port", str(web_port), "--web-bind", "127.0.0.1"]) as relay:
            host = TmateHost(tmp / "host", relay.port, *fps).start()
            try:
                host.wait_ready()
                host.leave_messages()
                m = SSH_LINE.match(host.display("#{tmate_ssh}"))
                assert m, host.display("#{tmate_ssh}")
                rw, url = m.group(2), host.display("#{tmate_web}")
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    try:
                        joins(host, relay.port, rw, browser, url, args.joins, tmp)
                        echoes(host, relay.port, rw, browser, url, args.echo, tmp)
                        memory(relay, rw, browser, url, tmp)
                    finally:
                        browser.close()
            finally:
                host.stop()


if __name__ == "__main__":
    main()
