"""Progress of the passes over the data: what a pass reports, and to whom.

A phase (:func:`phase`) and the listeners (:func:`listen`) are set by the
caller in a context variable, so the passes made below them (the
initialisation's, the EM loop's) pick them up without a parameter in
between, and two fits in two threads do not see each other's. The passes
themselves (:mod:`dgmm.graph`) send :class:`PassProgress` reports; the fit
layer's display and the estimator's ``on_progress`` callback read them.
Standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dgmm.core.options import PassEvent

__all__ = [
    "REPORT_EVERY",
    "PassProgress",
    "PhaseState",
    "ProgressListener",
    "current_phase",
    "listen",
    "listeners",
    "phase",
]


@dataclass(frozen=True)
class PassProgress:
    """Where a pass over the data stands, as reported to the progress listeners.

    ``event`` is ``"phase"`` when a phase begins (counts are 0), ``"pass"``
    while a pass runs (first with no chunk done, then as chunks finish, at
    most every ``REPORT_EVERY`` seconds), ``"end"`` when it has finished.
    ``phase`` names what the pass is for (``"EM iteration"``,
    ``"initialisation"``, ...) with ``step`` of ``steps`` when the phase is
    numbered; ``pass_index`` counts the passes within that phase (1-based,
    0 for a phase event); ``kind`` is ``"stats"`` (a statistics pass) or
    ``"map"`` (another per-chunk kernel). ``bytes`` are those of the rows as
    the Dask array declares them (dense ``n_rows * n_features * itemsize``).

    Examples
    --------
    >>> p = PassProgress("end", "EM iteration", 3, 100, 1, "stats", 4, 4, 1000, 1000,
    ...                  8000, 8000, 0.5)
    >>> p.label, p.rows_per_second, p.gb_per_second
    ('EM iteration 3 of 100', 2000.0, 1.6e-05)
    """

    event: PassEvent
    phase: str
    step: int | None
    steps: int | None
    pass_index: int
    kind: str
    chunks_done: int
    n_chunks: int
    rows_done: int
    n_rows: int
    bytes_done: int
    n_bytes: int
    seconds: float

    @property
    def label(self) -> str:
        """The phase in words: ``"initialisation step 2 of 3"``, ``"EM iteration 4 of 100"``."""
        if self.step is None:
            return self.phase
        joint = " step " if self.phase != "EM iteration" else " "
        return f"{self.phase}{joint}{self.step}" + ("" if self.steps is None else f" of {self.steps}")

    @property
    def rows_per_second(self) -> float:
        """Rows read per second of this pass so far."""
        return self.rows_done / max(self.seconds, 1e-9)

    @property
    def gb_per_second(self) -> float:
        """Gigabytes (10⁹ bytes) read per second of this pass so far."""
        return self.bytes_done / 1e9 / max(self.seconds, 1e-9)

    def record(self) -> dict[str, Any]:
        """This report as a JSON-able dict (a ``passes_`` entry), with the throughput."""
        return {
            "phase": self.phase, "step": self.step, "steps": self.steps, "pass": self.pass_index,
            "kind": self.kind, "chunks": self.chunks_done, "rows": self.rows_done,
            "bytes": self.bytes_done, "seconds": self.seconds,
            "rows_per_second": self.rows_per_second, "gb_per_second": self.gb_per_second,
        }


#: Called with every :class:`PassProgress` of the passes it listens to.
ProgressListener = Callable[[PassProgress], None]

#: Seconds between two ``"pass"`` reports of one pass (a pass of 4,000 fast
#: chunks would otherwise call the listeners 4,000 times).
REPORT_EVERY = 0.2


class PhaseState:
    """The phase a pass runs in, and how many passes it has made (counted by the passes)."""

    def __init__(self, name: str, step: int | None, steps: int | None) -> None:
        self.name, self.step, self.steps = name, step, steps
        self.passes = 0


# Context variables, so that a phase and a listener set by the caller reach the
# passes made below it (init code, the loop) without a parameter in between,
# and two fits in two threads do not see each other's.
_PHASE: contextvars.ContextVar[PhaseState | None] = contextvars.ContextVar("dgmm_phase", default=None)
_LISTENERS: contextvars.ContextVar[tuple[tuple[ProgressListener, bool], ...]] = contextvars.ContextVar(
    "dgmm_progress_listeners", default=()
)


@contextlib.contextmanager
def phase(name: str, step: int | None = None, steps: int | None = None) -> Iterator[None]:
    """Label the passes made inside the block: ``with phase("initialisation", step=1, steps=3):``.

    Live listeners hear a ``"phase"`` report as the block begins, so a phase
    without a pass of its own (a persist, a gather) is shown too.
    """
    state = PhaseState(name, step, steps)
    token = _PHASE.set(state)
    try:
        live = [listener for listener, is_live in _LISTENERS.get() if is_live]
        if live:
            report = PassProgress("phase", name, step, steps, 0, "phase", 0, 0, 0, 0, 0, 0, 0.0)
            for listener in live:
                listener(report)
        yield
    finally:
        _PHASE.reset(token)


@contextlib.contextmanager
def listen(listener: ProgressListener, *, live: bool = True) -> Iterator[None]:
    """Send the progress of the passes made inside the block to ``listener``.

    ``live=False`` hears only the ``"end"`` of each pass (a record of the
    passes; it costs one clock reading per pass); a live listener also hears
    phases and passes as they advance, for which a pass on a distributed
    cluster follows its chunks as futures.
    """
    token = _LISTENERS.set((*_LISTENERS.get(), (listener, live)))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def current_phase() -> PhaseState:
    """The phase the caller's passes run in (a fresh ``"pass"`` phase outside any)."""
    state = _PHASE.get()
    return PhaseState("pass", None, None) if state is None else state


def listeners() -> tuple[tuple[ProgressListener, bool], ...]:
    """The caller's listeners, each with whether it is live."""
    return _LISTENERS.get()
