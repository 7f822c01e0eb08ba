"""Soft labels page: a probe sample with its image, teacher and student distributions at any ρ,
per-class KL, the dark-knowledge matrices and entropy against ρ."""
from __future__ import annotations

import json

from test_app_support import (
    app,
    filled_store,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
    texts,
)

from kdcore.jobs import RunStore


def test_kd_run_shows_teacher_and_student_side_by_side(kd_home):
    store, ids = filled_store()
    at = app("soft_labels.py")
    no_exception(at)
    assert at.selectbox(key="soft_run").value == ids["kd"]  # the latest finished KD run
    assert len(at.image) == 1  # the sample's picture
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # distribution, per-class KL, two matrices, entropy
    assert "teacher predicts" in texts(at)
    at.slider(key=f"soft_rho_{ids['kd']}").set_value(12.0).run()
    at.selectbox(key=f"soft_sample_{ids['kd']}").set_value(7).run()
    at.select_slider(key=f"soft_epoch_{ids['kd']}").set_value(1).run()
    no_exception(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["title"]["text"] == "Soft labels of sample #7 at ρ = 12"


def test_run_without_teacher_shows_only_the_student(kd_home):
    store, ids = filled_store()
    at = app("soft_labels.py", run=ids["scratch"])
    no_exception(at)
    assert at.selectbox(key="soft_run").value == ids["scratch"]
    assert "has no teacher" in texts(at)
    assert len(at.get("plotly_chart")) == 3  # distribution, the student's matrix, entropy


def test_no_probes_yet(kd_home):
    RunStore().submit({"student": "mlp_64"}, check=False)
    at = app("soft_labels.py")
    no_exception(at)
    assert "No run has recorded probe logits yet" in at.info[0].value
