"""Training: `train(spec, out_dir, callbacks)` executes a RunSpec."""
from kdcore.train.callbacks import NullCallbacks, RecordingCallbacks, TrainCallbacks
from kdcore.train.teacher_quality import TeacherScore, evaluate_teacher, evaluate_teachers, load_test_split
from kdcore.train.trainer import Trainer, TrainResult, train

__all__ = ["train", "Trainer", "TrainResult", "TrainCallbacks", "NullCallbacks", "RecordingCallbacks",
           "TeacherScore", "evaluate_teacher", "evaluate_teachers", "load_test_split"]
