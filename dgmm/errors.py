"""Exceptions and warnings raised by dgmm.

Every exception is rooted in the builtin that fits the mistake, so code that
already catches ``ValueError`` or ``TypeError`` keeps working; messages say
what was wrong, what was expected, what was got, and what to do.

Exceptions raised on a Dask worker travel back to the client by pickling, so
each class here takes a single message argument and keeps no other state.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointFormatError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "ClusterConnectionError",
    "ClusterLostError",
    "ConvergenceWarning",
    "DegenerateComponentError",
    "DenseCovarianceTooLargeError",
    "DgmmError",
    "DgmmWarning",
    "FitInterrupted",
    "InvalidDataError",
    "LikelihoodDecreaseWarning",
    "InvalidDtypeError",
    "InvalidOptionError",
    "ModelFormatError",
    "ModelNotFoundError",
    "OptionalDependencyError",
    "TargetExistsError",
    "TargetFormatError",
    "TargetNotWritableError",
    "ShapeMismatchError",
    "UndefinedAttributeError",
    "UnsupportedModelError",
    "InvalidSourceError",
    "SourceNotFoundError",
    "UnsupportedInputError",
]


class DgmmError(Exception):
    """Base class of every exception dgmm raises on purpose."""


class InvalidDataError(DgmmError, ValueError):
    """The data cannot be fitted: wrong rank, NaN/Inf, too few rows, non-numeric."""


class UnsupportedInputError(DgmmError, TypeError):
    """An input of a kind or type dgmm cannot use: a container it cannot fit, column
    names of mixed types, a target that is not a path, a value that is not JSON data."""


class InvalidDtypeError(InvalidDataError, TypeError):
    """The data holds values that are not real numbers (strings, objects, complex).

    Both a ``ValueError`` (as NumPy and scikit-learn raise for strings and
    complex data) and a ``TypeError`` (as NumPy raises for arbitrary objects).
    """


class InvalidOptionError(DgmmError, ValueError):
    """An option or argument has a value dgmm does not accept (covariance type, model
    family, ``split_every``, ``predict_to``'s output, ``sample``'s n_samples, ...)."""


class ShapeMismatchError(DgmmError, ValueError):
    """An array has the wrong shape for the model (features, components)."""


class SourceNotFoundError(DgmmError, FileNotFoundError):
    """A path, URL or bucket given as data does not exist."""


class InvalidSourceError(DgmmError, ValueError):
    """Stored data exists but cannot be read as asked: an unsupported format, a
    Zarr group without ``key``, a ``key`` or ``columns`` that do not exist."""


class DegenerateComponentError(DgmmError, ValueError):
    """A component's covariance is not positive definite (collapsed or singular).

    Raised with ``on_degenerate="raise"``; scikit-learn raises a plain
    ``ValueError`` in the same place, which this subclasses.
    """


class DenseCovarianceTooLargeError(DgmmError, MemoryError):
    """Dense K x D x D covariances of a low-rank model would exceed the memory limit."""


class UndefinedAttributeError(DgmmError, AttributeError):
    """A fitted attribute that has no meaning for this model (``hasattr`` is False)."""


class UnsupportedModelError(DgmmError, TypeError):
    """The model cannot be converted or used where it was passed (e.g. a low-rank
    mixture to scikit-learn, which has no such covariance type)."""


class ModelFormatError(DgmmError, ValueError):
    """A saved model cannot be read: not a dgmm model, corrupt, truncated,
    wrong shapes, or written in a format version this dgmm does not read."""


class ModelNotFoundError(DgmmError, FileNotFoundError):
    """Nothing exists at the path or URL a model was to be loaded from."""


class OptionalDependencyError(DgmmError, ImportError):
    """A feature needs an optional package that is not installed (matplotlib for plots)."""


class TargetExistsError(DgmmError, FileExistsError):
    """The output (model, predictions) exists and overwriting was not asked for."""


class TargetNotWritableError(DgmmError, OSError):
    """The output location cannot be created or written (permissions, a file in the way)."""


class TargetFormatError(DgmmError, ValueError):
    """The output format cannot be told from the target, or is not one dgmm writes."""


class ClusterConnectionError(DgmmError, ConnectionError):
    """No usable Dask scheduler: none at the address, or TLS refused the connection."""


class ClusterLostError(ClusterConnectionError):
    """The connection to the scheduler was lost during a fit (scheduler died, network)."""


class CheckpointMismatchError(DgmmError, ValueError):
    """A checkpoint was written by a fit with other data or other parameters.

    The message names every field that differs (checkpoint vs this fit).
    """


class CheckpointFormatError(DgmmError, ValueError):
    """A checkpoint path holds something dgmm cannot read as a checkpoint."""


class CheckpointLockedError(DgmmError, RuntimeError):
    """Another fit is writing the same checkpoint (an overlapping scheduled run).

    The message names the other writer (host, process id, when it started).
    A ``RuntimeError``: the checkpoint is busy, not malformed; a later run
    (once the other finished or died) resumes it.
    """


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a checkpointed fit after its checkpoint was written.

    A ``KeyboardInterrupt`` (not an ``Exception``), so ``except Exception``
    does not swallow it; the message says how to resume.
    """


class DgmmWarning(UserWarning):
    """Base class of dgmm's warnings."""


class LikelihoodDecreaseWarning(DgmmWarning):
    """EM decreased the log-likelihood by more than rounding can explain.

    EM never decreases the likelihood in exact arithmetic; seeing this means a
    bug, or data that changed between passes.
    """


def degenerate_message(
    components: list[int] | tuple[int, ...], dtype: object, *, reason: str
) -> str:
    """The message for ill-defined covariances, with the remedies."""
    message = (
        f"Fitting the mixture model failed because component(s) {list(components)} "
        f"have an ill-defined covariance ({reason}), for instance caused by "
        "singleton or collapsed samples. Try decreasing n_components, increasing "
        "reg_covar, scaling the input data, or on_degenerate='reseed' to re-seed "
        "collapsed components instead of failing."
    )
    if str(dtype) == "float32":
        message += " Passing float64 data instead of float32 also improves accuracy."
    return message


def __getattr__(name: str) -> Any:
    # scikit-learn's ConvergenceWarning is re-exported lazily: importing
    # dgmm.errors (every layer does, the numpy-only core included) must not
    # load scikit-learn.
    if name == "ConvergenceWarning":
        from sklearn.exceptions import ConvergenceWarning

        return ConvergenceWarning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
