"""Integrated gradients (Sundararajan et al., 2017), as Captum's ``IntegratedGradients``.

The input gradient is integrated along the straight line from a baseline ``x'`` to the input
``x`` with a quadrature rule, and (by default) multiplied by ``x - x'``.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_positive_int,
    check_scores,
    gather_scores,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import ConstantBaseline, ValueRange, constant_baseline
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, default_batch_size
from lightning_xai.functional.gradients import check_finite_attribution, sum_sample_gradients

__all__ = [
    "INTEGRATION_METHODS",
    "IntegrationMethod",
    "checked_scores",
    "completeness_gap",
    "integrated_gradients",
    "integration_rule",
]

IntegrationMethod = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
INTEGRATION_METHODS: tuple[str, ...] = get_args(IntegrationMethod)


def integration_rule(n_steps: int, method: str) -> tuple[Tensor, Tensor]:
    """Points ``alpha`` in [0, 1] and their weights, exactly as Captum computes them (float64).

    Example:
        >>> alphas, weights = integration_rule(3, "riemann_trapezoid")
        >>> alphas.tolist(), [round(w, 4) for w in weights.tolist()]
        ([0.0, 0.5, 1.0], [0.1667, 0.3333, 0.1667])
    """
    if method not in INTEGRATION_METHODS:
        raise ValueError(f"`method` must be one of {list(INTEGRATION_METHODS)}, got {method!r}.")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    if n_steps < 2:
        raise ValueError(f"`n_steps` must be >= 2 for the Riemann rules, got {n_steps}.")
    steps = torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)
    start, stop = {
        "left": (0.0, 1 - 1 / n_steps),
        "right": (1 / n_steps, 1.0),
        "middle": (1 / (2 * n_steps), 1 - 1 / (2 * n_steps)),
    }.get(method.split("_")[1], (0.0, 1.0))
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
    alphas = torch.tensor(torch.linspace(start, stop, n_steps).tolist(), dtype=torch.float64)
    return alphas, steps


def integrated_gradients(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    baseline: ConstantBaseline = 0.0,
    n_steps: int = 50,
    method: IntegrationMethod = "gausslegendre",
    value_range: ValueRange = None,
    batch_size: BatchSize | None = None,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients from a constant baseline, as Captum's ``IntegratedGradients``.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        baseline: a number, a tensor (``[C]``, ``[C, H, W]``, ``[N, C, H, W]``), or ``"zero"``
            (black for images in [0, 1]), ``"max_distance"``, ``"blur"``, ``"mean"``.
        n_steps: points on the path.
        method: quadrature rule: ``"gausslegendre"`` or a ``"riemann_*"`` rule.
        value_range: valid pixel range for ``"max_distance"`` (default: per-channel min/max).
        batch_size: path points per forward+backward pass; ``None`` chooses automatically. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.
        multiply_by_inputs: multiply the integrated gradient by ``x - x'`` (the paper's
            attribution). ``False`` returns the integrated gradient alone (Captum's
            ``IntegratedGradients(..., multiply_by_inputs=False)``: a "local" attribution).
        return_delta: also return each image's completeness gap ``|sum(phi) - (f(x) - f(x'))|``;
            needs ``multiply_by_inputs=True`` (completeness holds only for the global attribution).

    Returns:
        Attributions ``[N, C, H, W]``, and with ``return_delta`` the gaps ``[N]``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> attributions, gap = integrated_gradients(net, torch.rand(2, 1, 2, 2), 0, return_delta=True)
        >>> attributions.shape, bool((gap < 1e-5).all())
        (torch.Size([2, 1, 2, 2]), True)
    """
    check_images(inputs)
    n_steps = check_positive_int(n_steps, "n_steps")
    check_multiply_by_inputs(multiply_by_inputs, return_delta)
    alphas, weights = integration_rule(n_steps, method)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(forward_fn, inputs.device):
        images = inputs.detach().clone()
        start = constant_baseline(baseline, images, value_range=value_range).expand_as(images)
        scores = checked_scores(forward_fn, images)
        targets = resolve_targets(target, scores)
        alphas = alphas.to(device=images.device, dtype=images.dtype)
        weights = weights.to(device=images.device, dtype=images.dtype)

        def path_points(image_index: Tensor, step_index: Tensor) -> tuple[Tensor, Tensor]:
            alpha = alphas[step_index].view(-1, 1, 1, 1)
            base = start[image_index]
            return base + alpha * (images[image_index] - base), weights[step_index].view(-1, 1, 1, 1)

        total = sum_sample_gradients(
            forward_fn, images, targets, n_samples=n_steps, make_samples=path_points, batch_size=batch_size
        )
        attributions = check_finite_attribution(total * (images - start).float() if multiply_by_inputs else total)
        if not return_delta:
            return attributions.to(inputs.dtype)
        with torch.no_grad():
            start_scores = gather_scores(checked_scores(forward_fn, start.contiguous()), targets)
        gap = completeness_gap(attributions, gather_scores(scores, targets), start_scores)
    return attributions.to(inputs.dtype), gap


def completeness_gap(attributions: Tensor, input_scores: Tensor, baseline_scores: Tensor) -> Tensor:
    """``|sum(attributions) - (f(x) - f(x'))|`` per image, ``[N]`` float32.

    Example:
        >>> completeness_gap(torch.ones(1, 1, 2, 2), torch.tensor([5.0]), torch.tensor([2.0])).tolist()
        [1.0]
    """
    return (attributions.float().flatten(1).sum(dim=1) - (input_scores.float() - baseline_scores.float())).abs()


def check_multiply_by_inputs(multiply_by_inputs: object, return_delta: object) -> None:
    """Checks ``multiply_by_inputs`` (a bool) and that ``return_delta`` is not asked without it.

    Example:
        >>> check_multiply_by_inputs(False, False)
    """
    if not isinstance(multiply_by_inputs, bool):
        raise TypeError(f"`multiply_by_inputs` must be a bool, got {type(multiply_by_inputs).__name__}.")
    if return_delta and not multiply_by_inputs:
        raise ValueError(
            "`return_delta=True` needs `multiply_by_inputs=True`: the completeness gap is defined for "
            "attributions multiplied by (inputs - baselines), got multiply_by_inputs=False."
        )


def checked_scores(forward_fn: ForwardFn, images: Tensor) -> Tensor:
    """Scores ``[N, K]`` of ``images`` ``[N, C, H, W]`` without gradients, shape-checked."""
    with torch.no_grad():
        return check_scores(forward_fn(images), images.shape[0])
