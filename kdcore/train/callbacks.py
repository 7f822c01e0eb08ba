"""How the trainer reports. The CLI prints, a worker writes to the store, a test records."""
from __future__ import annotations

from typing import Protocol


class TrainCallbacks(Protocol):
    def on_start(self, info: dict) -> None:
        """Once, after models and data are ready: device, precision, params/FLOPs, cache use, start epoch/step."""

    def on_resume(self, epoch: int, step: int) -> None:
        """Training resumes after `epoch` completed epochs at global `step`: points after that step are void."""

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """After each optimisation step (global step counts from 1): loss terms, lr, throughput, memory."""

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """After each epoch (epoch counts from 1), once its checkpoint is written: accuracies and fidelity."""

    def on_log(self, message: str) -> None:
        """A human-readable line for the run's log."""

    def on_warning(self, message: str) -> None:
        """One sentence about a run whose numbers should not be trusted (e.g. a student that stopped learning)."""

    def should_stop(self) -> bool:
        """Polled between steps; True stops the run (cancellation) after a clean checkpoint-free exit."""


class NullCallbacks:
    """Base with no-op hooks; subclass and override what you need."""

    def on_start(self, info: dict) -> None:
        pass

    def on_resume(self, epoch: int, step: int) -> None:
        pass

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_log(self, message: str) -> None:
        pass

    def on_warning(self, message: str) -> None:
        self.on_log(f"warning: {message}")

    def should_stop(self) -> bool:
        return False


class RecordingCallbacks(NullCallbacks):
    """Keeps everything in lists: for tests and notebooks."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, dict[str, float]]] = []
        self.epochs: list[tuple[int, int, dict[str, float]]] = []
        self.logs: list[str] = []
        self.warnings: list[str] = []
        self.info: dict = {}
        self.resumed_at: tuple[int, int] | None = None

    def on_start(self, info: dict) -> None:
        self.info = dict(info)

    def on_resume(self, epoch: int, step: int) -> None:
        self.resumed_at = (epoch, step)

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.steps.append((epoch, step, dict(metrics)))

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, step, dict(metrics)))

    def on_log(self, message: str) -> None:
        self.logs.append(message)

    def on_warning(self, message: str) -> None:
        self.warnings.append(message)
        super().on_warning(message)
