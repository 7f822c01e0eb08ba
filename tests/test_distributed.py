"""One run over several processes (torch.distributed, gloo on the CPU): sharding, the launcher, equivalence."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from kdcore.errors import KDError
from kdcore.spec import RunSpec
from kdcore.train import train
from kdcore.train.checkpoint import load_model_from_checkpoint
from kdcore.train.distributed import World, launcher_command, shard

BASE = {"dataset": {"name": "digits"}, "student": "mlp_64", "batch_size": 64, "probe_size": 8,
        "optimizer": {"name": "adamw", "lr": 0.003}}


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    parts = [shard(103, World(rank=r, size=4)) for r in range(4)]
    assert {len(p) for p in parts} == {25}
    joined = torch.cat(parts)
    assert len(set(joined.tolist())) == 100 and int(joined.max()) < 100
    with pytest.raises(KDError, match="fewer than"):
        shard(1, World(rank=0, size=2))


def test_spec_devices_nodes_and_the_global_batch():
    spec = RunSpec.from_dict({**BASE, "devices": 2, "nodes": 2, "grad_accumulation": 2})
    assert spec.world_size == 4 and spec.device_batch_size == 8
    with pytest.raises(KDError, match="multiple of devices"):
        RunSpec.from_dict({**BASE, "devices": 3})
    assert RunSpec.from_dict(BASE).devices == 1 and RunSpec.from_dict(BASE).nodes == 1


def test_a_spec_for_two_processes_is_refused_in_one():
    with pytest.raises(KDError, match="python -m kdcore train"):
        train(RunSpec.from_dict({**BASE, "devices": 2, "epochs": 1}), "/nonexistent/never-written")


def test_the_launcher_is_pytorchs_elastic_one():
    one = launcher_command(["train", "s.yaml"], devices=2)
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in one
    two = launcher_command(["train", "s.yaml"], devices=2, nodes=2, endpoint="127.0.0.1:29555", run_id="r")
    assert two[two.index("--rdzv-backend") + 1] == "c10d" and two[two.index("--nnodes") + 1] == "2"
    assert two[-3:] == ["kdcore", "train", "s.yaml"]
    with pytest.raises(KDError, match="rendezvous"):
        launcher_command(["train"], devices=1, nodes=2)


def _test_predictions(ckpt):
    from kdcore.data import load_dataset
    from kdcore.train.trainer import SPLIT_SEED

    model, _ = load_model_from_checkpoint(ckpt)
    data = load_dataset("digits", val_fraction=0.1, seed=SPLIT_SEED, device=torch.device("cpu"))
    with torch.no_grad():
        return model.eval()(data.test.x).argmax(1), data.test.y


@pytest.fixture(scope="module")
def kd_single(tmp_path_factory):
    """A digits teacher, a KD spec distilling it, and that spec's single-process run (global batch 64)."""
    root = tmp_path_factory.mktemp("kd")
    train(RunSpec.from_dict({**BASE, "epochs": 2}), root / "teacher")
    kd = {**BASE, "epochs": 3, "teacher": {"source": "checkpoint", "checkpoint": str(root / "teacher" / "checkpoint.pt")},
          "logit": {"method": "kd", "rho": 4.0, "alpha": 0.5, "beta": 0.5}}
    single = train(RunSpec.from_dict(kd), root / "one")
    return kd, single, root


def _assert_matches_one_process(single, one_dir, two_dir):
    """The 2-process student lands where the 1-process one does. The ranks see different shards in a different
    order, so the students agree closely, not bit for bit. Tolerance: 4 points of test accuracy, and the same
    class on 85% of the test set."""
    pred_one, y = _test_predictions(one_dir / "checkpoint.pt")
    pred_two, _ = _test_predictions(two_dir / "checkpoint.pt")
    acc_one, acc_two = float((pred_one == y).float().mean()), float((pred_two == y).float().mean())
    assert abs(acc_one - acc_two) <= 0.04, (acc_one, acc_two)
    assert abs(acc_one - single.final["test/acc"]) < 1e-6
    assert float((pred_one == pred_two).float().mean()) >= 0.85
    return pred_two, y


@pytest.mark.slow
def test_two_processes_from_the_cli_match_one_process(kd_single, tmp_path):
    """The same global batch (64 = 2 × 32) and seed through `kdcore train --devices 2`."""
    kd, single, root = kd_single
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "kdcore", "train", str(tmp_path / "kd.yaml"), "--devices", "2",
                           "--out", str(tmp_path / "two"), "--quiet"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and "32 per device" in done.stdout and "global batch 64" in done.stdout
    assert "student mlp_64: test acc" in done.stdout
    assert done.stdout.count("summary:") == 1  # rank 0 alone reports
    saved = torch.load(tmp_path / "two" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert saved["spec"]["devices"] == 2 and [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    _assert_matches_one_process(single, root / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_worker_launched_two_process_run_matches_one_process(kd_single, kd_home):
    """The same spec with `devices: 2` queued and run by a worker owning two devices; its recorded (sharded)
    test accuracy and teacher agreement are exactly those of the stored student evaluated in one process."""
    from test_worker_devices import run_processes

    from kdcore.jobs import RunStatus, RunStore
    from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
    from kdcore.paths import run_dir

    kd, single, root = kd_single
    with database_url("sqlite", kd_home) as url:
        store = RunStore(url)
        run_id = store.submit(RunSpec.from_dict({**kd, "devices": 2, "device": "cpu"}))
        worker = start_worker(kd_home, url, "--device", "cpu", "--devices", "2", "--exit-when-idle")
        try:
            run = wait_until(lambda: (r := store.get(run_id)).status.is_terminal and r, 600, "the run to end",
                             on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
            assert worker.wait(timeout=120) == 0
            wait_until(lambda: run_processes(run_id) == [], 30, "no process of the run left")  # no orphan rank
        finally:
            stop_process(worker)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.info["world_size"] == 2 and run.info["device_batch"] == 32 and run.info["global_batch"] == 64
    pred_two, y = _assert_matches_one_process(single, root / "one", run_dir(run_id))
    teacher_pred, _ = _test_predictions(root / "teacher" / "checkpoint.pt")
    assert len(y) % 2  # 359 test samples over 2 ranks: an uneven split
    assert round(run.final["test/acc"] * len(y)) == int((pred_two == y).sum())
    assert round(run.final["fidelity/agreement"] * len(y)) == int((pred_two == teacher_pred).sum())


@pytest.mark.slow
def test_gradient_accumulation_keeps_the_global_batch(tmp_path):
    """Two micro-batches of 32 per step take the step one batch of 64 takes (up to float rounding)."""
    spec = {**BASE, "epochs": 1, "probe_size": 0, "dataset": {"name": "digits", "augment": False}}
    whole = train(RunSpec.from_dict(spec), tmp_path / "whole")
    halves = train(RunSpec.from_dict({**spec, "grad_accumulation": 2}), tmp_path / "halves")
    assert whole.step == halves.step
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=False)["state_dict"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3
    assert halves.info["grad_accumulation"] == 2 and halves.info["device_batch"] == 32


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback_complete_one_run(tmp_path):
    """Two launchers (`--nodes 2`, one process each) meet through c10d rendezvous on 127.0.0.1 and train one run."""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**BASE, "epochs": 1, "nodes": 2}))
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "kdcore", "train", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"),
           "--quiet", "--rdzv-endpoint", endpoint, "--rdzv-id", "loopback"]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum(out.count("summary:") for out, _ in outputs) == 1  # one run, reported by its rank 0
    assert "2 process(es) (1 per node × 2 node(s))" in "".join(out for out, _ in outputs)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert saved["spec"]["nodes"] == 2 and [h["epoch"] for h in saved["history"]] == [1]


def test_eval_spans_cover_every_sample_exactly_once():
    from kdcore.train.distributed import eval_span

    for n in (359, 143, 100, 7, 2):
        for size in (1, 2, 3, 4):
            spans = [eval_span(n, World(rank=r, size=size)) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no overlap, no gap
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


def _evaluate_on_rank(rank: int, size: int, port: int, spec: dict, out: str) -> None:
    """One rank of a sharded evaluation: the trainer set up as in a run, then one (last-epoch) evaluation."""
    from kdcore.train import distributed as dist_run
    from kdcore.train.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    trainer = Trainer(RunSpec.from_dict(spec), f"{out}/never-written")
    trainer._setup()
    try:
        metrics = trainer._evaluate(trainer.spec.epochs, 0.0, 0.0, 0.0)
        torch.save({"metrics": metrics, "probes": trainer.probes["student"]}, f"{out}/rank{rank}.pt")
    finally:
        dist_run.stop(trainer._owns_group)


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process_on_an_uneven_split(tmp_path):
    """digits' 143 validation and 359 test samples over 3 ranks (48/48/47, 119/120/120): every rank evaluates
    its block, the predictions are gathered, and the metrics are those of one process evaluating everything."""
    import torch.multiprocessing as mp

    from kdcore.train.trainer import Trainer

    spec = {**BASE, "epochs": 1, "devices": 3, "batch_size": 63, "eval_batch_size": 50}
    mp.start_processes(_evaluate_on_rank, args=(3, _free_port(), spec, str(tmp_path)), nprocs=3,
                       start_method="spawn")
    one = Trainer(RunSpec.from_dict({**spec, "devices": 1}), tmp_path / "one")
    one._setup()
    expected = one._evaluate(1, 0.0, 0.0, 0.0)
    sizes = {"val/acc": len(one.data.val), "test/acc": len(one.data.test)}
    assert sizes["val/acc"] % 3 and sizes["test/acc"] % 3  # the split really is uneven
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(3)]
    assert results[0]["probes"] and not results[1]["probes"]  # rank 0 alone keeps probe logits
    for result in results:  # every rank holds the same metrics, rank 0 records them
        got = result["metrics"]
        for name, n in sizes.items():  # the correct counts, exactly: no sample missed or counted twice
            assert round(got[name] * n) == round(expected[name] * n), name
        assert got["calib/ece_student"] == pytest.approx(expected["calib/ece_student"], abs=1e-6)
    assert torch.allclose(results[0]["probes"][0], one.probes["student"][0], atol=1e-5)


def _train_on_rank(rank: int, size: int, port: int, spec: dict, out_dirs: list[str], report: str) -> None:
    from kdcore.errors import KDError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    try:
        outcome = train(RunSpec.from_dict(spec), out_dirs[rank]).status
    except KDError as err:
        outcome = str(err)
    with open(f"{report}{rank}", "w") as fh:
        fh.write(outcome)


@pytest.mark.slow
def test_ranks_that_see_different_checkpoints_stop_with_a_clear_error(tmp_path):
    """Machines of one run that do not share KD_HOME: one rank would resume, another start over. Every rank
    refuses, in one sentence, instead of training out of step."""
    import torch.multiprocessing as mp

    spec = {**BASE, "epochs": 1, "devices": 2, "probe_size": 0}
    shared = [str(tmp_path / "shared")] * 2
    mp.start_processes(_train_on_rank, args=(2, _free_port(), spec, shared, str(tmp_path / "first")), nprocs=2,
                       start_method="spawn")
    assert (tmp_path / "first0").read_text() == "completed"
    apart = [str(tmp_path / "shared"), str(tmp_path / "elsewhere")]
    mp.start_processes(_train_on_rank, args=(2, _free_port(), spec, apart, str(tmp_path / "second")), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        assert "must mount the same KD_HOME" in (tmp_path / f"second{rank}").read_text()
