"""Adaptive (coarse-to-fine) occlusion: occlusion-quality maps with far fewer forward passes.

Exact occlusion evaluates the model once per (image, window placement) pair. Most of those
placements lie where the map is flat and low; only the top of the map needs the fine grid.
So, per image:

1. run occlusion on a coarse grid: window and stride ``coarse_factor`` times larger
   (about ``coarse_factor**2`` times fewer placements);
2. rank the coarse map's pixels and keep the top ``refine_fraction`` of them;
3. evaluate the exact drop of every *fine* placement whose window overlaps those pixels;
4. estimate the drop of every other fine placement from the coarse map: its mean over the
   window's area, mapped onto the fine drops' scale by a least-squares line fitted (per
   image) on the refined placements;
5. average the drops over the windows covering each pixel, exactly like :func:`occlusion`.

With ``refine_fraction=1.0`` every fine placement is refined and the map equals
:func:`occlusion`'s (the coarse pass is then wasted work).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._batching import default_batch_size
from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_optional_batch_size,
    check_positive_int,
    check_scores,
    gather_scores,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import ConstantBaseline, constant_baseline
from lightning_xai.functional.occlusion import (
    PairRunner,
    check_autocast_dtype,
    check_finite,
    check_window_and_stride,
    precision,
    spread_over_windows,
    window_counts,
)

Pair = tuple[int, int]


class AdaptiveOcclusionResult(NamedTuple):
    """What :func:`adaptive_occlusion_with_counts` returns.

    Attributes:
        attribution: the maps ``[N, 1, H, W]``.
        forward_passes: images the model evaluated: the N unperturbed ones, the coarse
            placements and the refined fine placements.
        exact_forward_passes: images exact :func:`occlusion` evaluates for the same call.
    """

    attribution: Tensor
    forward_passes: int
    exact_forward_passes: int


def adaptive_occlusion(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    baseline: ConstantBaseline = 0.0,
    coarse_factor: int = 2,
    refine_fraction: float = 0.25,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Occlusion map for each image, computed exactly only where the coarse map is highest.

    An opt-in, approximate and faster alternative to :func:`occlusion`; the arguments they
    share mean the same. See the module docstring for the algorithm, and
    :func:`adaptive_occlusion_with_counts` for the number of forward passes it saved.

    Args:
        forward_fn: model or function mapping images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        window: the fine occluding window ``(height, width)``, or one int for a square.
        stride: the fine step between placements; ``None`` uses half the window (rounded up).
        baseline: what replaces the window (as for :func:`occlusion`).
        coarse_factor: how many times larger the coarse window and stride are (int >= 2;
            clipped to the image size).
        refine_fraction: fraction of each image's pixels, the highest of the coarse map,
            whose overlapping fine placements are evaluated exactly; in (0, 1].
        batch_size: occluded images per forward pass; ``None`` chooses from the device and
            image size.
        autocast_dtype: ``None`` (exact arithmetic), or ``torch.bfloat16`` / ``torch.float16``
            to run the forward passes under ``torch.autocast`` (as for :func:`occlusion`).

    Returns:
        ``[N, 1, H, W]`` in ``inputs``' dtype: the mean (exact or estimated) score drop over
        the fine windows covering each pixel.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
        >>> adaptive_occlusion(net, torch.rand(2, 1, 8, 8), window=2, stride=2).shape
        torch.Size([2, 1, 8, 8])
    """
    return adaptive_occlusion_with_counts(
        forward_fn, inputs, target, window=window, stride=stride, baseline=baseline, coarse_factor=coarse_factor,
        refine_fraction=refine_fraction, batch_size=batch_size, autocast_dtype=autocast_dtype,
    ).attribution


def adaptive_occlusion_with_counts(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    baseline: ConstantBaseline = 0.0,
    coarse_factor: int = 2,
    refine_fraction: float = 0.25,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> AdaptiveOcclusionResult:
    """:func:`adaptive_occlusion`, also returning how many images the model evaluated.

    Args:
        forward_fn, inputs, target, window, stride, baseline, coarse_factor, refine_fraction,
            batch_size, autocast_dtype: as for :func:`adaptive_occlusion`.

    Returns:
        ``AdaptiveOcclusionResult(attribution [N, 1, H, W], forward_passes, exact_forward_passes)``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3)).eval()
        >>> result = adaptive_occlusion_with_counts(net, torch.rand(1, 1, 16, 16), window=2, stride=2, coarse_factor=4)
        >>> result.attribution.shape, result.exact_forward_passes, result.forward_passes < 40
        (torch.Size([1, 1, 16, 16]), 65, True)
    """
    check_images(inputs)
    fine = check_window_and_stride(inputs, window, stride)
    coarse_factor = check_positive_int(coarse_factor, "coarse_factor", minimum=2)
    refine_fraction = _check_refine_fraction(refine_fraction)
    autocast_dtype = check_autocast_dtype(autocast_dtype)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    coarse = coarse_grid(tuple(inputs.shape[-2:]), *fine, coarse_factor)  # type: ignore[arg-type]
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        fill = constant_baseline(baseline, images).expand_as(images)
        with precision(images, autocast_dtype):
            scores = check_scores(forward_fn(images), images.shape[0])
        targets = resolve_targets(target, scores)
        run = PairRunner(forward_fn, images, fill, targets, gather_scores(scores, targets), batch_size, autocast_dtype)
        coarse_map = _coarse_map(run, *coarse)
        drops, refined = _fine_drops(run, coarse_map, *fine, refine_fraction)
        attribution = spread_over_windows(drops, images.shape[-2:], *fine)
    check_finite(attribution)
    n_images, size = images.shape[0], tuple(images.shape[-2:])
    passes = n_images * (1 + math.prod(window_counts(size, *coarse))) + refined  # type: ignore[arg-type]
    exact = n_images * (1 + math.prod(window_counts(size, *fine)))  # type: ignore[arg-type]
    return AdaptiveOcclusionResult(attribution.to(inputs.dtype), passes, exact)


def coarse_grid(size: Pair, window: Pair, stride: Pair, coarse_factor: int) -> tuple[Pair, Pair]:
    """The coarse window and stride: ``coarse_factor`` times the fine ones, clipped to the image.

    Example:
        >>> coarse_grid((32, 32), (8, 8), (4, 4), 2), coarse_grid((12, 10), (4, 4), (2, 2), 3)
        (((16, 16), (8, 8)), ((12, 10), (6, 6)))
    """
    coarse_window = tuple(min(w * coarse_factor, s) for w, s in zip(window, size))
    coarse_stride = tuple(min(st * coarse_factor, w) for st, w in zip(stride, coarse_window))
    return coarse_window, coarse_stride  # type: ignore[return-value]


def _check_refine_fraction(refine_fraction: object) -> float:
    if isinstance(refine_fraction, bool) or not isinstance(refine_fraction, (int, float)):
        raise TypeError(
            f"`refine_fraction` must be a number in (0, 1], got {refine_fraction!r} ({type(refine_fraction).__name__})."
        )
    if not 0 < refine_fraction <= 1:
        raise ValueError(f"`refine_fraction` must be a number in (0, 1], got {refine_fraction!r}.")
    return float(refine_fraction)


def _coarse_map(run: PairRunner, window: Pair, stride: Pair) -> Tensor:
    """Exact occlusion on the coarse grid: ``[N, 1, H, W]`` in float32."""
    n_images, size = run.images.shape[0], tuple(run.images.shape[-2:])
    rows, cols = window_counts(size, window, stride)  # type: ignore[arg-type]
    flat = torch.arange(n_images * rows * cols, device=run.images.device)
    drops = run(flat // (rows * cols), flat % (rows * cols), cols, window, stride).view(n_images, rows, cols)
    coarse_map = spread_over_windows(drops, size, window, stride)  # type: ignore[arg-type]
    check_finite(coarse_map)
    return coarse_map


def _fine_drops(run: PairRunner, coarse_map: Tensor, window: Pair, stride: Pair, refine_fraction: float) -> tuple[Tensor, int]:
    """Fine drops ``[N, rows, cols]``: exact where refined, estimated elsewhere; and the refined count."""
    size = tuple(coarse_map.shape[-2:])
    cols = window_counts(size, window, stride)[1]  # type: ignore[arg-type]
    top = _top_pixels(coarse_map, refine_fraction)
    refined = _window_sums(top, window, stride) > 0
    estimates = _window_sums(coarse_map, window, stride) / _window_sums(torch.ones_like(coarse_map[:1]), window, stride)
    image_index, window_index = refined.flatten(1).nonzero(as_tuple=True)
    exact = run(image_index, window_index, cols, window, stride)
    drops = _calibrated(estimates, refined, exact)
    drops[refined] = exact
    return drops, int(image_index.shape[0])


def _top_pixels(maps: Tensor, fraction: float) -> Tensor:
    """Float mask ``[N, 1, H, W]``: 1 on each map's top ``fraction`` of pixels (ties at the cut included)."""
    flat = maps.flatten(1)
    count = max(1, math.ceil(round(fraction * flat.shape[1], 6)))
    cut = flat.topk(count, dim=1).values[:, -1:]
    return (flat >= cut).to(maps.dtype).view_as(maps)


def _window_sums(maps: Tensor, window: Pair, stride: Pair) -> Tensor:
    """Sum of ``maps`` ``[N, 1, H, W]`` over each fine placement's (border-clipped) window: ``[N, rows, cols]``."""
    height, width = maps.shape[-2:]
    rows, cols = window_counts((height, width), window, stride)
    pad_bottom = (rows - 1) * stride[0] + window[0] - height
    pad_right = (cols - 1) * stride[1] + window[1] - width
    padded = F.pad(maps, (0, max(0, pad_right), 0, max(0, pad_bottom)))
    ones = torch.ones(1, 1, *window, dtype=maps.dtype, device=maps.device)
    return F.conv2d(padded, ones, stride=stride)[:, 0, :rows, :cols]


def _calibrated(estimates: Tensor, refined: Tensor, exact: Tensor) -> Tensor:
    """Maps each image's coarse estimates onto the fine drops' scale: a least-squares line
    ``exact ≈ slope * estimate + offset`` over that image's refined placements.

    Coarse windows hide more of the image, so their drops are larger than fine ones; without
    this, unrefined placements would outrank refined ones. An image with fewer than two
    refined placements, or a fit that is not increasing, keeps its estimates unchanged.
    """
    n_images = estimates.shape[0]
    x = torch.zeros_like(estimates).masked_scatter_(refined, estimates[refined])
    y = torch.zeros_like(estimates).masked_scatter_(refined, exact)
    weight = refined.to(estimates.dtype)
    count = weight.flatten(1).sum(1)
    mean_x = x.flatten(1).sum(1) / count.clamp(min=1)
    mean_y = y.flatten(1).sum(1) / count.clamp(min=1)
    centred = (x - mean_x.view(-1, 1, 1)) * weight
    var_x = (centred**2).flatten(1).sum(1)
    cov = (centred * (y - mean_y.view(-1, 1, 1))).flatten(1).sum(1)
    slope = cov / var_x.clamp(min=1e-30)
    usable = (count >= 2) & (var_x > 0) & (slope > 0)
    slope = torch.where(usable, slope, torch.ones(n_images, device=slope.device))
    offset = torch.where(usable, mean_y - slope * mean_x, torch.zeros_like(mean_y))
    return estimates * slope.view(-1, 1, 1) + offset.view(-1, 1, 1)
