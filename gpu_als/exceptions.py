"""Exceptions raised by gpu_als."""


class NotFittedError(ValueError, AttributeError):
    """A model was queried before ``fit`` was called.

    Subclasses both ``ValueError`` and ``AttributeError``, as scikit-learn's does, so code
    written against either convention catches it.
    """


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine; the message says why and what to do."""


class ImplicitModelFileError(ValueError):
    """``ALS.load`` was given a model file of the implicit library: read it with
    :func:`gpu_als.from_implicit` (the command line does so itself)."""
