"""What the browser tests share: a free port, `streamlit run app/main.py` started and waited for, headless
Chromium through Playwright, waiting for a script run to end, full-page screenshots, and stopping processes.
Plain functions and context managers, not tests."""
from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"  # git-ignored; for a person to look at
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text()[-3000:]}" if log is not None and log.exists() else ""


def wait_healthy(url: str, proc: subprocess.Popen, *, log: Path | None = None, timeout_s: float = 60) -> None:
    """Wait for Streamlit's /_stcore/health; fail the test (with the log's tail) when the process exits
    or stays unhealthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}{_tail(log)}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not become healthy within {timeout_s:.0f} s{_tail(log)}")


def stop(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    """Terminate a process, killing it when it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


@contextmanager
def streamlit_app(home: Path, log: Path, *, local_worker: bool) -> Iterator[str]:
    """app/main.py on a free loopback port with its own KD_HOME (SQLite store), with or without the
    embedded worker; yields the app's URL once healthy and stops it afterwards."""
    port = free_port()
    env = dict(os.environ, KD_HOME=str(home), KD_LOCAL_WORKER="1" if local_worker else "0", PYTHONUNBUFFERED="1")
    env.pop("KD_DATABASE_URL", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log=log)
        yield url
    finally:
        stop(proc)


@contextmanager
def chromium_page(errors: list[str] | None = None) -> Iterator:
    """A page in headless Debian Chromium driven by Playwright; JavaScript errors are added to `errors`.
    The browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=dict(VIEWPORT))
            if errors is not None:
                page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()


# Streamlit marks its app root with the state of the session's script: "notRunning" between runs; "running",
# "rerunRequested" or "stopRequested" while the script or one of its fragments runs; "initial" before the first
# run. Its status widget says nothing readable until a run has lasted half a second (then a running icon and a
# "Stop" button), so the root's attributes are what to watch; the icon is checked too.
APP_BUSY_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !app || app.getAttribute('data-test-connection-state') !== 'CONNECTED'
    || app.getAttribute('data-test-script-state') !== 'notRunning'
    || document.querySelector('[data-testid="stStatusWidgetRunningIcon"]') !== null;
}"""
APP_STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app ? `script ${app.getAttribute('data-test-script-state')}, `
    + `connection ${app.getAttribute('data-test-connection-state')}` : 'no app on the page';
}"""


_IDLE_CALLS = itertools.count(1)  # each wait starts its quiet spell afresh


def idle(page, timeout_ms: int = 120_000, quiet_ms: int = 750) -> None:
    """Wait until Streamlit has finished the current script run: connected and not running for `quiet_ms`
    in a row. The quiet spell covers the moment between a click and the server starting the run it asks
    for, when the page shows nothing running yet (a page whose fragments rerun more often never idles)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            f"""([quietMs, call]) => {{
              const now = performance.now();
              if (window.__kdIdleCall !== call) {{ window.__kdIdleCall = call; window.__kdQuietSince = null; }}
              if (({APP_BUSY_JS})()) {{ window.__kdQuietSince = null; return false; }}
              if (window.__kdQuietSince == null) window.__kdQuietSince = now;
              return now - window.__kdQuietSince >= quietMs;
            }}""", arg=[quiet_ms, next(_IDLE_CALLS)], polling=50, timeout=timeout_ms)
    except PlaywrightTimeout:
        pytest.fail(f"Streamlit was still busy after {timeout_ms / 1000:.0f} s ({page.evaluate(APP_STATE_JS)})")


def eventually(page, check, timeout_s: float = 30) -> bool:
    """check() polled until true or `timeout_s` passed; its last answer. For what the browser draws after a
    script run has ended (charts render asynchronously, later on loaded cores)."""
    deadline = time.monotonic() + timeout_s
    while not (ok := check()) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return ok


APP_BACKGROUND = "() => getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor"


def brightness(css: str) -> float:
    """0 (black) to 1 (white): the luma of a CSS colour "rgb(r, g, b)" or "rgba(r, g, b, a)"."""
    r, g, b = (float(v) for v in css[css.index("(") + 1:].rstrip(")").split(",")[:3])
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255


def page_is_dark(page) -> bool:
    return brightness(page.evaluate(APP_BACKGROUND)) < 0.5


def has_traceback(page) -> bool:
    return page.locator('[data-testid="stException"]').count() > 0


def snap(page, name: str, *, max_height: int = 7000, settle_ms: int = 400) -> Path:
    """A screenshot of the whole page under screenshots/. Streamlit scrolls inside its own container, so
    that is scrolled to the top and the viewport stretched to the content's height first."""
    SHOTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stAppScrollToBottomContainer\"], body')].map(e => e.scrollHeight))")
    width = page.viewport_size["width"]
    page.evaluate("() => document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stAppScrollToBottomContainer\"]')"
                  ".forEach(e => e.scrollTo(0, 0))")
    page.set_viewport_size({"width": width, "height": int(min(max(height, 900), max_height))})
    page.wait_for_timeout(settle_ms)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": VIEWPORT["height"]})
    return path
