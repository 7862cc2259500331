"""Choosing the batch size by measurement: the size at which a model evaluates the most images per second.

On a CPU, batches past a few hundred small images fall off a cache cliff and run slower; on a
GPU, small batches leave it idle. The best size depends on the model, the image size and the
pass type, so it is timed, once, and remembered.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import ForwardFn, check_images, check_score_shape, is_real_number
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import (
    BatchSizeTuner,
    check_candidates,
    chunk_ranges,
    default_batch_size,
)

__all__ = [
    "measure_batch_size",
]

# model -> {(image shape, dtype, device, backward): best batch size}
_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def measure_batch_size(
    forward_fn: ForwardFn,
    example: Tensor,
    *,
    backward: bool,
    candidates: Sequence[int] | None = None,
    max_seconds: float = 2.0,
) -> int:
    """Times passes at several batch sizes and returns the one with the most images per second.

    Each candidate batch (copies of the first example image) is run once to warm up and then
    timed twice (the faster counts). The sweep goes up from the smallest size and stops once a
    size runs at less than half the best rate so far (the cache cliff), when memory runs out,
    or after ``max_seconds``. For an ``nn.Module`` the result is remembered per image size,
    dtype, device and pass type, so later calls cost nothing. The model's modes, buffers and
    the global RNG are left as they were.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        example: images ``[N, C, H, W]``; only the first is used.
        backward: time a forward pass plus the input gradient of the summed top scores (as
            integrated and expected gradients and SmoothGrad run), else a forward pass under
            ``torch.no_grad`` (as occlusion runs).
        candidates: batch sizes to try, ascending; default those of
            :meth:`BatchSizeTuner.for_images` (powers of two up to 256 on a CPU and 2048 on a
            GPU, at most four times :func:`default_batch_size`).
        max_seconds: time budget of the sweep (the first candidate always runs).

    Returns:
        The fastest batch size; the heuristic default when the first candidate alone exceeds the budget.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> measure_batch_size(net, torch.rand(1, 3, 2, 2), backward=False, candidates=[4, 8]) in (4, 8)
        True
    """
    check_images(example, "example")
    checked = check_candidates(candidates) if candidates is not None else None
    if not is_real_number(max_seconds) or not max_seconds > 0:
        raise ValueError(f"`max_seconds` must be a positive number of seconds, got {max_seconds!r}.")
    key = (tuple(example.shape[1:]), example.dtype, str(example.device), bool(backward))
    remembered = _MEASURED.setdefault(forward_fn, {}) if isinstance(forward_fn, nn.Module) else {}
    if key not in remembered:
        sizes = checked if checked is not None else BatchSizeTuner.for_images(example, backward=backward).candidates
        with leave_no_trace(forward_fn, example.device):
            rates = _sweep(forward_fn, example[:1].detach(), sizes, backward, max_seconds)
        remembered[key] = max(rates, key=rates.__getitem__) if rates else default_batch_size(example, backward=backward)
    return remembered[key]


def _sweep(
    forward_fn: ForwardFn, image: Tensor, sizes: list[int], backward: bool, max_seconds: float
) -> dict[int, float]:
    """Images per second at each size tried: a :class:`BatchSizeTuner` run on copies of ``image``.

    One batch of the tuner's current size per step (so each size gets its warm-up pass and two
    timed passes, and the cache cliff ends the sweep), until it settles, memory runs out, or a
    size finishes after ``max_seconds``.
    """
    tuner = BatchSizeTuner(image.device, candidates=sizes)
    started = time.perf_counter()
    try:
        while tuner.exploring:
            size = tuner.size
            batch = image.repeat(size, 1, 1, 1)
            for _ in chunk_ranges(size, tuner):  # exactly one batch, timed by the tuner
                _one_pass(forward_fn, batch, backward)
            if tuner.size != size and time.perf_counter() - started > max_seconds:
                break
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
    return tuner.rates


def _one_pass(forward_fn: ForwardFn, batch: Tensor, backward: bool) -> None:
    if not backward:
        with torch.no_grad():
            check_score_shape(forward_fn(batch), batch.shape[0])
        return
    points = batch.detach().requires_grad_(True)
    scores = check_score_shape(forward_fn(points), points.shape[0])
    if scores.requires_grad:
        torch.autograd.grad(scores.max(dim=1).values.sum(), points, allow_unused=True)
