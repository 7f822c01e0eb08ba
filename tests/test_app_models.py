"""Models page: the zoo with parameters, FLOPs (computed in the background) and latency; any model's layers."""
from __future__ import annotations

from test_app_support import (
    app,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
)

from app import state
from kdcore.jobs.testing import wait_until

# The zoo's statistics build every model in a background thread: seconds alone, much longer on loaded CI cores.
STATS_TIMEOUT_S = 240


def test_zoo_table_fills_in_and_layers_have_shapes(kd_home):
    at = app("models.py")
    no_exception(at)
    zoo = at.dataframe[0].value
    assert {"mlp_64", "cnn_small", "resnet8"} <= set(zoo["model"])
    job = state.zoo_job(10, (1, 8, 8))
    wait_until(lambda: job.stats_done, STATS_TIMEOUT_S, "the zoo's statistics")
    at.run()
    zoo = at.dataframe[0].value.set_index("model")
    assert zoo.loc["mlp_64", "params"] == 64 * 64 + 64 + 64 * 10 + 10
    # latency not measured yet: a dash, not "…" as if it were on its way (or "None")
    assert zoo["latency (ms/image)"].isna().all() and at.dataframe[0].proto.placeholder == "—"
    assert zoo.loc["cnn_small", "flops"] > zoo.loc["mlp_64", "flops"] > 0

    at.selectbox(key="models_layers_model").set_value("cnn_small").run()
    no_exception(at)
    layers = at.dataframe[1].value.set_index("path")
    assert layers.loc["stage1.conv1", "shape"] == "32×8×8"
    at.toggle(key="models_only_candidates").set_value(True).run()
    assert "stage1.relu1" not in set(at.dataframe[1].value["path"])


def test_latency_is_measured_on_request(kd_home):
    job = state.ZooJob(10, (1, 8, 8))
    wait_until(lambda: job.stats_done, STATS_TIMEOUT_S, "the zoo's statistics")
    job.latency.update({n: 0.0 for n in job.names if n != "mlp_64"})  # measure one model only
    job.measure_latency()
    wait_until(lambda: not job.measuring, 120, "mlp_64's latency", poll_s=0.1)
    assert job.latency["mlp_64"] > 0
    job.stop()


def test_zoo_statistics_are_kept_on_disk_for_the_next_process(kd_home, monkeypatch):
    first = state.ZooJob(10, (1, 8, 8))
    wait_until(lambda: first.stats_done, STATS_TIMEOUT_S, "the zoo's statistics")
    first.stop()
    assert first._cache_path().is_file()

    import kdcore.models

    def must_not_build(*args, **kwargs):
        raise AssertionError("a cached model was built again")

    monkeypatch.setattr(kdcore.models, "model_stats", must_not_build)
    second = state.ZooJob(10, (1, 8, 8))  # a new process would do the same: read the file, build nothing
    assert second.stats_done and second.stats == first.stats
    assert second.stats["mlp_64"] == (64 * 64 + 64 + 64 * 10 + 10, first.stats["mlp_64"][1])
    second.stop()
