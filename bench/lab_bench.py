"""How fast the dark-knowledge lab answers a change of ρ, on this CPU.

    .venv/bin/python bench/lab_bench.py                 # compute + browser, Fashion-MNIST (10,000 test logits)
    .venv/bin/python bench/lab_bench.py --no-browser    # the server-side work only

1. compute: everything the page's ρ fragment does for one ρ (soft labels of the sample, its effective
   number of classes, the class-similarity matrix over the whole test set, the two plotly figures that
   follow ρ serialised to JSON), with the per-ρ similarity cache cold, as on the first visit of a ρ.
2. browser: the real app (app/main.py) in headless Chromium; the ρ slider is moved one step with the
   keyboard and the time is taken until the teacher's chart shows the new ρ — the whole round trip
   (browser -> Streamlit rerun of the fragment -> websocket -> plotly redraw). Every step from 0.5 to 50
   (first visit of each ρ: cold cache), then back down (warm); also the time until the similarity matrix,
   the second and last chart that follows ρ, shows the new ρ too (the whole answer redrawn).
Prints medians and the worst case in milliseconds."""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import plotly.io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):.0f} ms, p90 {p90:.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"


def bench_compute(dataset: str) -> list[float]:
    """Server-side work of one ρ change: what pages/lab.py's ρ fragment computes and serialises."""
    import numpy as np

    from app import lab
    from kdcore.lab import softlabels
    from kdcore.lab.assets import load_bundle

    b = load_bundle(dataset)
    index = int(b.sample_indices[0])
    test_curve = softlabels.entropy_curve(b.teacher_logits)  # cached once per dataset in the app
    times = []
    for rho in softlabels.RHO_STEPS:
        t0 = time.perf_counter()
        z = b.teacher_logits[index]
        true_name = b.class_names[b.labels[index]]
        frame = softlabels.distribution_frame(z, b.class_names, rho)
        figs = [lab.distribution_figure(frame, rho, true_name)]
        similar = softlabels.similar_classes(z, b.class_names, rho)
        lab.similar_classes_sentence(similar, b.class_names[int(np.argmax(z))], true_name, rho)
        softlabels.effective_classes(softlabels.soften(z, rho))
        lab.effective_classes_at(test_curve, rho)
        matrix = softlabels.similarity_matrix(b.teacher_logits, b.labels, b.class_names, rho)  # all 10,000 images
        lab.pairs_markdown(softlabels.most_similar_pairs(matrix))
        figs.append(lab.similarity_figure(matrix, rho))
        for fig in figs:  # what st.plotly_chart does with a figure
            plotly.io.to_json(fig.to_dict(), validate=False)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_browser(dataset: str) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    from kdcore.data import dataset_info
    from kdcore.lab.softlabels import RHO_STEPS

    home = Path(tempfile.mkdtemp(prefix="kd_lab_bench_"))
    port = free_port()
    env = dict(os.environ, KD_HOME=str(home), KD_LOCAL_WORKER="0")
    env.pop("KD_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab", wait_until="networkidle")
            page.get_by_role("heading", name="Dark-knowledge lab").wait_for(timeout=120_000)
            if dataset != "digits":
                page.get_by_text(dataset_info(dataset).title, exact=True).click()
            wait_title(page, "at ρ = 1 ")
            page.wait_for_timeout(1500)
            thumb = page.get_by_role("slider").first
            thumb.focus()
            start = list(RHO_STEPS).index(1.0)
            for _ in range(start):  # down to 0.5 first
                thumb.press("ArrowLeft")
                page.wait_for_timeout(150)
            wait_title(page, f"at ρ = {RHO_STEPS[0]:g} ")
            page.wait_for_timeout(800)
            cold, warm, whole = [], [], []
            for steps, key, out in ((RHO_STEPS[1:], "ArrowRight", cold), (RHO_STEPS[-2::-1], "ArrowLeft", warm)):
                for rho in steps:
                    t0 = time.perf_counter()
                    thumb.press(key)
                    wait_title(page, f"What the teacher answers at ρ = {rho:g} ")
                    out.append((time.perf_counter() - t0) * 1000)
                    wait_title(page, f"Average soft label per true class at ρ = {rho:g} ")  # the last chart
                    whole.append((time.perf_counter() - t0) * 1000)
                    page.wait_for_timeout(250)  # let the step settle before the next key
            browser.close()
        return cold, warm, whole
    finally:
        proc.terminate()
        proc.wait(10)


def wait_title(page, text: str) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.includes(t))",
        arg=text, timeout=60_000, polling="raf")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--no-browser", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as the dashboard runs (app/main.py)
    print(f"dataset {args.dataset}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("compute per ρ (server side, similarity cache cold):", summary(bench_compute(args.dataset)))
    if not args.no_browser:
        cold, warm, whole = bench_browser(args.dataset)
        print("browser round trip per ρ step, first visit: ", summary(cold))
        print("browser round trip per ρ step, revisited:   ", summary(warm))
        print("until the similarity matrix is redrawn too: ", summary(whole))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
