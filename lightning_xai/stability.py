"""Tracking how explanations change from one validation run to the next, and when they settle.

Gradient-based maps are known to move a lot between equally accurate networks; a map that
keeps changing after accuracy has plateaued is a warning. The tracker compares each method's
maps with the previous run's (rank correlation, top-k IoU, SSIM, cosine; mean and worst over
probes), compares methods with each other within a run (agreement), declares a method
*settled* once its rank correlation stays at or above a threshold for ``patience`` runs, and
keeps the last few display maps of every probe for filmstrips.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional._checks import check_positive_int
from lightning_xai.functional.stability import compare_maps, rank_correlation, reduce_channels
from lightning_xai.methods import AttributionMethod
from lightning_xai.render import make_grid, overlay


@dataclass(frozen=True)
class Stability:
    """Settings of stability tracking.

    Args:
        top_k: fraction of pixels compared by the top-k IoU.
        threshold: mean rank correlation with the previous run at or above which a method counts
            as stable for that run.
        patience: consecutive stable runs after which a method is reported as settled.
        filmstrip_length: how many past runs each probe's filmstrip shows.
        agreement: also compare the methods with each other in every run.

    Example:
        >>> Stability(threshold=0.8).patience
        3
    """

    top_k: float = 0.1
    threshold: float = 0.9
    patience: int = 3
    filmstrip_length: int = 10
    agreement: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= 1:
            raise ValueError(f"`top_k` must be a fraction in (0, 1], got {self.top_k!r}.")
        if not -1 <= self.threshold <= 1:
            raise ValueError(f"`threshold` must be a rank correlation in [-1, 1], got {self.threshold!r}.")
        check_positive_int(self.patience, "patience")
        check_positive_int(self.filmstrip_length, "filmstrip_length")


@dataclass
class StabilityReport:
    """What one update produced: scalars, newly settled methods, filmstrip images by tag."""

    metrics: dict[str, float] = field(default_factory=dict)
    newly_settled: list[str] = field(default_factory=list)
    filmstrips: dict[str, Tensor] = field(default_factory=dict)


def comparable(method: AttributionMethod, attributions: Tensor) -> Tensor:
    """The one-channel map a method's stability is measured on (its display reduction, unclipped)."""
    reduce = method.display_reduce if method.display_reduce in ("abs_sum", "positive") else "abs_sum"
    return reduce_channels(attributions, reduce)


def summarise(values: dict[str, Tensor], prefix: str) -> dict[str, float]:
    """``{f"{prefix}/{metric}_mean": ..., f"{prefix}/{metric}_worst": ...}`` over probes."""
    out: dict[str, float] = {}
    for metric, per_probe in values.items():
        out[f"{prefix}/{metric}_mean"] = float(per_probe.mean())
        out[f"{prefix}/{metric}_worst"] = float(per_probe.min())
    return out


class StabilityTracker:
    """Compares each run with the previous one and remembers recent display maps.

    Args:
        settings: a :class:`Stability`.
        methods: the monitor's methods.
    """

    def __init__(self, settings: Stability, methods: list[AttributionMethod]) -> None:
        self.settings = settings
        self.methods = {method.name: method for method in methods}
        self.previous: dict[str, Tensor] = {}
        self.streak: dict[str, int] = {name: 0 for name in self.methods}
        self.settled: dict[str, dict[str, int] | None] = {name: None for name in self.methods}
        self.strips: dict[str, deque[_Frame]] = {name: deque(maxlen=settings.filmstrip_length) for name in self.methods}

    def update(self, maps: dict[str, Tensor], displays: dict[str, Tensor], rgb: Tensor, *, epoch: int, step: int) -> StabilityReport:
        """Scores this run's ``maps`` against the last run, updates the settled state and filmstrips."""
        report = StabilityReport()
        current = {name: comparable(self.methods[name], value) for name, value in maps.items()}
        for name, value in current.items():
            if name in self.previous and self.previous[name].shape == value.shape:
                scores = compare_maps(self.previous[name], value, k=self.settings.top_k)
                report.metrics.update(summarise(scores, f"stability/{name}"))
                self._advance(name, float(scores["spearman"].mean()), epoch, step, report)
            report.metrics[f"stability/{name}/settled"] = float(self.settled[name] is not None)
            self.previous[name] = value
        if self.settings.agreement:
            report.metrics.update(self._agreement(current))
        for name, display in displays.items():
            self.strips[name].append(_Frame(display.cpu()))
            report.filmstrips.update(self._filmstrips(name, rgb))
        return report

    def unsettled(self) -> list[str]:
        """Methods that have not settled (so far)."""
        return [name for name, state in self.settled.items() if state is None]

    def state_dict(self) -> dict[str, Any]:
        """Streaks and settled epochs (numbers and strings only)."""
        return {"streak": dict(self.streak), "settled": {k: (dict(v) if v else None) for k, v in self.settled.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues streaks and settled epochs of a checkpoint."""
        self.streak.update({k: int(v) for k, v in state.get("streak", {}).items() if k in self.streak})
        self.settled.update({k: v for k, v in state.get("settled", {}).items() if k in self.settled})

    def remember(self, maps: dict[str, Tensor], displays: dict[str, Tensor]) -> None:
        """Feeds a past run (from the on-disk history after a resume) without scoring it."""
        for name, value in maps.items():
            if name in self.methods:
                self.previous[name] = comparable(self.methods[name], value)
                self.strips[name].append(_Frame(displays[name].cpu()))

    def _advance(self, name: str, correlation: float, epoch: int, step: int, report: StabilityReport) -> None:
        stable = correlation >= self.settings.threshold
        self.streak[name] = self.streak[name] + 1 if stable else 0
        if stable and self.settled[name] is None and self.streak[name] >= self.settings.patience:
            self.settled[name] = {"epoch": epoch, "global_step": step}
            report.newly_settled.append(name)
        elif not stable and self.settled[name] is not None:
            self.settled[name] = None  # it moved again: no longer settled

    def _agreement(self, current: dict[str, Tensor]) -> dict[str, float]:
        out: dict[str, float] = {}
        for first, second in combinations(sorted(current), 2):
            a, b = current[first], current[second]
            if a.shape[-2:] != b.shape[-2:]:
                b = torch.nn.functional.interpolate(b, size=tuple(a.shape[-2:]), mode="bilinear")
            out.update(summarise({"spearman": rank_correlation(a, b)}, f"agreement/{first}~{second}"))
        return out

    def _filmstrips(self, name: str, rgb: Tensor) -> dict[str, Tensor]:
        frames = [frame.tiles(rgb) for frame in self.strips[name]]
        images = {}
        for probe in range(rgb.shape[0]):
            tiles = torch.stack([frame[probe] for frame in frames]).float() / 255
            images[f"xai/filmstrip/{name}/probe_{probe:02d}"] = make_grid(tiles, columns=len(frames))
        return images


class _Frame:
    """One run's display maps ``[P, 1, H, W]``, overlaid on the probes once when first drawn (kept as uint8)."""

    def __init__(self, display: Tensor) -> None:
        self.display: Tensor | None = display
        self.overlaid: Tensor | None = None

    def tiles(self, rgb: Tensor) -> Tensor:
        """``uint8[P, 3, H', W']``: the maps over the probes ``rgb`` (the same probes every run)."""
        if self.overlaid is None:
            assert self.display is not None
            self.overlaid = (overlay(rgb, self.display) * 255).round().to(torch.uint8)
            self.display = None
        return self.overlaid
