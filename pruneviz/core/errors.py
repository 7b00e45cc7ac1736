"""Errors raised by pruneviz.

Every error carries one sentence that names the problem and what to do about it, so the CLI
and the app can show ``str(error)`` to the user as it is.
"""


class PrunevizError(Exception):
    """Base class of every error pruneviz raises on purpose."""


class ModelLoadError(PrunevizError):
    """A model could not be found, read or loaded."""


class UnsupportedArchitectureError(PrunevizError):
    """The model's architecture has no adapter (see ``pruneviz.core.architecture.SUPPORTED``)."""


class ModelSelfCheckError(PrunevizError):
    """A loaded model failed its sanity check (untied head, absurd perplexity)."""


class PlanError(PrunevizError):
    """A pruning plan is malformed or names a unit the model does not have."""


class DataError(PrunevizError):
    """A dataset is missing, empty, malformed, or has the wrong columns."""


class TooFewSamplesError(DataError):
    """A dataset holds fewer documents or questions than the samples asked for."""


class TokenizationError(PrunevizError):
    """The tokenizer cannot represent what an evaluation needs (e.g. a multi-token answer letter)."""


class SettingError(PrunevizError):
    """A parameter is outside what the model or the deployment allows."""


class Cancelled(PrunevizError):
    """Long work was cancelled by the user; nothing was changed."""


class NumericalError(PrunevizError):
    """A computation produced non-finite values (NaN or infinity)."""
