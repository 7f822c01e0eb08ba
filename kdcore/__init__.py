"""KD Studio's library: distillation losses, models, datasets, training, run store and workers.

It never imports the UI (streamlit, plotly): usable from a notebook, the CLI or a worker."""

__version__ = "0.1.0"
