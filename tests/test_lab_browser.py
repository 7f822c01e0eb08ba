"""The dark-knowledge lab in the real dashboard, in headless Chromium: open it, move ρ with the keyboard,
switch to Fashion-MNIST, and save screenshots under screenshots/ (git-ignored) for a person to look at."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(home: Path) -> tuple[subprocess.Popen, str]:
    """app/main.py on a free port with its own KD_HOME and no embedded worker."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, KD_HOME=str(home), KD_LOCAL_WORKER="0", PYTHONUNBUFFERED="1")
    env.pop("KD_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=open(home / "streamlit.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise TimeoutError("streamlit did not become healthy")


def idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the current script run has finished (Streamlit's 'Running' indicator is gone)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout_ms)
    page.wait_for_timeout(300)


def snap(page, name: str) -> Path:
    """A screenshot of the whole page: Streamlit scrolls inside its own container, so the viewport is
    stretched to the content's height first."""
    SHOTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stAppScrollToBottomContainer\"], body')].map(e => e.scrollHeight))")
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": int(min(max(height, 900), 9000))})
    page.wait_for_timeout(600)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})
    return path


def chart_title_shown(page, text: str, timeout_ms: int = 30_000) -> None:
    """Wait until a plotly chart's title holds `text` (plotly draws titles as SVG text)."""
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.includes(t))",
        arg=text, timeout=timeout_ms)


def move_rho(page, steps: int) -> None:
    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(abs(steps)):
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")


@pytest.fixture()
def lab_server(kd_home):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium")
    proc, url = start_app(kd_home)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_lab_in_the_browser(lab_server):
    from playwright.sync_api import sync_playwright

    from kdcore.jobs import RunStore
    from kdcore.jobs.worker import Worker, WorkerConfig

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{lab_server}/lab", wait_until="networkidle")
        page.get_by_role("heading", name="Dark-knowledge lab").wait_for(timeout=60_000)
        chart_title_shown(page, "What the teacher answers at ρ = 1 ")
        idle(page)
        snap(page, "lab_01_digits_rho1")

        move_rho(page, 9)  # 1 -> 8 on the R10 steps (1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8)
        chart_title_shown(page, "What the teacher answers at ρ = 8 ")
        idle(page)
        page.get_by_text("the classes it finds most similar are").first.wait_for(timeout=30_000)
        snap(page, "lab_02_digits_rho8")

        page.get_by_text("Fashion-MNIST", exact=True).click()
        chart_title_shown(page, "Average soft label per true class at ρ = 8 ")
        idle(page)
        page.get_by_text("T-shirt/top").first.wait_for(timeout=30_000)
        snap(page, "lab_03_fashion_rho8")

        # Another sample: the page redraws once (the entropy curves follow the sample), ρ stays where it was.
        page.get_by_role("combobox").first.click()
        page.keyboard.type("Trouser")  # the list filters as one types
        page.get_by_role("option").filter(has_text="Trouser").first.click()
        page.get_by_text("True class: Trouser").wait_for(timeout=30_000)
        idle(page)
        chart_title_shown(page, "What the teacher answers at ρ = 8 ")

        # Hinton's omitted class on digits (seconds of training): the button queues a run, this test plays the
        # background worker, and the page's polling fragment shows the corrected accuracies when it is done.
        page.get_by_text("Digits (8×8)", exact=True).click()
        chart_title_shown(page, "What the teacher answers at ρ = 8 ")
        idle(page)
        page.get_by_role("tab", name="Omitted class").click()
        page.get_by_role("button", name="Run the omitted-class experiment").click()
        page.get_by_text("Latest run").first.wait_for(timeout=30_000)
        store = RunStore()
        assert len(store.list_runs(tag="lab:omit:digits")) == 1
        Worker(store, WorkerConfig(device="cpu", poll_interval_s=0.05, max_runs=1)).run_forever()
        page.get_by_text("3, after").first.wait_for(timeout=60_000)
        idle(page)
        snap(page, "lab_04_digits_omitted_class")
        browser.close()
    assert not errors, errors
