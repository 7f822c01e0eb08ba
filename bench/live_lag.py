"""How live the run view is while a run trains, measured in headless Chromium against the real app.

Starts `streamlit run app/main.py` with its embedded worker in a throwaway KD_HOME, submits one digits run,
opens its run view and samples the page every 100 ms:

- lag: for each new step the "Loss terms" chart draws, the time it appeared on screen minus the time the
  trainer produced that point (the point's wall_time in the store): metric written -> on screen;
- chart elements: plotly charts in the page (visible and hidden), to catch stale copies piling up;
- blanks: a chart slot that had drawn lines and shows none at a later sample (a chart blanking during a refresh).

Then, while the run still trains, it switches pages from the sidebar and times each switch (click -> the new
page's title shown).

    .venv/bin/python bench/live_lag.py [--epochs 40] [--student mlp_64]

Prints one summary line per figure; bench/RESULTS.md records them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import browser_support as bs  # noqa: E402  (tests/ holds the shared Chromium helpers)

SAMPLE_JS = """() => {
  const visible = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]')];
  const slots = charts.filter(visible).map((c, i) => {
    const drawing = c.querySelector('canvas, svg.marks, .js-plotly-plot .scatterlayer path.js-line');
    return {slot: i, drawn: !!drawing && visible(drawing)};
  });
  const latest = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .map(e => e.innerText.match(/Latest point: step (\\d+)/)).find(m => m);
  return {charts: charts.length, plots: document.querySelectorAll('.vega-embed, .js-plotly-plot').length,
          visible: slots.length, slots, step: latest ? Number(latest[1]) : null};
}"""

PAGES = {"Runs": "Runs", "Compare": "Compare", "Home": "KD Studio", "Soft labels": "Soft labels",
         "New experiment": "New experiment"}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--student", default="mlp_64")
    parser.add_argument("--watch-s", type=float, default=60.0, help="how long to sample the run view")
    args = parser.parse_args()

    import os

    home = Path(tempfile.mkdtemp(prefix="kd_live_lag_"))
    os.environ["KD_HOME"] = str(home)
    os.environ.pop("KD_DATABASE_URL", None)
    from kdcore.jobs import RunStore
    from kdcore.jobs.launcher import stop_local_worker
    from kdcore.spec import RunSpec

    try:
        with bs.streamlit_app(home, home / "streamlit.log", local_worker=True) as url, bs.chromium_page() as page:
            page.goto(url, wait_until="networkidle")
            page.get_by_role("heading", name="KD Studio").wait_for(timeout=60_000)
            store = RunStore()
            spec = RunSpec.from_dict({"name": "live lag bench", "dataset": {"name": "digits"}, "student": args.student,
                                      "epochs": args.epochs, "batch_size": 32, "device": "cpu", "seed": 0})
            run_id = store.submit(spec)
            deadline = time.monotonic() + 120
            while store.get(run_id).status.value != "running" and time.monotonic() < deadline:
                time.sleep(0.2)
            page.goto(f"{url}/run?run={run_id}", wait_until="networkidle")
            page.get_by_role("heading", name="live lag bench").wait_for(timeout=60_000)

            bs.SHOTS.mkdir(exist_ok=True)
            seen: dict[int, float] = {}  # step -> wall-clock time it was first drawn
            had_lines: set[int] = set()
            blanks, max_charts, max_plots, max_visible, samples = 0, 0, 0, 0, 0
            end = time.monotonic() + args.watch_s
            while time.monotonic() < end and not store.get(run_id).is_terminal:
                s = page.evaluate(SAMPLE_JS)
                now = time.time()
                samples += 1
                max_charts, max_plots, max_visible = (max(max_charts, s["charts"]), max(max_plots, s["plots"]),
                                                     max(max_visible, s["visible"]))
                drawn = {slot["slot"] for slot in s["slots"] if slot["drawn"]}
                blanks += len(had_lines - drawn)
                had_lines |= drawn
                if s["step"] is not None and s["step"] not in seen:
                    seen[s["step"]] = now
                if samples == 40:
                    page.screenshot(path=str(bs.SHOTS / "live_lag_run_view.png"))
                page.wait_for_timeout(100)

            points = {p.step: p.wall_time for p in store.metrics(run_id) if p.name == "loss/total"}
            first = min(seen) if seen else None
            lags = [shown - points[step] for step, shown in seen.items() if step in points and step != first]
            # (the first step drawn was already in the store when the page opened)

            switches = []
            for title in ["Runs", "Compare", "Home", "Soft labels", "Runs", "New experiment", "Home", "Compare"]:
                if store.get(run_id).is_terminal:
                    break
                start = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
                page.get_by_role("heading", name=PAGES[title]).first.wait_for(timeout=30_000)
                switches.append(time.perf_counter() - start)
                bs.idle(page)
            if not store.get(run_id).is_terminal:  # a fast machine may finish the run first
                store.cancel(run_id)
    finally:
        stop_local_worker(home)

    if lags:
        print(f"lag metric written -> on screen: {len(lags)} steps, median {statistics.median(lags):.2f} s, "
              f"p90 {pct(lags, 0.9):.2f} s, max {max(lags):.2f} s")
    else:
        print("lag: no step was drawn while the run trained")
    print(f"chart elements: {max_visible} visible at most, {max_plots} charts and {max_charts} chart "
          f"containers in the page at most; {blanks} blank chart samples of {samples} samples")
    if switches:
        print(f"page switches while training: {len(switches)}, median {statistics.median(switches):.2f} s, "
              f"max {max(switches):.2f} s")
    else:
        print("page switches: the run finished before any switch")


if __name__ == "__main__":
    main()
