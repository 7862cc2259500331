"""Occlusion: how much the target score drops when a window of the image is hidden.

The definition is Captum's ``Occlusion`` (Zeiler & Fergus, 2014): a window spanning all
channels slides over the image; each placement replaces the window by the baseline and
records the drop ``f(x)[t] - f(x_occluded)[t]``; a pixel's attribution is the mean drop over
all placements that cover it. Windows that do not tile the image evenly are handled as in
Captum: there are ``ceil((size - window) / stride) + 1`` placements per axis, the last one
clipped at the image border.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._batching import chunk_ranges, default_batch_size
from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    as_pair,
    check_images,
    check_optional_batch_size,
    check_score_shape,
    check_scores,
    gather_scores,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import ConstantBaseline, constant_baseline


def occlusion(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    baseline: ConstantBaseline = 0.0,
    batch_size: int | None = None,
) -> Tensor:
    """Occlusion attribution map for each image.

    Args:
        forward_fn: model or function mapping images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        window: occluding window ``(height, width)`` or one int for a square; spans all channels.
        stride: step between placements; ``None`` uses half the window (rounded up). Must not
            exceed the window along an axis the window does not fill.
        baseline: what replaces the window: a number, a tensor ``[C]``, ``[C, H, W]`` or
            ``[N, C, H, W]``, or ``"zero"``, ``"mean"`` (the image's channel means),
            ``"blur"`` (a blurred copy of the image), ``"max_distance"``.
        batch_size: occluded images per forward pass; ``None`` chooses from the device and
            image size.

    Returns:
        ``[N, 1, H, W]``: the mean score drop over the windows covering each pixel, in
        ``inputs``' dtype.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
        >>> occlusion(net, torch.rand(2, 1, 4, 4), window=2, stride=2).shape
        torch.Size([2, 1, 4, 4])
    """
    check_images(inputs)
    window_hw, stride_hw = _check_window_and_stride(inputs, window, stride)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        fill = constant_baseline(baseline, images).expand_as(images)
        scores = check_scores(forward_fn(images), images.shape[0])
        targets = resolve_targets(target, scores)
        drops = _score_drops(forward_fn, images, fill, targets, gather_scores(scores, targets), window_hw, stride_hw, batch_size)
        attribution = _spread_over_windows(drops, images.shape[-2:], window_hw, stride_hw)
    _check_finite(attribution)
    return attribution.to(inputs.dtype)


def window_counts(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Number of window placements along each axis, as Captum counts them.

    Example:
        >>> window_counts((32, 32), (8, 8), (4, 4)), window_counts((10, 10), (4, 4), (4, 4))
        ((7, 7), (3, 3))
    """
    return tuple(math.ceil((s - w) / st) + 1 for s, w, st in zip(size, window, stride))  # type: ignore[return-value]


def _check_window_and_stride(
    inputs: Tensor, window: object, stride: object
) -> tuple[tuple[int, int], tuple[int, int]]:
    window_hw = as_pair(window, "window")
    height, width = inputs.shape[-2:]
    if window_hw[0] > height or window_hw[1] > width:
        raise ValueError(f"`window` must fit in the image ({height}x{width}), got {window_hw[0]}x{window_hw[1]}.")
    stride_hw = as_pair(stride, "stride") if stride is not None else tuple((w + 1) // 2 for w in window_hw)
    for axis, (size, w, s) in enumerate(zip((height, width), window_hw, stride_hw)):
        if w < size and s > w:
            name = ("height", "width")[axis]
            raise ValueError(
                f"`stride` must be at most the window along each axis it does not fill, or pixels are never "
                f"occluded; got stride {s} > window {w} in {name}."
            )
    return window_hw, stride_hw  # type: ignore[return-value]


def _score_drops(
    forward_fn: ForwardFn,
    images: Tensor,
    fill: Tensor,
    targets: Tensor,
    base_scores: Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    batch_size: int,
) -> Tensor:
    """Score drop of every (image, placement) pair, ``[N, rows, cols]`` in float32."""
    n_images, _, height, width = images.shape
    rows, cols = window_counts((height, width), window, stride)
    n_windows = rows * cols
    drops = torch.empty(n_images * n_windows, dtype=torch.float32, device=images.device)
    for start, stop in chunk_ranges(n_images * n_windows, batch_size):
        flat = torch.arange(start, stop, device=images.device)
        image_index, window_index = flat // n_windows, flat % n_windows
        mask = _window_masks(window_index, cols, (height, width), window, stride)
        occluded = torch.where(mask, fill[image_index], images[image_index])
        scores = check_score_shape(forward_fn(occluded), stop - start)
        drops[start:stop] = base_scores[image_index].float() - gather_scores(scores, targets[image_index]).float()
    return drops.view(n_images, rows, cols)


def _window_masks(
    window_index: Tensor, cols: int, size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Boolean masks ``[B, 1, H, W]``, True inside each listed window placement."""
    device = window_index.device
    top = (window_index // cols * stride[0]).view(-1, 1)
    left = (window_index % cols * stride[1]).view(-1, 1)
    ys = torch.arange(size[0], device=device).view(1, -1)
    xs = torch.arange(size[1], device=device).view(1, -1)
    in_rows = (ys >= top) & (ys < top + window[0])
    in_cols = (xs >= left) & (xs < left + window[1])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def _spread_over_windows(drops: Tensor, size: torch.Size, window: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Averages each placement's drop over the pixels it covers: ``[N, rows, cols]`` → ``[N, 1, H, W]``."""
    ones = torch.ones(1, 1, *window, dtype=drops.dtype, device=drops.device)
    height, width = size
    total = F.conv_transpose2d(drops.unsqueeze(1), ones, stride=stride)[..., :height, :width]
    coverage = F.conv_transpose2d(torch.ones_like(drops[:1]).unsqueeze(1), ones, stride=stride)[..., :height, :width]
    return total / coverage


def _check_finite(attribution: Tensor) -> None:
    if not bool(torch.isfinite(attribution).all()):
        raise ValueError("`forward_fn` returned non-finite scores (NaN or inf) for some occluded images.")
