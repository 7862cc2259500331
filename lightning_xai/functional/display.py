"""Turning any attribution into a display map in [0, 1]."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_xai.functional._checks import check_images, is_real_number

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "display_map",
]

Reduction = Literal["abs_sum", "positive", "signed"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


def display_map(attributions: Tensor, *, reduce: Reduction = "abs_sum", clip_percentile: float = 99.0) -> Tensor:
    """Per-image display map in [0, 1] from attributions ``[N, C, H, W]`` (any C).

    Args:
        attributions: ``[N, C, H, W]``, e.g. the output of any method in this package.
        reduce: how channels become one value: ``"abs_sum"`` (``|sum over channels|``, the usual
            choice for gradients), ``"positive"`` (the positive part of the channel sum:
            evidence *for* the target), ``"signed"`` (the channel sum mapped so that 0.5 is zero,
            for a diverging colour map).
        clip_percentile: each image is divided by this percentile of its absolute values and
            clipped, so a few extreme pixels do not wash the map out; 100 divides by the maximum.

    Returns:
        ``[N, 1, H, W]`` float32 in [0, 1]; an all-zero map stays zero (0.5 for ``"signed"``).

    Example:
        >>> maps = display_map(torch.tensor([[[[1.0, -3.0], [0.0, 2.0]]]]), clip_percentile=100)
        >>> [round(value, 3) for value in maps.flatten().tolist()]
        [0.333, 1.0, 0.0, 0.667]
    """
    check_images(attributions, "attributions")
    if reduce not in REDUCTIONS:
        raise ValueError(f"`reduce` must be one of {list(REDUCTIONS)}, got {reduce!r}.")
    if not is_real_number(clip_percentile) or not 0 < clip_percentile <= 100:
        raise ValueError(f"`clip_percentile` must be a number in (0, 100], got {clip_percentile!r}.")
    summed = attributions.detach().float().sum(dim=1, keepdim=True)
    values = {"abs_sum": summed.abs(), "positive": summed.clamp(min=0), "signed": summed}[reduce]
    scale = torch.quantile(values.abs().flatten(1), clip_percentile / 100.0, dim=1).view(-1, 1, 1, 1)
    scaled = values / torch.where(scale > 0, scale, torch.ones_like(scale))
    if reduce == "signed":
        return (scaled.clamp(-1, 1) + 1) / 2
    return scaled.clamp(0, 1)
