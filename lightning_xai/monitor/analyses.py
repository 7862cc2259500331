"""The analyses of a run's maps: shortcut checks and faithfulness, as typed reports.

Each runs under the monitor's conditions on the model's device and returns plain numbers and
tensors; no tag name and no warning is made here (the recorder does both).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.faithfulness import Faithfulness
from lightning_xai.functional.batching import BatchSize
from lightning_xai.functional.faithfulness import ablation_curves, mass_center_ablation
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from lightning_xai.shortcuts import ShortcutReport

__all__ = ["FaithfulnessReport", "ShortcutReport", "assess_faithfulness", "check_shortcuts", "completeness"]


@dataclass
class FaithfulnessReport:
    """One run's faithfulness metrics.

    Attributes:
        per_method: ``{key: {"deletion_auc_mean": ..., "mass_center_drop": ..., ...}}``.
        random: the random-ranking controls ``{"deletion_auc_mean": ..., ...}``.
        curves: the first fill's mean curves per method ``{key: {"fractions", "deletion", ...}}`` (CPU).
        completeness: ``{key: {"gap_mean": ..., "relative_gap_mean": ...}}`` for path methods.
        seconds: wall time of the metrics.
    """

    per_method: dict[str, dict[str, float]] = field(default_factory=dict)
    random: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    completeness: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def check_shortcuts(
    detector: ShortcutDetector,
    model: nn.Module,
    displays: dict[str, Tensor],
    test_images: Tensor,
    *,
    epoch: int,
    step: int,
    batch_size: BatchSize | None = None,
    probe_images: Tensor | None = None,
    maps_work: float | None = None,
    unsized_seconds: float = 0.0,
    probe_classes: Tensor | None = None,
    agree: Callable[[Any], Any] | None = None,
) -> ShortcutReport:
    """Tests this run's candidate regions on ``test_images`` (model inputs ``[T, C, H, W]``); the detector's report.

    ``probe_images`` (model inputs ``[P, C, H, W]``): where a confirmed moving region sits in each probe;
    ``maps_work``, ``unsized_seconds``: the images the run's maps passed through the model and the time of
    those whose passes are unknown (the checks' budget, see ``Shortcuts.max_cost``);
    ``probe_classes``: the probes' predicted classes ``[P]`` (class marks are looked for where the
    other classes' probes do not look); ``agree``: rank 0's value on every rank, when every rank runs the
    checks (a collective forward pass).
    """
    return detector.check(
        model,
        displays,
        test_images,
        epoch=epoch,
        step=step,
        batch_size=batch_size,
        probe_images=probe_images,
        maps_work=maps_work,
        unsized_seconds=unsized_seconds,
        probe_classes=probe_classes,
        agree=agree,
    )


def assess_faithfulness(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    maps: dict[str, Tensor],
    settings: Faithfulness,
    *,
    seed: int,
) -> FaithfulnessReport:
    """Deletion/insertion curves (with a random control once per fill) and mass-centre ablation of every method's maps.

    Args:
        model: the module explained; images: model inputs ``[P, C, H, W]``; targets: ``[P]`` on its device.
        maps: raw maps by method key (CPU).
        settings: fractions, fills, box size.
        seed: seed of the private generators (the same random rankings every run).
    """
    started = time.perf_counter()
    report = FaithfulnessReport()
    for key, attributions in maps.items():
        attributions = attributions.to(images.device)
        values: dict[str, float] = {}
        for fill in settings.fills:
            curves = ablation_curves(
                model,
                images,
                attributions,
                targets,
                fractions=settings.fractions,
                fill=fill,
                random_control=not report.random or f"deletion_auc_{fill}" not in report.random,
                generator=torch.Generator(device=images.device).manual_seed(seed),
            )
            for kind in ("deletion", "insertion"):
                values[f"{kind}_auc_{fill}"] = float(curves[f"{kind}_auc"].mean())
                if f"{kind}_random_auc" in curves:
                    report.random[f"{kind}_auc_{fill}"] = float(curves[f"{kind}_random_auc"].mean())
            if fill == settings.fills[0]:
                report.curves[key] = _mean_curves(curves)
        box = mass_center_ablation(
            model,
            images,
            attributions,
            targets,
            box_fraction=settings.box_fraction,
            fill=settings.fills[0],
            n_random=settings.n_random_boxes,
            generator=torch.Generator(device=images.device).manual_seed(seed),
        )
        values["mass_center_drop"] = float(box["drop"].mean())
        values["mass_center_random_drop"] = float(box["random_drop"].mean())
        report.per_method[key] = values
    report.seconds = time.perf_counter() - started
    return report


def _mean_curves(curves: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {"fractions": curves["fractions"].float().cpu()}
    for key in ("deletion", "insertion", "deletion_random", "insertion_random"):
        if key in curves:
            out[key] = curves[key].float().mean(dim=0).cpu()
    return out


def completeness(gaps: dict[str, Tensor], target_scores: Tensor) -> dict[str, dict[str, float]]:
    """Mean absolute and relative completeness gaps per method (relative to the target score).

    Example:
        >>> completeness({"ig": torch.tensor([0.1, -0.3])}, torch.tensor([1.0, 1.0]))["ig"]["relative_gap_mean"]
        -0.1
    """
    out = {}
    for key, gap in gaps.items():
        relative = gap.float().cpu() / target_scores.float().cpu().abs().clamp(min=1e-6)
        out[key] = {"gap_mean": round(float(gap.mean()), 6), "relative_gap_mean": round(float(relative.mean()), 6)}
    return out
