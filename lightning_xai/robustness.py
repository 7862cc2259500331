"""Robustness checks of every method on demand: input invariance and fragility (settings and the check).

Like the sanity check, these judge the *methods*, not the model: a method whose maps change
under an input shift the model compensates exactly (Kindermans et al.), or move a lot under a
small perturbation that keeps the prediction (Ghorbani et al.), should not be trusted on its own.
The maths is in :mod:`lightning_xai.functional.robustness`; the monitor runs it through
``monitor.robustness_check(trainer, model)`` or ``AttributionMonitor(robustness=RobustnessCheck())``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_positive_int, is_real_number
from lightning_xai.functional.robustness import fragility, input_invariance
from lightning_xai.methods import AttributionMethod, MethodContext

__all__ = ["RobustnessCheck", "robustness_check"]


@dataclass(frozen=True)
class RobustnessCheck:
    """Settings of the robustness checks.

    Args:
        at_end: run them when ``fit`` ends (else only when ``monitor.robustness_check(...)`` is called).
        shift: the constant added to every input for the input-invariance check.
        epsilon: the perturbation size for fragility, as a share of the probes' value range.
        steps: random-sign perturbations tried per probe.
        top_k: the top fraction of pixels compared.
        min_rank_correlation: a method fails a check when its mean rank correlation falls below this.

    Example:
        >>> RobustnessCheck().epsilon
        0.03
    """

    at_end: bool = True
    shift: float = -1.0
    epsilon: float = 0.03
    steps: int = 8
    top_k: float = 0.1
    min_rank_correlation: float = 0.8

    def __post_init__(self) -> None:
        if not is_real_number(self.shift):
            raise TypeError(f"`shift` must be a number, got {self.shift!r}.")
        if not is_real_number(self.epsilon) or not 0 < self.epsilon <= 1:
            raise ValueError(f"`epsilon` must be a share of the value range in (0, 1], got {self.epsilon!r}.")
        check_positive_int(self.steps, "steps")
        if not is_real_number(self.top_k) or not 0 < self.top_k <= 1:
            raise ValueError(f"`top_k` must be a fraction in (0, 1], got {self.top_k!r}.")
        if not is_real_number(self.min_rank_correlation) or not -1 <= self.min_rank_correlation <= 1:
            raise ValueError(
                f"`min_rank_correlation` must be a rank correlation in [-1, 1], got {self.min_rank_correlation!r}."
            )


def robustness_check(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    methods: Mapping[str, AttributionMethod],
    make_context: Callable[[], MethodContext],
    *,
    settings: RobustnessCheck,
    seed: int = 0,
) -> dict[str, Any]:
    """Input invariance and fragility of each method's maps on ``images`` ``[P, C, H, W]``.

    Returns:
        ``{key: {"input_invariance_spearman", "input_invariant", "fragility_topk_iou",
        "fragility_spearman", "fails": [names of the failed checks]}}`` (plain numbers, JSON-safe).

    Example:
        >>> from lightning_xai import Saliency
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)).eval()
        >>> context = lambda: MethodContext(torch.Generator().manual_seed(0))
        >>> report = robustness_check(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), {"saliency": Saliency()},
        ...                           context, settings=RobustnessCheck(steps=2))
        >>> report["saliency"]["input_invariant"]
        True
    """
    spread = float(images.max() - images.min()) or 1.0
    value_range = (float(images.min()), float(images.max()))
    report: dict[str, Any] = {}
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # building the shifted copy's layer draws from the global RNG
        for key, method in methods.items():
            report[key] = _check_method(
                model, images, targets, method, make_context, settings, seed, spread, value_range
            )
    return report


def _check_method(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    method: AttributionMethod,
    make_context: Callable[[], MethodContext],
    settings: RobustnessCheck,
    seed: int,
    spread: float,
    value_range: tuple[float, float],
) -> dict[str, Any]:
    """Both checks for one method: plain numbers and the names of the failed checks."""

    def explain(module: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        return method.attribute(module, x, t, make_context())

    invariance = input_invariance(model, images, targets, explain, shift=settings.shift)
    fragile = fragility(
        model,
        images,
        targets,
        explain,
        epsilon=settings.epsilon * spread,
        steps=settings.steps,
        k=settings.top_k,
        value_range=value_range,
        generator=torch.Generator(device=images.device).manual_seed(seed),
    )
    values = {
        "input_invariance_spearman": float(invariance.rank_correlation.mean()),
        "input_invariant": bool(invariance.invariant),
        "fragility_topk_iou": float(fragile.top_k_overlap.mean()),
        "fragility_spearman": float(fragile.rank_correlation.mean()),
    }
    fails = []
    if not invariance.invariant and values["input_invariance_spearman"] < settings.min_rank_correlation:
        fails.append("input_invariance")
    if values["fragility_spearman"] < settings.min_rank_correlation:
        fails.append("fragility")
    return {**values, "fails": fails}
