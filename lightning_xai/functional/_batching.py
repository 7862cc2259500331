"""Splitting work over many perturbed or interpolated images into batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
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


class NoiseStream:
    """Standard noise for the samples of a run, the same whatever batches they are taken in.

    Noise is drawn from ``generator`` in blocks of a fixed number of samples, and handed out in
    sample order: sample ``j`` always gets the ``j``-th draw, so maps do not depend on
    ``batch_size`` (or on the device's default batch size).

    Example:
        >>> one = NoiseStream(torch.Generator().manual_seed(0), (2,), "normal", torch.float32)
        >>> two = NoiseStream(torch.Generator().manual_seed(0), (2,), "normal", torch.float32)
        >>> torch.equal(one.take(5), torch.cat([two.take(2), two.take(3)]))
        True
    """

    def __init__(
        self, generator: torch.Generator, sample_shape: tuple[int, ...], kind: Literal["normal", "uniform"], dtype: torch.dtype, block: int = 64
    ) -> None:
        self.generator = generator
        self.sample_shape = tuple(sample_shape)
        self.kind = kind
        self.dtype = dtype
        self.block = block
        self._buffer = torch.empty((0, *self.sample_shape), dtype=dtype, device=generator.device)

    def take(self, count: int) -> Tensor:
        """The next ``count`` samples' noise, ``[count, *sample_shape]`` on the generator's device."""
        while self._buffer.shape[0] < count:
            draw = torch.randn if self.kind == "normal" else torch.rand
            block = draw((self.block, *self.sample_shape), generator=self.generator, device=self.generator.device, dtype=self.dtype)
            self._buffer = torch.cat([self._buffer, block])
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken
