"""Adaptive (coarse-to-fine) occlusion: occlusion-quality maps with fewer forward passes.

Exact occlusion evaluates the model once per (image, window placement) pair. Most of those
placements lie where the map is flat and low; only the top of the map needs the fine grid.
So, per image:

1. a coarse pass estimates the drop of every fine placement (two ways, ``coarse_mode``):

   * ``"subsample"`` (default): evaluate every ``coarse_factor``-th fine placement along each
     axis (the last row and column too) and interpolate the drops linearly in between.
     The evaluated drops are exact fine drops, kept as they are.
   * ``"enlarge"``: run occlusion with a window and stride ``coarse_factor`` times larger;
     a fine placement's estimate is the coarse map's mean over its window, mapped onto the
     fine drops' scale by a least-squares line fitted (per image) on the refined placements
     (a larger window hides more and drops the score more). Cheaper, but much less accurate
     (see ``benchmarks/bench_adaptive.py``).

2. the estimates are averaged over windows into a map; its top ``refine_fraction`` of pixels
   (ranked per image, ties at the cut included) are kept;
3. every fine placement whose window overlaps those pixels is evaluated exactly;
4. all drops are averaged over the windows covering each pixel, exactly like :func:`occlusion`.

With ``refine_fraction=1.0`` every fine placement is evaluated and the map equals
:func:`occlusion`'s (up to float rounding); the coarse pass is then wasted work.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, TypeGuard, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_positive_int,
    is_real_number,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import ConstantBaseline, constant_baseline
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, default_batch_size
from lightning_xai.functional.occlusion import (
    PairRunner,
    check_autocast_dtype,
    check_finite,
    check_window_and_stride,
    spread_over_windows,
    window_counts,
)

__all__ = [
    "AdaptiveOcclusionResult",
    "COARSE_MODES",
    "CoarseMode",
    "Pair",
    "adaptive_occlusion",
    "adaptive_occlusion_with_counts",
    "coarse_grid",
]

Pair = tuple[int, int]
CoarseMode = Literal["subsample", "enlarge"]
COARSE_MODES: tuple[str, ...] = get_args(CoarseMode)


class AdaptiveOcclusionResult(NamedTuple):
    """What :func:`adaptive_occlusion_with_counts` returns.

    Attributes:
        attribution: the maps ``[N, 1, H, W]``.
        forward_passes: images the model evaluated: the N unperturbed ones (twice with
            ``autocast_dtype`` and ``target=None``), the coarse placements and the refined
            fine placements.
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
    coarse_mode: CoarseMode = "subsample",
    batch_size: BatchSize | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Occlusion map for each image, computed exactly only where a coarse estimate is highest.

    An opt-in, approximate and faster alternative to :func:`occlusion`; the arguments they
    share mean the same. See the module docstring for the algorithm, and
    :func:`adaptive_occlusion_with_counts` for the number of forward passes it used.

    Args:
        forward_fn: model or function mapping images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        window: the fine occluding window ``(height, width)``, or one int for a square.
        stride: the fine step between placements; ``None`` uses half the window (rounded up).
        baseline: what replaces the window (as for :func:`occlusion`).
        coarse_factor: how much coarser the first pass is (int >= 2): every
            ``coarse_factor``-th placement (``"subsample"``), or a window and stride that
            many times larger, clipped to the image (``"enlarge"``).
        refine_fraction: fraction of each image's pixels, the highest of the coarse estimate,
            whose overlapping fine placements are evaluated exactly; in (0, 1].
        coarse_mode: ``"subsample"`` or ``"enlarge"``: how the coarse pass estimates the
            drops (see the module docstring).
        batch_size: occluded images per forward pass; ``None`` chooses from the device and image size. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.
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
        forward_fn,
        inputs,
        target,
        window=window,
        stride=stride,
        baseline=baseline,
        coarse_factor=coarse_factor,
        refine_fraction=refine_fraction,
        coarse_mode=coarse_mode,
        batch_size=batch_size,
        autocast_dtype=autocast_dtype,
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
    coarse_mode: CoarseMode = "subsample",
    batch_size: BatchSize | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> AdaptiveOcclusionResult:
    """:func:`adaptive_occlusion`, also returning how many images the model evaluated.

    Args:
        forward_fn, inputs, target, window, stride, baseline, coarse_factor, refine_fraction,
            coarse_mode, batch_size, autocast_dtype: as for :func:`adaptive_occlusion`.

    Returns:
        ``AdaptiveOcclusionResult(attribution [N, 1, H, W], forward_passes, exact_forward_passes)``.

    Example:
        >>> from lightning_xai.functional import occlusion
        >>> def net(x):  # class 0 only looks at the top-left quarter of the image
        ...     return torch.stack([x[:, :, :8, :8].sum(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3))], dim=1)
        >>> images = torch.ones(1, 1, 16, 16)
        >>> result = adaptive_occlusion_with_counts(net, images, 0, window=2, stride=2, coarse_factor=4)
        >>> result.forward_passes, result.exact_forward_passes
        (25, 65)
        >>> torch.equal(result.attribution, occlusion(net, images, 0, window=2, stride=2))
        True
    """
    check_images(inputs)
    fine = check_window_and_stride(inputs, window, stride)
    coarse_factor = check_positive_int(coarse_factor, "coarse_factor", minimum=2)
    refine_fraction = _check_refine_fraction(refine_fraction)
    autocast_dtype = check_autocast_dtype(autocast_dtype)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    coarse_mode = _check_coarse_mode(coarse_mode)
    size: Pair = (inputs.shape[-2], inputs.shape[-1])
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        fill = constant_baseline(baseline, images).expand_as(images)
        run = PairRunner(forward_fn, images, fill, target, batch_size, autocast_dtype)
        if coarse_mode == "subsample":
            drops, evaluated = _subsampled_drops(run, *fine, coarse_factor, refine_fraction)
        else:
            drops, evaluated = _enlarged_drops(run, *fine, coarse_grid(size, *fine, coarse_factor), refine_fraction)
        attribution = spread_over_windows(drops, (images.shape[-2], images.shape[-1]), *fine)
    check_finite(attribution)
    exact = run.unperturbed_passes + images.shape[0] * math.prod(window_counts(size, *fine))
    return AdaptiveOcclusionResult(attribution.to(inputs.dtype), run.unperturbed_passes + evaluated, exact)


def coarse_grid(size: Pair, window: Pair, stride: Pair, coarse_factor: int) -> tuple[Pair, Pair]:
    """The coarse window and stride: ``coarse_factor`` times the fine ones, clipped to the image.

    Example:
        >>> coarse_grid((32, 32), (8, 8), (4, 4), 2), coarse_grid((12, 10), (4, 4), (2, 2), 3)
        (((16, 16), (8, 8)), ((12, 10), (6, 6)))
    """
    coarse_window = (min(window[0] * coarse_factor, size[0]), min(window[1] * coarse_factor, size[1]))
    coarse_stride = (min(stride[0] * coarse_factor, coarse_window[0]), min(stride[1] * coarse_factor, coarse_window[1]))
    return coarse_window, coarse_stride


def _is_coarse_mode(value: object) -> TypeGuard[CoarseMode]:
    return value in COARSE_MODES


def _check_coarse_mode(coarse_mode: object) -> CoarseMode:
    if not _is_coarse_mode(coarse_mode):
        raise ValueError(f"`coarse_mode` must be one of {list(COARSE_MODES)}, got {coarse_mode!r}.")
    return coarse_mode


def _check_refine_fraction(refine_fraction: object) -> float:
    if not is_real_number(refine_fraction):
        raise TypeError(
            f"`refine_fraction` must be a number in (0, 1], got {refine_fraction!r} ({type(refine_fraction).__name__})."
        )
    if not 0 < refine_fraction <= 1:
        raise ValueError(f"`refine_fraction` must be a number in (0, 1], got {refine_fraction!r}.")
    return float(refine_fraction)


def _subsampled_drops(
    run: PairRunner, window: Pair, stride: Pair, coarse_factor: int, fraction: float
) -> tuple[Tensor, int]:
    """``coarse_mode="subsample"``: fine drops ``[N, rows, cols]`` and the number of placements evaluated."""
    n_images, size = run.images.shape[0], (run.images.shape[-2], run.images.shape[-1])
    rows, cols = window_counts(size, window, stride)
    device = run.images.device
    keep_rows, keep_cols = _every_nth(rows, coarse_factor, device), _every_nth(cols, coarse_factor, device)
    known = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    known[keep_rows[:, None], keep_cols[None, :]] = True
    placements = known.flatten().nonzero().view(-1)
    image_index = torch.arange(n_images, device=device).repeat_interleave(placements.shape[0])
    sampled = run(image_index, placements.repeat(n_images), cols, window, stride).view(
        n_images, len(keep_rows), len(keep_cols)
    )
    estimates = _interpolate(_interpolate(sampled, keep_rows, rows, dim=1), keep_cols, cols, dim=2)
    selection_map = spread_over_windows(estimates, size, window, stride)
    refined, exact = _refine(run, selection_map, known.expand(n_images, -1, -1), window, stride, fraction)
    estimates[refined] = exact
    return estimates, int(image_index.shape[0] + exact.shape[0])


def _every_nth(count: int, step: int, device: torch.device) -> Tensor:
    """Indices ``0, step, 2 * step, ...`` below ``count``, and always the last one."""
    return torch.cat(
        [torch.arange(0, count - 1, step, device=device), torch.tensor([count - 1], device=device)]
    ).unique()


def _interpolate(values: Tensor, known: Tensor, count: int, *, dim: int) -> Tensor:
    """Linear interpolation along ``dim`` from the positions ``known`` (sorted, first 0, last
    ``count - 1``) to every position in ``range(count)``."""
    positions = torch.arange(count, device=values.device)
    right_slot = torch.searchsorted(known, positions, right=False).clamp(max=known.shape[0] - 1)
    left_slot = (right_slot - (known[right_slot] > positions).long()).clamp(min=0)
    left, right = known[left_slot], known[right_slot]
    weight = ((positions - left) / (right - left).clamp(min=1)).to(values.dtype)
    shape = [1] * values.ndim
    shape[dim] = count
    low, high = values.index_select(dim, left_slot), values.index_select(dim, right_slot)
    return low + (high - low) * weight.view(shape)


def _enlarged_drops(
    run: PairRunner, window: Pair, stride: Pair, coarse: tuple[Pair, Pair], fraction: float
) -> tuple[Tensor, int]:
    """``coarse_mode="enlarge"``: fine drops ``[N, rows, cols]`` and the number of placements evaluated."""
    n_images, size = run.images.shape[0], (run.images.shape[-2], run.images.shape[-1])
    rows, cols = window_counts(size, *coarse)
    flat = torch.arange(n_images * rows * cols, device=run.images.device)
    coarse_drops = run(flat // (rows * cols), flat % (rows * cols), cols, *coarse).view(n_images, rows, cols)
    coarse_map = spread_over_windows(coarse_drops, size, *coarse)
    estimates = _window_sums(coarse_map, window, stride) / _window_sums(torch.ones_like(coarse_map[:1]), window, stride)
    refined, exact = _refine(run, coarse_map, torch.zeros_like(estimates, dtype=torch.bool), window, stride, fraction)
    drops = _calibrated(estimates, refined, exact)
    drops[refined] = exact
    return drops, int(flat.shape[0] + exact.shape[0])


def _refine(
    run: PairRunner, selection_map: Tensor, known: Tensor, window: Pair, stride: Pair, fraction: float
) -> tuple[Tensor, Tensor]:
    """Evaluates the fine placements that overlap each map's top ``fraction`` of pixels and are
    not ``known`` yet. Returns their mask ``[N, rows, cols]`` and exact drops (in mask order)."""
    check_finite(selection_map)
    cols = window_counts((selection_map.shape[-2], selection_map.shape[-1]), window, stride)[1]
    refined = (_window_sums(_top_pixels(selection_map, fraction), window, stride) > 0) & ~known
    image_index, window_index = refined.flatten(1).nonzero(as_tuple=True)
    return refined, run(image_index, window_index, cols, window, stride)


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
    weight = refined.to(estimates.dtype)
    x = estimates * weight
    y = torch.zeros_like(estimates).masked_scatter_(refined, exact)
    count = weight.flatten(1).sum(1)
    mean_x = x.flatten(1).sum(1) / count.clamp(min=1)
    mean_y = y.flatten(1).sum(1) / count.clamp(min=1)
    centered = (x - mean_x.view(-1, 1, 1)) * weight
    var_x = (centered**2).flatten(1).sum(1)
    cov = (centered * (y - mean_y.view(-1, 1, 1))).flatten(1).sum(1)
    slope = cov / var_x.clamp(min=1e-30)
    usable = (count >= 2) & (var_x > 0) & (slope > 0)
    slope = torch.where(usable, slope, torch.ones(n_images, device=slope.device))
    offset = torch.where(usable, mean_y - slope * mean_x, torch.zeros_like(mean_y))
    return estimates * slope.view(-1, 1, 1) + offset.view(-1, 1, 1)
