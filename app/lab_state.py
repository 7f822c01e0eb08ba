"""Cached data of the dark-knowledge lab. The teacher's test-set logits are read once per process;
everything that depends on ρ is then a softmax over a small matrix, so a slider move answers fast."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from kdcore.lab import assets, experiments, few_labels, gradients, softlabels


@st.cache_resource(show_spinner=False)
def bundle(dataset: str) -> assets.LabBundle:
    """The shipped teacher's logits, labels and sample images (a KDError when they are missing)."""
    return assets.load_bundle(dataset)


@st.cache_data(show_spinner=False, max_entries=8)
def test_entropy_curve(dataset: str) -> pd.DataFrame:
    return softlabels.entropy_curve(bundle(dataset).teacher_logits)


@st.cache_data(show_spinner=False, max_entries=256)
def sample_entropy_curve(dataset: str, index: int) -> pd.DataFrame:
    return softlabels.entropy_curve(bundle(dataset).teacher_logits[index])


@st.cache_data(show_spinner=False, max_entries=8)
def gradient_curve(dataset: str) -> pd.DataFrame:
    b = bundle(dataset)
    return gradients.soft_gradient_curve(b.teacher_logits, b.student_logits, b.labels)


@st.cache_data(show_spinner=False, max_entries=128)
def similarity(dataset: str, rho: float) -> pd.DataFrame:
    b = bundle(dataset)
    return softlabels.similarity_matrix(b.teacher_logits, b.labels, b.class_names, rho)


@st.cache_data(show_spinner=False, max_entries=512)
def sample_png(dataset: str, index: int) -> bytes:
    """A shipped sample image enlarged for the page, PNG-encoded once (not on every ρ change)."""
    import io

    from PIL import Image

    from app.lab import image_for_display

    buffer = io.BytesIO()
    Image.fromarray(image_for_display(bundle(dataset).image_of(index))).save(buffer, format="PNG")
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=8)
def showcase_sample(dataset: str) -> int:
    """The sample the lab opens on: a shirt for Fashion-MNIST (shirt ↔ T-shirt), a 3 for digits."""
    b = bundle(dataset)
    preferred = {"fashion-mnist": 6, "digits": 3}.get(dataset)
    alike = None
    if preferred is not None:  # the class the teacher finds most like it, e.g. the T-shirt for the shirt
        row = similarity(dataset, 4.0).to_numpy()[preferred].copy()
        row[preferred] = -1.0
        alike = int(np.argmax(row))
    return softlabels.pick_showcase_sample(b.teacher_logits, b.labels, b.sample_indices, preferred,
                                           runner_up_class=alike)


@st.cache_data(show_spinner="Scoring the omitted-class student on the validation and test images…", max_entries=16)
def omitted_report(run_id: str, checkpoint: str, mtime: float, spec_json: dict[str, Any]
                   ) -> experiments.OmittedClassReport:
    """Bias fitted on the run's validation split, scored on its test split (cached per checkpoint file)."""
    from kdcore.spec import RunSpec

    spec = RunSpec.from_dict(spec_json)
    val_z, val_y, test_z, test_y = experiments.student_logits_of_run(Path(checkpoint), spec)
    b = bundle(spec.dataset.name)
    teacher = b.teacher_logits if len(b.labels) == len(test_y) and np.array_equal(b.labels, test_y) else None
    return experiments.omitted_class_report(val_z, val_y, test_z, test_y, experiments.omitted_class_of(spec),
                                            b.class_names, dataset=spec.dataset.name, teacher_test_logits=teacher)


@st.cache_data(show_spinner=False, max_entries=8)
def few_label_result(fraction: float) -> few_labels.FewLabelResult:
    """Both few-label students over the lab's seeds, trained once per fraction per process (seconds)."""
    return few_labels.run(fraction)
