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
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    as_pair,
    check_images,
    check_score_shape,
    check_scores,
    gather_scores,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import (
    INPAINT_BASELINE_NAMES,
    ConstantBaseline,
    OcclusionBaseline,
    constant_baseline,
    import_cv2,
    inpaint,
)
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, chunk_ranges, default_batch_size

__all__ = [
    "PairRunner",
    "check_autocast_dtype",
    "check_finite",
    "check_window_and_stride",
    "occlusion",
    "precision",
    "spread_over_windows",
    "window_counts",
]


def occlusion(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    baseline: OcclusionBaseline = 0.0,
    batch_size: BatchSize | None = None,
    autocast_dtype: torch.dtype | None = None,
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
            ``"blur"`` (a blurred copy of the image), ``"max_distance"``, or ``"inpaint"`` /
            ``"inpaint_ns"``: each occluded window filled from its surroundings by OpenCV
            inpainting (Telea / Navier-Stokes; needs ``pip install "lightning-xai[inpaint]"``).
            Inpainting runs on the CPU, one ``cv2.inpaint`` call per window and channel:
            ``benchmarks/bench_inpaint.py`` measured occlusion with ``"inpaint"`` at 1.35x the
            CPU time of ``"mean"`` at 3 x 32 x 32 (225 windows) and 1.14x at 3 x 64 x 64 (961
            windows), Navier-Stokes alike (SmallCNN width 16, one thread); the ratio grows for
            models cheaper than their inputs are large.
        batch_size: occluded images per forward pass; ``None`` chooses from the device and image size. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.
        autocast_dtype: opt-in reduced precision: ``torch.bfloat16`` (CPU or GPU) or
            ``torch.float16`` (GPU) runs every forward pass, the unperturbed one included,
            under ``torch.autocast`` with that dtype; the drops are still accumulated in
            float32. With ``target=None`` the top class is chosen from one extra pass in
            full precision. ``None`` (default) runs the model as it is: exact.

    Returns:
        ``[N, 1, H, W]``: the mean score drop over the windows covering each pixel, in
        ``inputs``' dtype.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
        >>> occlusion(net, torch.rand(2, 1, 4, 4), window=2, stride=2).shape
        torch.Size([2, 1, 4, 4])
    """
    check_images(inputs)
    window_hw, stride_hw = check_window_and_stride(inputs, window, stride)
    autocast_dtype = check_autocast_dtype(autocast_dtype)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        inpainting = isinstance(baseline, str) and baseline in INPAINT_BASELINE_NAMES
        # not an inpainting name: a constant baseline
        fill = images if inpainting else constant_baseline(cast(ConstantBaseline, baseline), images).expand_as(images)
        run = PairRunner(
            forward_fn, images, fill, target, batch_size, autocast_dtype, inpaint_method=_inpaint_method(baseline)
        )
        drops = _score_drops(run, window_hw, stride_hw)
        attribution = spread_over_windows(drops, (images.shape[-2], images.shape[-1]), window_hw, stride_hw)
    check_finite(attribution)
    return attribution.to(inputs.dtype)


def _inpaint_method(baseline: object) -> Literal["telea", "ns"] | None:
    """``"telea"`` or ``"ns"`` for the inpainting baselines (checking OpenCV is there), else ``None``."""
    if not (isinstance(baseline, str) and baseline in INPAINT_BASELINE_NAMES):
        return None
    import_cv2()
    return "ns" if baseline == "inpaint_ns" else "telea"


def window_counts(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Number of window placements along each axis, as Captum counts them.

    Example:
        >>> window_counts((32, 32), (8, 8), (4, 4)), window_counts((10, 10), (4, 4), (4, 4))
        ((7, 7), (3, 3))
    """
    return math.ceil((size[0] - window[0]) / stride[0]) + 1, math.ceil((size[1] - window[1]) / stride[1]) + 1


def check_autocast_dtype(autocast_dtype: object) -> torch.dtype | None:
    """Checks ``autocast_dtype``: ``None`` (exact), ``torch.bfloat16`` or ``torch.float16``.

    Example:
        >>> check_autocast_dtype(torch.bfloat16)
        torch.bfloat16
    """
    allowed = "None, torch.bfloat16 or torch.float16"
    if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
        raise TypeError(
            f"`autocast_dtype` must be {allowed}, got {autocast_dtype!r} ({type(autocast_dtype).__name__})."
        )
    if autocast_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"`autocast_dtype` must be {allowed}, got {autocast_dtype}.")
    return autocast_dtype


def precision(images: Tensor, autocast_dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """``torch.autocast`` on ``images``' device with ``autocast_dtype``, or nothing when it is ``None``."""
    if autocast_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=images.device.type, dtype=autocast_dtype)


def check_window_and_stride(inputs: Tensor, window: object, stride: object) -> tuple[tuple[int, int], tuple[int, int]]:
    """Checks ``window`` and ``stride`` against the image size; ``stride=None`` is half the window.

    Example:
        >>> check_window_and_stride(torch.zeros(1, 1, 8, 8), 3, None)
        ((3, 3), (2, 2))
    """
    window_hw = as_pair(window, "window")
    height, width = inputs.shape[-2:]
    if window_hw[0] > height or window_hw[1] > width:
        raise ValueError(f"`window` must fit in the image ({height}x{width}), got {window_hw[0]}x{window_hw[1]}.")
    stride_hw = as_pair(stride, "stride") if stride is not None else ((window_hw[0] + 1) // 2, (window_hw[1] + 1) // 2)
    for axis, (size, w, s) in enumerate(zip((height, width), window_hw, stride_hw)):
        if w < size and s > w:
            name = ("height", "width")[axis]
            raise ValueError(
                f"`stride` must be at most the window along each axis it does not fill, or pixels are never "
                f"occluded; got stride {s} > window {w} in {name}."
            )
    return window_hw, stride_hw


class PairRunner:
    """Scores the unperturbed images, then evaluates the score drop of chosen (image, window
    placement) pairs, in batches.

    With ``autocast_dtype`` every pass runs under autocast, and with ``target=None`` each
    image's top class is chosen from one extra pass in full precision, so that rounding cannot
    change which class is explained.

    Args:
        forward_fn: the model.
        images: the unperturbed images ``[N, C, H, W]``.
        fill: what replaces a window, ``[N, C, H, W]``.
        target: class per image, as for :func:`occlusion`.
        batch_size: occluded images per forward pass. A :class:`~lightning_xai.functional.BatchSizeTuner`
            picks it by timing the passes as they run.
        autocast_dtype: ``None``, or the dtype to run the forward passes in under autocast.
        inpaint_method: ``None`` (windows take ``fill``), or ``"telea"`` / ``"ns"``: each
            occluded window is filled by OpenCV inpainting instead (``fill`` is then unused).

    Attributes:
        targets: class per image ``[N]``.
        base_scores: each image's unperturbed target score ``[N]``, float32.
        unperturbed_passes: images evaluated so far (N, or 2N with autocast and ``target=None``).
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        images: Tensor,
        fill: Tensor,
        target: TargetLike,
        batch_size: BatchSize,
        autocast_dtype: torch.dtype | None = None,
        *,
        inpaint_method: Literal["telea", "ns"] | None = None,
    ) -> None:
        self.forward_fn, self.images, self.fill = forward_fn, images, fill
        self.inpaint_method = inpaint_method
        self.batch_size, self.autocast_dtype = batch_size, autocast_dtype
        with precision(images, autocast_dtype):
            scores = check_scores(forward_fn(images), images.shape[0])
        self.unperturbed_passes = images.shape[0]
        if autocast_dtype is not None and target is None:
            with torch.autocast(device_type=images.device.type, enabled=False):
                target = check_scores(forward_fn(images), images.shape[0]).argmax(dim=1)
            self.unperturbed_passes *= 2
        self.targets = resolve_targets(target, scores)
        self.base_scores = gather_scores(scores, self.targets).float()

    def __call__(
        self, image_index: Tensor, window_index: Tensor, cols: int, window: tuple[int, int], stride: tuple[int, int]
    ) -> Tensor:
        """Drops ``[P]`` (float32) of the pairs ``(image_index[p], window_index[p])``; ``cols`` placements per row."""
        size = (self.images.shape[-2], self.images.shape[-1])
        drops = torch.empty(image_index.shape[0], dtype=torch.float32, device=self.images.device)
        for start, stop in chunk_ranges(image_index.shape[0], self.batch_size):
            images, windows = image_index[start:stop], window_index[start:stop]
            mask = _window_masks(windows, cols, size, window, stride)
            if self.inpaint_method is not None:
                occluded = inpaint(self.images[images], mask, method=self.inpaint_method)
            else:
                occluded = torch.where(mask, self.fill[images], self.images[images])
            with precision(occluded, self.autocast_dtype):
                scores = check_score_shape(self.forward_fn(occluded), stop - start)
            drops[start:stop] = self.base_scores[images] - gather_scores(scores, self.targets[images]).float()
        return drops


def _score_drops(run: PairRunner, window: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Score drop of every (image, placement) pair, ``[N, rows, cols]`` in float32."""
    n_images = run.images.shape[0]
    rows, cols = window_counts((run.images.shape[-2], run.images.shape[-1]), window, stride)
    flat = torch.arange(n_images * rows * cols, device=run.images.device)
    drops = run(flat // (rows * cols), flat % (rows * cols), cols, window, stride)
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


def spread_over_windows(
    drops: Tensor, size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Averages each placement's drop over the pixels it covers: ``[N, rows, cols]`` → ``[N, 1, H, W]``.

    Example:
        >>> spread_over_windows(torch.tensor([[[1.0, 3.0]]]), (2, 3), (2, 2), (1, 1)).tolist()
        [[[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]]
    """
    ones = torch.ones(1, 1, *window, dtype=drops.dtype, device=drops.device)
    height, width = size
    total = F.conv_transpose2d(drops.unsqueeze(1), ones, stride=stride)[..., :height, :width]
    coverage = F.conv_transpose2d(torch.ones_like(drops[:1]).unsqueeze(1), ones, stride=stride)[..., :height, :width]
    return total / coverage


def check_finite(attribution: Tensor) -> None:
    """Raises a ``ValueError`` when a map holds NaN or inf (the model returned such scores)."""
    if not bool(torch.isfinite(attribution).all()):
        raise ValueError("`forward_fn` returned non-finite scores (NaN or inf) for some occluded images.")
