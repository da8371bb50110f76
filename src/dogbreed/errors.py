"""Errors that end a job with a clear one-line reason instead of a traceback."""


class DogbreedError(Exception):
    """Base class: the message is meant for the user, as it stands."""


class ConfigError(DogbreedError):
    """A hyperparameter or setting that cannot work."""


class DataError(DogbreedError):
    """The dataset is missing, malformed or inconsistent."""


class WeightsError(DogbreedError):
    """Pretrained weights could not be found, downloaded or loaded."""


class ArtifactError(DogbreedError):
    """A model artifact is missing, corrupt or inconsistent."""


class CheckpointError(DogbreedError):
    """A checkpoint exists but cannot be resumed from."""
