
import os

import pytest
import torch

# No test may leave an embedded dashboard worker behind (an AppTest script thread can outlive its test's
# monkeypatch): off for the whole session; the tests of that worker switch it on themselves.
os.environ.setdefault("KD_LOCAL_WORKER", "0")

# Two cores on CI: one thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture()
def kd_home(tmp_path, monkeypatch):
    """An isolated KD_HOME (store, runs, data) for one test."""
    home = tmp_path / "kdhome"
    monkeypatch.setenv("KD_HOME", str(home))
    monkeypatch.delenv("KD_DATABASE_URL", raising=False)
    return home


@pytest.fixture()
def cheap_hashes(monkeypatch):
    """Argon2 at its lowest cost for tests that hash many passwords (the real cost is ~1 s on a busy CI core)."""
    from argon2 import PasswordHasher

    from kdcore.jobs import accounts

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", lambda: cheap)
    monkeypatch.setattr(accounts, "_decoy_hash", lambda: cheap.hash("no such account"))


@pytest.fixture()
def teacher_passes(monkeypatch):
    """The input sizes the trainer runs its teacher on, in order (a spy on Trainer._predict)."""
    from kdcore.train import Trainer

    passes: list[int] = []
    real_predict = Trainer._predict

    def spy(self, model, x):
        if model is self.teacher:
            passes.append(len(x))
        return real_predict(self, model, x)

    monkeypatch.setattr(Trainer, "_predict", spy)
    return passes


@pytest.fixture()
def small_fashion_mnist(tmp_path, monkeypatch):
    """A Fashion-MNIST of 60 + 20 random images in KD_DATA_DIR (not Debian's package): its decoded arrays and
    splits are kept in the cache folder. Yields the folder of its IDX files."""
    import numpy as np

    from kdcore import paths
    from kdcore.data import clear_cache, write_idx

    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", 60), ("t10k", 20)):
        write_idx(folder / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    clear_cache()
    yield folder
    clear_cache()
