"""Judging the explanations themselves while training: ablation curves, completeness, sanity check.

Maps can look convincing and be wrong. For every method, on the same probes as the maps:

- **deletion / insertion curves** (RISE): hide the map's top pixels (by each image's mean colour
  and by blurring) and watch the target probability fall; or reveal only them and watch it rise.
  Areas under the curves are logged with a random pixel ranking as the control any map must beat;
- **mass-centre ablation**: the probability drop when a box at the map's centre of mass is
  hidden, against boxes of the same size at random places;
- **completeness gap** of integrated and expected gradients: how far the attributions' sum is
  from the score difference they should explain (too few steps or samples when large);
- **model-randomisation sanity check** (Adebayo et al., on demand or at the end of fit): maps of
  a copy of the model with randomised weights, cascading from the top layer, compared with the
  trained model's maps; a method whose maps barely change does not explain the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.functional.faithfulness import DEFAULT_FRACTIONS, ablation_curves, mass_centre_ablation
from lightning_xai.methods import AttributionMethod, MethodContext
from lightning_xai.render import line_plot
from lightning_xai.sanity import randomization_scores, randomized_copies, randomized_model

CURVE_COLOURS = {
    "deletion": (0.90, 0.25, 0.20),
    "insertion": (0.20, 0.70, 0.30),
    "deletion_random": (0.95, 0.70, 0.65),
    "insertion_random": (0.65, 0.85, 0.65),
}


@dataclass(frozen=True)
class Faithfulness:
    """Settings of the faithfulness metrics (all computed on the probes, each validation run).

    Args:
        fractions: shares of pixels removed or inserted along the curves (default 0 to 1 in 10 steps).
        fills: what replaces removed pixels: ``"mean"`` (each image's channel means), ``"blur"``.
        box_fraction: side of the mass-centre box as a share of the image side.
        n_random_boxes: random boxes the mass-centre drop is compared with.
        max_relative_gap: completeness gap, relative to the target score, above which a warning
            says that integrated or expected gradients use too few steps or samples.
        sanity_check_at_end: run the model-randomisation check when ``fit`` ends.
        insensitive_above: rank correlation between trained and randomised maps above which a
            method is reported as insensitive to the model.

    Example:
        >>> Faithfulness().fills
        ('mean', 'blur')
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    fills: tuple[Literal["mean", "blur"], ...] = ("mean", "blur")
    box_fraction: float = 0.25
    n_random_boxes: int = 8
    max_relative_gap: float = 0.1
    sanity_check_at_end: bool = False
    insensitive_above: float = 0.5

    def __post_init__(self) -> None:
        if not self.fills or any(fill not in ("mean", "blur") for fill in self.fills):
            raise ValueError(f"`fills` must be a non-empty tuple of 'mean' and/or 'blur', got {self.fills!r}.")
        if not 0 < self.box_fraction <= 1:
            raise ValueError(f"`box_fraction` must be in (0, 1], got {self.box_fraction!r}.")
        if not self.max_relative_gap > 0:
            raise ValueError(f"`max_relative_gap` must be positive, got {self.max_relative_gap!r}.")


def assess(
    model: nn.Module, images: Tensor, targets: Tensor, maps: dict[str, Tensor], settings: Faithfulness, seed: int
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Ablation curves and mass-centre ablation for every method's maps.

    Returns:
        (scalars ``faithfulness/<method>/...``, curve plots by tag ``xai/faithfulness/<method>``).
    """
    metrics: dict[str, float] = {}
    plots: dict[str, Tensor] = {}
    random_done: set[str] = set()
    for name, attributions in maps.items():
        attributions = attributions.to(images.device)
        for fill in settings.fills:
            control = fill not in random_done  # a random ranking does not depend on the method: once per fill
            curves = ablation_curves(
                model, images, attributions, targets, fractions=settings.fractions, fill=fill,
                random_control=control, generator=torch.Generator(device=images.device).manual_seed(seed),
            )
            random_done.add(fill)
            metrics.update(_curve_metrics(name, fill, curves))
            if fill == settings.fills[0]:
                plots[f"xai/faithfulness/{name}"] = _plot(curves)
        box = mass_centre_ablation(
            model, images, attributions, targets, box_fraction=settings.box_fraction, fill=settings.fills[0],
            n_random=settings.n_random_boxes, generator=torch.Generator(device=images.device).manual_seed(seed),
        )
        metrics[f"faithfulness/{name}/mass_centre_drop"] = float(box["drop"].mean())
        metrics[f"faithfulness/{name}/mass_centre_random_drop"] = float(box["random_drop"].mean())
    return metrics, plots


def _curve_metrics(name: str, fill: str, curves: dict[str, Tensor]) -> dict[str, float]:
    """``faithfulness/<method>/{deletion,insertion}_auc_<fill>`` and, once per fill,
    ``faithfulness/random/{deletion,insertion}_auc_<fill>`` (the control)."""
    out = {f"faithfulness/{name}/{kind}_auc_{fill}": float(curves[f"{kind}_auc"].mean()) for kind in ("deletion", "insertion")}
    for kind in ("deletion", "insertion"):
        if f"{kind}_random_auc" in curves:
            out[f"faithfulness/random/{kind}_auc_{fill}"] = float(curves[f"{kind}_random_auc"].mean())
    return out


def _plot(curves: dict[str, Tensor]) -> Tensor:
    fractions = curves["fractions"].float().cpu()
    series = {key: (fractions, curves[key].float().mean(dim=0).cpu()) for key in CURVE_COLOURS if key in curves}
    return line_plot(series, colours=CURVE_COLOURS)


def completeness_metrics(gaps: dict[str, Tensor], target_scores: Tensor) -> dict[str, float]:
    """Mean absolute and relative completeness gaps per method (relative to the target score)."""
    out = {}
    for name, gap in gaps.items():
        relative = gap.float().cpu() / target_scores.float().cpu().abs().clamp(min=1e-6)
        out[f"completeness/{name}/gap_mean"] = float(gap.mean())
        out[f"completeness/{name}/relative_gap_mean"] = float(relative.mean())
    return out


def sanity_check(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    methods: Sequence[AttributionMethod],
    make_context: Callable[[], MethodContext],
    *,
    settings: Faithfulness,
    seed: int = 0,
    cascade: bool = True,
) -> dict[str, Any]:
    """Compares each method's maps of the trained model with those of randomised copies.

    Returns:
        ``{method: {"spearman": ..., "ssim": ..., "insensitive": bool, "layers": [{"layer",
        "spearman", "ssim"}, ...]}}``; the top-level values are for the fully randomised copy
        (the last cascade step, or an extra ``"all"`` entry with ``cascade=False``).
        The live model is only read.
    """
    copies = randomized_copies(model, cascade=cascade, seed=seed)
    if not cascade:  # one layer at a time; the headline numbers still come from a fully randomised copy
        copies.append(("all", randomized_model(model, seed=seed)))
    report: dict[str, Any] = {}
    for method in methods:
        trained = method.attribute(model, images, targets, make_context())
        layers = []
        for layer, copy in copies:
            scores = randomization_scores(trained, method.attribute(copy.eval(), images, targets, make_context()))
            layers.append({"layer": layer, "spearman": float(scores["spearman"].mean()), "ssim": float(scores["ssim"].mean())})
        final = layers[-1] if layers else {"spearman": 1.0, "ssim": 1.0}
        report[method.name] = {
            "spearman": final["spearman"],
            "ssim": final["ssim"],
            "insensitive": final["spearman"] > settings.insensitive_above,
            "layers": layers,
        }
    return report
