"""Smallest sufficient masks: extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019).

For each image and each requested area ``a``, a smooth mask ``m`` covering about a fraction
``a`` of the image is optimised so that the *preserved* image ``m * x + (1 - m) * x_b``
(``x_b``: the baseline, a blurred copy by default) keeps the target score as high as possible.
The area is enforced by the ranking loss of the paper: the mask's sorted values are pulled
towards a step vector with ``(1 - a) * H * W`` zeros followed by ones, with a weight that
grows over the steps. The mask is a low-resolution grid upsampled bilinearly and blurred, so
it stays smooth and cannot become adversarial pixel noise (Fong & Vedaldi, 2017, "meaningful
perturbation").

The score of a masked image is reported as the fraction of the score kept,
``(f(x_m) - f(x_b)) / (f(x) - f(x_b))`` (1 when the image's score is not above the
baseline's), and the smallest tested area keeping at least ``keep`` (0.9) is each image's
"smallest sufficient region".

Cost: ``steps`` forward+backward passes of ``N * len(areas)`` images, plus three forward passes.
Only the mask is optimised, with a private Adam state and gradients from ``torch.autograd.grad``
with respect to the mask alone; the model's parameters and ``.grad`` are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_positive_int,
    gather_scores,
    is_real_number,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import ConstantBaseline, constant_baseline, gaussian_blur
from lightning_xai.functional.gradients import private_generator, targets_from_forward
from lightning_xai.functional.integrated_gradients import checked_scores

__all__ = ["ExtremalMasks", "extremal_mask"]


@dataclass(frozen=True)
class ExtremalMasks:
    """Result of :func:`extremal_mask`.

    Attributes:
        areas: the tested areas, ascending.
        masks: ``[N, A, H, W]`` in [0, 1], one mask per image and area.
        kept: ``[N, A]``, fraction of the target score each mask keeps (see the module notes).
        deleted_kept: ``[N, A]``, fraction kept by the complement ``1 - m`` (low: the region is needed).
        smallest_area: ``[N]``, the smallest area keeping at least ``keep``; the largest tested
            area where none does (then ``sufficient`` is False).
        sufficient: ``[N]`` bool, whether some tested area keeps at least ``keep``.
        best: ``[N, 1, H, W]``, the mask of ``smallest_area``.
    """

    areas: tuple[float, ...]
    masks: Tensor
    kept: Tensor
    deleted_kept: Tensor
    smallest_area: Tensor
    sufficient: Tensor
    best: Tensor


def extremal_mask(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    areas: Sequence[float] = (0.05, 0.1, 0.2),
    steps: int = 300,
    grid_step: int | None = None,
    baseline: ConstantBaseline = "blur",
    keep: float = 0.9,
    learning_rate: float = 0.1,
    area_weight: float = 2.0,
    generator: torch.Generator | None = None,
) -> ExtremalMasks:
    """Smallest smooth masks that keep the target score (extremal perturbations, "preserve").

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        areas: mask areas to try, each a fraction of the image in (0, 1).
        steps: optimisation steps (one forward+backward pass of ``N * len(areas)`` images each).
        grid_step: pixels per cell of the mask's parameter grid (and the blur's sigma);
            ``None`` uses an eighth of the shorter image side (at least 1).
        baseline: what the masked-out part becomes (see :func:`~lightning_xai.functional.constant_baseline`).
        keep: the fraction of the score a mask must keep to be sufficient.
        learning_rate: Adam step size on the mask parameters (values in [0, 1]).
        area_weight: initial weight of the area loss; it grows 16-fold over the steps.
        generator: source of the small random perturbation of the initial masks (breaks ties);
            ``None`` uses a private generator seeded with 0. The global RNG is never touched.

    Returns:
        An :class:`ExtremalMasks`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()
        >>> result = extremal_mask(net, torch.rand(2, 1, 8, 8), 0, areas=(0.1, 0.3), steps=5, baseline="zero")
        >>> result.masks.shape, result.best.shape, result.kept.shape
        (torch.Size([2, 2, 8, 8]), torch.Size([2, 1, 8, 8]), torch.Size([2, 2]))
    """
    check_images(inputs)
    area_list = _check_areas(areas)
    steps = check_positive_int(steps, "steps")
    _check_fraction(keep, "keep", upper_inclusive=True)
    for value, name in ((learning_rate, "learning_rate"), (area_weight, "area_weight")):
        if not is_real_number(value) or not value > 0:
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    cell = _grid_step(grid_step, inputs)
    generator = private_generator(generator, inputs.device)
    with leave_no_trace(forward_fn, inputs.device):
        images = inputs.detach().clone()
        problem = _Problem(forward_fn, images, target, baseline, area_list, cell)
        masks = problem.optimize(steps, float(learning_rate), float(area_weight), generator)
        return problem.summarise(masks, float(keep))


class _Problem:
    """One optimisation: the images repeated once per area, their baselines and reference scores."""

    def __init__(
        self,
        forward_fn: ForwardFn,
        images: Tensor,
        target: TargetLike,
        baseline: ConstantBaseline,
        areas: list[float],
        cell: int,
    ) -> None:
        self.forward_fn, self.images, self.areas, self.cell = forward_fn, images, areas, cell
        self.targets = targets_from_forward(forward_fn, images, target)
        self.fill = constant_baseline(baseline, images).expand_as(images)
        with torch.no_grad():
            self.full = gather_scores(checked_scores(forward_fn, images), self.targets).float()
            self.empty = gather_scores(checked_scores(forward_fn, self.fill.contiguous()), self.targets).float()
        n_areas, (height, width) = len(areas), images.shape[-2:]
        self.grid = (math.ceil(height / cell), math.ceil(width / cell))
        pixels = height * width
        # the ranking loss's step vectors, one per (image, area) row: (1 - a) * pixels zeros, then ones
        ranks = torch.arange(pixels, device=images.device).view(1, -1)
        starts = torch.tensor([round((1 - a) * pixels) for a in areas], device=images.device).view(-1, 1)
        self.reference = (ranks >= starts).float().repeat(images.shape[0], 1)
        self.rows = torch.arange(images.shape[0] * n_areas, device=images.device) // n_areas

    def masks_from(self, parameters: Tensor) -> Tensor:
        """Smooth masks ``[N * A, 1, H, W]`` in [0, 1] from grid parameters ``[N * A, 1, h, w]``."""
        size = tuple(self.images.shape[-2:])
        return gaussian_blur(F.interpolate(parameters, size=size, mode="bilinear", align_corners=False), self.cell / 2)

    def kept(self, masks: Tensor) -> Tensor:
        """Fraction of the target score each row's preserved image keeps, ``[N * A]``."""
        rows = self.rows
        preserved = masks * self.images[rows] + (1 - masks) * self.fill[rows]
        scores = gather_scores(self.forward_fn(preserved), self.targets[rows]).float()
        gap = self.full[rows] - self.empty[rows]
        return torch.where(gap > 0, (scores - self.empty[rows]) / gap.clamp(min=1e-12), torch.ones_like(scores))

    def optimize(self, steps: int, learning_rate: float, area_weight: float, generator: torch.Generator) -> Tensor:
        noise = torch.rand((len(self.rows), 1, *self.grid), generator=generator, device=generator.device).to(
            self.images.device
        )
        parameters = (0.5 + 0.01 * noise).requires_grad_(True)
        optimizer = torch.optim.Adam([parameters], lr=learning_rate)
        for step in range(steps):
            weight = area_weight * 16.0 ** (step / max(steps - 1, 1))
            masks = self.masks_from(parameters)
            ranked = masks.flatten(1).sort(dim=1).values
            area_loss = (ranked - self.reference).square().mean(dim=1)
            loss = (-self.kept(masks) + weight * area_loss).sum()
            (parameters.grad,) = torch.autograd.grad(loss, parameters)
            optimizer.step()
            with torch.no_grad():
                parameters.clamp_(0.0, 1.0)
        return self.masks_from(parameters.detach()).detach()

    def summarise(self, masks: Tensor, keep: float) -> ExtremalMasks:
        n_images, n_areas = self.images.shape[0], len(self.areas)
        with torch.no_grad():
            kept = self.kept(masks).view(n_images, n_areas)
            deleted = self.kept(1 - masks).view(n_images, n_areas)
        masks = masks.view(n_images, n_areas, *masks.shape[-2:])
        enough = kept >= keep
        sufficient = enough.any(dim=1)
        first = torch.where(
            sufficient, enough.float().argmax(dim=1), torch.full_like(sufficient, n_areas - 1, dtype=torch.long)
        )
        area_values = torch.tensor(self.areas, device=masks.device)
        best = masks[torch.arange(n_images, device=masks.device), first].unsqueeze(1)
        return ExtremalMasks(tuple(self.areas), masks, kept, deleted, area_values[first], sufficient, best)


def _check_areas(areas: object) -> list[float]:
    values = list(areas) if isinstance(areas, Sequence) and not isinstance(areas, str) else None
    if not values or not all(is_real_number(a) and 0 < a < 1 for a in values):
        raise ValueError(f"`areas` must be a non-empty list of fractions in (0, 1), got {areas!r}.")
    return sorted(float(a) for a in values)


def _check_fraction(value: object, name: str, *, upper_inclusive: bool) -> None:
    if not is_real_number(value) or not (0 < value < 1 or (upper_inclusive and value == 1)):
        raise ValueError(f"`{name}` must be a number in (0, 1], got {value!r}.")


def _grid_step(grid_step: object, inputs: Tensor) -> int:
    if grid_step is None:
        return max(1, min(inputs.shape[-2:]) // 8)
    return check_positive_int(grid_step, "grid_step")
