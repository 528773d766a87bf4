#!/usr/bin/env python3
"""Check the built documentation site (``site/``) in a real headless browser.

    mkdocs build --strict && python3 scripts/check_site.py [--site site] [--chromium PATH]

Serves the site on 127.0.0.1 (a port the kernel picks), starts Debian's headless chromium and
drives it over the DevTools protocol (its websocket; the ``websockets`` package), loading every
page of the site. Fails (exit 1) on any console error, uncaught exception, failed request or
HTTP error status of any page, when the home page's NAT timeline picture is not loaded (no
image, or a natural width of 0), or when the API reference does not list ``configure``,
``monitor`` and ``Supervisor``. No internet is needed, nor allowed: a request for anything but
the local server (a CDN font, a script) fails the check. Exit 2 when the site or chromium is
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
PAGE_TIMEOUT = 15.0  # seconds for one page to fire its load event
START_TIMEOUT = 20.0  # seconds for chromium to open its DevTools port
SETTLE = 0.3  # after the load event, wait until the page was quiet this long (seconds)...
SETTLE_LONGEST = 3.0  # ...but no longer than this: late console messages and requests
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")

#: page (relative to the site) -> DOM ids that must exist there (mkdocstrings' anchors).
REQUIRED_IDS: dict[str, tuple[str, ...]] = {
    "api/keepalive/": ("keepalive.configure",),
    "api/sync/": ("keepalive.sync.monitor", "keepalive.sync.Supervisor"),
    "api/aio/": ("keepalive.aio.monitor", "keepalive.aio.Supervisor"),
}
TIMELINE = "images/nat-timeline.svg"


class CheckError(Exception):
    """The check could not run (no site, no browser): exit status 2."""


@dataclass
class PageReport:
    path: str
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The site, served on loopback


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def pages_of(site: Path) -> list[str]:
    """Every page of the built site, as URL paths relative to its root ("" is the home page)."""
    pages = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        pages.append("" if relative == "." else f"{relative}/")
    return pages


# ---------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol


def find_chromium(explicit: str | None) -> str:
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise CheckError(
        "no chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "): apt-get install chromium"
    )


@contextlib.contextmanager
def chromium(executable: str) -> Iterator[str]:
    """A headless chromium with its DevTools port on loopback; yields a page's websocket URL."""
    # ignore_cleanup_errors: a helper process may write its last file while the group ends.
    with tempfile.TemporaryDirectory(
        prefix="keepalive-site-", ignore_cleanup_errors=True
    ) as profile:
        process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its helpers (zygote, renderers) end with its group
        )
        try:
            port = _devtools_port(Path(profile), process)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                targets = json.load(reply)
            page = next(target for target in targets if target.get("type") == "page")
            yield str(page["webSocketDebuggerUrl"])
        finally:
            _end_group(process)
            if process.stderr is not None:
                process.stderr.close()


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser's own process group (it leads it), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it chose to DevToolsActivePort in its profile."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise CheckError(f"chromium exited with status {process.returncode}: {error[-2000:]}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(marker.read_text(encoding="ascii").splitlines()[0])
        time.sleep(0.05)
    raise CheckError(f"chromium opened no DevTools port within {START_TIMEOUT:g} s")


class DevTools:
    """A minimal DevTools protocol client: commands with ids, events collected in order."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline, f"{method}'s reply")
            if message.get("id") == number:
                if "error" in message:
                    raise CheckError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(event["method"] == method for event in self.events):
            message = self._receive(deadline, method)
            if "method" in message:
                self.events.append(message)

    def drain(self, quiet: float, longest: float) -> None:
        """Collect events until none came for ``quiet`` seconds (at most ``longest``)."""
        end = time.monotonic() + longest
        with contextlib.suppress(TimeoutError):
            while True:
                message = self._receive(min(time.monotonic() + quiet, end), "late events")
                if "method" in message:
                    self.events.append(message)

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {what}")
        message: dict[str, Any] = json.loads(self.socket.recv(timeout=remaining))
        return message

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise CheckError(f"evaluating {expression!r}: {reply['exceptionDetails']}")
        return reply["result"].get("value")


# ---------------------------------------------------------------------------------------------
# The checks


def problems_in(events: Sequence[dict[str, Any]], base: str) -> list[str]:
    """Console errors, exceptions, failed requests and HTTP errors among a page's events."""
    found: list[str] = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
            )
            found.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            found.append(
                f"console error ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
            )
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
        elif method == "Network.responseReceived":
            response = params["response"]
            if response.get("status", 200) >= 400:
                found.append(f"HTTP {response['status']}: {response.get('url')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((base, "data:", "blob:", "about:")):
                found.append(f"request outside the site (offline check): {url}")
    return found


def check_page(tools: DevTools, base: str, path: str) -> PageReport:
    report = PageReport(path or "/")
    tools.events.clear()
    tools.call("Page.navigate", url=base + path)
    try:
        tools.wait_for("Page.loadEventFired", PAGE_TIMEOUT)
    except TimeoutError:
        report.problems.append(f"no load event within {PAGE_TIMEOUT:g} s")
        return report
    tools.drain(SETTLE, SETTLE_LONGEST)
    report.problems += problems_in(tools.events, base)
    if path == "":
        state = tools.evaluate(
            f"""(() => {{
                const image = document.querySelector('img[src$="{TIMELINE}"]');
                return image ? {{complete: image.complete, width: image.naturalWidth}} : null;
            }})()"""
        )
        if state is None:
            report.problems.append(f"the home page shows no {TIMELINE}")
        elif not state["complete"] or state["width"] <= 0:
            report.problems.append(f"{TIMELINE} did not load (natural width {state['width']})")
    for anchor in REQUIRED_IDS.get(path, ()):
        if not tools.evaluate(f"document.getElementById({json.dumps(anchor)}) !== null"):
            report.problems.append(f"the API reference does not list {anchor}")
    return report


def check_site(site: Path, executable: str, log: Any = print) -> list[PageReport]:
    if not (site / "index.html").is_file():
        raise CheckError(f"no built site in {site}: run mkdocs build --strict first")
    pages = pages_of(site)
    missing = [path for path in REQUIRED_IDS if path not in pages]
    reports = [PageReport(path, ["the page is missing from the site"]) for path in missing]
    with serve(site) as base, chromium(executable) as url, connect(url, max_size=None) as socket:
        tools = DevTools(socket)
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        for path in pages:
            report = check_page(tools, base, path)
            reports.append(report)
            log(f"  {'FAIL' if report.problems else 'ok  '} /{path}")
            for problem in report.problems:
                log(f"       {problem}")
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "site", help="the built site")
    parser.add_argument("--chromium", help="the browser to drive (default: chromium on PATH)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        reports = check_site(args.site, find_chromium(args.chromium))
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = [report for report in reports if report.problems]
    print(
        f"{len(reports)} pages checked in {time.monotonic() - started:.1f} s: "
        + (f"{len(failed)} with problems" if failed else "no console error, no failed request")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
