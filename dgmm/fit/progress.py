"""What a fit shows of its progress: the phase, each pass's chunks and throughput.

One :class:`FitProgress` per fit listens to the passes below it
(:mod:`dgmm.core.progress`, sent by :mod:`dgmm.graph`) and

* records every pass (``passes``: phase, chunks, rows, bytes, seconds,
  rows/s, GB/s), always: it costs one clock reading per pass;
* with ``verbose >= 1``, shows a tqdm bar per pass on a terminal (or in a
  notebook), refreshed every second, with the phase, chunks done / total and
  the throughput; on a non-terminal stderr (a job's log) it prints one line
  per pass instead, when the pass ends;
* with the ``dgmm`` logger at INFO (the CLI's ``-v``), logs one line per pass
  and, on a long pass, a line every ``LOG_EVERY`` seconds;
* calls the user's ``on_progress`` with every report, in order;
* with ``verbose >= 2``, prints scikit-learn's ``Iteration i ... lower bound``
  line every ``verbose_interval`` EM iterations.

Labelling a phase is one line around the code that makes its passes:
``with phase("initialisation", step=2, steps=3):`` (:func:`dgmm.graph.phase`,
re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import IO, Any

import numpy as np

from dgmm.core.progress import PassProgress, ProgressListener
from dgmm.graph import listen, phase

__all__ = ["BAR_DELAY", "LOG_EVERY", "REFRESH_EVERY", "FitProgress", "describe", "phase", "title"]

logger = logging.getLogger("dgmm")

#: Seconds between two refreshes of the terminal bar (its elapsed time moves
#: even while no chunk finishes).
REFRESH_EVERY = 1.0
#: Seconds a pass runs before its bar appears.
BAR_DELAY = 0.5
#: Seconds between two INFO lines of one long pass.
LOG_EVERY = 10.0


def title(p: PassProgress) -> str:
    """The phase of a pass in words, with the pass's number in a phase that makes several:
    ``"EM iteration 3 of 100"``, ``"initialisation step 1 of 3, pass 2"``."""
    several = p.phase != "EM iteration" and p.event != "phase"
    return f"{p.label}, pass {p.pass_index}" if several else p.label


def describe(p: PassProgress) -> str:
    """One line of a pass: ``"EM iteration 3 of 100: 12/12 chunks, 1.2e+06 rows, 0.0384 GB
    in 0.51 s (2.35e+06 rows/s, 0.0753 GB/s)"``."""
    return (
        f"{title(p)}: {p.chunks_done}/{p.n_chunks} chunks, {p.rows_done:.3g} rows, "
        f"{p.bytes_done / 1e9:.3g} GB in {p.seconds:.2f} s "
        f"({p.rows_per_second:.3g} rows/s, {p.gb_per_second:.3g} GB/s)"
    )


def _on_terminal(stream: IO[str]) -> bool:
    """Whether a bar belongs on ``stream``: a terminal, or a notebook (tqdm.auto's widget)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or fake stream
        return False
    auto = _tqdm()
    # tqdm.auto's class comes from tqdm.notebook in Jupyter (a widget), else tqdm.asyncio.
    return auto is not None and "notebook" in auto.__module__


class FitProgress:
    """The progress of one fit (a context manager; see the module docstring).

    Parameters
    ----------
    verbose : int
        0 nothing shown; 1 a bar per pass (a line per pass off a terminal);
        2 also scikit-learn's iteration lines.
    verbose_interval : int
        EM iterations between two scikit-learn lines.
    callback : callable, default=None
        Called with every :class:`dgmm.core.progress.PassProgress`.
    stream : file, default=None
        Where the bar and the lines go (default: ``sys.stderr`` when entered).
    """

    def __init__(
        self,
        verbose: int,
        verbose_interval: int,
        callback: ProgressListener | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.verbose = int(verbose)
        self.interval = int(verbose_interval)
        self.callback = callback
        self.stream = stream
        self.passes: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Any = None
        self._current: PassProgress | None = None  # the last report of the open pass or phase
        self._phase: PassProgress | None = None  # the last phase that began
        self._opened = 0.0  # when the open pass or phase began (perf_counter)
        self._logged = 0.0
        self._start = 0.0
        self._last: tuple[int, float] | None = None
        self._mode = "none"
        self._log = False

    # -- entering and leaving -----------------------------------------------------------

    def __enter__(self) -> FitProgress:
        self._start = time.perf_counter()
        stream = sys.stderr if self.stream is None else self.stream
        self.stream = stream
        if self.verbose >= 1:
            self._mode = "bar" if _on_terminal(stream) and _tqdm() is not None else "lines"
        self._log = logger.isEnabledFor(logging.INFO)
        self._stack.enter_context(listen(self._record, live=False))
        if self._mode != "none" or self._log or self.callback is not None:
            self._stack.enter_context(listen(self._show))
        if self._mode == "bar" and self._log:
            # Log lines through tqdm.write, so they do not break the bar on the same terminal.
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._stack.enter_context(logging_redirect_tqdm(loggers=[logger], tqdm_class=_tqdm()))
        if self._mode == "bar" or self._log:
            self._ticker = threading.Thread(target=self._tick, name="dgmm-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._stack.close()
        with self._lock:
            self._close_bar()

    # -- the listeners ------------------------------------------------------------------

    def _record(self, p: PassProgress) -> None:
        if p.event == "end":
            self.passes.append(p.record())

    def _show(self, p: PassProgress) -> None:
        if self.callback is not None:
            self.callback(p)
        with self._lock:
            if p.event == "end":
                # Back to the phase: what runs until the next pass (a gather, the M-step) is its.
                self._current, self._opened = self._phase, time.perf_counter()
                self._close_bar()
                line = describe(p)
                if self._log:
                    logger.info("%s", line)
                elif self._mode == "lines":
                    self._line(line)
                return
            now, last = time.perf_counter(), self._current
            # A phase, or the first report of a pass (a new phase label or a new pass in it).
            fresh = p.event == "phase" or last is None or last.event == "phase" or (
                (last.label, last.pass_index) != (p.label, p.pass_index)
            )
            if fresh:
                self._opened = self._logged = now
                self._close_bar()  # before the log line: tqdm.write would redraw it below
                if p.event == "phase" and p.step is None and self._log:
                    logger.info("%s", p.label)
            self._current = p
            if p.event == "phase":
                self._phase = p
            if self._mode == "bar":
                self._draw(p, fresh)

    # -- the bar and the lines ---------------------------------------------------------

    def _draw(self, p: PassProgress, fresh: bool) -> None:
        if fresh:
            # A phase gets a bar of its own only if no pass follows within a second (_tick).
            if p.event == "pass":
                # delay: a pass shorter than BAR_DELAY (an in-memory fit's) shows no bar at all.
                self._bar = _tqdm()(total=p.n_chunks, desc=title(p), unit="chunk", file=self.stream,
                                    leave=False, dynamic_ncols=True, delay=BAR_DELAY)
        if p.event == "pass" and p.chunks_done:
            postfix = f"{p.rows_per_second:.3g} rows/s, {p.gb_per_second:.3g} GB/s"
            if self._last is not None:
                postfix += f", lower bound {self._last[1]:.6g}"
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(p.chunks_done - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _tick(self) -> None:
        """Every second: move the bar's clock; every ``LOG_EVERY`` s of a long pass: an INFO line."""
        while not self._stop.wait(REFRESH_EVERY):
            with self._lock:
                p, now = self._current, time.perf_counter()
                if (self._mode == "bar" and self._bar is None and p is not None and p.event == "phase"
                        and now - self._opened >= BAR_DELAY):
                    # A phase without a pass yet (a persist, a gather): its name and clock.
                    self._bar = _tqdm()(total=None, desc=p.label, bar_format="{desc}: {elapsed}",
                                        file=self.stream, leave=False)
                if self._bar is not None and now - self._opened >= BAR_DELAY:
                    self._bar.refresh()
                if self._log and p is not None and p.event == "pass" and now - self._logged >= LOG_EVERY:
                    self._logged = now
                    logger.info("%s (%.0f s so far)", describe(p), now - self._opened)

    # -- EM iterations -----------------------------------------------------------------

    def on_iteration(self, iteration: int, restarts: list[Any]) -> None:
        """The loop's ``on_iteration``: the best lower bound, and scikit-learn's line at verbose >= 2."""
        best = max((r.lower_bound for r in restarts), default=-np.inf)
        self._last = (iteration, best)
        if self.verbose >= 2 and iteration % self.interval == 0:
            line = (
                f"  Iteration {iteration}\t time lapse {time.perf_counter() - self._start:.5f}s"
                f"\t lower bound {best:.10g}"
            )
            with self._lock:
                if self._bar is not None:
                    self._bar.write(line)
                else:
                    print(line, flush=True)


def _tqdm() -> Any:
    """tqdm.auto's bar class, or None without tqdm (an optional dependency)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm
