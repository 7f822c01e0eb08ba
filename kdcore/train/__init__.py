"""Training: `train(spec, out_dir, callbacks)` executes a RunSpec."""
from kdcore.train.callbacks import NullCallbacks, RecordingCallbacks, TrainCallbacks
from kdcore.train.trainer import Trainer, TrainResult, train

__all__ = ["train", "Trainer", "TrainResult", "TrainCallbacks", "NullCallbacks", "RecordingCallbacks"]
