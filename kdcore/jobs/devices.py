"""The devices one worker owns, shared by its slot processes: a run takes as many as it asks for, or waits.

Claiming a run and taking its devices happen under one lock, so two slots never count the same free device
(one 2-device run, or two 1-device runs, on a 2-device worker; never more)."""
from __future__ import annotations

from contextlib import contextmanager


class DevicePool:
    def __init__(self, count: int, ctx) -> None:
        """`ctx`: a multiprocessing context; the pool is handed to processes it starts."""
        self.count = count
        self._busy = ctx.Array("b", count)
        self._lock = ctx.Lock()

    @contextmanager
    def claiming(self):
        """Hold while asking the store for a run that fits `free()` and taking its devices."""
        with self._lock:
            yield

    def free(self) -> int:
        return sum(1 for b in self._busy if not b)

    def first_free(self) -> int:
        """The position `take` hands out first (under `claiming`)."""
        return next((i for i, b in enumerate(self._busy) if not b), 0)

    def take(self, n: int) -> list[int]:
        """Mark n free devices busy (under `claiming`); their positions among the worker's devices."""
        picked = [i for i, b in enumerate(self._busy) if not b][:n]
        if len(picked) < n:
            raise RuntimeError(f"asked for {n} devices with {len(picked)} free")
        for i in picked:
            self._busy[i] = 1
        return picked

    def give_back(self, devices: list[int]) -> None:
        with self._lock:
            for i in devices:
                self._busy[i] = 0
