"""Errors a user can cause. Each carries one sentence that can be shown as it is."""


class KDError(Exception):
    """A user-facing error: str(err) is one clear sentence, no traceback needed."""


class UnknownNameError(KDError, KeyError):
    """A model, dataset, preset or other registry name that does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise add quotes
        return self.args[0] if self.args else ""


class DatasetMissingError(KDError):
    """A dataset that is neither on disk nor downloadable here."""


class IncompatibleLayersError(KDError):
    """A (hint, guided) layer pair that no transform can bridge."""


class TrainingDivergedError(KDError):
    """A NaN or infinite loss."""


class OutOfMemoryError(KDError):
    """The device ran out of memory."""


class ModelTooLargeError(KDError):
    """A model would have more parameters than this installation allows (KD_MAX_MODEL_PARAMS)."""
