"""Dark-knowledge lab: how the temperature ρ exposes what a teacher knows, for a lecture hall."""
import numpy as np
import streamlit as st

from app import auth, lab, lab_state, lab_text, state, theme, widgets
from kdcore.data import dataset_info
from kdcore.errors import KDError
from kdcore.lab import experiments as ex
from kdcore.lab import few_labels, softlabels
from kdcore.lab.assets import LAB_DATASETS

st.title("Dark-knowledge lab")
presenting = st.toggle("Presentation mode", key="lab_presentation",
                       help="For a projector: the sidebar hidden, larger text and charts. Turn it off here to get "
                            "the sidebar back.")
if presenting:
    st.html(lab.PRESENTATION_CSS)


def plot(fig, key: str, where=st) -> None:
    """A chart of the lab, enlarged in presentation mode."""
    where.plotly_chart(lab.for_projector(fig) if presenting else fig, key=key)

dataset = st.radio("Dataset", LAB_DATASETS, format_func=lambda d: dataset_info(d).title, horizontal=True,
                   key="lab_dataset")
try:
    bundle = lab_state.bundle(dataset)
except KDError as err:
    st.error(str(err))
    st.stop()
names = bundle.class_names
st.markdown(lab_text.for_dataset(lab_text.INTRO, dataset))
st.caption(f"Teacher: {lab.with_article(bundle.teacher_name)} shipped with KD Studio, {bundle.teacher_test_acc:.1%} "
           f"correct on {len(bundle.labels):,} test images. Student in the ρ² chart: "
           f"{lab.with_article(bundle.student_name)} trained on hard labels only ({bundle.student_test_acc:.1%}).")


picks = sorted((int(i) for i in bundle.sample_indices), key=lambda i: (int(bundle.labels[i]), i))
predicted = bundle.teacher_logits.argmax(1)
sample_key = f"lab_sample_{dataset}"
# The showcase sample is the picker's default (its index), not a value put in session state beforehand: a
# click while the first run is still going would interrupt that run and lose such a value.
showcase_index = picks.index(lab_state.showcase_sample(dataset))
drawn_sample = st.session_state.get(sample_key)  # the sample the entropy curves (section 3) are drawn for
drawn_sample = drawn_sample if drawn_sample in picks else picks[showcase_index]


# The parts of the page that follow ρ, each a fragment: a slider move reruns these and nothing else.
FOLLOW_RHO = ("lab_explorer", "lab_curves", "lab_experiments")


# How section 1 shows the answer: at the slider's ρ, at two ρ side by side, or played through every ρ.
ANSWER_VIEWS = ("At ρ", "Side by side", "Play through ρ")


def current_rho() -> float:
    return float(st.session_state.get("lab_rho", 1.0))


def _rho_moved() -> None:
    st.rerun(list(FOLLOW_RHO))


@st.fragment(key="lab_explorer")
def explorer() -> None:
    """The teacher's answer and the class similarities at ρ: a slider move reruns the fragments that
    follow ρ (this one, the curves against ρ and the experiments' sweep chart), not the whole page."""
    st.header("1 · One image, the teacher's answer")
    left, right = st.columns([1, 2], gap="large")
    with left:
        index = st.selectbox("Sample", picks, index=showcase_index, key=sample_key,
                             format_func=lambda i: lab.sample_label(i, names[bundle.labels[i]], names[predicted[i]]))
        if index != drawn_sample:
            st.rerun()  # a new sample: the entropy curves below follow it, so redraw the whole page
        true_name = names[bundle.labels[index]]
        st.image(lab_state.sample_png(dataset, index), caption=f"True class: {true_name}", width="stretch")
    with right:
        rho = st.select_slider("Temperature ρ (log scale)", options=list(softlabels.RHO_STEPS), value=1.0,
                               key="lab_rho", format_func=lambda r: f"{r:g}", on_change=_rho_moved)
        z = bundle.teacher_logits[index]
        view = st.segmented_control("Show", ANSWER_VIEWS, default=ANSWER_VIEWS[0], key="lab_answer_view",
                                    help="The answer at the slider's ρ; at two temperatures side by side "
                                         "on one axis; or animated from the lowest ρ to the highest.")
        log_scale = st.toggle("Log scale", key="lab_log_scale",
                              help="The probabilities on a logarithmic axis, down to one in a hundred million: "
                                   "see the dark knowledge at ρ = 1, before any softening.")
        if view == ANSWER_VIEWS[1]:
            left_rho = st.select_slider("Left chart at ρ", options=list(softlabels.RHO_STEPS), value=1.0,
                                        key="lab_rho_left", format_func=lambda r: f"{r:g}")
            shown = (left_rho, rho)  # the ρ of the charts the answer is shown at
        elif view == ANSWER_VIEWS[2]:
            plot(lab.rho_animation_figure(z, names, true_name, softlabels.RHO_STEPS, log_scale=log_scale),
                 "lab_play_chart")
            shown = (softlabels.RHO_STEPS[0], softlabels.RHO_STEPS[-1])
            st.caption("Press ▶ Play: ρ rises from 0.5 to 50 and the answer softens, in your browser "
                       "(the page is free meanwhile); drag the ρ under the chart to go back.")
        else:
            frame = softlabels.distribution_frame(z, names, rho)
            plot(lab.distribution_figure(frame, rho, true_name, log_scale=log_scale), "lab_answer_chart")
            shown = (rho,)
        similar = softlabels.similar_classes(z, names, rho, top=3)
        st.markdown(lab.similar_classes_sentence(similar, names[int(np.argmax(z))], true_name, rho))
        st.markdown(lab.hesitation_sentence(z, lab_state.test_entropy_curve(dataset), shown,
                                            played=view == ANSWER_VIEWS[2]))
    if view == ANSWER_VIEWS[1]:  # the full width, so both panels' bars and labels have room
        plot(lab.two_temperatures_figure(z, names, (left_rho, rho), true_name, log_scale=log_scale),
             "lab_two_rho_chart")
    st.markdown(lab_text.ANSWER)

    st.header("2 · Which classes look alike to the teacher?")
    matrix = lab_state.similarity(dataset, rho)
    pairs = softlabels.most_similar_pairs(matrix, top=5)
    # The matrix across the page: in a column of an 800 px window its cells were too narrow for their labels.
    plot(lab.similarity_figure(matrix, rho, dark=theme.page_is_dark()), "lab_similarity_chart")
    c1, c2 = st.columns(2, gap="large")
    c1.markdown(lab_text.for_dataset(lab_text.SIMILARITY, dataset))
    with c2:
        st.markdown(f"**The most similar pairs** at ρ = {rho:g}:")
        st.markdown(lab.pairs_markdown(pairs))


explorer()


@st.fragment(key="lab_curves")
def curves_against_rho() -> None:
    """Sections 3 and 4: curves over every ρ, with a marker at the slider's ρ."""
    rho = current_rho()
    st.header("3 · How spread out is the answer?")
    sample_curve = lab_state.sample_entropy_curve(dataset, drawn_sample)
    test_curve = lab_state.test_entropy_curve(dataset)
    c1, c2 = st.columns(2)
    plot(lab.entropy_figure(sample_curve, test_curve, bundle.num_classes, rho, value="entropy"),
         "lab_entropy_chart", c1)
    plot(lab.entropy_figure(sample_curve, test_curve, bundle.num_classes, rho, value="effective_classes"),
         "lab_effective_chart", c2)
    st.markdown(lab_text.ENTROPY)

    st.header("4 · Why the soft term is multiplied by ρ²")
    c1, c2 = st.columns([3, 2], gap="large")
    plot(lab.gradient_figure(lab_state.gradient_curve(dataset), rho), "lab_gradient_chart", c1)
    c2.markdown(lab_text.WHY_RHO2)


curves_against_rho()


@st.fragment(key="lab_few_labels")
def few_label_demo() -> None:
    """Section 5: two students trained here on a few labelled digits (seconds), shown side by side; a
    result stays on screen (cached per fraction) until another number of labels is trained."""
    st.header("5 · Few labels: where the teacher helps most")
    total = few_labels.train_size()
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    fraction = c1.segmented_control(
        "Labelled training digits", few_labels.LABEL_FRACTIONS, default=few_labels.DEFAULT_FRACTION,
        key="lab_few_fraction", format_func=lambda f: f"{few_labels.labelled_count(f)} of {total:,}")
    fraction = few_labels.DEFAULT_FRACTION if fraction is None else fraction
    labelled = few_labels.labelled_count(fraction)
    st.markdown(lab_text.FEW_LABELS.format(total=total, unlabelled=total - labelled,
                                           student=few_labels.STUDENT))
    trained = st.session_state.setdefault("lab_few_trained", [])
    if c2.button("Train both students", key="lab_run_few", icon=":material/play_arrow:",
                 help=f"{len(few_labels.SEEDS)} seeds each, a few seconds on this computer's CPU"):
        trained.append(fraction)
    if fraction not in trained:
        st.caption(f"Not trained yet with {labelled} labels: press “Train both students”.")
        return
    with st.spinner(f"Training both students on {labelled} labelled digits, {len(few_labels.SEEDS)} seeds each…"):
        try:
            result = lab_state.few_label_result(fraction)
        except KDError as err:
            st.error(str(err))
            return
    summary = result.summary().set_index("arm")
    scratch, kd = (summary.loc[arm] for arm in few_labels.ARMS)
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.metric("From scratch", f"{scratch['mean']:.1%}",
                  help=f"test accuracy, mean of {int(scratch['n'])} seeds; {result.labelled} labelled digits")
        st.metric("With the teacher (KD)", f"{kd['mean']:.1%}", delta=f"{(kd['mean'] - scratch['mean']) * 100:+.1f} points",
                  help=f"test accuracy, mean of {int(kd['n'])} seeds; the same labels plus the teacher's soft "
                       f"labels on {result.unlabelled:,} unlabelled digits")
        st.markdown(lab.few_label_sentence(result.summary(), result.gains(), result.labelled))
    plot(lab.few_label_figure(result.curves, result.teacher_test_acc), "lab_few_chart", right)
    st.markdown(lab_text.FEW_LABELS_AFTER)


few_label_demo()

# ---- experiments ----------------------------------------------------------------------------------
st.header("6 · Experiments")
st.markdown(lab_text.EXPERIMENTS)
store = auth.as_owner(state.get_store())  # lab runs are submitted under the signed-in user


def _group_status(frame) -> str:
    """Runs, not rows: each row is one setting over its seeds (its run ids joined by commas)."""
    total = int(frame["run_id"].map(lambda ids: len(ids.split(", "))).sum()) if len(frame) else 0
    done = int(frame["n"].sum()) if len(frame) else 0
    failed = int(frame["status"].isin(["failed", "cancelled"]).sum()) if len(frame) else 0
    text = f"{done} of {total} runs finished"
    return text + (f"; {failed} setting(s) with a failed or cancelled run" if failed else "")


def _active(frame) -> bool:
    return bool(len(frame)) and bool(frame["status"].isin(["queued", "running"]).any())


def group_panel(text: str, button: str, key: str, submit, queued: str, experiment: str, to_frame, figure,
                verdict=None) -> bool:
    """One experiment that is a group of runs: explain, launch, then chart the group's results."""
    st.markdown(text)
    if st.button(button, key=f"lab_run_{key}", icon=":material/play_arrow:"):
        if widgets.attempt(lambda: submit(store, dataset)):
            st.toast(queued)
    records = store.list_runs(tag=ex.experiment_tag(experiment, dataset))
    frame = to_frame(records)
    if not len(frame):
        st.caption("Not run yet for this dataset.")
        return False
    st.caption(_group_status(frame))
    plot(figure(frame, bundle.teacher_test_acc), f"lab_{key}_chart")
    if verdict is not None and (sentence := verdict(records)):
        st.markdown(f"**What this sweep shows:** {sentence}")
    return _active(frame)


def sweep_panel() -> bool:
    rho = current_rho()
    return group_panel(lab_text.SWEEP, "Run the temperature sweep", "sweep", ex.submit_rho_sweep,
                       f"Queued {len(ex.RHO_SWEEP) * len(ex.LAB_SEEDS)} students: ρ = 1 to 32, "
                       f"{len(ex.LAB_SEEDS)} seeds each.", "rho-sweep", ex.rho_sweep_frame,
                       lambda frame, teacher_acc: lab.sweep_figure(frame, teacher_acc, rho), verdict=ex.rho_verdict)


def alpha_panel() -> bool:
    return group_panel(lab_text.ALPHA, "Run soft vs hard", "alpha", ex.submit_alpha_comparison,
                       f"Queued {3 * len(ex.LAB_SEEDS)} students: hard only, soft only, both, "
                       f"{len(ex.LAB_SEEDS)} seeds each.", "alpha", ex.alpha_frame,
                       lab.alpha_figure)


def omit_panel() -> bool:
    st.markdown(lab_text.for_dataset(lab_text.OMIT, dataset))
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    omitted = c1.selectbox("Class left out of the transfer set", range(len(names)), format_func=lambda c: names[c],
                           index=ex.DEFAULT_OMITTED[dataset], key=f"lab_omit_class_{dataset}")
    if c2.button("Run the omitted-class experiment", key="lab_run_omit", icon=":material/play_arrow:"):
        if widgets.attempt(lambda: ex.submit_omitted_class(store, dataset, omitted)):
            st.toast(f"Queued a student that never sees {names[omitted]}.")
    group = ex.latest_group(store.list_runs(tag=ex.experiment_tag("omit", dataset)))
    if not group:
        st.caption("Not run yet for this dataset.")
        return False
    record = group[0]
    left_out = ex.omitted_class_of(record.spec)
    status = record.status.value
    st.caption(f"Latest run `{record.id}`: {names[left_out]} left out, ρ = {record.spec.temperature:g}, {status}"
               + (f" (epoch {record.epoch} of {record.spec.epochs})" if status == "running" else ""))
    if status in ("queued", "running"):
        return True
    if status != "completed":
        st.warning(record.error or f"The run {status}.")
        return False
    checkpoint = store.artifacts(record.id).get("checkpoint")
    if checkpoint is None:
        st.warning("The run finished but its checkpoint is gone.")
        return False
    try:
        report = lab_state.omitted_report(record.id, str(checkpoint), checkpoint.stat().st_mtime,
                                          record.spec.to_dict())
    except KDError as err:
        st.error(str(err))
        return False
    fit, table = report.fits["accuracy"], report.tables["accuracy"]
    row = table[table["index"] == left_out].iloc[0]
    m1, m2, m3 = st.columns(3)
    m1.metric(f"{names[left_out]}, before", f"{row['before']:.1%}")
    m2.metric(f"{names[left_out]}, after", f"{row['after']:.1%}", delta=f"{row['after'] - row['before']:+.1%}")
    m3.metric("bias added", f"{fit.bias:+.2f}", help="fitted on the validation images only")
    plot(lab.omitted_figure(table, report.omitted_name), "lab_omit_chart")
    st.markdown(
        f"The bias of **{names[left_out]}** was raised by **{fit.bias:.2f}**, the value that makes the most "
        f"validation images right ({fit.val_acc_before:.1%} → {fit.val_acc_after:.1%} of {fit.val_samples:,}; "
        f"{names[left_out]} alone {fit.val_class_acc_before:.1%} → {fit.val_class_acc_after:.1%}). "
        f"The teacher, which did see {names[left_out]}, gets {report.teacher_class_acc:.1%} of them right.")
    with st.expander("Before and after, in numbers (and Hinton's prior-frequency rule)"):
        st.dataframe(lab.omitted_summary(table, left_out), hide_index=True, key="lab_omit_table",
                     column_config={"before": st.column_config.NumberColumn(format="percent"),
                                    "after": st.column_config.NumberColumn(format="percent")})
        prior = report.fits["prior"]
        prow = report.tables["prior"]
        prow = prow[prow["index"] == left_out].iloc[0]
        st.markdown(f"Prior rule (predict {names[left_out]} as often as it occurs in validation, "
                    f"{prior.val_prior:.1%}): bias {prior.bias:+.2f}, {names[left_out]} on test "
                    f"{prow['before']:.1%} → {prow['after']:.1%}.")
    return False


def experiments_panel() -> None:
    tab_sweep, tab_omit, tab_alpha = st.tabs(["Temperature sweep", "Omitted class", "Soft vs hard labels"])
    with tab_sweep:
        active = sweep_panel()
    with tab_omit:
        active = omit_panel() or active
    with tab_alpha:
        active = alpha_panel() or active
    if active and not store.workers():
        st.info("No worker is running, so the queued runs wait; the dashboard's sidebar can start one.")
    if active != st.session_state.get("lab_polling", False):
        st.session_state["lab_polling"] = active
        st.rerun()  # start or stop polling: the fragment's refresh rate is set on a full run


st.fragment(run_every=3.0 if st.session_state.get("lab_polling") else None, key="lab_experiments")(experiments_panel)()
