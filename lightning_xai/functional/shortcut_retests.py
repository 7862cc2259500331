"""Which shortcut candidates wait: a place whose test keeps coming out the same way is not retested every run.

The maps of a fit propose much the same places run after run (the parts of an object the model
reads, a shortcut it has learnt). Testing each of them every run repeats passes whose outcome is
already known. A place whose test ended the same way ``k`` times in a row (no new finding: rejected,
or confirmed and already reported) waits ``2 ** (k - 2) - 1`` runs that propose it (``k >= 2``), at
most ``max_wait``, before its next test; it is tested at once when its maps grow more concentrated (by
``wake_ratio`` since its last test), as a shortcut being learnt does. While it waits, its last test's
outcome stands for it.

A wait counts the runs that propose the place, not all runs: under the adaptive schedule the
expensive methods, which propose most places, run at growing intervals after they settle, and the
runs of the cheap sentinel between them neither propose those places nor learn anything about them;
counted in all runs, every such place would be retested at every run of the expensive methods. (In the
runs of the sentinel alone the checks do not run at all; those runs only age every place's last test.) A
place whose last test is ``stale_after`` runs old is tested again when proposed, however few runs
proposed it since: an outcome that old says little about the model of today.

Two proposals are the same place when they have the same kind and their boxes overlap by half
(intersection over union) or, for regions that move, when their boxes have the same size.

Skipping a test can only lower the false-alarm rate (every test keeps its level). A place proposed
from the first run is tested at runs 1, 2, 3 and 5 (epochs 0-2 and 4 when the monitor runs every
epoch), then every fourth run: the first three epochs are checked as every-run checks would; later,
a shortcut being learnt wakes its place through its maps' concentration, or waits at most
``max_wait`` of the runs that propose it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from lightning_xai.functional.shortcut import Box, as_box, box_iou, box_shape
from lightning_xai.functional.shortcut_candidates import Candidate

__all__ = ["PlaceRecord", "Retests"]

Outcome = TypeVar("Outcome")


@dataclass
class PlaceRecord(Generic[Outcome]):
    """One tested place: its kind and box, its maps' concentration and outcome at its last test,
    how many tests in a row ended without news (``same``), how many runs have proposed it since
    (``waited``; -1 until the run of the test ends), whether this run has (``proposed``) and how many
    runs have passed since (``idle``; -1 until the run of the test ends)."""

    kind: str
    box: Box
    concentration: float
    outcome: Outcome
    same: int = 1
    waited: int = 0
    proposed: bool = False
    idle: int = 0

    def matches(self, candidate: Candidate) -> bool:
        """Whether ``candidate`` proposes this place again."""
        if candidate.kind != self.kind:
            return False
        if self.kind == "moving_region":
            return box_shape(candidate.box) == box_shape(self.box)
        return box_iou(candidate.box, self.box) >= 0.5


@dataclass
class Retests(Generic[Outcome]):
    """The places tested so far and how long each waits (pure bookkeeping; the detector tests).

    Example:
        >>> from lightning_xai.functional.shortcut_candidates import Candidate
        >>> retests = Retests[str]()
        >>> spot = Candidate("region", (0, 0, 4, 4), concentration=3.0)
        >>> for run in range(8):
        ...     waiting = retests.waiting(spot)
        ...     print(run, "waits" if waiting else "tested")
        ...     if waiting is None:
        ...         retests.record(spot, "rejected", news=False)
        ...     retests.end_run()
        0 tested
        1 tested
        2 tested
        3 waits
        4 tested
        5 waits
        6 waits
        7 waits
    """

    max_wait: int = 3
    wake_ratio: float = 1.25
    stale_after: int = 16
    records: list[PlaceRecord[Outcome]] = field(default_factory=list)

    def waiting(self, candidate: Candidate) -> PlaceRecord[Outcome] | None:
        """The record that stands for ``candidate`` this run when it waits, else ``None`` (test it)."""
        record = self._find(candidate)
        if record is None:
            return None
        record.proposed = True
        stronger = candidate.concentration >= self.wake_ratio * record.concentration > 0
        stale = record.idle >= self.stale_after
        if stronger or stale or record.waited >= min(self.max_wait, 2 ** max(0, record.same - 2) - 1):
            return None
        return record

    def news(self, candidate: Candidate) -> bool:
        """Whether ``candidate``'s place was never tested, or its maps grew ``wake_ratio`` times more
        concentrated since its last test (nothing is changed)."""
        record = self._find(candidate)
        return record is None or candidate.concentration >= self.wake_ratio * record.concentration > 0

    def record(self, candidate: Candidate, outcome: Outcome, *, news: bool, counted: bool = True) -> None:
        """Keeps a test's ``outcome``; ``news``: it brought a new finding (the place's run of same
        outcomes restarts); ``counted=False``: the test was cut short (its outcome says little)."""
        record = self._find(candidate)
        if record is None:
            record = PlaceRecord(candidate.kind, candidate.box, candidate.concentration, outcome, same=0)
            self.records.append(record)
        record.same = 1 if news else max(1, record.same + int(counted))
        record.outcome, record.concentration, record.waited = outcome, candidate.concentration, -1
        record.proposed, record.idle = True, -1

    def end_run(self) -> None:
        """After a run: every place proposed in it and not tested has waited one more run; every
        place's last test is one run older."""
        for record in self.records:
            record.waited += int(record.proposed)
            record.proposed = False
            record.idle += 1

    def state_dict(self, save: Callable[[Outcome], Any]) -> list[dict[str, Any]]:
        """The places tested so far as plain values (for a checkpoint), each outcome through ``save``.

        Example:
            >>> retests = Retests[str]()
            >>> retests.record(Candidate("region", (0, 0, 4, 4), concentration=3.0), "rejected", news=False)
            >>> retests.end_run()
            >>> saved = retests.state_dict(str)
            >>> saved[0]["box"], saved[0]["outcome"], saved[0]["idle"]
            ([0, 0, 4, 4], 'rejected', 0)
            >>> restored = Retests[str]()
            >>> restored.load_state_dict(saved, str)
            >>> restored.records == retests.records
            True
        """
        return [
            {
                **{item.name: getattr(record, item.name) for item in fields(record)},
                "box": list(record.box),
                "outcome": save(record.outcome),
            }
            for record in self.records
        ]

    def load_state_dict(self, state: list[dict[str, Any]], load: Callable[[Any], Outcome]) -> None:
        """Restores the places of :meth:`state_dict`, each outcome through ``load`` (the waits go on from there)."""
        self.records = [
            PlaceRecord(**{**saved, "box": as_box(saved["box"]), "outcome": load(saved["outcome"])}) for saved in state
        ]

    def _find(self, candidate: Candidate) -> PlaceRecord[Outcome] | None:
        return next((record for record in self.records if record.matches(candidate)), None)
