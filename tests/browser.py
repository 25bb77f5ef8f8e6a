"""Headless Chromium for the tests: open an HTML report, run the page's own code, read its
console errors, check that every plotly figure was drawn.

Debian's ``chromium`` is driven over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: JSON messages, each ended by a NUL byte, on file descriptors 3
and 4), so no websocket client or browser-automation package is needed: the standard library
suffices. One browser serves a whole test session (:func:`tests.conftest.browser`); each
:meth:`Browser.open` is a fresh tab.

Why the protocol rather than ``--dump-dom``: a test must see the page's console errors and
uncaught exceptions, and call the page's own selection code (``window.hookedVlmExplorer``)
then read what it drew, all in one launch.

Example:
    >>> with Browser.launch() as browser:
    ...     page = browser.open(Path("report.html"))
    ...     assert all(f["drawn"] for f in plotly_figures(page)) and not page.errors()
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
]
REQUIRE_ENV = "HOOKED_VLM_REQUIRE_CHROMIUM"  # .ci/run sets it: absent chromium fails, not skips


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` /
    ``google-chrome`` on the PATH, else ``None``."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class BrowserError(RuntimeError):
    """The browser answered with an error, or did not answer in time."""


class Browser:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, process: subprocess.Popen, send_fd: int, recv_fd: int,
                 profile: tempfile.TemporaryDirectory) -> None:
        self.process, self._send_fd, self._recv_fd, self._profile = (
            process, send_fd, recv_fd, profile)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []  # every event received, in order

    @classmethod
    def launch(cls, executable: str | None = None, size: tuple[int, int] = (1400, 1600)
               ) -> Browser:
        """Start Chromium with a fresh profile directory (removed on :meth:`close`)."""
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("no chromium on the PATH (apt-get install -y chromium)")
        profile = tempfile.TemporaryDirectory(prefix="hooked-vlm-chromium-")
        to_browser, from_test = os.pipe()  # the browser reads commands on its fd 3
        to_test, from_browser = os.pipe()  # and writes answers on its fd 4

        def wire() -> None:  # in the child, before exec: fds 3 and 4 as chromium expects
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile.name}",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # the child's fds 3 and 4 survive (pass_fds is applied after preexec_fn)
            preexec_fn=wire, pass_fds=(3, 4),
        )
        os.close(to_browser)
        os.close(from_browser)
        return cls(process, from_test, to_test, profile)

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile go to :attr:`events`)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive(timeout, f"{method} (no answer)")
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for_event(self, method: str, session: str | None, timeout: float = 60.0
                       ) -> dict[str, Any]:
        """The first event ``method`` of ``session`` not seen before (waits for it)."""
        seen = {id(e) for e in self.events}
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                self.events.remove(event)
                return event
        while True:
            event = self._receive(timeout, f"event {method}")
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            if id(event) not in seen:
                self.events.append(event)

    def _receive(self, timeout: float, waiting_for: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._recv_fd], [], [], max(0.0, left))
            if not ready:
                raise BrowserError(f"chromium sent nothing for {timeout:.0f} s: {waiting_for}")
            chunk = os.read(self._recv_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed its pipe (exit {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # ------------------------------------------------------------------ pages
    def open(self, path: Path, fragment: str = "", timeout: float = 60.0) -> Page:
        """Load ``path`` (``#fragment`` appended) in a new tab and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        url = Path(path).resolve().as_uri() + (f"#{fragment}" if fragment else "")
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for_event("Page.loadEventFired", session, timeout)
        return Page(self, session)

    def close(self) -> None:
        """Close the browser (kill it if it does not exit) and remove its profile."""
        if self.process.poll() is None:
            try:
                self.send("Browser.close", timeout=10)
            except (BrowserError, OSError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._send_fd, self._recv_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: evaluate JavaScript in it, read its console errors, take a screenshot."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The JSON value of ``expression`` (promises awaited); a thrown error raises."""
        result = self.browser.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
        }, session=self.session, timeout=timeout)
        if "exceptionDetails" in result:
            details = _describe(result["exceptionDetails"])
            raise BrowserError(f"{expression[:80]!r} threw: {details}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` every 20 ms until it is truthy; its value (raises on timeout)."""
        return self.evaluate(f"""new Promise((resolve, reject) => {{
          const until = Date.now() + {int(timeout * 1000)};
          const poll = () => {{
            let value;
            try {{ value = ({expression}); }} catch (e) {{ value = undefined; }}
            if (value) resolve(value);
            else if (Date.now() > until) reject(new Error({json.dumps("timeout: " + expression)}));
            else setTimeout(poll, 20);
          }};
          poll();
        }})""", timeout=timeout + 10)

    def settle(self) -> None:
        """Wait two animation frames: what the page scheduled has been drawn."""
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def errors(self) -> list[str]:
        """Console errors, failed assertions, uncaught exceptions and error log entries of this
        page so far."""
        self.evaluate("0")  # flush events that arrived before this call
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                               "assert"):
                found.append("console: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + _describe(params["exceptionDetails"]))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append("log: " + params["entry"].get("text", ""))
        return found

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the window's height) at ``path``."""
        import base64

        height = self.evaluate("document.documentElement.scrollHeight")
        width = self.evaluate("document.documentElement.scrollWidth")
        self.browser.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        }, session=self.session)
        self.settle()
        data = self.browser.send("Page.captureScreenshot", {"format": "png"},
                                 session=self.session)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)


def _describe(details: dict[str, Any]) -> str:
    exception = details.get("exception", {})
    return exception.get("description") or details.get("text", "?")


# Every plotly figure on the page: how many traces it has and whether they were drawn (an SVG
# with at least one trace layer, or a heatmap's image, in a box of non-zero size).
_FIGURES_JS = """
Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (el) {
  var box = el.getBoundingClientRect();
  var drawn = el.querySelectorAll('.main-svg .trace, .main-svg .hm, .main-svg image').length;
  return {id: el.id, traces: (el.data || []).length, drawn: drawn > 0 && box.width > 0 &&
          box.height > 0};
})
"""


def plotly_figures(page: Page) -> list[dict[str, Any]]:
    """``[{"id", "traces", "drawn"}]`` for every plotly figure on the page, once drawn."""
    page.settle()
    return page.evaluate(_FIGURES_JS)


def check_report(browser: Browser, path: Path, fragment: str = "", min_figures: int = 1
                 ) -> Page:
    """Open ``path`` and assert what every HTML report the project ships must satisfy: at
    least ``min_figures`` plotly figures, each with traces and drawn, and no console error.
    Returns the page for further checks.

    Example:
        >>> check_report(browser, out / "report.html", min_figures=5)
    """
    page = browser.open(path, fragment)
    figures = plotly_figures(page)
    assert len(figures) >= min_figures, f"{path.name}: {len(figures)} figures: {figures}"
    empty = [f for f in figures if not (f["traces"] and f["drawn"])]
    assert not empty, f"{path.name}: figures not drawn: {empty}"
    errors = page.errors()
    assert not errors, f"{path.name}: console errors: {errors}"
    return page
