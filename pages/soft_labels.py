"""Soft labels: what teacher and student believe about the probe samples, re-tempered at any ρ."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import figures, softlabels, state, tables, teachers

store = state.get_store()
S = st.session_state

st.title("Soft labels")
st.caption("Every epoch the trainer stores the logits of a fixed set of test samples (the probes), so any ρ "
           "can be applied here afterwards. At ρ = 1 a confident teacher looks one-hot; raise ρ and the "
           "small probabilities it gives the wrong classes — its *dark knowledge* — become visible.")

records = softlabels.runs_with_probes(store.list_runs(limit=500))
if not records:
    st.info("No run has recorded probe logits yet: they appear after a run's first epoch.")
    st.stop()
by_id = {r.id: r for r in records}
if S.get("soft_run") not in by_id:
    S["soft_run"] = softlabels.default_probe_run(records, st.query_params.get("run"))
c1, c2 = st.columns([3, 2])
run_id = c1.selectbox("Run", list(by_id), key="soft_run", persist_state="session",
                      format_func=lambda i: f"{by_id[i].name} · {tables.method_text(by_id[i])} · {i}")
record = by_id[run_id]
probes = state.probes_for(store, run_id)
if probes is None or not probes.student:
    st.info("This run's probe file is not readable yet; try again in a moment.")
    st.stop()

epochs = probes.epochs
epoch = epochs[-1]
if len(epochs) > 1:
    epoch = c2.select_slider("Epoch", epochs, value=epochs[-1], key=f"soft_epoch_{run_id}")
else:
    c2.markdown(f"Epoch **{epoch}** (the only one recorded so far)")
student = probes.student_at(epoch)
teacher = probes.teacher
names = probes.class_names
rho = st.slider("Temperature ρ", 0.5, 20.0, softlabels.default_rho(record), 0.5, key=f"soft_rho_{run_id}",
                help="Soft labels σ(z/ρ): ρ = 1 are the ordinary probabilities.")
if teacher is None:
    st.caption(f"`{run_id}` has no teacher ({tables.method_text(record)}): only its own soft labels are shown. "
               "Pick a KD run to compare a student with its teacher.")

st.subheader("One sample")
options = list(range(probes.size))
c1, c2 = st.columns([1, 3])
with c1:
    sample = st.selectbox("Probe sample", options, key=f"soft_sample_{run_id}",
                          format_func=lambda i: f"#{i} · true class {names[probes.labels[i]]}")
    st.image(softlabels.probe_image(probes.images, sample), caption=f"true class: {names[probes.labels[sample]]}",
             width=160, clamp=True)
    s_pred = int(np.argmax(student[sample]))
    st.markdown(f"student predicts **{names[s_pred]}**")
    if teacher is not None:
        st.markdown(f"teacher predicts **{names[int(np.argmax(teacher[sample]))]}**")
with c2:
    dist = softlabels.distribution_frame(names, None if teacher is None else teacher[sample], student[sample], rho)
    st.plotly_chart(figures.distribution_figure(dist, rho, title=f"Soft labels of sample #{sample} at ρ = {rho:g}"),
                    key="soft_dist")

if probes.teacher_members and record.spec.teacher.source == "ensemble":
    member_labels = [f"teacher{i} ({n})" for i, n in enumerate(probes.teacher_member_names or [])]
    frame = teachers.member_distribution_frame(names, [z[sample] for z in probes.teacher_members], member_labels,
                                               record.spec.teacher, student[sample], rho)
    st.plotly_chart(teachers.member_distribution_figure(
        frame, rho, title=f"Each teacher of the ensemble, the ensemble and the student on #{sample} at ρ = {rho:g}"),
        key="soft_members")
    st.caption(f"The ensemble is the {record.spec.teacher.combine} of its members' distributions at this ρ "
               "(geometric: the mean of log-probabilities, renormalised).")

if teacher is not None:
    st.subheader("Where the student disagrees")
    kl = softlabels.per_class_kl(teacher, student, probes.labels, names, rho)
    st.plotly_chart(figures.per_class_kl_figure(kl, rho), key="soft_kl")

st.subheader("Dark knowledge: the average soft label of each class")
st.caption("Row = true class, column = probability given to each class, averaged over that class's probe samples. "
           "Colour is on a log scale, so the small off-diagonal probabilities show; hover for the values.")
c1, c2 = st.columns(2)
if teacher is not None:
    c1.plotly_chart(figures.class_matrix_figure(softlabels.class_matrix(teacher, probes.labels, names, rho),
                                                f"Teacher at ρ = {rho:g}"), key="soft_matrix_teacher")
c2_target = c2 if teacher is not None else c1
c2_target.plotly_chart(figures.class_matrix_figure(softlabels.class_matrix(student, probes.labels, names, rho),
                                                   f"Student (epoch {epoch}) at ρ = {rho:g}"), key="soft_matrix_student")

st.subheader("Entropy against ρ")
st.plotly_chart(figures.entropy_figure(softlabels.entropy_curve(teacher, student), rho), key="soft_entropy")
st.caption(f"Mean entropy over the {probes.size} probe samples; the maximum is log₂ {len(names)} = "
           f"{np.log2(len(names)):.2f} bits (uniform).")
