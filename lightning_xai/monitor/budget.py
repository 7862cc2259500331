"""When the monitor runs, and what it costs: the schedule, both time caps, and the counters.

Decisions are pure functions of the facts they are given, returning what to do and why
(as Lightning's ``EarlyStopping._evaluate_stopping_criteria`` does); the callback acts on them
and the recorder reports them.

- ``every_n_epochs``: runs on every n-th epoch of a fit (``trainer.validate`` always runs);
- ``max_overhead``: a run is skipped when it would take the monitor's wall time above that share
  of the rest of the fit (predicted from the last run; the first run always happens);
- ``max_seconds``: within a run, methods that would start after the deadline are skipped
  (the first always runs).

The *overhead* is the monitor's wall time divided by the rest of the fit's wall time
(training, validation, checkpoints): the share it adds to a fit without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Deadline", "RunBudget", "RunDecision", "SkipReason"]

SkipReason = Literal["not_zero", "schedule", "overhead", "idle"]


@dataclass(frozen=True)
class RunDecision:
    """Whether to run now, and if not, why (``reason``)."""

    run: bool
    reason: SkipReason | None = None


@dataclass(frozen=True)
class Deadline:
    """The end of a run's ``max_seconds`` (``None``: no cap).

    Example:
        >>> Deadline(started=0.0, max_seconds=2.0).passed(now=2.5), Deadline(0.0, None).passed(now=9e9)
        (True, False)
    """

    started: float
    max_seconds: float | None

    def passed(self, now: float | None = None) -> bool:
        """Whether the run has used up its time."""
        if self.max_seconds is None:
            return False
        return (time.perf_counter() if now is None else now) - self.started > self.max_seconds


@dataclass
class RunBudget:
    """The schedule, the caps and the cost counters of one fit.

    Example:
        >>> budget = RunBudget(every_n_epochs=1, max_seconds=None, max_overhead=0.1)
        >>> budget.start_fit(now=0.0)
        >>> budget.add_run(2.0)
        >>> budget.overhead(now=12.0), budget.decide(epoch=1, fitting=True, now=12.0)
        (0.2, RunDecision(run=False, reason='overhead'))
    """

    every_n_epochs: int = 1
    max_seconds: float | None = None
    max_overhead: float | None = None
    fit_started: float | None = None
    seconds: float = 0.0
    last_run: float = 0.0
    runs: int = 0
    skipped: int = 0
    failed: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def start_fit(self, now: float | None = None) -> None:
        """Starts the clock of a fit (and forgets an earlier fit's runs)."""
        self.fit_started = time.perf_counter() if now is None else now
        self.seconds, self.last_run, self.runs, self.skipped, self.failed = 0.0, 0.0, 0, 0, 0
        self.phases = {}

    def decide(self, *, epoch: int, fitting: bool, now: float | None = None) -> RunDecision:
        """Whether the run at the end of ``epoch``'s validation happens (pure: nothing is counted)."""
        if fitting and (epoch + 1) % self.every_n_epochs != 0:
            return RunDecision(False, "schedule")
        if fitting and self.max_overhead is not None and self.would_exceed(self.max_overhead, now):
            return RunDecision(False, "overhead")
        return RunDecision(True)

    def deadline(self) -> Deadline:
        """The ``max_seconds`` deadline of a run starting now."""
        return Deadline(time.perf_counter(), self.max_seconds)

    @contextmanager
    def timing_run(self) -> Iterator[None]:
        """Adds the wall time of the block to the monitor's cost."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add_run(time.perf_counter() - started)

    def add_run(self, seconds: float, phases: dict[str, float] | None = None) -> None:
        """Counts one run of ``seconds`` (and its phases' seconds)."""
        self.seconds += seconds
        self.last_run = seconds
        self.runs += 1
        for phase, value in (phases or {}).items():
            self.phases[phase] = self.phases.get(phase, 0.0) + value

    def training_seconds(self, now: float | None = None) -> float:
        """Wall time of the fit so far without the monitor's runs (0 outside a fit)."""
        if self.fit_started is None:
            return 0.0
        now = time.perf_counter() if now is None else now
        return max(0.0, now - self.fit_started - self.seconds)

    def overhead(self, now: float | None = None) -> float:
        """The monitor's seconds as a share of the rest of the fit so far."""
        return self.seconds / max(self.training_seconds(now), 1e-9)

    def would_exceed(self, max_overhead: float, now: float | None = None) -> bool:
        """Whether one more run like the last one would take the overhead above ``max_overhead``.

        Never true before the first run or outside a fit (``trainer.validate``).
        """
        if self.fit_started is None or self.runs == 0:
            return False
        return self.seconds + self.last_run > max_overhead * self.training_seconds(now)

    def snapshot(self, now: float | None = None) -> dict[str, float]:
        """``runs``, ``skipped``, ``failed``, ``seconds``, ``training_seconds`` and ``overhead``, at one moment."""
        now = time.perf_counter() if now is None else now
        return {
            "runs": self.runs,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": self.seconds,
            "training_seconds": self.training_seconds(now),
            "overhead": self.overhead(now),
        }
