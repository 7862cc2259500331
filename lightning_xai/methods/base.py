"""The base of every method's settings: ``AttributionMethod`` and the ``MethodContext`` the monitor hands it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.functional._checks import check_positive_int
from lightning_xai.functional.batching import BatchSize, DeadlineBatches
from lightning_xai.functional.display import Reduction

__all__ = ["AttributionMethod", "MethodContext"]


@dataclass(frozen=True)
class MethodContext:
    """What the monitor hands every method besides the model and images.

    Attributes:
        generator: private random source (never the global RNG), reset for every run so two
            runs draw the same samples and their maps differ only because the model changed.
        references: training images ``[M, C, H, W]`` on the model's device, for expected
            gradients with ``baselines="training"``; ``None`` when none were seen.
        batch_sizes: batch sizes (ints or :class:`~lightning_xai.functional.BatchSizeTuner`)
            by pass type (``False``: forward only, ``True``: forward+backward), used by methods
            whose own ``batch_size`` is ``None``.
        deadline: ``() -> bool``, true once the run's ``max_seconds`` has passed: batched work then
            stops between two batches (:class:`~lightning_xai.functional.batching.TimeBudgetExceeded`).
    """

    generator: torch.Generator
    references: Tensor | None = None
    batch_sizes: Mapping[bool, BatchSize] = field(default_factory=dict)
    deadline: Callable[[], bool] | None = None

    def batch_size(self, own: int | None, *, backward: bool) -> BatchSize | None:
        """The method's own batch size if set, else the one for its pass type (else ``None``: the heuristic),
        checking the deadline between batches when there is one."""
        chosen = own if own is not None else self.batch_sizes.get(backward)
        if chosen is None or self.deadline is None:
            return chosen
        return DeadlineBatches(chosen, self.deadline)


@dataclass(frozen=True)
class AttributionMethod:
    """Base of all methods: ``attribute`` computes, ``display`` turns the result into ``[N, 1, H, W]`` in [0, 1]."""

    name: ClassVar[str] = "method"
    display_reduce: ClassVar[Reduction] = "abs_sum"
    batch_pass: ClassVar[bool | None] = None  # its batched pass type (False: forward, True: forward+backward), if any

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        """Attributions for ``images`` ``[N, C, H, W]`` and ``targets`` ``[N]``."""
        raise NotImplementedError

    def attribute_with_gap(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext
    ) -> tuple[Tensor, Tensor | None]:
        """Attributions and, for path methods, each image's completeness gap ``[N]`` (else ``None``)."""
        return self.attribute(model, images, targets, context), None

    def attribute_with_details(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, with_gap: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Attributions and per-probe numbers ``{name: [N]}`` the monitor records beside the maps.

        The base gives ``{"completeness_gap": [N]}`` for path methods when ``with_gap``; :class:`Mask`
        gives the smallest sufficient area.
        """
        if with_gap:
            attributions, gap = self.attribute_with_gap(model, images, targets, context)
            return attributions, ({"completeness_gap": gap} if gap is not None else {})
        return self.attribute(model, images, targets, context), {}

    def display(self, attributions: Tensor) -> Tensor:
        """Display maps ``[N, 1, H, W]`` in [0, 1], normalised per image."""
        return F.display_map(attributions, reduce=self.display_reduce)

    def validate(self, model: nn.Module, images: Tensor) -> None:
        """Raises a clear error when this method cannot run on ``model`` with such images."""


def _check_baseline(baseline: object, allowed: tuple[str, ...], name: str = "baseline") -> None:
    if isinstance(baseline, str) and baseline not in allowed:
        raise ValueError(f"`{name}` must be a number, a tensor or one of {list(allowed)}, got {baseline!r}.")


def _check_optional_int(value: object, name: str) -> None:
    if value is not None:
        check_positive_int(value, name)
