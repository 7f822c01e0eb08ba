"""New experiment: dataset, teacher, student, logit KD, hint pairs, transfer set, training, sweep, Launch.

Problems are computed from the widgets' current values before they are drawn, so each one is shown
right under the widget that can fix it; Launch stays off until there are none."""
from __future__ import annotations

import json

import streamlit as st

from app import auth, catalog, figures, form_layers, forms, navigation, state, teacher_check, widgets
from app.softlabels import preview_frame
from kdcore import chains
from kdcore.data import dataset_info
from kdcore.errors import KDError
from kdcore.losses import DISTANCES, PRESETS, STUDENT_TRANSFORMS, TEACHER_TRANSFORMS
from kdcore.methods import EMBEDDING, get_method
from kdcore.spec import EnsembleSpec, InputViewSpec, OptimizerSpec, RunSpec, SpecError

store = state.get_store()
S = st.session_state
KEEP = "session"  # form values survive a visit to another page

widgets.init_state(forms.form_defaults())
for i in range(int(S["hint_count"])):
    widgets.init_state({forms.hint_key(i, part): v for part, v in forms.HINT_DEFAULTS.items()})
for i in range(int(S["loss_count"])):
    widgets.init_state(forms.loss_entry_defaults(i))
for i in range(int(S["member_count"])):
    widgets.init_state({forms.member_key(i, part): v for part, v in forms.MEMBER_DEFAULTS.items()})


@st.cache_data(show_spinner=False, max_entries=128)
def _deep_check(spec_json: str, teacher_model: str | None) -> list[str]:
    return forms.default_deep_check(RunSpec.model_validate_json(spec_json), teacher_model)


def deep_check(spec: RunSpec, teacher_model: str | None) -> list[str]:
    return _deep_check(spec.model_dump_json(), teacher_model)


@st.cache_data(show_spinner=False, max_entries=256)
def _pair_check(*args) -> tuple[bool, str]:
    return catalog.check_hint_pair(*args)


@st.cache_data(show_spinner=False, max_entries=32)
def _checkpoint_model(path: str) -> str | None:
    """The architecture a KD Studio checkpoint names (None for a bare state dict or a broken file)."""
    from kdcore.train.checkpoint import FORMAT, load_checkpoint

    try:
        data = load_checkpoint(path)
    except KDError:
        return None
    return data["model"]["name"] if data.get("format") == FORMAT else None


# ---- what the current values mean ------------------------------------------------------------------
datasets = catalog.dataset_choices()
zoo = catalog.zoo_names()
zoo_small = [m for m in zoo if not m.startswith("tv_")]
tv_models = [m for m in zoo if m.startswith("tv_")]
widgets.keep_valid("dataset", list(datasets))

dataset_problem = None
info = dataset_info(S["dataset"])
if S["dataset"] == "imagefolder" and (S["data_path"] or "").strip():
    from kdcore.data import describe_imagefolder

    try:
        info = describe_imagefolder(S["data_path"].strip())
    except KDError as err:
        dataset_problem = str(err)
num_classes = info.num_classes or 10
input_shape = tuple(info.input_shape)

candidate_runs = forms.teacher_candidates(store.list_runs(limit=300), S["dataset"])
if S["teacher_source"] == "run" and not S.get("teacher_run") and candidate_runs:
    S["teacher_run"] = candidate_runs[0].id  # the best finished run on this dataset
teacher_record, teacher_run = (forms.find_teacher_run(store, S.get("teacher_run"), candidate_runs)
                               if S["teacher_source"] == "run" else (None, None))
values = forms.form_values(S)
with st.spinner("Checking the experiment…"):
    check = forms.check_form(values, teacher_run=teacher_run, deep_check=deep_check,
                             dataset_classes=info.num_classes or None)
problems = check.problems
if dataset_problem:
    problems["data_path"] = [dataset_problem]  # the folder itself says what is wrong


noted: list[str] = []  # widgets whose notes are on screen, in order: the banner counts exactly these


def here(key: str) -> None:
    """The problems of one widget, right under it (once)."""
    if key not in noted:
        noted.append(key)
        widgets.problems_here(problems, key)


def any_problem(*keys: str) -> bool:
    """Whether a widget among `keys` has a note: its expander opens so the note is seen."""
    return any(problems.get(k) for k in keys)


_sections = iter(range(1, 100))


def section(title: str) -> None:
    """A numbered section header; sections that do not apply are skipped, so the numbers stay in order."""
    st.header(f"{next(_sections)} · {title}", divider="gray")


def method_card(name: str) -> None:
    record = get_method(name)
    st.caption(f"**{record.title}** — {record.description}  \n_{record.paper}_")


def param_inputs(params: list[forms.ParamWidget], layer_options: dict | None = None) -> None:
    """One widget per method parameter, generated from its model: type, range and help text."""
    columns = st.columns(min(max(len(params), 1), 3))
    for n, w in enumerate(params):
        with columns[n % len(columns)]:
            if w.kind == "bool":
                st.toggle(w.title, key=w.key, help=w.help, persist_state=KEEP)
            elif w.kind == "choice":
                st.selectbox(w.title, list(w.choices), key=w.key, help=w.help, persist_state=KEEP,
                             format_func=w.choice_label)
            elif w.kind in ("float", "int"):
                is_int = w.kind == "int"
                cast = int if is_int else float
                st.number_input(w.title, min_value=None if w.minimum is None else cast(w.minimum),
                                max_value=None if w.maximum is None else cast(w.maximum),
                                step=1 if is_int else None, format=None if is_int else "%g",
                                key=w.key, help=w.help, persist_state=KEEP)
            elif w.kind in ("layer", "layers") and layer_options and w.side in layer_options:
                options, labels = layer_options[w.side]
                options = [EMBEDDING] + options
                fmt = lambda p, labels=labels: "penultimate embedding" if p == EMBEDDING else labels.get(p, p)  # noqa: E731
                widgets.keep_valid(w.key, options)
                if w.kind == "layer":
                    st.selectbox(w.title, options, key=w.key, format_func=fmt, help=w.help, persist_state=KEEP)
                else:
                    st.multiselect(w.title, options[1:], key=w.key, format_func=fmt, help=w.help, persist_state=KEEP)
            else:
                st.text_input(w.title, key=w.key, help=w.help, persist_state=KEEP)
            here(w.key)


def model_picker(label: str, options: list[str], key: str) -> None:
    """A model selectbox that drops a choice no longer offered, with its problems under it."""
    widgets.keep_valid(key, options)
    st.selectbox(label, options, key=key, persist_state=KEEP)
    here(key)


@st.cache_data(show_spinner=False, max_entries=64)
def _teacher_check(teacher_json: str, files: tuple[str, ...], dataset_json: str, runs: tuple[str, ...]):
    """Scored once per teacher spec, teacher files (size, time) and dataset; `files` is only the key."""
    return teacher_check.check_teachers(json.loads(teacher_json), json.loads(dataset_json), set(runs))


def quality_block() -> None:
    """The teachers' test accuracy and calibration before launching, with a warning for a broken one."""
    data = forms.spec_dict(values)
    teacher, members = data.get("teacher"), teacher_check.members_of(data.get("teacher"))
    records = {r.id: r for r in candidate_runs}
    runs = teacher_check.scorable_runs(members, records) if len(members) > 1 else set()
    wanted = any(teacher_check.needs_evaluation(m) for m in members) or (len(members) > 1 and runs)
    key = json.dumps([teacher, data["dataset"]], sort_keys=True, default=str)
    check = None
    if wanted and not problems.get("data_path") and not problems.get("val_fraction"):
        if teacher_check.slow_to_evaluate(members) and S.get("teacher_check_for") != key:
            st.button("Check teacher quality", key="check_teachers", icon=":material/fact_check:",
                      on_click=S.__setitem__, args=("teacher_check_for", key),
                      help="Scores each teacher on the test set on this machine's CPU (torchvision weights "
                           "may take a while).")
        else:
            files = tuple(teacher_check.fingerprint(m) for m in members)
            with st.spinner("Scoring the teachers on the test set…"):
                check = _teacher_check(json.dumps(teacher, sort_keys=True, default=str), files,
                                       json.dumps(data["dataset"], sort_keys=True), tuple(sorted(runs)))
    table = teacher_check.quality_table(teacher, check, records, num_classes, datasets[S["dataset"]],
                                        _checkpoint_model, noted=forms.teachers_with_notes(values, problems))
    if not table.rows:
        return
    if len(table.rows) == 1 and table.rows[0]["test accuracy"] is None and not table.warnings:
        st.caption(f"Teacher quality: {table.rows[0]['note']}.")  # nothing to score yet
        return
    st.markdown("**Teacher quality** on the test set")
    st.dataframe(table.rows, hide_index=True, key="teacher_quality", placeholder=teacher_check.NOT_SCORED,
                 column_config={"teacher": st.column_config.TextColumn(width=340),
                                "test accuracy": st.column_config.NumberColumn(
                                    format="percent", width=110,
                                    help=f"On the test set; “{teacher_check.NOT_SCORED}”: the note says why"),
                                "calibration error (ECE)": st.column_config.NumberColumn(format="%.3f", width=170),
                                "note": st.column_config.TextColumn(width=280)})
    for sentence in table.warnings:
        st.warning(sentence, icon=":material/warning:")


# ---- the form --------------------------------------------------------------------------------------
st.title("New experiment")
st.caption("Choose a dataset, a teacher and a student, how the student should learn from the teacher, "
           "and launch. Anything that cannot run is explained under its field before you launch.")
top_banner = st.empty()  # the count of problems, filled once every field has been drawn

section("Dataset")
c1, c2 = st.columns([1, 2])
with c1:
    st.selectbox("Dataset", list(datasets), format_func=lambda n: datasets[n], key="dataset", persist_state=KEEP)
    here("dataset")
with c2:
    st.caption(f"{info.description}  \nInput {'×'.join(map(str, input_shape))}, "
               f"{info.num_classes or '?'} classes.")
if S["dataset"] == "imagefolder":
    st.text_input("Image folder (under the data root, one subfolder per class)", key="data_path",
                  persist_state=KEEP, placeholder="e.g. flowers")
    here("data_path")
with st.expander("Data options", expanded=any_problem("val_fraction", "augment")):
    st.slider("Validation share of the training set", 0.0, 0.45, step=0.05, key="val_fraction", persist_state=KEEP)
    here("val_fraction")
    st.radio("Augmentation", ["default", "on", "off"], horizontal=True, key="augment", persist_state=KEEP,
             format_func={"default": "dataset default", "on": "on", "off": "off"}.get)
    here("augment")

section("Teacher")
st.radio("Where the teacher comes from", list(forms.TEACHER_SOURCES), format_func=forms.TEACHER_SOURCES.get,
         key="teacher_source", horizontal=True, persist_state=KEEP)
here("teacher_source")
source = S["teacher_source"]
if source == "zoo":
    c1, c2 = st.columns(2)
    with c1:
        model_picker("Teacher model", zoo_small, "teacher_zoo_model")
    with c2:
        st.number_input("Teacher epochs", 1, 10_000, key="teacher_epochs", persist_state=KEEP)
        here("teacher_epochs")
    st.caption("The teacher is trained first on all labels (same optimiser settings); the student waits for it.")
elif source == "run":
    options = [r.id for r in candidate_runs]
    if S.get("teacher_run") and S["teacher_run"] not in options:
        options.append(S["teacher_run"])  # keep the choice so its problem can be shown
    labels = {r.id: forms.teacher_run_label(r) for r in candidate_runs}
    if not options:
        st.info(f"No run on {datasets[S['dataset']]} yet: train a teacher from the zoo instead.")
    else:
        st.selectbox("Teacher run", options, format_func=lambda i: labels.get(i, i), key="teacher_run",
                     persist_state=KEEP)
    here("teacher_run")
    if teacher_record is not None and not teacher_record.is_terminal:
        st.caption("This run has not finished: the student will wait for it.")
elif source == "upload":
    def _save_upload() -> None:
        upload = S.get("teacher_upload")
        if upload is not None:
            S["teacher_checkpoint_path"] = str(forms.save_upload(upload.getvalue(), upload.name, state.uploads_dir()))

    st.file_uploader("Teacher checkpoint (.pt, loaded weights-only)", type=["pt", "pth"], key="teacher_upload",
                     on_change=_save_upload)
    if S.get("teacher_checkpoint_path"):
        st.caption(f"Using `{S['teacher_checkpoint_path']}`")
    here("teacher_checkpoint_path")
    named = _checkpoint_model(S["teacher_checkpoint_path"]) if S.get("teacher_checkpoint_path") else None
    arch = [None] + zoo
    widgets.keep_valid("teacher_upload_model", arch)
    st.selectbox("Architecture of the checkpoint", arch, key="teacher_upload_model", persist_state=KEEP,
                 placeholder=f"as named in the checkpoint{f' ({named})' if named else ''}",
                 format_func=lambda m: f"as named in the checkpoint ({named})" if m is None and named
                 else ("as named in the checkpoint" if m is None else m),
                 help="A KD Studio checkpoint names its model; a bare state dict needs it here.")
    here("teacher_upload_model")
elif source == "torchvision":
    c1, c2 = st.columns(2)
    with c1:
        model_picker("torchvision model", tv_models, "teacher_tv_model")
    with c2:
        st.text_input("Weights", key="teacher_tv_weights", persist_state=KEEP, help="e.g. DEFAULT or IMAGENET1K_V1")
        here("teacher_tv_weights")



def upload_box(label: str, uploader_key: str, path_key: str) -> None:
    """A checkpoint uploader that keeps the file under KD_HOME/uploads and its path in `path_key`."""
    def _save() -> None:
        upload = S.get(uploader_key)
        if upload is not None:
            S[path_key] = str(forms.save_upload(upload.getvalue(), upload.name, state.uploads_dir()))

    st.file_uploader(label, type=["pt", "pth"], key=uploader_key, on_change=_save)
    if S.get(path_key):
        st.caption(f"Using `{S[path_key]}`")
    here(path_key)


run_labels = {r.id: forms.teacher_run_label(r) for r in candidate_runs}
if source != "none":
    n_teachers = forms.ensemble_size(values)
    with st.expander(f"Ensemble: {n_teachers} teachers" if n_teachers > 1 else "Ensemble: add more teachers",
                     expanded=n_teachers > 1 or any_problem("teacher_more_runs")):
        st.caption("Several teachers' class probabilities are combined at the method's ρ; hint layers then "
                   "name a teacher: teacher0.<layer> is the one chosen above, then the ones below in order.")
        more = [r.id for r in candidate_runs if not (source == "run" and r.id == S.get("teacher_run"))]
        widgets.keep_valid("teacher_more_runs", more)
        if more:
            st.multiselect("Further teacher runs", more, key="teacher_more_runs", persist_state=KEEP,
                           format_func=lambda i: run_labels.get(i, i))
            here("teacher_more_runs")
        for i in range(int(S["member_count"])):
            mk = lambda part, i=i: forms.member_key(i, part)  # noqa: E731
            with st.container(border=True):
                top = st.columns([6, 1], vertical_alignment="bottom")
                top[0].radio(f"Further teacher {i + 1}", list(forms.MEMBER_SOURCES), key=mk("source"),
                             format_func=forms.MEMBER_SOURCES.get, horizontal=True, persist_state=KEEP)
                top[1].button(":material/delete:", key=f"remove_member_{i}", help="Remove this teacher",
                              on_click=forms.remove_member, args=(S, i))
                if S[mk("source")] == "torchvision":
                    c1, c2 = st.columns(2)
                    with c1:
                        model_picker("torchvision model", tv_models, mk("tv_model"))
                    with c2:
                        st.text_input("Weights", key=mk("tv_weights"), persist_state=KEEP,
                                      help="e.g. DEFAULT or IMAGENET1K_V1")
                        here(mk("tv_weights"))
                else:
                    c1, c2 = st.columns(2)
                    with c1:
                        upload_box("Checkpoint (.pt, loaded weights-only)", f"member_{i}_upload", mk("checkpoint"))
                    with c2:
                        named = _checkpoint_model(S[mk("checkpoint")]) if S.get(mk("checkpoint")) else None
                        widgets.keep_valid(mk("model"), [None] + zoo)
                        st.selectbox("Zoo architecture", [None] + zoo, key=mk("model"), persist_state=KEEP,
                                     placeholder=f"as named in the checkpoint{f' ({named})' if named else ''}",
                                     format_func=lambda m, named=named: m or (f"as named in the checkpoint ({named})"
                                                                              if named else "as named in the checkpoint"))
                        here(mk("model"))
        st.button("Add a checkpoint or torchvision teacher", icon=":material/add:", on_click=forms.add_member,
                  args=(S,), key="add_member")
        if n_teachers > 1:
            c1, c2 = st.columns([1, 2])
            c1.radio("Combine by", ["mean", "geometric"], key="teacher_combine", persist_state=KEEP,
                     format_func={"mean": "mean of probabilities", "geometric": "geometric mean"}.get,
                     help=EnsembleSpec.__doc__.split("\n")[1].strip())
            with c1:
                here("teacher_combine")
            with c2:
                st.text_input(f"Weights, one per teacher ({n_teachers}, in order; empty = equal)",
                              key="teacher_weights", persist_state=KEEP, placeholder="e.g. 2, 1, 1")
                here("teacher_weights")
    quality_block()

teacher_name = forms.teacher_model_name(S, teacher_run, _checkpoint_model)
member_models = forms.teacher_models(values, teacher_name, {r.id: r.student for r in candidate_runs},
                                     _checkpoint_model)
is_ensemble = len(member_models) > 1
teacher_stats = state.model_stats(teacher_name, num_classes, input_shape) if teacher_name else None

section("Student")
c1, c2 = st.columns([1, 2])
student_input = forms.student_shape(values, input_shape)  # the student's own view of each sample
student_stats = state.model_stats(S["student"], num_classes, student_input)
if isinstance(student_stats, str) and not problems.get("student"):
    problems["student"] = [student_stats]  # the model cannot run on this input: a problem like any other
with c1:
    model_picker("Student model", zoo, "student")
with c2:
    if isinstance(student_stats, tuple):
        m1, m2, m3 = st.columns(3)
        m1.metric("Parameters", catalog.format_count(student_stats[0]))
        m2.metric("FLOPs per image", catalog.format_count(student_stats[1]))
        if isinstance(teacher_stats, tuple):
            m3.metric("Compression", f"{catalog.ratio_text(teacher_stats[0] / max(student_stats[0], 1))}×",
                      help=catalog.compression_text(teacher_stats, student_stats))
        else:
            m3.metric("Compression", "—", help="Known once the teacher's architecture is known.")
    else:
        st.caption("Parameters and FLOPs are shown once the student can run on this input.")
if isinstance(teacher_stats, tuple) and isinstance(student_stats, tuple):
    st.caption(f"Teacher {teacher_name}: {catalog.format_count(teacher_stats[0])} parameters, "
               f"{catalog.format_count(teacher_stats[1])} FLOPs — the student has "
               f"{catalog.compression_text(teacher_stats, student_stats)}.")
view_changed = student_input != tuple(input_shape) or bool(S[forms.view_key("noise_std")])
with st.expander("The student's view of the input: lower resolution, grey, cropped, noisy",
                 expanded=view_changed or any_problem(*(forms.view_key(n) for n in InputViewSpec.model_fields))):
    st.caption("The teacher keeps the full input; the student sees the same sample through this view "
               "(applied in order: grey, centre crop, resize, noise).")
    fields = InputViewSpec.model_fields
    c1, c2, c3 = st.columns(3)
    with c1:
        st.number_input("Resize to", *forms.field_bounds(InputViewSpec, "size"), value=None, key=forms.view_key("size"),
                        placeholder=f"full ({input_shape[1]})", persist_state=KEEP,
                        help="Pixels a side: " + fields["size"].description)
        here(forms.view_key("size"))
    with c2:
        st.number_input("Centre crop", *forms.field_bounds(InputViewSpec, "crop"), value=None, key=forms.view_key("crop"),
                        placeholder="none", persist_state=KEEP, help="Pixels a side: " + fields["crop"].description)
        here(forms.view_key("crop"))
    with c3:
        st.number_input("Noise std", *map(float, forms.field_bounds(InputViewSpec, "noise_std")),
                        step=0.05, format="%g", key=forms.view_key("noise_std"),
                        persist_state=KEEP, help=fields["noise_std"].description)
        here(forms.view_key("noise_std"))
    st.toggle("Grey: one channel", key=forms.view_key("grey"), persist_state=KEEP, help=fields["grey"].description)
    here(forms.view_key("grey"))
    st.caption(f"The teacher sees {'×'.join(map(str, input_shape))}; the student sees "
               f"{'×'.join(map(str, student_input))}.")

has_teacher = source != "none"
generations = S["chain_kind"] == "generations"
if has_teacher or generations:
    section("Logit distillation")
    if not has_teacher:
        st.caption("Born-again generations: the first learns from the labels, each later one from the one before "
                   "it with this method.")
    logit_methods = forms.method_choices("logit")
    widgets.keep_valid("method", list(logit_methods))
    st.radio("Method", list(logit_methods), format_func=logit_methods.get, key="method",
             horizontal=True, persist_state=KEEP)
    here("method")
    if S["method"] == "kd":
        st.markdown(r"$L = \alpha\,H(y, \sigma(z_s)) + \beta\,\rho^2\,D\big(\sigma(z_t;\rho),\ \sigma(z_s;\rho)\big)$")
    method_card(S["method"])
    param_inputs(forms.param_widgets(S["method"]))
    # The teacher's soft labels at this ρ, when it is a run with recorded probe logits.
    preview_rho = float(S.get(forms.param_key(S["method"], "rho")) or 1.0)
    if source == "run" and teacher_record is not None:
        probes = state.probes_for(store, teacher_record.id)
        if probes is not None and probes.student:
            fig = figures.preview_figure(
                preview_frame(probes.student[-1], probes.labels, probes.class_names, preview_rho), preview_rho)
            st.plotly_chart(fig, key="soft_preview")
            st.caption("Each row is one test sample: darker cells are the probabilities the student is asked to match. "
                       "Raise ρ to see more of the teacher's 'dark knowledge' about the wrong classes.")
        else:
            st.caption("A preview of the teacher's soft labels appears here once the teacher run has finished an epoch.")
    elif source in ("zoo", "upload", "torchvision"):
        st.caption("A preview of the teacher's soft labels is shown when the teacher is a trained run.")

if has_teacher:
    section("Hint pairs (feature distillation)")
    st.caption("Optional: make a student layer (guided) imitate a teacher layer (hint). Each pair is compared "
               "by Φ_t, Φ_s and a distance D, or by a preset: FitNets, AT, NST, OFD, internal KL.")
    # Each model's layers at its own input: the teacher (every member of an ensemble, as teacherN.<layer>)
    # at the dataset's, the student through its view.
    t_layers = form_layers.teacher_layer_table(member_models, lambda m: state.layer_table(m, num_classes, input_shape))
    s_layers = state.layer_table(S["student"], num_classes, student_input)
    if t_layers is None:
        st.info("Hint pairs need the teacher's architecture: pick a teacher run, a zoo model or the checkpoint's "
                "model (for an ensemble, every teacher's).")
    elif isinstance(t_layers, str) or isinstance(s_layers, str):
        st.caption(f"The layers cannot be listed: {t_layers if isinstance(t_layers, str) else s_layers}")
    else:
        t_opts = list(t_layers["path"])
        s_opts = list(s_layers["path"])
        t_label = dict(zip(t_layers["path"], t_layers.apply(catalog.layer_label, axis=1)))
        s_label = dict(zip(s_layers["path"], s_layers.apply(catalog.layer_label, axis=1)))
        modes = list(PRESETS) + [forms.CUSTOM]
        mode_label = {**{k: p.title for k, p in PRESETS.items()}, forms.CUSTOM: "custom Φ and D"}

        for i in range(int(S["hint_count"])):
            k = lambda part, i=i: forms.hint_key(i, part)  # noqa: E731
            with st.container(border=True):
                top = st.columns([5, 5, 4, 1], vertical_alignment="bottom")
                widgets.keep_valid(k("teacher"), t_opts, fallback=None)
                widgets.keep_valid(k("student"), s_opts, fallback=None)
                with top[0]:
                    st.selectbox(f"Teacher layer (hint) {i + 1}", t_opts, key=k("teacher"), format_func=t_label.get,
                                 index=None, placeholder="pick a layer", persist_state=KEEP)
                with top[1]:
                    st.selectbox(f"Student layer (guided) {i + 1}", s_opts, key=k("student"), format_func=s_label.get,
                                 index=None, placeholder="pick a layer", persist_state=KEEP)
                with top[2]:
                    st.selectbox("Method", modes, key=k("mode"), format_func=mode_label.get, persist_state=KEEP)
                top[3].button(":material/delete:", key=f"remove_hint_{i}", help="Remove this pair",
                              on_click=forms.remove_hint_pair, args=(S, i))
                if S[k("mode")] == forms.CUSTOM:
                    c1, c2, c3, c4 = st.columns(4)
                    c1.selectbox("Φ_t (teacher)", TEACHER_TRANSFORMS, key=k("phi_t"), persist_state=KEEP)
                    c2.selectbox("Φ_s (student)", STUDENT_TRANSFORMS, key=k("phi_s"), persist_state=KEEP)
                    c3.selectbox("D (distance)", DISTANCES, key=k("distance"), persist_state=KEEP)
                    c4.number_input("Weight", min_value=0.0, value=None, key=k("weight"), persist_state=KEEP,
                                    placeholder="1.0")
                else:
                    preset = PRESETS[S[k("mode")]]
                    st.number_input("Weight", min_value=0.0, key=k("weight"), persist_state=KEEP,
                                    placeholder=f"preset: {preset.weight:g}", format="%g")
                    st.caption(f"{preset.description} ({preset.reference})")
                confirmed = None
                if S[k("teacher")] and S[k("student")] and not any(problems.get(k(p)) for p in forms.HINT_DEFAULTS):
                    custom = S[k("mode")] == forms.CUSTOM
                    member, layer = forms.member_layer(S[k("teacher")]) if is_ensemble else (0, S[k("teacher")])
                    ok, reason = _pair_check(member_models[member], layer, S["student"], S[k("student")],
                                             num_classes, input_shape, None if custom else S[k("mode")],
                                             S[k("phi_t")] if custom else None, S[k("phi_s")] if custom else None,
                                             S[k("distance")] if custom else None, student_input)
                    if ok:
                        confirmed = reason
                    else:  # a pair that cannot be distilled is a problem like any other: counted, blocks Launch
                        problems[k("student")] = [forms.plain_sentence(reason)]
                for part in ("teacher", "student", "mode", "phi_t", "phi_s", "distance", "weight"):
                    here(k(part))
                if confirmed:
                    st.markdown(f":green[:material/check_circle: {confirmed}]")

        st.button("Add a hint pair", icon=":material/add:", on_click=forms.add_hint_pair, args=(S,), key="add_hint")
        here("hint_count")
        if int(S["hint_count"]):
            st.number_input("Hint-only epochs first (FitNets stage 1; 0 = train everything together)", 0,
                            key="hint_stage_epochs", persist_state=KEEP)
            here("hint_stage_epochs")
        with st.expander("All layers with their output shapes"):
            c1, c2 = st.columns(2)
            c1.markdown(f"**Teacher · {' + '.join(map(str, member_models)) if is_ensemble else teacher_name}**")
            c1.dataframe(t_layers, hide_index=True, height=300, key="teacher_layers")
            c2.markdown(f"**Student · {S['student']}**")
            c2.dataframe(s_layers, hide_index=True, height=300, key="student_layers")

if has_teacher:
    section("Further methods (feature and relation)")
    loss_methods = forms.method_choices("losses")
    if not loss_methods:
        st.caption("No feature or relation method beyond the hint presets is installed.")
    else:
        st.caption("Optional: add methods that compare more than one pair of layers, or samples within a batch "
                   "(each is registered in kdcore/methods/ or by an installed package).")
        layer_options = None
        if t_layers is not None and not isinstance(t_layers, str) and not isinstance(s_layers, str):
            layer_options = {"teacher": (t_opts, t_label), "student": (s_opts, s_label)}
        for i in range(int(S["loss_count"])):
            with st.container(border=True):
                top = st.columns([14, 1], vertical_alignment="bottom")
                widgets.keep_valid(forms.loss_key(i), list(loss_methods))
                top[0].selectbox(f"Method {i + 1}", list(loss_methods), format_func=loss_methods.get,
                                 key=forms.loss_key(i), persist_state=KEEP)
                top[1].button(":material/delete:", key=f"remove_loss_{i}", help="Remove this method",
                              on_click=forms.remove_loss_entry, args=(S, i))
                here(forms.loss_key(i))
                method_card(S[forms.loss_key(i)])
                param_inputs(forms.param_widgets(S[forms.loss_key(i)], forms.loss_prefix(i)), layer_options)
        st.button("Add a method", icon=":material/add:", on_click=forms.add_loss_entry, args=(S,), key="add_loss")
        here("loss_count")

section("Transfer set")
st.radio("What the student trains on", list(forms.TRANSFER_KINDS), format_func=forms.TRANSFER_KINDS.get,
         key="transfer_kind", horizontal=True, persist_state=KEEP)
here("transfer_kind")
kind = S["transfer_kind"]
if kind == "partial_labels":
    st.slider("Share of the training labels kept", 0.01, 1.0, step=0.01, key="label_fraction", persist_state=KEEP,
              help="With a teacher, the other samples stay in as unlabelled inputs for the soft-label term; "
                   "without one they are dropped.")
    here("label_fraction")
elif kind == "noisy":
    st.number_input("Std of the Gaussian noise added to the inputs", 0.0, step=0.05, key="noise_std", persist_state=KEEP)
    here("noise_std")
elif kind == "omit_classes":
    class_ids = list(range(num_classes))
    widgets.keep_valid("omit_classes", class_ids)
    names = list(info.class_names) or [str(c) for c in class_ids]
    st.multiselect("Classes left out of the transfer set", class_ids, key="omit_classes", persist_state=KEEP,
                   format_func=lambda c: f"{c}: {names[c]}" if c < len(names) else str(c))
    here("omit_classes")

section("Training")
c1, c2, c3, c4 = st.columns(4)
with c1:
    st.number_input("Epochs", *forms.field_bounds(RunSpec, "epochs"), key="epochs", persist_state=KEEP)
    here("epochs")
with c2:
    st.number_input("Batch size (global)", *forms.field_bounds(RunSpec, "batch_size"), key="batch_size", persist_state=KEEP,
                    help="Samples per optimiser step, over every device and accumulation step together.")
    here("batch_size")
with c3:
    st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="device", persist_state=KEEP,
                 help="auto: the worker's GPU if it has one, else its CPU.")
    here("device")
with c4:
    st.number_input("Seed", 0, 2**31 - 1, key="seed", persist_state=KEEP)
    here("seed")
spread = any(S[k] != v for k, v in {"devices": 1, "nodes": 1, "grad_accumulation": 1}.items())
with st.expander("Devices: GPUs per run, machines, gradient accumulation",
                 expanded=spread or any_problem("devices", "nodes", "grad_accumulation", "sync_batchnorm")):
    c1, c2, c3 = st.columns(3)
    with c1:
        st.number_input("Devices per machine", *forms.field_bounds(RunSpec, "devices"), key="devices", persist_state=KEEP,
                        help="GPUs per run on each machine. " + RunSpec.model_fields["devices"].description)
        here("devices")
    with c2:
        st.number_input("Machines", *forms.field_bounds(RunSpec, "nodes"), key="nodes", persist_state=KEEP,
                        help=RunSpec.model_fields["nodes"].description)
        here("nodes")
    with c3:
        st.number_input("Accumulation steps", *forms.field_bounds(RunSpec, "grad_accumulation"),
                        key="grad_accumulation", persist_state=KEEP,
                        help=RunSpec.model_fields["grad_accumulation"].description)
        here("grad_accumulation")
    st.toggle("Sync BatchNorm over every device", key="sync_batchnorm", persist_state=KEEP,
              help=RunSpec.model_fields["sync_batchnorm"].description)
    here("sync_batchnorm")
    st.caption(forms.batch_sentence(S["batch_size"], S["devices"], S["nodes"], S["grad_accumulation"]))
    try:
        worker_devices = [(name, slots[0].host, len(slots)) for name, slots in
                          widgets.worker_groups(store.workers(alive_only=True)).items()]
    except KDError:
        worker_devices = None
    if worker_devices is not None and S["devices"] * S["nodes"] > 1:
        note = forms.device_capacity_note(S["devices"], S["nodes"], worker_devices)
        if note:
            st.markdown(f":orange[:material/warning: {note}]")
c1, c2, c3, c4, c5 = st.columns(5)
with c1:
    st.selectbox("Optimiser", ["sgd", "adamw"], key="optimizer", persist_state=KEEP,
                 format_func={"sgd": "SGD", "adamw": "AdamW"}.get)
    here("optimizer")
with c2:
    st.number_input("Learning rate", min_value=None, step=0.001, format="%g", key="lr", persist_state=KEEP)
    here("lr")
with c3:
    st.number_input("Weight decay", min_value=None, step=1e-4, format="%g", key="weight_decay", persist_state=KEEP)
    here("weight_decay")
with c4:
    if S["optimizer"] == "sgd":
        st.number_input("Momentum", min_value=None, step=0.05, key="momentum", persist_state=KEEP)
        here("momentum")
        st.checkbox("Nesterov", key="nesterov", persist_state=KEEP)
with c5:
    clip_max = forms.field_bounds(OptimizerSpec, "clip_grad_norm")[1]
    st.number_input("Clip gradient norm", min_value=None, max_value=float(clip_max), step=0.1, format="%g",
                    key="clip_grad_norm", placeholder="off", persist_state=KEEP,
                    help="Empty = off. Otherwise " + OptimizerSpec.model_fields["clip_grad_norm"].description + ".")
    here("clip_grad_norm")
c1, c2, c3, c4 = st.columns(4)
with c1:
    st.selectbox("Schedule", ["cosine", "step", "constant"], key="schedule", persist_state=KEEP)
    here("schedule")
with c2:
    st.number_input("Warm-up epochs", 0, key="warmup_epochs", persist_state=KEEP)
    here("warmup_epochs")
if S["schedule"] == "step":
    with c3:
        st.text_input("Milestones (epochs)", key="milestones", placeholder="e.g. 30, 60", persist_state=KEEP)
        here("milestones")
    with c4:
        st.number_input("γ at each milestone", min_value=None, step=0.05, key="gamma", persist_state=KEEP)
        here("gamma")
advanced = forms.advanced_widgets()
with st.expander("Advanced: evaluation, checkpoints, speed, probes, training subset",
                 expanded=any_problem(*(w.key for w in advanced))):
    for i, w in enumerate(advanced):
        if i % 4 == 0:
            cols = iter(st.columns(4))
        with next(cols):
            if w.kind == "check":
                st.checkbox(w.label, key=w.key, help=w.help, persist_state=KEEP)
            elif w.kind == "choice":
                st.selectbox(w.label, w.choices, key=w.key, help=w.help, persist_state=KEEP)
            else:
                lo, hi = (None if b is None else (int(b) if w.whole else float(b)) for b in w.bounds)
                # clearable: empty is the spec's None where it has one, else a problem shown below
                st.number_input(w.label, lo, hi, value=None, step=1 if w.whole else 10.0,
                                format=None if w.whole else "%g", key=w.key, help=w.help, persist_state=KEEP,
                                placeholder=w.empty or None)
            here(w.key)
c1, c2 = st.columns(2)
with c1:
    st.text_input("Run name (optional)", key="name", persist_state=KEEP)
    here("name")
with c2:
    st.text_input("Tags (comma-separated)", key="tags", persist_state=KEEP)
    here("tags")

section("Chain: teacher assistants or born-again generations")
st.radio("Queue", list(forms.CHAIN_KINDS), format_func=forms.CHAIN_KINDS.get, key="chain_kind", horizontal=True,
         persist_state=KEEP, help=chains.__doc__.split("\n\n")[0])
here("chain_kind")
if S["chain_kind"] == "assistants":
    st.multiselect("Assistants, largest first (each learns from the one before; the student from the last)",
                   zoo, key="chain_assistants", persist_state=KEEP)
    here("chain_assistants")
    if S["chain_assistants"]:
        st.caption("Links: " + " → ".join([teacher_name or "teacher", *S["chain_assistants"], S["student"]]))
elif S["chain_kind"] == "generations":
    st.number_input("Generations (each the next one's teacher)", *forms.field_bounds(chains.ChainSpec, "generations"),
                    key="chain_generations",
                    persist_state=KEEP, help=chains.ChainSpec.model_fields["generations"].description)
    here("chain_generations")
    first = teacher_name or "the labels"
    st.caption(f"Generation 1 learns from {first}; generation k + 1 from generation k, all {S['student']}.")

section("Sweep")
st.toggle("Sweep one field over several values (one run per value)", key="sweep_on", persist_state=KEEP)
if S["sweep_on"]:
    c1, c2 = st.columns([1, 2])
    with c1:
        st.selectbox("Field", list(forms.SWEEP_FIELDS), key="sweep_field", persist_state=KEEP,
                     format_func=lambda f: f"{forms.SWEEP_FIELDS[f]} ({f})")
        here("sweep_field")
    with c2:
        st.text_input("Values (comma-separated)", key="sweep_values", persist_state=KEEP)
        here("sweep_values")

st.divider()
here(forms.GENERAL)
for key in [k for k in problems if k not in noted]:  # a widget not on screen: its notes go here
    here(key)
n_problems = sum(len(problems.get(k, [])) for k in noted)
if n_problems:
    banner = (f"{n_problems} problem{'s' if n_problems > 1 else ''} to fix before launching: "
              "each is explained in red beside its field.")
    top_banner.warning(banner, icon=":material/error:")
    st.warning(banner, icon=":material/error:")
else:
    runs = len(check.sweep[1]) if check.sweep else 1
    if check.chain is not None:
        runs = len(chains.ChainSpec.model_validate(check.chain).models(check.spec.student))
    what = (f"{runs} linked runs, each waiting for the one before" if check.chain is not None
            else f"{runs} runs" if runs > 1 else "1 run")
    extra = " after a new teacher run" if check.teacher_spec is not None else ""
    st.caption(f"Ready: this queues {what}{extra}.")
    with st.expander("The spec as YAML (what `python -m kdcore train` reads)"):
        st.code(check.spec.to_yaml(), language="yaml")
if st.button("Launch", type="primary", disabled=bool(n_problems), key="launch"):
    try:
        ids = forms.submit_form(store, check, owner=auth.current_name())
    except (SpecError, KDError) as err:
        st.error(f"The store refused the run: {err}")
    else:
        st.toast(f"Queued {len(ids)} run{'s' if len(ids) > 1 else ''}.")
        navigation.open_run(ids[0])
