"""Where each test image's prediction comes from, by its gradient: |gradient x (image - fill)|.

Made once per bench and kept (moving candidates of several sizes, the proposal of moving regions and their
tests share it). A model whose output has no gradient, or whose backward pass fails, shows nothing
(zeros, with one warning), and the checks go on without it.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lightning_xai.functional.batching import chunk_ranges
from lightning_xai.functional.shortcut_interventions import Bench

__all__ = ["gradient_heat"]


def gradient_heat(bench: Bench, rows: Tensor | None = None) -> Tensor:
    """|gradient x (image - fill)| of the test images ``rows`` (indices; all when ``None``) for their predicted
    log-probability, channels summed ``[len(rows), 1, H, W]`` (float32, CPU). Each image's is made once per
    bench and kept (moving candidates of several sizes, the proposal and the tests share it). Zero for a
    model whose output has no gradient or whose backward pass fails (then for every image of the bench,
    with one warning: the test images tell nothing about where it looks), and where it is not finite (a
    NaN pixel)."""
    count = bench.images.shape[0]
    with torch.inference_mode(False):  # the cache is updated in place, also when first made in inference mode
        if bench.gradient_maps is None or bench.gradient_known is None:
            bench.gradient_maps = torch.zeros(count, 1, *bench.size)
            bench.gradient_known = torch.zeros(count, dtype=torch.bool)
        wanted = torch.arange(count) if rows is None else rows.cpu()
        missing = wanted[~bench.gradient_known[wanted]].unique()
        if missing.numel():
            made = _heat_of(bench, missing)
            if made is None:  # no gradient to be had: every image shows nothing
                bench.gradient_known[:] = True
            else:
                bench.gradient_maps[missing] = made
                bench.gradient_known[missing] = True
        return bench.gradient_maps if rows is None else bench.gradient_maps[wanted]


def _heat_of(bench: Bench, indices: Tensor) -> Tensor | None:
    """:func:`gradient_heat` of ``images[indices]``, made in batches (``None`` when a backward pass fails)."""
    parts = []
    for start, stop in chunk_ranges(indices.numel(), bench.batch_size):
        chunk = indices[start:stop]
        with torch.enable_grad():
            images = bench.on_device(chunk).detach().clone().requires_grad_(True)
            scores = torch.log_softmax(bench.forward_fn(images).float(), dim=1)
            chosen = scores.gather(1, bench.predicted[chunk, None].to(scores.device)).sum()
            gradient = _input_gradient(chosen, images)
        if gradient is None:
            return None
        fills = bench.fills_of(chunk)
        fills = images.detach().mean(dim=(2, 3), keepdim=True) if fills is None else fills
        heat = (gradient.float() * (images.detach().float() - fills.float())).abs().sum(dim=1, keepdim=True)
        parts.append(torch.nan_to_num(heat, nan=0.0, posinf=0.0).cpu())  # a non-finite image shows nothing
    return torch.cat(parts)


def _input_gradient(score: Tensor, images: Tensor) -> Tensor | None:
    """The gradient of ``score`` with respect to ``images``: zeros when the output has none; ``None``, with a
    warning, when the backward pass fails (an op without one, out of memory), so that the checks go on
    without the gradient (with several ranks running the checks, they agree on rank 0's heat)."""
    if not score.requires_grad:
        return torch.zeros_like(images)
    try:
        return torch.autograd.grad(score, images)[0]
    except RuntimeError as error:
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    warnings.warn(
        f"The shortcut checks could not take the model's gradient ({message}); they go on without it: moving "
        "regions are proposed by the maps and not tested image by image.",
        stacklevel=2,
    )
    return None
