
import pytest
import torch

# Two cores on CI: one thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture()
def kd_home(tmp_path, monkeypatch):
    """An isolated KD_HOME (store, runs, data) for one test."""
    home = tmp_path / "kdhome"
    monkeypatch.setenv("KD_HOME", str(home))
    monkeypatch.delenv("KD_DATABASE_URL", raising=False)
    return home
