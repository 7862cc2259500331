"""Splitting work over many perturbed or interpolated images into batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.functional._checks import check_positive_int

__all__ = [
    "CPU_BATCH_CANDIDATES",
    "FORWARD_BACKWARD_COST",
    "GPU_BATCH_CANDIDATES",
    "BatchSize",
    "BatchSizeTuner",
    "DeadlineBatches",
    "NoiseStream",
    "TimeBudgetExceeded",
    "check_candidates",
    "check_optional_batch_size",
    "chunk_ranges",
    "default_batch_size",
]

# Elements (C * H * W summed over a batch) per forward pass. On a CPU, batches past a few
# hundred small images fall off a cache cliff (see DESIGN.md, "Speed notes"); a GPU wants
# many more images per pass to stay busy.
_CPU_ELEMENT_BUDGET = 2**18
_GPU_ELEMENT_BUDGET = 2**24
_CPU_MAX_BATCH = 256
_GPU_MAX_BATCH = 2048
_MIN_BATCH = 4
CPU_BATCH_CANDIDATES = (8, 16, 32, 64, 128, 256)
FORWARD_BACKWARD_COST = 3.0
"""Forward-equivalents of one image through a forward and a backward pass (the usual estimate; 2.2-2.6
measured on a 2-core CPU): what the monitor's sizing and the shortcut checks' budget count it as."""
GPU_BATCH_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024, 2048)


def default_batch_size(inputs: Tensor, *, backward: bool) -> int:
    """Picks how many perturbed images to evaluate per pass when the caller gives no ``batch_size``.

    Args:
        inputs: the image batch ``[N, C, H, W]``; its device and image size decide.
        backward: whether each pass also runs a backward pass (halves the budget on a GPU; on a
            CPU the fastest forward+backward batches are as large as the forward ones:
            ``benchmarks/bench_functional.py``).

    Returns:
        A batch size between 4 and 256 on a CPU (2048 on a GPU).

    Example:
        >>> import torch
        >>> default_batch_size(torch.zeros(1, 3, 32, 32), backward=False)
        85
        >>> default_batch_size(torch.zeros(1, 3, 32, 32), backward=True)
        85
        >>> default_batch_size(torch.zeros(1, 3, 224, 224), backward=True)
        4
    """
    on_gpu = inputs.device.type == "cuda"
    budget = _GPU_ELEMENT_BUDGET if on_gpu else _CPU_ELEMENT_BUDGET
    if backward and on_gpu:  # the activations kept for the backward pass take memory
        budget //= 2
    largest = _GPU_MAX_BATCH if on_gpu else _CPU_MAX_BATCH
    return max(_MIN_BATCH, min(largest, budget // inputs[0].numel()))


def chunk_ranges(total: int, batch_size: BatchSize) -> Iterator[tuple[int, int]]:
    """Yields ``(start, stop)`` pairs that cover ``range(total)`` in steps of ``batch_size``.

    ``batch_size`` is an int or a :class:`BatchSizeTuner`, which picks the steps itself.

    Example:
        >>> list(chunk_ranges(5, 2))
        [(0, 2), (2, 4), (4, 5)]
    """
    if isinstance(batch_size, (BatchSizeTuner, DeadlineBatches)):
        yield from batch_size.ranges(total)
        return
    for start in range(0, total, batch_size):
        yield start, min(start + batch_size, total)


def check_candidates(candidates: object) -> list[int]:
    """Checks batch sizes to try: a non-empty sequence of ints >= 1; returns them as a list.

    Example:
        >>> check_candidates((8, 16))
        [8, 16]
    """
    sizes = list(candidates) if isinstance(candidates, Sequence) else []
    if not sizes or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in sizes):
        raise ValueError(f"`candidates` must be a non-empty list of positive ints, got {candidates!r}.")
    return sizes


class BatchSizeTuner:
    """Finds the fastest batch size while the real work runs, at no extra cost.

    Pass one as ``batch_size`` to any function of :mod:`lightning_xai.functional`. While it is
    *exploring*, it hands out batches of each candidate size in turn, smallest first: the first
    batch of a size warms up (new shapes pay one-off costs), the next ``timed_batches`` are
    timed, and the size's rate is the best of them, in images per second. Exploring stops at the
    cache cliff (a size running at less than half the best rate so far) or after the last
    candidate; from then on every batch has the fastest size found (:attr:`best`). The state
    lives in the object, so exploring continues across calls and a tuner is meant to be kept
    for one model, image size and pass type (forward, or forward+backward). Batches do not
    change the maps (see each function's notes on random draws), so tuning never changes a
    result beyond float rounding.

    Timing is the wall time between handing out a batch and being asked for the next one,
    i.e. the caller's work on that batch (on a GPU, with a synchronisation around it while
    exploring, and none afterwards).

    Args:
        device: where the work runs: decides the default candidates and whether to synchronise.
        candidates: batch sizes to try, ascending; default powers of two from 8 up to 256 on a
            CPU and from 16 up to 2048 on a GPU.
        timed_batches: timed batches per size, after the warm-up batch.

    Example:
        >>> tuner = BatchSizeTuner("cpu", candidates=[2, 4])
        >>> [stop - start for start, stop in chunk_ranges(13, tuner)]
        [2, 2, 2, 4, 3]
        >>> tuner.exploring, sorted(tuner.rates)
        (True, [2])
        >>> _ = list(chunk_ranges(8, tuner)); tuner.exploring, tuner.best in (2, 4)
        (False, True)
    """

    def __init__(
        self, device: torch.device | str = "cpu", *, candidates: list[int] | None = None, timed_batches: int = 2
    ) -> None:
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        default = GPU_BATCH_CANDIDATES if on_gpu else CPU_BATCH_CANDIDATES
        self.candidates = check_candidates(candidates) if candidates is not None else list(default)
        self.timed_batches = check_positive_int(timed_batches, "timed_batches")
        self.rates: dict[int, float] = {}
        self.best: int | None = None
        self._index = 0  # the candidate being explored
        self._batches_at_size = 0  # batches of that size handed out so far (the first warms up)

    @classmethod
    def for_images(cls, images: Tensor, *, backward: bool) -> BatchSizeTuner:
        """A tuner for passes over images like ``images`` ``[N, C, H, W]`` on their device.

        The candidates stop at four times :func:`default_batch_size`, so that exploring cannot
        run out of memory on large images (forward+backward batches of 224x224 images take
        gigabytes on a CPU too), and start at the default where that is below the smallest
        candidate.

        Example:
            >>> BatchSizeTuner.for_images(torch.zeros(1, 3, 32, 32), backward=True).candidates
            [8, 16, 32, 64, 128, 256]
            >>> BatchSizeTuner.for_images(torch.zeros(1, 3, 224, 224), backward=True).candidates
            [4, 8, 16]
        """
        default = default_batch_size(images, backward=backward)
        sizes = GPU_BATCH_CANDIDATES if images.device.type == "cuda" else CPU_BATCH_CANDIDATES
        capped = [c for c in sizes if c <= 4 * default]
        if not capped or default < capped[0]:
            capped.insert(0, default)
        return cls(images.device, candidates=capped)

    @property
    def exploring(self) -> bool:
        """Whether it is still trying sizes (``best`` is ``None`` until it is done)."""
        return self.best is None

    @property
    def size(self) -> int:
        """The batch size of the next batch."""
        return self.best if self.best is not None else self.candidates[self._index]

    def ranges(self, total: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` pairs covering ``range(total)``, timing whole batches while exploring."""
        start = 0
        while start < total:
            size = self.size
            stop = min(start + size, total)
            timed = self.exploring and stop - start == size
            if not timed:
                yield start, stop
            else:
                self._synchronize()
                started = time.perf_counter()
                yield start, stop
                self._synchronize()
                self._record(size, time.perf_counter() - started)
            start = stop

    def _record(self, size: int, seconds: float) -> None:
        self._batches_at_size += 1
        if self._batches_at_size == 1:
            return  # the warm-up batch
        self.rates[size] = max(self.rates.get(size, 0.0), size / max(seconds, 1e-9))
        if self._batches_at_size <= self.timed_batches:
            return
        fastest = max(self.rates, key=self.rates.__getitem__)
        fell_off = self.rates[size] < 0.5 * self.rates[fastest]
        self._index, self._batches_at_size = self._index + 1, 0
        if fell_off or self._index == len(self.candidates):
            self.best = fastest

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        state = f"best={self.best}" if self.best is not None else f"exploring, next size {self.size}"
        return f"BatchSizeTuner({self.device.type}, {state})"


class TimeBudgetExceeded(RuntimeError):  # noqa: N818 (a public name: the budget ran out, not an error)
    """Raised between two batches once a time budget has run out (see :class:`DeadlineBatches`)."""


class DeadlineBatches:
    """Batches of ``inner`` (an int or a tuner) that stop between two batches once ``passed()`` is true.

    The monitor wraps the batch sizes it hands to methods in one, so that ``max_seconds`` holds
    inside a method: a run exceeds it by at most one batch. The caller catches
    :class:`TimeBudgetExceeded` and records what was cut.

    Example:
        >>> clock = iter([False, False, True])
        >>> batches = DeadlineBatches(2, lambda: next(clock))
        >>> seen = []
        >>> try:
        ...     for start, stop in chunk_ranges(10, batches):
        ...         seen.append((start, stop))
        ... except TimeBudgetExceeded as error:
        ...     str(error)
        'the time budget ran out after 4 of 10 items'
        >>> seen
        [(0, 2), (2, 4)]
    """

    def __init__(self, inner: BatchSize, passed: Callable[[], bool]) -> None:
        self.inner = inner
        self.passed = passed

    def ranges(self, total: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` pairs of the inner batch size, checking the deadline before each batch."""
        for start, stop in chunk_ranges(total, self.inner):
            if self.passed():
                raise TimeBudgetExceeded(f"the time budget ran out after {start} of {total} items")
            yield start, stop

    def __repr__(self) -> str:
        return f"DeadlineBatches({self.inner!r})"


BatchSize = int | BatchSizeTuner | DeadlineBatches


def check_optional_batch_size(batch_size: object) -> BatchSize | None:
    """Checks ``batch_size``: ``None`` (chosen automatically), an int >= 1 or a :class:`BatchSizeTuner`.

    Example:
        >>> check_optional_batch_size(32)
        32
    """
    if batch_size is None or isinstance(batch_size, (BatchSizeTuner, DeadlineBatches)):
        return batch_size
    return check_positive_int(batch_size, "batch_size")


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
        self,
        generator: torch.Generator,
        sample_shape: tuple[int, ...],
        kind: Literal["normal", "uniform"],
        dtype: torch.dtype,
        block: int = 64,
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
            block = draw(
                (self.block, *self.sample_shape),
                generator=self.generator,
                device=self.generator.device,
                dtype=self.dtype,
            )
            self._buffer = torch.cat([self._buffer, block])
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken
