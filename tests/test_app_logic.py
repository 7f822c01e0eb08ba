"""The dashboard's plain functions: form values → RunSpec with problems mapped to widgets, tables,
the quick-start trio. No Streamlit, no browser."""
from __future__ import annotations

import pandas as pd
import pytest

from app import catalog, forms, live, quickstart, softlabels, state, tables
from kdcore.jobs import RunStore
from kdcore.spec import RunSpec


def no_deep(spec, teacher_model):
    return []


# ---- form -> spec ---------------------------------------------------------------------------------
def test_default_form_is_a_valid_scratch_run():
    check = forms.check_form({}, deep_check=no_deep)
    assert check.ok and check.problems == {}
    assert check.spec.teacher is None and check.spec.dataset.name == "digits"
    assert check.teacher_spec is None and check.sweep is None


def test_each_field_problem_lands_under_its_widget():
    check = forms.check_form({"teacher_source": "run", "teacher_run": "abcd1234", "kd.rho": -1.0, "epochs": 0,
                              "lr": 0.0, "label_fraction": 2.0, "transfer_kind": "partial_labels"},
                             teacher_run=forms.TeacherRun("abcd1234", "digits", "cnn_small", "completed"),
                             deep_check=no_deep)
    assert not check.ok and check.spec is None
    assert set(check.problems) == {"kd.rho", "epochs", "lr", "label_fraction"}
    assert check.problems["kd.rho"] == ["Must be greater than 0 (it is -1)."]  # plain words, no pydantic text
    assert all(m.endswith(".") for msgs in check.problems.values() for m in msgs)


def test_both_weights_zero_is_explained_beside_alpha():
    check = forms.check_form({"teacher_source": "zoo", "kd.alpha": 0.0, "kd.beta": 0.0}, deep_check=no_deep)
    assert "nothing would be learned" in check.problems["method"][0]


def test_a_teacher_run_on_another_dataset_or_failed_is_refused():
    values = {"teacher_source": "run", "teacher_run": "abcd1234"}
    wrong = forms.check_form(values, teacher_run=forms.TeacherRun("abcd1234", "cifar10", "resnet8", "completed"),
                             deep_check=no_deep)
    assert "trained on cifar10" in wrong.problems["teacher_run"][0]
    failed = forms.check_form(values, teacher_run=forms.TeacherRun("abcd1234", "digits", "cnn_small", "failed"),
                              deep_check=no_deep)
    assert "failed" in failed.problems["teacher_run"][0]
    missing = forms.check_form({"teacher_source": "run"}, deep_check=no_deep)
    assert "Pick the run" in missing.problems["teacher_run"][0]


def test_new_zoo_teacher_becomes_its_own_run_with_all_labels():
    check = forms.check_form({"teacher_source": "zoo", "teacher_zoo_model": "cnn_small", "teacher_epochs": 7,
                              "transfer_kind": "partial_labels", "label_fraction": 0.1}, deep_check=no_deep)
    assert check.ok
    t = check.teacher_spec
    assert t.student == "cnn_small" and t.epochs == 7 and t.teacher is None and t.transfer.kind == "labelled"
    assert check.spec.teacher.source == "run" and check.spec.teacher.run_id == forms.PENDING_TEACHER


def test_hint_pairs_build_presets_or_custom_and_incomplete_pairs_are_flagged():
    values = {"teacher_source": "zoo", "hint_count": 3,
              "hint_0_teacher": "stage2", "hint_0_student": "stage1", "hint_0_mode": "fitnets",
              "hint_1_teacher": "stage1", "hint_1_student": "stage1", "hint_1_mode": "custom",
              "hint_1_phi_t": "attention", "hint_1_phi_s": "attention", "hint_1_distance": "l2", "hint_1_weight": 5.0,
              "hint_2_teacher": "stage1", "hint_2_student": None}
    check = forms.check_form(values, deep_check=no_deep)
    assert check.problems == {"hint_2_student": ["Pick a layer for both sides of the pair, or remove the pair."]}
    data = forms.spec_dict(values)
    assert data["hints"][0] == {"teacher_layer": "stage2", "student_layer": "stage1", "preset": "fitnets"}
    assert data["hints"][1]["phi_t"] == "attention" and data["hints"][1]["weight"] == 5.0


def test_deep_check_problems_are_mapped_too():
    def deep(spec, teacher_model):
        if spec.teacher is None:  # the new teacher's own run
            return ["student: the teacher cannot be built"]
        assert teacher_model == "cnn_small"
        return ["hints.0: the layers cannot be matched", "student: unknown model 'x'"]

    check = forms.check_form({"teacher_source": "zoo", "hint_count": 1, "hint_0_teacher": "fc",
                              "hint_0_student": "fc1"}, deep_check=deep)
    assert check.problems["hint_0_student"] == ["The layers cannot be matched."]
    assert check.problems["student"] == ["Unknown model 'x'."]
    assert check.problems["teacher_zoo_model"] == ["The teacher cannot be built."]


def test_the_real_deep_check_catches_an_incompatible_pair():
    check = forms.check_form({"teacher_source": "zoo", "teacher_zoo_model": "cnn_small", "student": "mlp_64",
                              "hint_count": 1, "hint_0_teacher": "stage2", "hint_0_student": "fc1",
                              "hint_0_mode": "at"})
    assert not check.ok
    assert "flat vector" in " ".join(check.problems["hint_0_student"])


def test_sweep_values_are_parsed_and_checked():
    ok = forms.check_form({"sweep_on": True, "sweep_field": "logit.rho", "sweep_values": "1, 2, 4",
                           "teacher_source": "zoo"}, deep_check=no_deep)
    assert ok.ok and ok.sweep == ("logit.rho", [1, 2, 4])
    bad = forms.check_form({"sweep_on": True, "sweep_field": "logit.rho", "sweep_values": "1, -2",
                            "teacher_source": "zoo"}, deep_check=no_deep)
    assert bad.problems["sweep_values"] == ["Value -2: must be greater than 0."]
    one = forms.check_form({"sweep_on": True, "sweep_values": "4"}, deep_check=no_deep)
    assert "at least two values" in one.problems["sweep_values"][0]


def test_every_problem_is_reported_in_one_pass_in_plain_words():
    """Bad sweep values, field values and form-level problems all at once, none in pydantic's words."""
    check = forms.check_form({"teacher_source": "run", "lr": 0.0, "kd.rho": "abc", "epochs": 2.5,
                              "sweep_on": True, "sweep_field": "logit.alpha", "sweep_values": "0.5, x, -1, 0.5"},
                             deep_check=no_deep)
    assert check.problems == {
        "teacher_run": ["Pick the run whose model is the teacher (runs appear here once submitted)."],
        "lr": ["Must be greater than 0 (it is 0)."],
        "kd.rho": ["'abc' is not a number."],
        "epochs": ["Give a whole number (2.5 is not)."],
        "sweep_values": ["0.5 is given twice: each value makes one run, so give each once.",
                         "'x' is not a number.", "Value -1: must be at least 0."],
    }
    text = " ".join(m for msgs in check.problems.values() for m in msgs)
    assert "Input should" not in text and "run_id" not in text and "`" not in text


def test_a_rule_across_fields_is_reported_beside_a_bad_value():
    """pydantic checks whole-spec rules only once every field parses; the form does not wait."""
    check = forms.check_form({"teacher_source": "zoo", "lr": -1.0, "hint_count": 1, "hint_0_teacher": "stage1",
                              "hint_0_student": "fc1", "hint_stage_epochs": 10, "epochs": 10}, deep_check=no_deep)
    assert check.problems["lr"] == ["Must be greater than 0 (it is -1)."]
    assert check.problems["hint_stage_epochs"] == ["The hint-only epochs must be fewer than the epochs."]


def test_deep_checks_run_beside_field_problems():
    seen = []

    def deep(spec, teacher_model):
        seen.append(spec)
        return ["student: no such model"] if spec.teacher is not None else []

    check = forms.check_form({"teacher_source": "zoo", "lr": 0.0}, deep_check=deep)
    assert check.problems == {"lr": ["Must be greater than 0 (it is 0)."], "student": ["No such model."]}
    assert check.spec is None and seen  # the deep check saw the form with the bad value set aside


def test_duplicate_sweep_values_are_refused_even_when_written_differently():
    check = forms.check_form({"sweep_on": True, "sweep_field": "batch_size", "sweep_values": "64, 64.0, 128"},
                             deep_check=no_deep)
    assert check.problems == {"sweep_values": ["64 is given twice: each value makes one run, so give each once."]}
    models = forms.check_form({"sweep_on": True, "sweep_field": "student", "sweep_values": "mlp_64, nope"},
                              deep_check=no_deep).problems
    assert list(models) == ["sweep_values"] and len(models["sweep_values"]) == 1
    assert models["sweep_values"][0].startswith("Value 'nope': ") and "model" in models["sweep_values"][0]


def test_milestones_that_do_not_parse_are_explained():
    check = forms.check_form({"schedule": "step", "milestones": "10, soon"}, deep_check=no_deep)
    assert "'soon' is not a number" in check.problems["milestones"][0]
    assert forms.parse_number_list("30, 60", integers=True) == [30, 60]


def test_torchvision_weights_need_a_1000_class_dataset():
    check = forms.check_form({"teacher_source": "torchvision"}, deep_check=no_deep, dataset_classes=10)
    assert "1000 ImageNet classes" in check.problems["teacher_tv_model"][0]


def test_an_image_folder_needs_its_folder():
    check = forms.check_form({"dataset": "imagefolder"}, deep_check=no_deep)
    assert "Name the image folder" in check.problems["data_path"][0]


def test_widget_for_maps_dotted_paths():
    assert forms.widget_for("logit.rho") == "kd.rho"
    assert forms.widget_for("logit.alpha", {"method": "dkd"}) == "dkd.alpha"
    assert forms.widget_for("hints.2.teacher_layer") == "hint_2_teacher"
    assert forms.widget_for("teacher.model", {"teacher_source": "upload"}) == "teacher_upload_model"
    assert forms.widget_for("optimizer.unknown_thing") == "optimizer"
    assert forms.widget_for("nonsense") == forms.GENERAL


def test_values_from_spec_round_trip():
    spec = RunSpec.from_dict({"name": "x", "student": "mlp_64", "teacher": {"source": "run", "run_id": "abcd1234"},
                              "logit": {"rho": 8, "alpha": 0.2, "beta": 0.8, "soft_loss": "ce"},
                              "hints": [{"teacher_layer": "stage1", "student_layer": "fc1", "preset": "at"}],
                              "transfer": {"kind": "omit_classes", "omit_classes": [3]},
                              "optimizer": {"name": "sgd", "lr": 0.1, "nesterov": True},
                              "schedule": {"name": "step", "milestones": [5, 8]}, "epochs": 10, "tags": ["a"]})
    values = forms.values_from_spec(spec)
    check = forms.check_form(values, teacher_run=forms.TeacherRun("abcd1234", "digits", "cnn_small", "completed"),
                             deep_check=no_deep)
    assert check.ok, check.problems
    assert check.spec.to_dict() == spec.to_dict()


def test_each_methods_widgets_come_from_its_parameters_model():
    kd = {w.name: w for w in forms.param_widgets("kd")}
    assert (kd["rho"].kind, kd["rho"].minimum, kd["rho"].maximum, kd["rho"].title) == ("float", 0, 100, "Temperature ρ")
    assert kd["rho"].help and kd["rho_squared"].kind == "bool" and kd["rho"].key == "kd.rho"
    assert kd["soft_loss"].kind == "choice" and kd["soft_loss"].choice_label("ce") == "cross-entropy (same gradient)"
    dkd = {w.name: w for w in forms.param_widgets("dkd")}
    assert set(dkd) == {"alpha", "beta", "rho", "ce_weight", "warmup_epochs"}  # nothing DKD ignores
    assert dkd["warmup_epochs"].kind == "int" and dkd["ce_weight"].default == 1.0
    rkd = {w.name: w for w in forms.param_widgets("rkd", forms.loss_prefix(0))}
    assert rkd["student_layer"].kind == "layer" and rkd["student_layer"].side == "student"
    assert rkd["student_layer"].key == "loss_0.rkd.student_layer"


def test_values_from_spec_round_trip_keeps_each_methods_own_parameters():
    spec = RunSpec.from_dict({"student": "mlp_64", "teacher": {"source": "run", "run_id": "abcd1234"},
                              "logit": {"method": "dkd", "alpha": 2.0, "beta": 6.0, "warmup_epochs": 5},
                              "losses": [{"method": "rkd", "angle_weight": 10.0}, {"method": "pkt"}]})
    values = forms.values_from_spec(spec)
    assert values["dkd.alpha"] == 2.0 and values["kd.alpha"] == 0.1  # KD's α keeps its own default
    assert values["loss_count"] == 2 and values[forms.loss_key(0)] == "rkd"
    assert values[forms.param_key("rkd", "angle_weight", forms.loss_prefix(0))] == 10.0
    check = forms.check_form(values, teacher_run=forms.TeacherRun("abcd1234", "digits", "cnn_small", "completed"),
                             deep_check=no_deep)
    assert check.ok, check.problems
    assert check.spec.to_dict() == spec.to_dict()
    bad = forms.check_form({**values, forms.param_key("rkd", "angle_weight", forms.loss_prefix(0)): -1.0},
                           teacher_run=forms.TeacherRun("abcd1234", "digits", "cnn_small", "completed"),
                           deep_check=no_deep)
    assert list(bad.problems) == ["loss_0.rkd.angle_weight"]


def test_loss_entries_are_added_and_removed_keeping_the_later_ones():
    session = forms.form_defaults()
    for _ in range(3):
        forms.add_loss_entry(session)
    session[forms.loss_key(0)], session[forms.loss_key(1)], session[forms.loss_key(2)] = "rkd", "pkt", "sp"
    session[forms.param_key("sp", "weight", forms.loss_prefix(2))] = 42.0
    forms.remove_loss_entry(session, 0)
    assert session["loss_count"] == 2 and [session[forms.loss_key(i)] for i in range(2)] == ["pkt", "sp"]
    assert session[forms.param_key("sp", "weight", forms.loss_prefix(1))] == 42.0
    assert not any(k.startswith("loss_2") for k in session)


def test_submit_form_queues_teacher_first_and_a_sweep(kd_home):
    store = RunStore()
    check = forms.check_form({"teacher_source": "zoo", "teacher_epochs": 2, "epochs": 2, "sweep_on": True,
                              "sweep_field": "logit.rho", "sweep_values": "2, 8"}, deep_check=no_deep)
    ids = forms.submit_form(store, check)
    assert len(ids) == 3
    runs = {i: store.get(i) for i in ids}
    teacher_id = ids[-1]
    assert runs[teacher_id].spec.teacher is None and runs[teacher_id].spec.student == "cnn_small"
    students = [runs[i] for i in ids[:2]]
    assert [s.spec.logit.rho for s in students] == [2, 8]
    assert all(s.depends_on == teacher_id and s.spec.teacher.run_id == teacher_id for s in students)
    assert students[0].sweep_id and students[0].sweep_id == students[1].sweep_id


def test_save_upload_is_content_addressed(tmp_path):
    a = forms.save_upload(b"abc", "my teacher.pt", tmp_path)
    b = forms.save_upload(b"abc", "other.pt", tmp_path)
    assert a.read_bytes() == b"abc" and a.parent == tmp_path and a.name.startswith("my_teacher-")
    assert b != a and b.name.split("-")[-1] == a.name.split("-")[-1]


# ---- tables ----------------------------------------------------------------------------------------
def test_runs_frame_filter_and_sort(kd_home):
    from test_app_support import SCRATCH, TEACHER, completed_run, kd_spec

    store = RunStore()
    teacher = completed_run(store, TEACHER)
    kd = completed_run(store, kd_spec(teacher), kd=True)
    queued = store.submit({**SCRATCH, "name": "waiting"}, check=False)
    store.set_tags(kd, ["paper"])
    frame = tables.runs_frame(store.list_runs(), {kd: 0.95})
    assert list(frame.columns) == tables.RUN_COLUMNS
    row = frame.set_index("id").loc[kd]
    assert row["teacher → student"] == f"run {teacher} → mlp_64"
    assert row["ρ / α / β"] == "4 / 0.5 / 0.5" and row[tables.SELECTED_ACC] == 0.95 and row[tables.LAST_ACC] == pytest.approx(0.8)
    assert tables.filter_runs(frame, statuses=["queued"])["id"].tolist() == [queued]
    assert tables.filter_runs(frame, tags=["paper"])["id"].tolist() == [kd]
    assert tables.filter_runs(frame, text="WAIT")["id"].tolist() == [queued]
    by_acc = tables.filter_runs(frame, sort="test accuracy at best validation")["id"].tolist()
    assert by_acc[0] == kd and by_acc[-1] == queued  # unknown accuracies last


def test_spec_comparison_highlights_differences():
    a = RunSpec.from_dict({"student": "mlp_64", "epochs": 5}).to_dict()
    b = RunSpec.from_dict({"student": "cnn_small", "epochs": 5}).to_dict()
    full = tables.spec_comparison({"a": a, "b": b})
    assert full.loc["student", "differs"] and not full.loc["epochs", "differs"]
    diff = tables.spec_comparison({"a": a, "b": b}, only_differences=True)
    assert list(diff.index) == ["student"] and list(diff.columns) == ["a", "b", "differs"]
    assert tables.differing_fields([a, b]) == ["student"]


def test_sweep_frame_and_final_metrics(kd_home):
    from test_app_support import TEACHER, completed_run, kd_spec

    store = RunStore()
    teacher = completed_run(store, TEACHER)
    r1 = completed_run(store, kd_spec(teacher, rho=2.0, name="same"), kd=True)
    r2 = completed_run(store, kd_spec(teacher, rho=8.0, name="same"), kd=True)
    records = [store.get(r1), store.get(r2)]
    assert tables.differing_fields([r.spec.to_dict() for r in records]) == ["logit.rho"]
    frame = tables.sweep_frame(records, "logit.rho")
    assert frame["value"].tolist() == [2.0, 8.0] and frame["agreement"].tolist() == pytest.approx([0.9, 0.9])
    labels = tables.run_labels(records)
    assert labels == {r1: "ρ = 2", r2: "ρ = 8"}  # labelled by what differs, not by their equal names
    final = tables.final_metrics_table(records, labels)
    assert list(final.index) == [labels[r1], labels[r2]]
    assert final.loc[labels[r1], "agreement"] == pytest.approx(0.9) and "test acc" in final.columns


def test_run_labels_drop_the_shared_prefix_and_stay_short():
    from types import SimpleNamespace as R

    records = [R(id="a", name="quick start: teacher (cnn_small)"), R(id="b", name="quick start: KD student " + "x" * 60)]
    labels = tables.run_labels(records)
    assert labels["a"] == "teacher (cnn_small)"
    assert labels["b"].startswith("KD student") and labels["b"].endswith("x") and "…" in labels["b"]
    assert len(labels["b"]) <= 42


def test_run_labels_say_which_fields_differ():
    from types import SimpleNamespace as R

    from kdcore.spec import RunSpec

    def run(i, name, **over):
        spec = RunSpec.from_dict({"name": name, "dataset": {"name": "digits"}, "student": "mlp_64", **over})
        return R(id=i, name=name, spec=spec)

    # a long name that would lose its ρ when cut at the end
    long = "distil resnet teacher into the small student with attention transfer + AT hint"
    sweep = [run("a", long + " rho 2", logit={"method": "kd", "rho": 2.0}),
             run("b", long + " rho 4", logit={"method": "kd", "rho": 4.0})]
    assert tables.run_labels(sweep) == {"a": "ρ = 2", "b": "ρ = 4"}
    two = [run("a", "x", seed=1, logit={"method": "kd", "rho": 2.0}), run("b", "y", seed=2, logit={"method": "kd", "rho": 2.0})]
    assert tables.run_labels(two) == {"a": "seed = 1", "b": "seed = 2"}
    many = [run("a", "first run", seed=1, epochs=3, batch_size=32, student="mlp_64"),
            run("b", "second run", seed=2, epochs=4, batch_size=64, student="cnn_small")]
    assert tables.run_labels(many) == {"a": "first run", "b": "second run"}  # too many differ: the names


def test_metric_groups_and_axes():
    groups = tables.metric_groups(["loss/soft", "loss/hard", "loss/total", "test/acc", "lr", "fidelity/agreement", "throughput"])
    assert groups["Loss terms"] == ["loss/total", "loss/hard", "loss/soft"]
    assert list(groups) == ["Loss terms", "Accuracy", "Teacher–student agreement", "Learning rate", "Throughput"]
    assert tables.metric_groups(["loss/hard", "loss/total"])["Loss terms"] == ["loss/total"]  # no twin line
    assert tables.x_axis_for(["test/acc"]) == "epoch" and tables.x_axis_for(["loss/total"]) == "step"


def test_append_points_replaces_same_step():
    from kdcore.jobs import MetricPoint

    frame = tables.append_points(None, [MetricPoint(1, 1, "a", 1.0, 0.0), MetricPoint(2, 1, "a", 2.0, 0.0)])
    frame = tables.append_points(frame, [MetricPoint(2, 1, "a", 5.0, 0.0), MetricPoint(3, 1, "a", 3.0, 0.0)])
    assert frame.sort_values("step")["value"].tolist() == [1.0, 5.0, 3.0]


def test_format_duration():
    assert tables.format_duration(None) == "—"
    assert tables.format_duration(42) == "42 s"
    assert tables.format_duration(125) == "2 min 05 s"
    assert tables.format_duration(3 * 3600 + 60) == "3 h 01 min"


# ---- catalog ---------------------------------------------------------------------------------------
def test_layers_frame_and_pair_check():
    layers = catalog.layers_frame("cnn_small", 10, (1, 8, 8))
    row = layers.set_index("path").loc["stage1.conv1"]
    assert row["shape"] == "32×8×8" and row["type"] == "Conv2d" and row["candidate"]
    assert not layers.set_index("path").loc["stage1.relu1", "candidate"]
    ok, reason = catalog.check_hint_pair("cnn_small", "stage2", "cnn_small", "stage1", 10, (1, 8, 8), "fitnets")
    assert ok and "regressor" in reason
    bad, why = catalog.check_hint_pair("cnn_small", "stage2", "mlp_64", "fc1", 10, (1, 8, 8), "at")
    assert not bad and "flat vector" in why


def test_zoo_frame_reports_models_that_cannot_run():
    frame = catalog.zoo_frame(lambda n: (10, 20) if n == "mlp_64" else "too small", names=["mlp_64", "resnet8"])
    assert frame.set_index("model").loc["mlp_64", "params"] == 10
    assert frame.set_index("model").loc["resnet8", "note"] == "too small"
    assert catalog.format_count(1_234_567) == "1.23M" and catalog.format_count(None) == "—"
    assert catalog.compression_text((1000, 100), (10, 50)) == "100× fewer parameters, 2× fewer FLOPs than the teacher"
    assert catalog.compression_text((10, 10), (10, 40)).startswith("about as many parameters, 4× more FLOPs")
    # large ratios read as numbers, grouped by thousands, never in exponent notation
    assert catalog.compression_text((6_430_000, 999_600), (1000, 1000)).startswith(
        "6,430× fewer parameters, 1,000× fewer FLOPs")
    assert [catalog.ratio_text(x) for x in (12.34, 100, 999.6, 123_456)] == ["12.3", "100", "1,000", "123,000"]


# ---- quick start -----------------------------------------------------------------------------------
def test_quickstart_trio_specs():
    t, s, k = quickstart.teacher_spec(), quickstart.scratch_spec(), quickstart.kd_spec("abcd1234")
    assert t.teacher is None and t.transfer.kind == "labelled" and t.dataset.name == "digits"
    for spec in (s, k):
        assert spec.student == "mlp_64" and spec.transfer.kind == "partial_labels"
        assert spec.transfer.label_fraction == pytest.approx(0.05)
    assert k.teacher.source == "run" and k.teacher.run_id == "abcd1234"
    assert t.device == "auto"


def test_submit_and_find_the_latest_trio(kd_home):
    store = RunStore()
    first = quickstart.submit_trio(store)
    second = quickstart.submit_trio(store)
    assert quickstart.latest_trio(store) == second != first
    kd = store.get(second.kd)
    assert kd.depends_on == second.teacher and kd.spec.teacher.run_id == second.teacher
    assert [r.id for r in store.list_runs()][::-1][:3] == first.ids()  # queued teacher first
    store.delete(second.scratch)
    assert quickstart.latest_trio(store) == first
    assert quickstart.trio_frame({}, first).empty


def test_trio_frame_orders_the_three_accuracies(kd_home):
    from test_app_support import SCRATCH, TEACHER, completed_run, kd_spec

    store = RunStore()
    teacher = completed_run(store, TEACHER)
    scratch = completed_run(store, SCRATCH)
    kd = completed_run(store, kd_spec(teacher), kd=True)
    trio = quickstart.Trio(teacher, scratch, kd)
    frame = quickstart.trio_frame({i: store.get(i) for i in trio.ids()}, trio)
    assert frame["run"].tolist() == [quickstart.ROLE_TITLES[r] for r in quickstart.ROLES]
    assert isinstance(frame, pd.DataFrame) and "agreement" in frame.loc[2, "note"]


# ---- logic the pages call (Compare, Soft labels, New experiment, Run) ------------------------------
def _run(id, status="completed", *, teacher=False, dataset="digits", acc=None, rho=4.0, sweep=None, created=0,
         finished=None, step=0):
    from datetime import datetime, timezone
    from types import SimpleNamespace as R

    spec = R(teacher=R() if teacher else None, logit=R(rho=rho), to_dict=lambda: {"logit": {"rho": rho}, "name": id})
    return R(id=id, name=f"run {id}", status=R(value=status), spec=spec, dataset=dataset, student="cnn_small",
             final={} if acc is None else {"test/acc": acc}, sweep_id=sweep, created_at=created, step=step,
             finished_at=None if finished is None else datetime(2024, 1, finished, tzinfo=timezone.utc))


def test_compare_opens_with_the_requested_or_latest_finished_runs():
    records = [_run("q", "queued"), _run("a"), _run("b"), _run("c"), _run("d")]
    assert tables.default_compare_selection(records, "c,zzz,q") == ["c", "q"]  # unknown ids dropped
    assert tables.default_compare_selection(records, None) == ["a", "b", "c"]
    assert tables.default_compare_selection(records[:1], "") == ["q"]  # nothing finished: the latest
    assert tables.default_compare_selection([], None) == []


def test_compare_metric_frames_and_default_metric():
    a = pd.DataFrame({"step": [1, 2], "epoch": [1, 1], "name": ["loss/total"] * 2, "value": [1.0, 3.0], "wall_time": [0.0] * 2})
    empty = a.iloc[:0]
    frame = tables.combined_metrics([("A", a), ("B", empty), ("C", a)])
    assert frame["run"].tolist() == ["A", "A", "C", "C"]
    assert list(tables.combined_metrics([("B", empty)]).columns) == ["step", "epoch", "name", "value", "wall_time", "run"]
    assert tables.default_metric(["a", "loss/total", "test/acc"]) == "test/acc"
    assert tables.default_metric(["b", "c"]) == "b" and tables.default_metric([]) is None


def test_a_step_metric_drawn_per_epoch_is_the_epoch_mean():
    frame = pd.DataFrame({"run": ["A"] * 4 + ["A"], "epoch": [1, 1, 2, 2, 1], "step": [1, 2, 3, 4, 2],
                          "name": ["loss/total"] * 4 + ["test/acc"], "value": [1.0, 3.0, 5.0, 7.0, 0.5]})
    per_epoch = tables.overlay_data(frame, "loss/total", "epoch")
    assert per_epoch["epoch"].tolist() == [1, 2] and per_epoch["value"].tolist() == [2.0, 6.0]
    assert tables.overlay_data(frame, "loss/total", "step") is frame
    assert tables.overlay_data(frame, "test/acc", "epoch") is frame  # an epoch metric is drawn as logged


def test_sweep_members_and_label():
    records = [_run("b", sweep="s1", created=2, rho=8.0), _run("a", sweep="s1", created=1, rho=2.0), _run("x")]
    assert [r.id for r in tables.sweep_members(records, "s1")] == ["a", "b"]
    assert tables.sweep_label(records, "s1") == "logit.rho · 2 runs · s1"


def test_metrics_cache_key_and_frame(kd_home):
    from test_app_support import TEACHER, claim, completed_run, feed

    assert state.metrics_version(_run("a", finished=3)).startswith("2024-01-03")
    assert state.metrics_version(_run("a", "running", step=7)) == "running-7"
    store = RunStore()
    assert state.store_for(store.url) is state.store_for(store.url)  # one store per database
    done = store.get(completed_run(store, TEACHER))
    frame = state.metrics_frame(store, done)
    assert len(frame) and {"step", "epoch", "name", "value"} <= set(frame.columns)
    live_id = store.submit(TEACHER, check=False)
    cb = claim(store, live_id)
    feed(cb, range(1, 2))
    first = state.metrics_frame(store, store.get(live_id))
    feed(cb, range(2, 3))
    assert len(state.metrics_frame(store, store.get(live_id))) > len(first)  # a live run is read again


def test_soft_labels_offers_runs_with_probes_and_opens_a_finished_kd_run(kd_home):
    from test_app_support import write_artifacts

    records = [_run("s1"), _run("k1", "running", teacher=True), _run("k2", teacher=True, rho=40.0), _run("none")]
    for r in records[:3]:
        write_artifacts(r.id, teacher=r.spec.teacher is not None)
    with_probes = softlabels.runs_with_probes(records)
    assert [r.id for r in with_probes] == ["s1", "k1", "k2"]
    assert softlabels.default_probe_run(with_probes, "k1") == "k1"
    assert softlabels.default_probe_run(with_probes, "none") == "k2"  # no probes: not offered
    assert softlabels.default_probe_run(with_probes[:2], None) == "s1"
    assert softlabels.default_probe_run([], None) is None
    assert softlabels.default_rho(records[2]) == 20.0 and softlabels.default_rho(records[0]) == 4.0


def test_teacher_candidates_best_finished_first_and_the_chosen_run_resolved():
    records = [_run("q", "queued", acc=None), _run("lo", acc=0.5), _run("hi", acc=0.9), _run("nan", acc=float("nan")),
               _run("f", "failed", acc=0.99), _run("other", dataset="cifar10", acc=0.95)]
    candidates = forms.teacher_candidates(records, "digits")
    assert [r.id for r in candidates] == ["hi", "lo", "nan", "q"]
    assert forms.teacher_run_label(candidates[0]) == "run hi · cnn_small · completed · 90.0% · hi"
    assert forms.teacher_run_label(candidates[2]) == "run nan · cnn_small · completed · nan"

    class Store:
        def get(self, run_id):
            if run_id == "other":
                return records[5]
            from kdcore.errors import KDError
            raise KDError(f"There is no run {run_id}")

    record, run = forms.find_teacher_run(Store(), "hi", candidates)
    assert record is candidates[0] and run == forms.TeacherRun("hi", "digits", "cnn_small", "completed")
    other = forms.TeacherRun("other", "cifar10", "cnn_small", "completed")
    assert forms.find_teacher_run(Store(), "other", candidates) == (None, other)
    assert forms.find_teacher_run(Store(), "gone", candidates) == (None, None)
    assert forms.find_teacher_run(Store(), None, candidates) == (None, None)


def test_teacher_model_name_per_source():
    run = forms.TeacherRun("abcd1234", "digits", "resnet8", "completed")
    named = {"/up/t.pt": "vgg8"}.get
    values = {"teacher_zoo_model": "cnn_small", "teacher_tv_model": "tv_resnet18", "teacher_checkpoint_path": " /up/t.pt "}
    assert forms.teacher_model_name({**values, "teacher_source": "zoo"}, run, named) == "cnn_small"
    assert forms.teacher_model_name({**values, "teacher_source": "run"}, run, named) == "resnet8"
    assert forms.teacher_model_name({**values, "teacher_source": "run"}, None, named) is None
    assert forms.teacher_model_name({**values, "teacher_source": "upload"}, None, named) == "vgg8"
    assert forms.teacher_model_name({**values, "teacher_source": "upload", "teacher_upload_model": "mlp_64"},
                                    None, named) == "mlp_64"
    assert forms.teacher_model_name({"teacher_source": "upload"}, None, named) is None
    assert forms.teacher_model_name({**values, "teacher_source": "torchvision"}, None, named) == "tv_resnet18"
    assert forms.teacher_model_name({**values, "teacher_source": "none"}, run, named) is None


def test_hint_pairs_are_added_and_removed_with_later_pairs_moving_up():
    session = {"hint_count": 0}
    for _ in range(3):
        forms.add_hint_pair(session)
    assert session["hint_count"] == 3 and session[forms.hint_key(2, "mode")] == forms.HINT_DEFAULTS["mode"]
    for i, layer in enumerate(["l1", "l2", "l3"]):
        session[forms.hint_key(i, "teacher")] = layer
    forms.remove_hint_pair(session, 0)
    assert session["hint_count"] == 2
    assert [session[forms.hint_key(i, "teacher")] for i in range(2)] == ["l2", "l3"]
    assert not any(k.startswith("hint_2_") for k in session)
    values = forms.form_values(session)
    assert values[forms.hint_key(1, "teacher")] == "l3" and forms.hint_key(2, "teacher") not in values
    assert set(forms.form_defaults()) <= set(values)


def test_live_view_reads_only_what_is_new_and_restarts_after_a_resume():
    from types import SimpleNamespace as R

    from kdcore.jobs import MetricPoint

    class Store:
        def __init__(self):
            self.points = [MetricPoint(s, 1, "loss/total", float(s), 0.0) for s in range(1, 4)]
            self.lines = [R(id=i, message=f"line {i}") for i in range(1, 4)]
            self.asked: list[tuple[int, int]] = []

        def metrics(self, run_id, since_step):
            self.asked.append(("metrics", since_step))
            return [p for p in self.points if p.step > since_step]

        def events(self, run_id, since_id):
            self.asked.append(("events", since_id))
            return [e for e in self.lines if e.id > since_id]

    store = Store()
    data = live.advance_view(store, "r", None, attempts=1)
    assert data["last"] == 3 and len(data["frame"]) == 3 and data["last_event"] == 3
    store.points.append(MetricPoint(4, 2, "loss/total", 4.0, 0.0))
    store.lines.append(R(id=4, message="line 4"))
    data = live.advance_view(store, "r", data, attempts=1)
    assert store.asked[2:] == [("metrics", 3), ("events", 3)]  # only what is new
    assert data["last"] == 4 and len(data["frame"]) == 4 and [e.id for e in data["events"]] == [1, 2, 3, 4]
    resumed = live.advance_view(store, "r", data, attempts=2)  # a resumed run rewrote history: from the start
    assert store.asked[4:] == [("metrics", -1), ("events", 0)] and resumed["attempts"] == 2
    assert len(resumed["frame"]) == 4 and len(resumed["events"]) == 4
    store.lines += [R(id=i, message="") for i in range(5, 400)]
    assert len(live.advance_view(store, "r", None, attempts=1)["events"]) == live.KEEP_EVENTS


def test_a_run_without_teacher_is_not_called_a_method():
    from types import SimpleNamespace as R

    from kdcore.spec import RunSpec

    teacher_run = R(spec=RunSpec(), method_label=RunSpec().method_label)
    assert tables.method_text(teacher_run) == "labels only (no teacher)"
    kd = RunSpec.from_dict({"teacher": {"source": "run", "run_id": "abcd1234"},
                            "logit": {"method": "kd", "rho": 4.0}})
    assert tables.method_text(R(spec=kd, method_label=kd.method_label)) == "KD ρ=4"


def test_wall_time_axis_starts_each_run_at_zero():
    import pandas as pd

    frame = pd.DataFrame({"run": ["a", "a", "b", "b"], "step": [1, 2, 1, 2], "epoch": [1, 1, 1, 1],
                          "name": ["loss/total"] * 4, "value": [1.0, 0.5, 1.2, 0.6],
                          "wall_time": [100.0, 103.0, 500.0, 510.0]})
    data = tables.overlay_data(frame, "loss/total", tables.WALL_TIME)
    assert data[tables.WALL_TIME].tolist() == [0.0, 3.0, 0.0, 10.0]


def test_device_fields_round_trip_and_the_batch_and_capacity_sentences():
    spec = RunSpec.from_dict({"devices": 4, "nodes": 2, "grad_accumulation": 2, "sync_batchnorm": True,
                              "batch_size": 256})
    check = forms.check_form(forms.values_from_spec(spec), deep_check=no_deep)
    assert check.ok and check.spec.to_dict() == spec.to_dict()
    assert forms.form_defaults()["devices"] == RunSpec().devices  # one set of defaults: the spec's
    assert forms.batch_sentence(256, 4, 2, 2) == ("Global batch 256 = 16 per device × 4 devices × 2 machines × "
                                                  "2 accumulation steps (each optimiser step sees all of it).")
    workers = [("a", "box1", 1), ("b", "box2", 2), ("c", "box2", 2)]
    assert forms.device_capacity_note(2, 1, workers) is None
    assert "largest registered worker (b) owns 2" in forms.device_capacity_note(4, 1, workers)
    assert "No worker is running" in forms.device_capacity_note(2, 1, [])
    # two workers with 2 devices, but on one machine: a 2-node run needs two machines
    assert "1 machine has a registered worker owning that many" in forms.device_capacity_note(2, 2, workers)
    assert forms.device_capacity_note(1, 2, workers) is None


def test_a_mixed_ensemble_and_a_students_view_round_trip_through_the_form():
    """Members of every kind come back in the form's order (runs first), hint layers and weights follow."""
    spec = RunSpec.from_dict({
        "student": "mlp_64", "student_input": {"size": 4, "grey": True},
        "teacher": {"members": [{"source": "run", "run_id": "aaaa1111"},
                                {"source": "checkpoint", "checkpoint": "/x/t.pt", "model": "cnn_small"},
                                {"source": "run", "run_id": "bbbb2222"}],
                    "combine": "geometric", "weights": [1, 2, 3]},
        "hints": [{"teacher_layer": "teacher1.stage2", "student_layer": "fc1", "preset": "fitnets"}]})
    values = forms.values_from_spec(spec)
    assert values["teacher_more_runs"] == ["bbbb2222"] and values["member_count"] == 1
    assert values["member_0_checkpoint"] == "/x/t.pt" and values["teacher_weights"] == "1, 3, 2"
    assert values["hint_0_teacher"] == "teacher2.stage2"  # the checkpoint is third in the form
    assert values["view_size"] == 4 and values["view_grey"] is True
    check = forms.check_form(values, teacher_run=forms.TeacherRun("aaaa1111", "digits", "mlp_64", "completed"),
                             deep_check=no_deep)
    assert check.ok, check.problems
    t = check.spec.teacher
    assert [m.run_id or m.checkpoint for m in t.members] == ["aaaa1111", "bbbb2222", "/x/t.pt"]
    assert t.weights == [1, 3, 2] and t.combine == "geometric"
    assert check.spec.student_input == spec.student_input
    assert forms.student_shape(values, (3, 8, 8)) == (1, 4, 4)
    assert forms.widget_for("teacher.members.2.checkpoint", values) == "member_0_checkpoint"
    assert forms.widget_for("teacher.members.1.run_id", values) == "teacher_more_runs"
    assert forms.widget_for("student_input.size") == "view_size"


def test_the_view_and_ensemble_defaults_are_the_specs():
    defaults = forms.form_defaults()
    assert forms.check_form({}, deep_check=no_deep).spec.student_input is None  # no view unless asked
    assert defaults["view_noise_std"] == 0.0 and defaults["view_size"] is None
    assert defaults["teacher_combine"] == "mean"
    bad = forms.check_form({"view_size": 0, "teacher_source": "zoo", "member_count": 1,
                            "member_0_source": "torchvision", "teacher_weights": "1, x"},
                           deep_check=no_deep, dataset_classes=10)
    assert bad.problems == {"view_size": ["Must be at least 1 (it is 0)."],
                            "member_0_tv_model": ["Torchvision weights predict 1000 classes; this dataset has 10."],
                            "teacher_weights": ["'x' is not a number; give one number per teacher."]}


def test_widget_ranges_are_the_specs_own_bounds():
    from kdcore.chains import ChainSpec
    from kdcore.spec import InputViewSpec, OptimizerSpec

    assert forms.field_bounds(RunSpec, "devices") == (1, 1024)
    assert forms.field_bounds(RunSpec, "grad_accumulation") == (1, 4096)
    assert forms.field_bounds(InputViewSpec, "size") == (1, 4096)
    assert forms.field_bounds(ChainSpec, "generations") == (1, 20)
    assert forms.field_bounds(OptimizerSpec, "lr") == (None, 100)  # gt 0 on a float: no inclusive minimum
    assert forms.field_bounds(RunSpec, "name") == (None, None)
