"""The training loop's reporting, off the loop's thread.

Step metrics stay on the device while an interval runs (one tensor per step and term, no arithmetic); a
background thread reads them back once per interval (the only host sync), checks them for NaN/inf, and calls
the callbacks. Every callback runs on that one thread, in the order the loop submitted them, and the same
thread polls `should_stop()` while it is idle, so a slow store (a flush, a cancel query) never holds a step up.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from kdcore.errors import TrainingDivergedError
from kdcore.train.callbacks import TrainCallbacks

REPORT_INTERVAL_S = 0.5  # step metrics are read back from the device at most about this often
STOP_POLL_S = 0.25  # how often the idle reporter asks the callbacks whether to stop


class StepInterval:
    """Per-step loss terms of the current interval, as device tensors appended without any arithmetic."""

    def __init__(self, now: float) -> None:
        self.reset(now)

    def reset(self, now: float) -> None:
        self.terms: dict[str, list[Tensor]] = {}
        self.totals: list[Tensor] = []
        self.images = 0
        self.started = now

    @property
    def steps(self) -> int:
        return len(self.totals)

    def add(self, losses: dict[str, Tensor], total: Tensor, images: int) -> None:
        for k, v in losses.items():
            self.terms.setdefault(k, []).append(v.detach())
        self.totals.append(total.detach())
        self.images += images


def interval_metrics(terms: dict[str, list[Tensor]], totals: list[Tensor], *, epoch: int, last_step: int
                     ) -> dict[str, float]:
    """Mean of every term over the interval (one device->host copy); raises on a non-finite total."""
    names = list(terms)
    per_step = torch.stack([torch.stack([t.float() for t in totals])]
                           + [torch.stack([t.float() for t in terms[k]]) for k in names])
    host = per_step.cpu()
    total_row = host[0]
    finite = torch.isfinite(total_row)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        kind = "NaN" if bool(total_row[bad].isnan()) else "infinite"
        raise TrainingDivergedError(
            f"the loss became {kind} at epoch {epoch}, step {last_step - len(totals) + 1 + bad}; "
            f"lower the learning rate or the loss weights")
    means = host.mean(dim=1).tolist()
    metrics = {f"loss/{k}": means[i + 1] for i, k in enumerate(names)}
    metrics["loss/total"] = means[0]
    return metrics


class Reporter:
    """One background thread that runs the callbacks in submission order and polls for a stop."""

    def __init__(self, callbacks: TrainCallbacks, poll_s: float = STOP_POLL_S) -> None:
        self.cb = callbacks
        self.poll_s = poll_s
        self.stop_requested = threading.Event()
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._last_poll = float("-inf")
        self._thread = threading.Thread(target=self._serve, name="kd-reporter", daemon=True)
        self._thread.start()

    # ---- the loop's side ---------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the reporter thread, after everything submitted before."""
        self._queue.put((fn, args, None))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the reporter thread and wait for its result (raising what it raised)."""
        box: dict[str, Any] = {}
        done = threading.Event()
        self._queue.put((fn, args, (box, done)))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def drain(self) -> None:
        """Wait until every submitted call has run; re-raise the first failure of a submitted call."""
        self.call(lambda: None)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def poll_now(self) -> bool:
        """Ask the callbacks now (on the reporter thread) whether to stop; remembers a yes."""
        if not self.stop_requested.is_set() and self.call(self.cb.should_stop):
            self.stop_requested.set()
        return self.stop_requested.is_set()

    def call_then_poll(self, *calls: tuple) -> bool:
        """Run each (fn, *args) on the reporter thread, then ask the callbacks whether to stop (unless a stop
        is already known), all in one hand-off; raises what a call raised. Returns whether to stop."""
        def run() -> bool:
            for fn, *args in calls:
                fn(*args)
            return not self.stop_requested.is_set() and bool(self.cb.should_stop())

        if self.call(run):
            self.stop_requested.set()
        return self.stop_requested.is_set()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    # ---- the reporter thread -----------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.poll_s)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                fn, args, reply = item
                try:
                    value = fn(*args)
                    if reply is not None:
                        reply[0]["value"] = value
                except BaseException as err:  # handed to the loop, which raises it on its own thread
                    if reply is not None:
                        reply[0]["error"] = err
                    elif self.error is None:
                        self.error = err
                finally:
                    if reply is not None:
                        reply[1].set()
            self._maybe_poll()

    def _maybe_poll(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < self.poll_s or self.stop_requested.is_set():
            return
        self._last_poll = now
        try:
            if self.cb.should_stop():
                self.stop_requested.set()
        except Exception as err:  # a failing poll is reported like a failing callback
            if self.error is None:
                self.error = err
