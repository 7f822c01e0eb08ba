"""Models: the zoo with parameters, FLOPs and measured latency; the layers of any model with their shapes."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import catalog, figures, state
from kdcore.data import dataset_info

st.title("Models")
st.caption("Every model adapts its input channels and class count to the dataset. FLOPs count one forward "
           "pass of one image (2 per multiply-accumulate).")

datasets = {k: v for k, v in catalog.dataset_choices().items() if k != "imagefolder"}
dataset = st.selectbox("For the inputs of", list(datasets), format_func=datasets.get, key="models_dataset",
                       persist_state="session")
info = dataset_info(dataset)
shape = tuple(info.input_shape)
job = state.zoo_job(info.num_classes, shape)

tab_zoo, tab_layers = st.tabs(["The zoo", "Layers of a model"])


def zoo_table() -> None:
    stats, latency = job.snapshot()
    frame = catalog.zoo_frame(lambda n: stats.get(n, "measuring…"))
    frame["latency (ms/image)"] = [latency.get(n) if isinstance(latency.get(n), float) else None
                                   for n in frame["model"]]
    if not job.stats_done:
        st.progress(len(stats) / max(len(job.names), 1),
                    text=f"Building the models to count parameters and FLOPs: {len(stats)} of {len(job.names)}")
    # The table, then the chart under it: beside it, at 800 px, the chart was too narrow for its title and legend.
    busy = not job.stats_done or job.measuring
    st.dataframe(
        # "…" while numbers are on their way; after that a missing one is not coming (the note says why, and
        # latency waits for the button).
        frame, hide_index=True, height=560, key="zoo_table", placeholder="…" if busy else "—",
        column_order=["model", "family", "params", "flops", "latency (ms/image)", "description", "note"],
        column_config={
            "params": st.column_config.NumberColumn("parameters", format="compact"),
            "flops": st.column_config.NumberColumn("FLOPs / image", format="compact"),
            "latency (ms/image)": st.column_config.NumberColumn(
                format="%.3f", help="Measured on this machine when you press “Measure latency on this machine”"),
            "description": st.column_config.TextColumn(width="large"),
        },
    )
    plot = frame.dropna(subset=["params", "flops"]).astype({"params": float, "flops": float})
    if len(plot):
        st.plotly_chart(figures.zoo_figure(plot), key="zoo_fig")
    if job.measuring:
        st.caption(f"Measuring latency on this machine's CPU (one thread): {len(latency)} models done…")
    if not job.stats_done or job.measuring:
        return
    if st.button("Measure latency on this machine", icon=":material/timer:", key="measure_latency",
                 disabled=len(latency) >= len([s for s in stats.values() if isinstance(s, tuple)]),
                 help="A forward pass of a batch of 32 on this dashboard's CPU, one thread, median of 5; "
                      "slower while a run is training here."):
        job.measure_latency()
        st.rerun(scope="fragment")


with tab_zoo:
    busy = not job.stats_done or job.measuring
    st.fragment(run_every=1.0 if busy else None)(zoo_table)()

with tab_layers:
    names = catalog.zoo_names()
    if st.session_state.get("models_layers_model") not in names:
        st.session_state["models_layers_model"] = "resnet8" if "resnet8" in names else names[0]
    c1, c2 = st.columns([2, 1])
    model = c1.selectbox("Model", names, key="models_layers_model")
    only = c2.toggle("Only layers worth distilling", key="models_only_candidates",
                     help="Convolutions, norms, linear layers, blocks and stages; no activations or pooling.")
    layers = state.layer_table(model, info.num_classes, shape)
    if isinstance(layers, str):
        st.error(layers)
    else:
        shown: pd.DataFrame = layers[layers["candidate"]] if only else layers
        result = state.model_stats(model, info.num_classes, shape)
        if isinstance(result, tuple):
            st.caption(f"{model}: {catalog.format_count(result[0])} parameters, {catalog.format_count(result[1])} "
                       f"FLOPs per {'×'.join(map(str, shape))} image · {len(layers)} layers")
        st.dataframe(shown, hide_index=True, height=560, key="layers_table",
                     column_config={"candidate": st.column_config.CheckboxColumn("worth distilling"),
                                    "params": st.column_config.NumberColumn("own parameters", format="compact")})
