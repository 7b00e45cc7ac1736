"""Helpers of ``tests/browser/test_browser.py``: the app as a subprocess, and headless Chromium driven by playwright.

* :func:`require_chromium` fails (never skips) with the command that installs Debian's ``chromium``;
* :func:`streamlit_server` starts ``streamlit run app.py`` on a free local port and always stops it;
* :func:`launch_chromium` opens the system Chromium (playwright never downloads a browser here);
* :class:`Steps` saves a full-page screenshot after each step into the artifacts directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = REPO / "test-artifacts" / "browser"
MAX_SHOT_HEIGHT = 12_000  # pixels, below the 16,384-pixel limit of a Chromium surface
# height of the app's scrolled content: Streamlit's main area scrolls, not the document
CONTENT_HEIGHT = """() => Math.max(
    document.documentElement.scrollHeight,
    ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')]
        .map(element => element.scrollHeight))"""
LOG_TAIL = 4000  # characters of the server log quoted when the server fails


def require_chromium() -> None:
    """Fail the test with the install command when ``/usr/bin/chromium`` is missing.

    ``make test`` installs it first where it can (as root or in CI); anywhere else the browser test
    must say so loudly rather than pass by skipping.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing, so the app cannot be tested in a browser; install Debian's chromium "
            "with 'make chromium' as root (or 'sudo apt-get install -y chromium') and run the test again."
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else "(no log)"


def _wait_until_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``.

    Raises:
        pytest.fail.Exception: the server exited, or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"The app exited with status {process.returncode} before answering; its log ends:\n{_log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"The app did not answer on {url} within {timeout:.0f} s; its log ends:\n{_log_tail(log)}")


@contextlib.contextmanager
def streamlit_server(log: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[str]:
    """Run ``streamlit run app.py`` on a free port for the duration of the block; yield its URL.

    The server inherits this process's environment (``PRUNEVIZ_CACHE_DIR`` from the test session's
    isolated cache) updated by ``env``, works offline, and does not watch source files: other people
    may edit the pages while the test runs, and a rerun on save would reset the page under the
    browser. Its output goes to ``log``. The server is stopped (SIGTERM, then SIGKILL) however the
    block ends.

    Raises:
        pytest.fail.Exception: the server exited or did not answer within ``timeout`` seconds.
    """
    port = free_port()
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    environment = {**os.environ, **offline, **(env or {})}
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(process, url, log, timeout)
            yield url
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (Streamlit may start helpers), then kill it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def launch_chromium(playwright):
    """The system Chromium, headless, through playwright (``executable_path``: no browser download)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


class Steps:
    """Numbered full-page screenshots of one browser session, e.g. ``01-model-loaded.png``.

    Streamlit scrolls its main area inside the window, so a plain full-page screenshot would stop at
    the window's height: the window is stretched to the content for each screenshot instead.
    """

    def __init__(self, page, directory: Path):
        self.page = page
        self.directory = directory
        self.count = 0
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.png"):
            old.unlink()

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot named after the step; return its path."""
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        window = self.page.viewport_size
        height = self.page.evaluate(CONTENT_HEIGHT)
        tall = min(max(height, window["height"]), MAX_SHOT_HEIGHT)
        self.page.set_viewport_size({"width": window["width"], "height": tall})
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size(window)
        return path
