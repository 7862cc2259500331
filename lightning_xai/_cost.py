"""What the monitor costs the fit: wall time of its runs against the training around them.

The monitor's *overhead* is the wall time of its runs divided by the rest of the fit's wall
time (training, validation, checkpoints): the share it adds to a fit without it. With an
overhead cap, a run is skipped when doing it would take the overhead above the cap, predicting
its cost from the last run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class MonitorCost:
    """Times the monitor's runs within one fit.

    Example:
        >>> cost = MonitorCost()
        >>> cost.start_fit(now=0.0)
        >>> cost.add_run(2.0)
        >>> cost.overhead(now=12.0), cost.would_exceed(0.1, now=12.0), cost.would_exceed(0.5, now=12.0)
        (0.2, True, False)
    """

    fit_started: float | None = None
    seconds: float = 0.0
    last_run: float = 0.0
    runs: int = 0
    skipped: int = 0

    def start_fit(self, now: float | None = None) -> None:
        """Starts the clock of a fit (and forgets an earlier fit's runs)."""
        self.fit_started = time.perf_counter() if now is None else now
        self.seconds, self.last_run, self.runs, self.skipped = 0.0, 0.0, 0, 0

    @contextmanager
    def timing_run(self) -> Iterator[None]:
        """Adds the wall time of the block to the monitor's cost."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add_run(time.perf_counter() - started)

    def add_run(self, seconds: float) -> None:
        """Counts one run of ``seconds``."""
        self.seconds += seconds
        self.last_run = seconds
        self.runs += 1

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

    def skip_warning(self, max_overhead: float, *, epoch: int, step: int) -> str:
        """What the monitor says the first time ``max_overhead`` makes it skip a run."""
        return (
            f"AttributionMonitor skipped its run at epoch {epoch} (step {step}) to keep its cost within "
            f"max_overhead={max_overhead}: {self.describe()}, and another run would take about {self.last_run:.1f}s. "
            "It explains again once training has caught up; raise `max_overhead`, use fewer probes or cheaper "
            "settings to explain more often. This warning is shown once."
        )

    def snapshot(self, now: float | None = None) -> dict[str, float]:
        """``runs``, ``skipped``, ``seconds``, ``training_seconds`` and ``overhead``, at one moment."""
        now = time.perf_counter() if now is None else now
        return {
            "runs": self.runs, "skipped": self.skipped, "seconds": self.seconds,
            "training_seconds": self.training_seconds(now), "overhead": self.overhead(now),
        }

    def describe(self, now: float | None = None) -> str:
        """One sentence for the log: runs, seconds, overhead, skipped runs."""
        skipped = f"; {_count(self.skipped, 'run')} skipped to respect max_overhead" if self.skipped else ""
        return (
            f"{_count(self.runs, 'run')} took {self.seconds:.1f}s, {self.overhead(now):.0%} on top of the rest of the fit "
            f"({self.training_seconds(now):.1f}s){skipped}"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
