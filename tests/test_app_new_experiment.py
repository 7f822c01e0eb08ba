"""New experiment page: a valid form launches, an invalid one explains itself beside each widget."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_app_support import (
    TEACHER,
    app,
    completed_run,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from kdcore.jobs import RunStore


def red_notes(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith(":red[")]


def test_default_form_launches_a_run_and_opens_it(kd_home):
    at = app("new_experiment.py")
    no_exception(at)
    assert not red_notes(at)
    assert "Ready: this queues 1 run" in texts(at)
    at.text_input(key="name").set_value("my scratch run").run()
    at.button(key="launch").click().run()
    no_exception(at)
    runs = RunStore().list_runs()
    assert [r.name for r in runs] == ["my scratch run"]
    assert at.query_params["run"] == [runs[0].id] or at.query_params["run"] == runs[0].id
    assert at.title[0].value == "my scratch run"  # the run view opened


def test_invalid_values_are_explained_beside_their_widgets_and_block_launch(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()
    at.number_input(key="kd.alpha").set_value(0.0).run()
    at.number_input(key="kd.beta").set_value(0.0).run()
    at.number_input(key="lr").set_value(0.0).run()
    no_exception(at)
    notes = red_notes(at)
    assert any("nothing would be learned" in n for n in notes)
    assert any("greater than 0" in n for n in notes)  # the learning rate
    assert at.button(key="launch").disabled
    assert "2 problems to fix before launching" in at.warning[0].value
    assert len(notes) == 2  # the banner counts the notes on screen
    assert RunStore().list_runs() == []


def test_an_incompatible_hint_pair_is_explained_under_the_pair(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()
    at.button(key="add_hint").click().run()
    assert any("Pick a layer for both sides" in n for n in red_notes(at))
    at.selectbox(key="hint_0_teacher").set_value("stage2").run()
    at.selectbox(key="hint_0_student").set_value("fc1").run()
    at.selectbox(key="hint_0_mode").set_value("at").run()
    no_exception(at)
    assert any("flat vector" in n for n in red_notes(at))
    assert at.button(key="launch").disabled
    # A compatible pair is confirmed in green and can be launched.
    at.selectbox(key="student").set_value("cnn_small").run()
    at.selectbox(key="hint_0_student").set_value("stage1").run()
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    assert any(m.value.startswith(":green[") for m in at.markdown)
    at.button(key="launch").click().run()
    runs = RunStore().list_runs()
    assert len(runs) == 2  # the new teacher, then the student waiting for it
    student = next(r for r in runs if r.spec.teacher is not None)
    assert student.spec.hints[0].preset == "at" and student.depends_on == next(
        r.id for r in runs if r.spec.teacher is None)


def test_a_sweep_with_one_value_is_refused_then_launches_one_run_per_value(kd_home):
    at = app("new_experiment.py")
    at.toggle(key="sweep_on").set_value(True).run()
    at.text_input(key="sweep_values").set_value("4").run()
    assert any("at least two values" in n for n in red_notes(at))
    at.selectbox(key="sweep_field").set_value("seed").run()
    at.text_input(key="sweep_values").set_value("0, 1, 2").run()
    assert not red_notes(at)
    at.button(key="launch").click().run()
    no_exception(at)
    runs = RunStore().list_runs()
    assert sorted(r.spec.seed for r in runs) == [0, 1, 2] and len({r.sweep_id for r in runs}) == 1


def test_teacher_run_shows_compression_and_a_soft_label_preview(kd_home):
    teacher = completed_run(RunStore(), TEACHER)
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("run").run()
    no_exception(at)
    assert at.selectbox(key="teacher_run").value == teacher
    assert "Compression" in [m.label for m in at.metric]
    assert at.get("plotly_chart"), "no soft-label preview"
    at.number_input(key="kd.rho").set_value(10.0).run()
    no_exception(at)
    assert not red_notes(at)


def test_a_broken_upload_is_explained_not_a_traceback(kd_home, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("upload").run()
    assert any("Upload the teacher's checkpoint" in n for n in red_notes(at))
    at.session_state["teacher_checkpoint_path"] = str(bad)
    at.run()
    no_exception(at)
    # said once, beside the checkpoint field (the file's name as it is spelled), not again by the quality check
    assert "broken.pt is not a loadable weights-only checkpoint" in under_upload(at, "broken.pt")
    shown = [m.value for m in at.markdown] + [w.value for w in at.warning] + [c.value for c in at.caption]
    assert len([t for t in shown if "not a loadable" in t]) == 1, shown
    assert "Teacher quality: not scored (the note under its field says why)." in shown


def under_upload(at, file_name: str) -> str:
    """The red note right under the uploader that holds `file_name` ("" when there is none)."""
    shown = [str(getattr(e, "value", "")) for e in at.main]
    after = shown[next(i for i, v in enumerate(shown) if v.startswith("Using `") and v.endswith(f"{file_name}`")) + 1]
    return after if after.startswith(":red[") else ""


def note_beside(at, kind: str, key: str, text: str) -> bool:
    """Whether a red note with `text` is in the innermost column that holds widget `key`."""
    holding = [c for c in at.columns if any(getattr(w, "key", None) == key for w in getattr(c, kind))]
    inner = min(holding, key=lambda c: len(list(c.markdown)))
    return any(m.value.startswith(":red[") and text in m.value for m in inner.markdown)


def banner_count(at) -> int:
    (count,) = {int(w.value.split(" problem")[0]) for w in at.warning if " to fix before launching" in w.value}
    return count


def test_every_problem_shows_at_once_beside_its_widget_and_the_banner_counts_them(kd_home):
    """A bad sweep value is not held back until the rest is fixed; each note is plain words, the banner's
    count is the number of notes, Launch stays off."""
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("upload").run()  # nothing uploaded: the form says so, once
    at.number_input(key="lr").set_value(0.0).run()
    at.selectbox(key="schedule").set_value("step").run()
    at.text_input(key="milestones").set_value("5, later").run()
    at.toggle(key="sweep_on").set_value(True).run()
    at.selectbox(key="sweep_field").set_value("logit.rho").run()
    at.text_input(key="sweep_values").set_value("4, 4, warm").run()
    no_exception(at)
    notes = red_notes(at)
    assert any("Upload the teacher's checkpoint" in n for n in notes)
    assert any("Must be greater than 0 (it is 0)." in n for n in notes)
    assert any("'later' is not a number" in n for n in notes)
    assert any("4 is given twice" in n for n in notes) and any("'warm' is not a number." in n for n in notes)
    assert not any("Input should" in n or "needs checkpoint" in n or "`" in n for n in notes), notes
    assert banner_count(at) == len(notes) == 5
    assert at.button(key="launch").disabled
    # each note sits in its widget's own column, right under it
    assert note_beside(at, "number_input", "lr", "Must be greater than 0")
    assert note_beside(at, "text_input", "sweep_values", "'warm' is not a number.")
    assert note_beside(at, "text_input", "milestones", "'later' is not a number")
    assert not note_beside(at, "number_input", "lr", "'warm'")
    # fixing them one by one lowers the count in step, and the last fix enables Launch
    at.text_input(key="sweep_values").set_value("2, 4").run()
    assert banner_count(at) == len(red_notes(at)) == 3
    at.number_input(key="lr").set_value(0.05).run()
    at.text_input(key="milestones").set_value("5").run()
    at.radio(key="teacher_source").set_value("zoo").run()
    no_exception(at)
    assert not red_notes(at) and not at.button(key="launch").disabled
    at.button(key="launch").click().run()
    students = [r for r in RunStore().list_runs() if r.spec.teacher is not None]
    assert sorted(r.spec.logit.rho for r in students) == [2, 4]


def test_the_device_section_writes_the_spec_shows_the_global_batch_and_what_workers_offer(kd_home):
    store = RunStore()
    store.register_worker("box-s0", host="box", pid=1, device="cpu")  # one worker owning two devices
    store.register_worker("box-s1", host="box", pid=1, device="cpu")
    at = app("new_experiment.py")
    at.number_input(key="devices").set_value(3).run()
    at.number_input(key="batch_size").set_value(100).run()
    no_exception(at)
    # 100 does not split over 3 devices: one plain note under the batch size, counted in the banner
    assert red_notes(at) == [":red[:material/error: The batch size 100 (the global batch) must be a multiple of "
                             "devices per node × nodes × accumulation steps = 3.]"]
    assert banner_count(at) == 1 and at.button(key="launch").disabled
    assert any("largest registered worker (box) owns 2" in m.value for m in at.markdown)
    at.number_input(key="devices").set_value(2).run()
    at.number_input(key="grad_accumulation").set_value(2).run()
    at.number_input(key="batch_size").set_value(128).run()
    at.toggle(key="sync_batchnorm").set_value(True).run()
    no_exception(at)
    assert not red_notes(at)
    assert "Global batch 128 = 32 per device × 2 devices × 1 machine × 2 accumulation steps" in texts(at)
    assert not any("registered worker" in m.value for m in at.markdown)  # the worker owns 2: it fits
    at.number_input(key="nodes").set_value(2).run()
    assert any("spans 2 machines with 2 devices each, and 1 machine has" in m.value for m in at.markdown)
    at.number_input(key="nodes").set_value(1).run()
    at.button(key="launch").click().run()
    no_exception(at)
    (run,) = store.list_runs()
    assert (run.spec.devices, run.spec.nodes, run.spec.grad_accumulation, run.spec.sync_batchnorm,
            run.spec.batch_size, run.spec.device_batch_size) == (2, 1, 2, True, 128, 32)


DIGITS_TEACHER = Path(__file__).resolve().parents[1] / "kdcore" / "assets" / "teacher_digits.pt"


def test_the_students_view_is_written_and_each_model_is_listed_at_its_own_input(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()  # a new cnn_small teacher on the full 8×8 input
    at.selectbox(key="student").set_value("cnn_small").run()
    at.number_input(key="view_size").set_value(4).run()
    at.number_input(key="view_noise_std").set_value(0.1).run()
    no_exception(at)
    assert "The teacher sees 1×8×8; the student sees 1×4×4." in texts(at)
    teacher_layers, student_layers = [d.value for d in at.dataframe]  # "All layers": teacher, then student
    conv1 = lambda frame: frame.set_index("path").loc["stage1.conv1", "shape"]  # noqa: E731
    assert conv1(teacher_layers) == "32×8×8" and conv1(student_layers) == "32×4×4"
    at.button(key="add_hint").click().run()
    at.selectbox(key="hint_0_teacher").set_value("stage2").run()
    at.selectbox(key="hint_0_student").set_value("stage2").run()
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    at.button(key="launch").click().run()
    runs = RunStore().list_runs()
    (student,) = [r for r in runs if r.spec.teacher is not None]
    (teacher,) = [r for r in runs if r.spec.teacher is None]
    assert student.spec.student_input.size == 4 and student.spec.student_input.noise_std == 0.1
    assert teacher.spec.student_input is None  # the teacher learns from the full input


def test_an_ensemble_of_a_run_and_a_checkpoint_lists_member_layers_and_launches_with_weights(kd_home):
    store = RunStore()
    first = completed_run(store, {**TEACHER, "name": "mlp teacher", "student": "mlp_128"})
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("run").run()
    at.selectbox(key="teacher_run").set_value(first).run()
    at.button(key="add_member").click().run()
    at.session_state["member_0_checkpoint"] = str(DIGITS_TEACHER)  # what the uploader stores
    at.run()
    at.selectbox(key="student").set_value("cnn_small").run()
    at.button(key="add_hint").click().run()
    no_exception(at)
    options = at.selectbox(key="hint_0_teacher").options
    assert any(o.startswith("teacher0.fc1 ") for o in options)  # the run's mlp_128
    assert any(o.startswith("teacher1.stage2 ") for o in options)  # the checkpoint's cnn_small
    assert not any(o.startswith(("fc1 ", "stage2 ")) for o in options)  # every layer names its teacher
    at.selectbox(key="hint_0_teacher").set_value("teacher1.stage2").run()
    at.selectbox(key="hint_0_student").set_value("stage2").run()
    at.radio(key="teacher_combine").set_value("geometric").run()
    at.text_input(key="teacher_weights").set_value("3").run()
    no_exception(at)
    assert red_notes(at) == [":red[:material/error: Weights must give one weight per member (2).]"]
    at.text_input(key="teacher_weights").set_value("3, 1").run()
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    assert any(m.value.startswith(":green[") for m in at.markdown)  # the member's layer fits the student's
    at.button(key="launch").click().run()
    no_exception(at)
    (run,) = [r for r in store.list_runs() if r.id != first]
    t = run.spec.teacher
    assert [(m.source, m.run_id, m.checkpoint) for m in t.members] == [
        ("run", first, None), ("checkpoint", None, str(DIGITS_TEACHER))]
    assert (t.combine, t.weights, run.spec.hints[0].teacher_layer) == ("geometric", [3.0, 1.0], "teacher1.stage2")
    assert run.depends_on == first


def test_a_missing_member_checkpoint_is_explained_under_that_member(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()
    at.button(key="add_member").click().run()
    at.button(key="add_member").click().run()
    at.session_state["member_1_checkpoint"] = str(DIGITS_TEACHER)
    at.run()
    no_exception(at)
    assert red_notes(at) == [":red[:material/error: Upload this teacher's checkpoint (.pt).]"]
    assert banner_count(at) == 1 and at.button(key="launch").disabled
    at.button(key="remove_member_0").click().run()
    assert not red_notes(at) and at.session_state["member_0_checkpoint"] == str(DIGITS_TEACHER)
    at.button(key="launch").click().run()
    runs = RunStore().list_runs()
    (student,) = [r for r in runs if r.spec.teacher is not None]
    (teacher,) = [r for r in runs if r.spec.teacher is None]
    assert [m.run_id for m in student.spec.teacher.members] == [teacher.id, None]  # the new teacher, queued first


def test_one_click_assistant_chain_queues_teacher_assistant_student(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()
    at.radio(key="chain_kind").set_value("assistants").run()
    assert any("Pick at least one assistant" in n for n in red_notes(at))
    at.multiselect(key="chain_assistants").set_value(["mlp_800_800"]).run()
    at.toggle(key="sweep_on").set_value(True).run()
    assert any("A chain and a sweep cannot go together" in n for n in red_notes(at))
    at.toggle(key="sweep_on").set_value(False).run()
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    assert "Links: cnn_small → mlp_800_800 → mlp_64" in texts(at)
    at.button(key="launch").click().run()
    no_exception(at)
    runs = {r.id: r for r in RunStore().list_runs()}
    (teacher,) = [r for r in runs.values() if r.spec.teacher is None]
    (assistant,) = [r for r in runs.values() if r.spec.student == "mlp_800_800"]
    (student,) = [r for r in runs.values() if r.spec.student == "mlp_64"]
    assert teacher.spec.student == "cnn_small"
    assert assistant.spec.teacher.run_id == teacher.id and assistant.depends_on == teacher.id
    assert student.spec.teacher.run_id == assistant.id and student.depends_on == assistant.id


def test_one_click_born_again_generations_without_a_teacher(kd_home):
    at = app("new_experiment.py")
    at.radio(key="chain_kind").set_value("generations").run()
    at.number_input(key="chain_generations").set_value(3).run()
    at.number_input(key="kd.rho").set_value(2.0).run()  # the method later generations distil with
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    assert "Ready: this queues 3 linked runs, each waiting for the one before." in texts(at)
    at.button(key="launch").click().run()
    no_exception(at)
    runs = sorted(RunStore().list_runs(), key=lambda r: r.name)
    assert [r.spec.student for r in runs] == ["mlp_64"] * 3
    assert runs[0].spec.teacher is None
    assert runs[1].spec.teacher.run_id == runs[0].id and runs[2].spec.teacher.run_id == runs[1].id
    assert runs[2].spec.logit.rho == 2.0 and runs[2].depends_on == runs[1].id


def test_multi_layer_methods_list_each_teachers_layers_at_its_input_and_the_students_at_its_view(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("zoo").run()  # teacher0: a new cnn_small; teacher1: a checkpoint
    at.button(key="add_member").click().run()
    at.session_state["member_0_checkpoint"] = str(DIGITS_TEACHER)
    at.run()
    at.selectbox(key="student").set_value("cnn_small").run()
    at.number_input(key="view_size").set_value(4).run()
    at.button(key="add_loss").click().run()
    at.selectbox(key="loss_0_method").set_value("reviewkd").run()
    no_exception(at)
    teacher = at.multiselect(key="loss_0.reviewkd.teacher_layers")
    student = at.multiselect(key="loss_0.reviewkd.student_layers")
    # the teachers see 8×8 (stage1 pools to 4×4); the student sees its 4×4 view (stage1: 2×2)
    assert {"teacher0.stage1 · Sequential · 32×4×4", "teacher1.stage1 · Sequential · 32×4×4"} <= set(teacher.options)
    assert "stage1 · Sequential · 32×2×2" in student.options
    assert not any(o.startswith("stage1 ") for o in teacher.options)
    teacher.set_value(["teacher1.stage1", "teacher1.stage2"]).run()
    at.multiselect(key="loss_0.reviewkd.student_layers").set_value(["stage1", "stage2"]).run()
    no_exception(at)
    assert not red_notes(at), red_notes(at)
    at.button(key="launch").click().run()
    (run,) = [r for r in RunStore().list_runs() if r.spec.teacher is not None]
    assert run.spec.losses[0].teacher_layers == ["teacher1.stage1", "teacher1.stage2"]
    assert run.spec.losses[0].student_layers == ["stage1", "stage2"] and run.spec.student_input.size == 4


def quality_rows(at) -> list[dict]:
    (frame,) = [d.value for d in at.dataframe if "calibration error (ECE)" in d.value.columns]
    return frame.to_dict("records")


def test_checkpoint_teachers_show_their_quality_and_a_broken_one_is_warned_about(kd_home, tmp_path):
    from test_teacher_quality import constant_checkpoint

    from kdcore.spec import DataSpec, EnsembleSpec, TeacherSpec
    from kdcore.train import evaluate_teachers

    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("upload").run()
    at.session_state["teacher_checkpoint_path"] = str(DIGITS_TEACHER)  # what the uploader stores
    at.run()
    no_exception(at)
    (row,) = quality_rows(at)
    (expected,), _ = evaluate_teachers(TeacherSpec(checkpoint=str(DIGITS_TEACHER)), DataSpec(name="digits"))
    assert row["test accuracy"] == pytest.approx(expected.accuracy) and row["test accuracy"] > 0.9
    assert row["calibration error (ECE)"] == pytest.approx(expected.ece)
    assert row["teacher"] == "cnn_small · teacher_digits.pt" and not at.warning

    # a second, untrained teacher: the ensemble row appears and the broken member is warned about
    at.button(key="add_member").click().run()
    at.session_state["member_0_checkpoint"] = str(constant_checkpoint(tmp_path / "untrained.pt"))
    at.session_state["member_0_model"] = "mlp_64"
    at.run()
    no_exception(at)
    rows = quality_rows(at)
    assert [r["teacher"] for r in rows] == ["teacher0 · cnn_small · teacher_digits.pt",
                                            "teacher1 · mlp_64 · untrained.pt",
                                            "ensemble (mean of probabilities, at ρ=1)"]
    assert rows[1]["test accuracy"] < 0.2 and rows[1]["note"] == "near chance"
    assert rows[2]["test accuracy"] is not None and not rows[2]["note"]
    # the ensemble row is the members combined the way the spec says, with its weights
    at.radio(key="teacher_combine").set_value("geometric").run()
    at.text_input(key="teacher_weights").set_value("3, 1, 1").run()  # one too many: explained, not scored
    no_exception(at)
    assert quality_rows(at)[2]["note"] == "known once every teacher can be scored"
    at.text_input(key="teacher_weights").set_value("3, 1").run()
    no_exception(at)
    spec = EnsembleSpec(members=[TeacherSpec(checkpoint=str(DIGITS_TEACHER)),
                                 TeacherSpec(checkpoint=at.session_state["member_0_checkpoint"], model="mlp_64")],
                        combine="geometric", weights=[3, 1])
    _, ensemble = evaluate_teachers(spec, DataSpec(name="digits"))
    assert quality_rows(at)[2]["test accuracy"] == pytest.approx(ensemble.accuracy)
    assert quality_rows(at)[2]["calibration error (ECE)"] == pytest.approx(ensemble.ece)
    assert quality_rows(at)[2]["teacher"] == "ensemble (geometric mean, at ρ=1)"
    (warning,) = [w.value for w in at.warning if "chance" in w.value]
    assert warning.startswith("mlp_64 · untrained.pt (teacher1) is near chance (") and \
        warning.endswith(", where guessing gets 10.0%): check it before distilling from it.")

    # a checkpoint made for another dataset: one sentence says why it cannot teach here
    at.session_state["member_0_checkpoint"] = str(Path(DIGITS_TEACHER).with_name("teacher_fashion_mnist.pt"))
    at.session_state["member_0_model"] = None
    at.run()
    no_exception(at)
    # one sentence, beside the checkpoint, says why it cannot teach here; the table points there, no warning repeats it
    assert "The teacher1 was built for 28×28 images but the dataset's are 8×8." in \
        under_upload(at, "teacher_fashion_mnist.pt")
    assert not [w.value for w in at.warning if "cannot teach" in w.value]
    assert [r["note"] for r in quality_rows(at)] == ["", "not scored (the note under its field says why)",
                                                     "known once every teacher can be scored"]


def test_torchvision_teachers_are_scored_only_when_asked(kd_home):
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("upload").run()
    at.session_state["teacher_checkpoint_path"] = str(DIGITS_TEACHER)
    at.button(key="add_member").click().run()
    at.radio(key="member_0_source").set_value("torchvision").run()
    no_exception(at)
    assert at.button(key="check_teachers").label == "Check teacher quality"
    assert [r["note"] for r in quality_rows(at)] == ["not checked yet", "not checked yet",
                                                     "known once every teacher can be scored"]
    # an accuracy not known yet reads "not scored" in the table, not "None"
    (table,) = [d for d in at.dataframe if "calibration error (ECE)" in d.value.columns]
    assert all(r["test accuracy"] is None for r in quality_rows(at)) and table.proto.placeholder == "not scored"


def test_gradient_clipping_is_written_and_kept_when_a_run_is_duplicated(kd_home):
    at = app("new_experiment.py")
    assert at.number_input(key="clip_grad_norm").value is None  # off by default
    at.number_input(key="clip_grad_norm").set_value(-1.0).run()
    assert any("clip" in n.lower() or "greater than 0" in n for n in red_notes(at))
    assert at.button(key="launch").disabled
    at.number_input(key="clip_grad_norm").set_value(2.5)
    at.text_input(key="name").set_value("clipped").run()
    assert not red_notes(at)
    at.button(key="launch").click().run()
    no_exception(at)
    store = RunStore()
    assert [r.spec.optimizer.clip_grad_norm for r in store.list_runs()] == [2.5]

    stored = store.submit({"name": "to copy", "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3,
                           "optimizer": {"clip_grad_norm": 1.0}}, check=False)
    at = app("run.py", run=stored)
    at.button(key="duplicate_run").click().run()
    no_exception(at)
    assert at.title[0].value == "New experiment"
    assert at.number_input(key="clip_grad_norm").value == 1.0
    at.switch_page("../pages/new_experiment.py")  # stay on the form (the test app reruns its first page)
    at.text_input(key="name").set_value("copy").run()
    assert at.number_input(key="clip_grad_norm").value == 1.0
    at.button(key="launch").click().run()
    no_exception(at)
    copy = next(r for r in store.list_runs() if r.name == "copy")
    assert copy.spec.optimizer.clip_grad_norm == 1.0


# A value other than the spec's default for each field of the Advanced section.
ADVANCED_VALUES = {
    "eval_batch_size": 256, "checkpoint_every_s": 5.0, "evaluation.val_every": 2, "evaluation.test": "every_epoch",
    "compile": True, "channels_last": False, "teacher_cache": "off", "teacher_cache_views": 4, "probe_size": 16,
    "dataset.train_limit": 500,
}


def _field(spec, dotted: str):
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


def test_advanced_fields_launch_with_the_spec_defaults_and_survive_duplicate(kd_home):
    from app import forms
    from kdcore.spec import RunSpec

    assert set(ADVANCED_VALUES) == set(forms.ADVANCED_FIELDS)  # a field added to the section needs a value here
    defaults = RunSpec()
    assert all(_field(defaults, f) != v for f, v in ADVANCED_VALUES.items())

    at = app("new_experiment.py")
    at.text_input(key="name").set_value("fresh").run()
    at.button(key="launch").click().run()
    no_exception(at)
    store = RunStore()
    fresh = store.list_runs()[0].spec
    for f in ADVANCED_VALUES:
        assert _field(fresh, f) == _field(defaults, f), f

    original = {"name": "to copy", "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3}
    for f, v in ADVANCED_VALUES.items():
        forms._set_field(original, f, v)
    stored = store.submit(original, check=False)
    at = app("run.py", run=stored)
    at.button(key="duplicate_run").click().run()
    no_exception(at)
    at.switch_page("../pages/new_experiment.py")  # stay on the form (the test app reruns its first page)
    at.text_input(key="name").set_value("copy").run()
    assert not red_notes(at)
    at.button(key="launch").click().run()
    no_exception(at)
    copy = next(r for r in store.list_runs() if r.name == "copy").spec
    for f, v in ADVANCED_VALUES.items():
        assert _field(copy, f) == v, f


def test_a_problem_in_an_advanced_field_is_shown_beside_it_and_counted(kd_home):
    from app import forms

    at = app("new_experiment.py")
    key = forms.advanced_key("checkpoint_every_s")
    at.number_input(key=key).set_value(None).run()  # a required number left empty
    no_exception(at)
    notes = red_notes(at)
    assert len(notes) == 1
    assert at.button(key="launch").disabled
    assert "1 problem to fix before launching" in at.warning[0].value
    section = next(e for e in at.expander if e.label.startswith("Advanced"))
    assert section.proto.expanded  # opens so the note is seen
    assert [m.value for m in section.markdown if m.value.startswith(":red[")] == notes  # beside its widget
    assert "number" in notes[0].lower()
