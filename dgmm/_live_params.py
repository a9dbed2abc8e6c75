"""What the estimators share about parameters that hold live objects (a client, a callback)."""

from __future__ import annotations

from typing import Any

__all__ = ["LiveParamsMixin"]

#: Parameters that refer to live objects rather than configuration.
LIVE_PARAMS = ("client", "on_progress")


class LiveParamsMixin:
    """Clones share the live parameters; pickles drop them.

    ``client`` is a live connection that cannot be deep-copied, and a deep copy
    of a bound-method ``on_progress`` would report to a copy of its object, so
    ``sklearn.base.clone`` hands both over as they are. A pickled estimator
    leaves them out: the unpickled model finds a cluster when fitted, and a
    callback (often a closure) need not pickle. Put it before
    ``BaseEstimator`` in the bases.
    """

    def __sklearn_clone__(self) -> Any:
        live = {name: getattr(self, name) for name in LIVE_PARAMS}
        for name in LIVE_PARAMS:
            setattr(self, name, None)
        try:
            new = super().__sklearn_clone__()  # type: ignore[misc]
        finally:
            for name, value in live.items():
                setattr(self, name, value)
        for name, value in live.items():
            setattr(new, name, value)
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        return {**state, **{k: None for k in LIVE_PARAMS if state.get(k) is not None}}
