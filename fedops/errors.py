"""Errors a user can act on; the CLI prints them as one line and exits non-zero."""


class FedopsError(RuntimeError):
    """Base class for errors reported to the user without a traceback."""


class ValidationFailed(FedopsError):
    """Global data validation failed: the pipeline stops before anything downstream is written."""


class MissingInput(FedopsError):
    """A stage ran before the stage that produces its input."""


class RoundFailed(FedopsError):
    """A round could not produce a new global model (too few usable updates, a secure
    aggregation abort, a rule whose assumption the round breaks); the model is unchanged."""
