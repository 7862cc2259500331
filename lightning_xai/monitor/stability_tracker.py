"""Tracking how explanations change from one validation run to the next, and when they settle.

Gradient-based maps are known to move a lot between equally accurate networks; a map that
keeps changing after accuracy has plateaued is a warning. The tracker compares each method's
maps with the previous run's (rank correlation, top-k IoU, SSIM, cosine; mean and worst over
probes), compares methods with each other within a run (agreement), and declares a method
*settled* once its rank correlation stays at or above a threshold for ``patience`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.stability import compare_maps, rank_correlation, reduce_channels
from lightning_xai.methods import AttributionMethod
from lightning_xai.monitor.sizing import downsample_map
from lightning_xai.stability import Stability

__all__ = ["StabilityReport", "StabilityTracker", "comparable"]

MeanWorst = tuple[float, float]


@dataclass
class StabilityReport:
    """One run's stability: per method ``{metric: (mean, worst)}`` against the last run, settled flags, agreement."""

    scores: dict[str, dict[str, MeanWorst]] = field(default_factory=dict)
    settled: dict[str, bool] = field(default_factory=dict)
    newly_settled: list[str] = field(default_factory=list)
    agreement: dict[tuple[str, str], MeanWorst] = field(default_factory=dict)


def comparable(method: AttributionMethod, attributions: Tensor) -> Tensor:
    """The one-channel map a method's stability is measured on (its display reduction, unclipped), at the size
    maps are stored at (:func:`~lightning_xai.monitor.sizing.downsample_map`), so a run read back after a resume
    compares exactly as it did live."""
    reduce = method.display_reduce if method.display_reduce in ("abs_sum", "positive") else "abs_sum"
    return reduce_channels(downsample_map(attributions), reduce)


def _keeps_none(kept: Tensor | None) -> bool:
    """Whether the mask ``kept`` leaves out every probe (no mask keeps them all)."""
    return kept is not None and not bool(kept.any())


def _mean_worst(per_probe: Tensor) -> MeanWorst:
    return float(per_probe.mean()), float(per_probe.min())


class StabilityTracker:
    """Compares each run with the previous one and keeps the settled state.

    Args:
        settings: a :class:`~lightning_xai.Stability`.
        methods: the monitor's methods by key.

    Example:
        >>> from lightning_xai import Saliency, Stability
        >>> tracker = StabilityTracker(Stability(patience=1), {"saliency": Saliency()})
        >>> maps = {"saliency": torch.rand(2, 1, 4, 4)}
        >>> _ = tracker.update(maps, epoch=0, step=1)
        >>> tracker.update(maps, epoch=1, step=2).newly_settled
        ['saliency']
    """

    def __init__(self, settings: Stability, methods: Mapping[str, AttributionMethod]) -> None:
        self.settings = settings
        self.methods = dict(methods)
        self.previous: dict[str, Tensor] = {}
        self.streak: dict[str, int] = {key: 0 for key in self.methods}
        self.settled: dict[str, dict[str, int] | None] = {key: None for key in self.methods}
        self.compared_runs = 0
        self.previous_kept: Tensor | None = None

    def update(
        self, maps: Mapping[str, Tensor], *, epoch: int, step: int, kept: Tensor | None = None
    ) -> StabilityReport:
        """Scores this run's ``maps`` against the last run and updates the settled state. ``kept``: ``BoolTensor[P]``,
        the probes explained in this run (the others' maps are zeros, which would look perfectly stable): only
        probes explained in both runs are compared, and methods only on this run's."""
        report = StabilityReport()
        current = {key: comparable(self.methods[key], value) for key, value in maps.items() if key in self.methods}
        last = self.previous_kept
        both = kept if last is None or kept is None or last.shape != kept.shape else kept & last
        compared = False
        for key, value in current.items():
            if key in self.previous and self.previous[key].shape == value.shape and not _keeps_none(both):
                rows = slice(None) if both is None else both
                scores = compare_maps(self.previous[key][rows], value[rows], k=self.settings.top_k)
                report.scores[key] = {metric: _mean_worst(values) for metric, values in scores.items()}
                self._advance(key, report.scores[key]["spearman"][0], epoch, step, report)
                compared = True
            report.settled[key] = self.settled[key] is not None
            self.previous[key] = value
        self.previous_kept = kept
        self.compared_runs += int(compared)
        if self.settings.agreement and not _keeps_none(kept):
            report.agreement = self._agreement(
                {key: value if kept is None else value[kept] for key, value in current.items()}
            )
        return report

    def correlation_with_previous(self, key: str, maps: Tensor) -> float | None:
        """Mean rank correlation of ``maps`` with the method's last maps (``None`` before there are any)."""
        if key not in self.previous or key not in self.methods:
            return None
        current = comparable(self.methods[key], maps)
        if current.shape != self.previous[key].shape:
            return None
        return float(rank_correlation(self.previous[key], current).mean())

    def unsettled(self) -> list[str]:
        """Methods that have not settled (so far)."""
        return [key for key, state in self.settled.items() if state is None]

    def could_settle(self) -> bool:
        """Whether there were enough compared runs for a method to settle (``patience`` of them)."""
        return self.compared_runs >= self.settings.patience

    def state_dict(self) -> dict[str, Any]:
        """Streaks, settled epochs and the number of compared runs (numbers and strings only)."""
        return {
            "streak": dict(self.streak),
            "settled": {k: (dict(v) if v else None) for k, v in self.settled.items()},
            "compared_runs": self.compared_runs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues streaks and settled epochs of a checkpoint."""
        self.streak.update({k: int(v) for k, v in state.get("streak", {}).items() if k in self.streak})
        self.settled.update({k: v for k, v in state.get("settled", {}).items() if k in self.settled})
        self.compared_runs = int(state.get("compared_runs", 0))

    def remember(self, maps: Mapping[str, Tensor]) -> None:
        """Feeds a past run (from the on-disk history after a resume) without scoring it."""
        for key, value in maps.items():
            if key in self.methods:
                self.previous[key] = comparable(self.methods[key], value)

    def _advance(self, key: str, correlation: float, epoch: int, step: int, report: StabilityReport) -> None:
        stable = correlation >= self.settings.threshold
        self.streak[key] = self.streak[key] + 1 if stable else 0
        if stable and self.settled[key] is None and self.streak[key] >= self.settings.patience:
            self.settled[key] = {"epoch": epoch, "global_step": step}
            report.newly_settled.append(key)
        elif not stable and self.settled[key] is not None:
            self.settled[key] = None  # it moved again: no longer settled

    def _agreement(self, current: Mapping[str, Tensor]) -> dict[tuple[str, str], MeanWorst]:
        out: dict[tuple[str, str], MeanWorst] = {}
        for first, second in combinations(sorted(current), 2):
            a, b = current[first], current[second]
            if a.shape[-2:] != b.shape[-2:]:
                b = torch.nn.functional.interpolate(b, size=tuple(a.shape[-2:]), mode="bilinear")
            out[(first, second)] = _mean_worst(rank_correlation(a, b))
        return out
