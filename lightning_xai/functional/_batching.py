"""Splitting work over many perturbed or interpolated images into batches."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

# Elements (C * H * W summed over a batch) per forward pass. On a CPU, batches past a few
# hundred small images fall off a cache cliff (see DESIGN.md, "Speed notes"); a GPU wants
# many more images per pass to stay busy.
_CPU_ELEMENT_BUDGET = 2**18
_GPU_ELEMENT_BUDGET = 2**24
_CPU_MAX_BATCH = 256
_GPU_MAX_BATCH = 2048
_MIN_BATCH = 4


def default_batch_size(inputs: Tensor, *, backward: bool) -> int:
    """Picks how many perturbed images to evaluate per pass when the caller gives no ``batch_size``.

    Args:
        inputs: the image batch ``[N, C, H, W]``; its device and image size decide.
        backward: whether each pass also runs a backward pass (halves the budget).

    Returns:
        A batch size between 4 and 256 on a CPU (2048 on a GPU).

    Example:
        >>> import torch
        >>> default_batch_size(torch.zeros(1, 3, 32, 32), backward=False)
        85
        >>> default_batch_size(torch.zeros(1, 3, 224, 224), backward=True)
        4
    """
    on_gpu = inputs.device.type == "cuda"
    budget = _GPU_ELEMENT_BUDGET if on_gpu else _CPU_ELEMENT_BUDGET
    if backward:
        budget //= 2
    largest = _GPU_MAX_BATCH if on_gpu else _CPU_MAX_BATCH
    return max(_MIN_BATCH, min(largest, budget // inputs[0].numel()))


def chunk_ranges(total: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """Yields ``(start, stop)`` pairs that cover ``range(total)`` in steps of ``batch_size``.

    Example:
        >>> list(chunk_ranges(5, 2))
        [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, total, batch_size):
        yield start, min(start + batch_size, total)
