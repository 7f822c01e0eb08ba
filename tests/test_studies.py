"""Studies: grid × seeds expansion and ids, the table's statistics against scipy, the CLI, and runs whose trainer
warned (a student that stopped learning) counted in each row and, on request, left out of the means."""
import math
import statistics

import pytest
from scipy import stats as sps

from kdcore.cli import main
from kdcore.jobs import RunStatus, RunStore
from kdcore.spec import SpecError
from kdcore.studies import (
    build_table,
    config_key,
    expand_study,
    mean_std,
    paired_difference,
    parse_study_yaml,
    study_table,
)
from kdcore.studies.spec import StudySpec
from kdcore.studies.table import RunResult
from kdcore.summary import RunSummary, health_text, run_warnings, warning_short

BASE = """
name: rho study
dataset: {name: digits}
student: mlp_64
teacher: {source: checkpoint, checkpoint: teacher.pt, model: cnn_small}
epochs: 3
study:
  seeds: 3
  baseline: true
  variants:
    KD: {}
    soft only: {logit: {alpha: 0.0, beta: 1.0}}
  grid:
    logit.rho: [1, 4]
"""


def test_grid_times_seeds_expands_to_every_configuration_and_seed():
    base, study = parse_study_yaml(BASE)
    planned = expand_study(base, study)
    assert len(planned) == (1 + 2 * 2) * 3
    labels = list(dict.fromkeys(p.config.label for p in planned))
    assert labels == ["scratch", "KD, logit.rho=1", "KD, logit.rho=4", "soft only, logit.rho=1", "soft only, logit.rho=4"]
    assert [p.seed for p in planned[:6]] == [0, 1, 2, 0, 1, 2]
    keys = {p.config.label: p.config.key for p in planned}
    assert len(set(keys.values())) == 5
    for p in planned:
        assert p.spec.seed == p.seed and config_key(p.spec) == p.config.key
        assert p.spec.name == f"rho study [{p.config.label}, seed {p.seed}]"
        assert f"config:{p.config.label}" in p.spec.tags and "study:rho study" in p.spec.tags
    soft4 = next(p.spec for p in planned if p.config.label == "soft only, logit.rho=4")
    assert (soft4.logit.rho, soft4.logit.alpha, soft4.logit.beta) == (4, 0.0, 1.0)
    scratch = next(p.spec for p in planned if p.config.is_baseline)
    assert scratch.teacher is None and scratch.hints == []


def test_bad_studies_fail_with_one_sentence_naming_the_field():
    base, _ = parse_study_yaml(BASE)
    with pytest.raises(SpecError, match="study configuration KD, logit.rho=-1: logit.rho"):
        expand_study(base, parse_study_yaml(BASE.replace("[1, 4]", "[-1, 4]"))[1])
    with pytest.raises(SpecError, match="study.seeds"):
        parse_study_yaml(BASE.replace("seeds: 3", "seeds: [1, 1]"))
    with pytest.raises(SpecError, match="train the same spec"):
        expand_study(base, parse_study_yaml(BASE.replace("{logit: {alpha: 0.0, beta: 1.0}}", "{}"))[1])
    with pytest.raises(SpecError, match="no `study:` block"):
        parse_study_yaml("student: mlp_64\n")


def _result(label, seed, test, val, baseline=False, warnings=()):
    s = RunSummary("best-val", 3, 5, val, test, test, agreement=0.9, kl_to_teacher=0.2, ece=0.05)
    return RunResult(run_id=f"{label}{seed}", name="", status="completed", seed=seed, config_key=label, label=label,
                     is_baseline=baseline, summary=s, params=1000.0, seconds=2.0, warnings=tuple(warnings))


def test_table_mean_std_and_paired_interval_match_scipy():
    base_acc = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81}
    kd_acc = {0: 0.83, 1: 0.83, 2: 0.82, 3: 0.85}
    # validation prefers "low val, high test"'s rival: the best row is chosen on val, not on test
    results = ([_result("scratch", s, a, 0.7, baseline=True) for s, a in base_acc.items()]
               + [_result("kd", s, a, 0.9) for s, a in kd_acc.items()]
               + [_result("high test", s, 0.99, 0.5) for s in base_acc])
    table = build_table("abc", results)
    kd = next(r for r in table.rows if r.label == "kd")
    assert kd.test_acc.mean == pytest.approx(statistics.mean(kd_acc.values()))
    assert kd.test_acc.std == pytest.approx(statistics.stdev(kd_acc.values())) and kd.test_acc.n == 4
    ref = sps.ttest_rel(list(kd_acc.values()), list(base_acc.values())).confidence_interval(0.95)
    assert (kd.vs_baseline.low, kd.vs_baseline.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert kd.vs_baseline.mean == pytest.approx(statistics.mean(kd_acc[s] - base_acc[s] for s in kd_acc))
    assert kd.vs_baseline.excludes_zero
    assert table.best.label == "kd" and table.baseline.label == "scratch"
    md = table.format("markdown")
    assert "| ★ kd | 4/4 | 83.25 ± 1.26 |" in md and "Selection: best-val" in md
    assert table.format("csv").splitlines()[0].startswith("configuration,best,n,runs,test_acc_mean")
    assert r"\begin{tabular}" in table.format("latex") and r"$\pm$" in table.format("latex")


def test_paired_difference_pairs_by_seed_and_needs_two_pairs_for_an_interval():
    d = paired_difference({0: 0.5, 1: 0.6, 7: 0.9}, {1: 0.5, 7: 0.7, 9: 0.1})
    assert d.n == 2 and d.mean == pytest.approx(0.15)
    one = paired_difference({0: 0.5}, {0: 0.4})
    assert one.n == 1 and math.isnan(one.low)
    assert mean_std([]).n == 0 and math.isnan(mean_std([0.3]).std)


def _complete(store, run_id, val_by_epoch, test_by_epoch, info=None):
    """Play a worker: claim, write epoch metrics (and the run's info, where a worker keeps its warnings), complete."""
    store.register_worker("w", host="test", pid=1, device="cpu")
    rec = store.claim_next("w", device="cpu")
    assert rec.id == run_id
    points = [{"step": e, "epoch": e, "name": n, "value": v, "wall_time": 0.0, "kind": "epoch"}
              for e in val_by_epoch for n, v in (("val/acc", val_by_epoch[e]), ("test/acc", test_by_epoch.get(e)))
              if v is not None]
    assert store.record_progress(run_id, "w", rec.attempts, points=points, epoch=max(val_by_epoch), step=3,
                                 final={"test/acc": test_by_epoch[max(val_by_epoch)]}, info=info)
    assert store.finish_run(run_id, "w", rec.attempts, RunStatus.COMPLETED)


def test_a_study_is_one_group_in_the_store_and_its_table_selects_on_validation(kd_home, tmp_path, capsys):
    spec = tmp_path / "study.yaml"
    spec.write_text("""
name: two rhos
dataset: {name: digits}
student: mlp_64
teacher: {source: checkpoint, checkpoint: t.pt, model: cnn_small}
study: {seeds: [0, 1], grid: {logit.rho: [2, 8]}}
""")
    assert main(["study", str(spec), "--no-check"]) == 0
    study_id = capsys.readouterr().out.strip()
    store = RunStore()
    runs = store.list_runs(sweep_id=study_id)
    assert len(runs) == 4 and len({r.id for r in runs}) == 4 and all(r.status is RunStatus.QUEUED for r in runs)
    assert sorted((r.spec.logit.rho, r.spec.seed) for r in runs) == [(2, 0), (2, 1), (8, 0), (8, 1)]
    for r in sorted(runs, key=lambda r: r.created_at):
        # best test at epoch 1, best validation at epoch 2
        _complete(store, r.id, {1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.99, 2: 0.75 + r.spec.seed / 100, 3: 0.6})
    table = study_table(store, study_id)
    assert [row.test_acc.mean for row in table.rows] == [pytest.approx(0.755)] * 2
    assert {res.summary.selected_epoch for res in table.results} == {2}
    last = study_table(store, study_id, "last")
    assert [row.test_acc.mean for row in last.rows] == [pytest.approx(0.6)] * 2
    assert main(["table", study_id, "--format", "csv", "--select", "last"]) == 0
    out = capsys.readouterr().out
    assert "logit.rho=2" in out and out.strip().splitlines()[-1].endswith(",last")
    assert main(["table", "nosuchstudy"]) == 2
    assert "there is no study" in capsys.readouterr().err


def test_a_configuration_that_switches_the_logit_method_drops_the_base_methods_own_fields():
    """KD's soft_loss / rho_squared in the base must not follow a DKD configuration, by variant or by grid."""
    base = {"name": "m", "dataset": {"name": "digits"}, "student": "mlp_64",
            "teacher": {"source": "checkpoint", "model": "mlp_64", "checkpoint": "t.pt"},
            "logit": {"rho": 4, "alpha": 0.1, "beta": 0.9, "soft_loss": "kl", "rho_squared": True}}
    by_variant = StudySpec(seeds=[0], variants={"KD": {}, "DKD": {"logit": {"method": "dkd"}}})
    by_grid = StudySpec(seeds=[0], grid={"logit.method": ["kd", "dkd"]})
    for study in (by_variant, by_grid):
        specs = {p.config.label: p.spec for p in expand_study(base, study)}
        dkd = next(s for label, s in specs.items() if "dkd" in label.lower())
        assert dkd.logit.method == "dkd" and dkd.logit.rho == 4  # a shared field keeps the base's value
        assert not hasattr(dkd.logit, "soft_loss")


COLLAPSE = ("The student stopped learning at epoch 2: it predicts one class for 100% of the validation set "
            "(accuracy 10.0%, chance 10%) while the loss stays finite, so this run's results say nothing about the "
            "method; rerun with a lower learning rate (e.g. optimizer.lr: 0.01) or gradient clipping "
            "(optimizer.clip_grad_norm: 1.0).")


def test_a_runs_warnings_read_from_its_info_and_shortened_for_a_table_cell():
    assert run_warnings({"warnings": [COLLAPSE]}) == (COLLAPSE,) and run_warnings({}) == run_warnings(None) == ()
    assert warning_short(COLLAPSE) == "collapsed at epoch 2"
    assert health_text([COLLAPSE]) == "⚠ collapsed at epoch 2" and health_text([]) == ""
    assert health_text([COLLAPSE, "Out of memory at step 5; retried with a smaller batch"]) == (
        "⚠ collapsed at epoch 2 (+1 more)")
    assert warning_short("Out of memory at step 5; retried") == "Out of memory at step 5"


def _warned_study():
    """Scratch and KD over five seeds; KD's seed 4 collapsed (test 0.10), the others 0.85..0.88."""
    base = {s: 0.80 + s / 100 for s in range(5)}
    kd = {0: 0.85, 1: 0.86, 2: 0.87, 3: 0.88, 4: 0.10}
    return ([_result("scratch", s, a, 0.80, baseline=True) for s, a in base.items()]
            + [_result("kd", s, a, 0.10 if s == 4 else 0.90, warnings=[COLLAPSE] if s == 4 else ())
               for s, a in kd.items()])


def test_a_warned_run_stays_in_the_mean_by_default_and_its_row_says_so():
    table = build_table("abc", _warned_study())
    kd = next(r for r in table.rows if r.label == "kd")
    assert kd.warned == 1 and kd.test_acc.n == 5 and kd.test_acc.mean == pytest.approx(0.712)
    assert table.warned == 1 and not table.exclude_warned and table.left_out == set()
    header, body = table.cells()
    assert dict(zip(header, body[1]))["n"] == "5/5, 1 ⚠" and dict(zip(header, body[0]))["n"] == "5/5"
    md = table.format("markdown")
    assert "| kd | 5/5, 1 ⚠ | 71.20 ± 34.23 |" in md and "1 such run is kept in the means" in md
    assert r"5/5, 1 \textbf{!}" in table.format("latex")
    csv_rows = table.format("csv").splitlines()
    assert csv_rows[0].endswith(",warned,warned_left_out,selection") and csv_rows[2].endswith(",1,0,best-val")


def test_leaving_warned_runs_out_takes_the_mean_of_the_others_and_says_so():
    table = build_table("abc", _warned_study(), exclude_warned=True)
    kd = next(r for r in table.rows if r.label == "kd")
    others = [0.85, 0.86, 0.87, 0.88]
    assert kd.test_acc.n == 4 and kd.test_acc.mean == pytest.approx(statistics.mean(others))
    assert kd.test_acc.std == pytest.approx(statistics.stdev(others)) and kd.val_acc.mean == pytest.approx(0.9)
    assert kd.vs_baseline.n == 4  # the collapsed seed is paired with nothing
    assert kd.vs_baseline.mean == pytest.approx(statistics.mean(a - (0.80 + s / 100) for s, a in enumerate(others)))
    assert table.best.label == "kd"  # on validation without the dead run (with it: 0.74 < scratch's 0.80)
    assert build_table("abc", _warned_study()).best.label == "scratch"
    assert table.left_out == {"kd4"} and table.warned == 1
    assert dict(zip(*[table.cells()[0], table.cells()[1][1]]))["n"] == "4/5, 1 ⚠ out"
    assert "1 such run is left out of the means" in table.format("markdown")
    assert table.format("csv").splitlines()[2].endswith(",1,1,best-val")
    assert table.with_warned(excluded=False).rows[1].test_acc.n == 5  # and back


def test_a_table_without_warned_runs_says_nothing_about_them():
    table = build_table("abc", [r for r in _warned_study() if not r.warned], exclude_warned=True)
    assert table.warned == 0 and table.health_note() is None
    assert "⚠" not in table.format("markdown") and [row[1] for row in table.cells()[1]] == ["5/5", "4/4"]


def test_a_stored_runs_warning_reaches_the_study_table_and_the_cli(kd_home, tmp_path, capsys):
    spec = tmp_path / "study.yaml"
    spec.write_text("""
name: seeds
dataset: {name: digits}
student: mlp_64
teacher: {source: checkpoint, checkpoint: t.pt, model: cnn_small}
study: {seeds: [0, 1, 2]}
""")
    assert main(["study", str(spec), "--no-check"]) == 0
    study_id = capsys.readouterr().out.strip()
    store = RunStore()
    runs = sorted(store.list_runs(sweep_id=study_id), key=lambda r: r.created_at)
    for r in runs:
        dead = r.spec.seed == 2
        _complete(store, r.id, {1: 0.1 if dead else 0.8}, {1: 0.1 if dead else 0.8 + r.spec.seed / 100},
                  info={"warnings": [COLLAPSE]} if dead else None)
    assert [store.get(r.id).warnings for r in runs] == [(), (), (COLLAPSE,)]
    kept = study_table(store, study_id)
    assert kept.rows[0].warned == 1 and kept.rows[0].test_acc.mean == pytest.approx((0.8 + 0.81 + 0.1) / 3)
    left = study_table(store, study_id, exclude_warned=True)
    assert left.rows[0].test_acc.mean == pytest.approx(0.805) and left.rows[0].test_acc.n == 2
    assert main(["table", study_id]) == 0 and "| 3/3, 1 ⚠ |" in capsys.readouterr().out
    assert main(["table", study_id, "--exclude-warned"]) == 0
    out = capsys.readouterr().out
    assert "| 2/3, 1 ⚠ out | 80.50 ± 0.71 |" in out and "left out of the means" in out
