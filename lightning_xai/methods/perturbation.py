"""Methods that perturb the input: occlusion and smallest sufficient masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.functional._checks import as_pair, check_positive_int, is_real_number
from lightning_xai.functional.baselines import (
    CONSTANT_BASELINE_NAMES,
    INPAINT_BASELINE_NAMES,
    ConstantBaselineName,
    InpaintName,
)
from lightning_xai.functional.display import Reduction
from lightning_xai.methods.base import AttributionMethod, MethodContext, _check_baseline, _check_optional_int
from lightning_xai.monitor import sizing

__all__ = ["Mask", "Occlusion"]


@dataclass(frozen=True)
class Occlusion(AttributionMethod):
    """Occlusion (Zeiler & Fergus): score drop when a window is hidden; see ``functional.occlusion``.

    Args:
        window: window side(s) in pixels; ``None`` is sized to the image
            (:func:`~lightning_xai.monitor.sizing.occlusion_window`): an eighth of the shorter side
            (at least 2, 15 x 15 placements) up to 64 x 64, a larger share above (7 x 7 placements
            at 512 x 512), so that large images do not cost minutes per run.
        stride: step between placements; ``None`` uses half the window.
        baseline: what replaces the window (a number, ``"zero"``, ``"mean"``, ``"blur"``, ...,
            or ``"inpaint"`` / ``"inpaint_ns"``: OpenCV inpainting, ``pip install "lightning-xai[inpaint]"``).
        batch_size: occluded images per forward pass; ``None`` chooses automatically.

    Example:
        >>> Occlusion().window_for((32, 32)), Occlusion().window_for((512, 512)), Occlusion(window=(3, 5)).window_for((32, 32))
        ((4, 4), (128, 128), (3, 5))
    """

    name: ClassVar[str] = "occlusion"
    batch_pass: ClassVar[bool | None] = False
    display_reduce: ClassVar[Reduction] = "positive"
    window: int | tuple[int, int] | None = None
    stride: int | tuple[int, int] | None = None
    baseline: float | ConstantBaselineName | InpaintName = 0.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            as_pair(self.window, "window")
        if self.stride is not None:
            as_pair(self.stride, "stride")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES + INPAINT_BASELINE_NAMES)
        _check_optional_int(self.batch_size, "batch_size")

    def window_for(self, size: tuple[int, int]) -> tuple[int, int]:
        """The window used for images of ``size`` ``(H, W)``."""
        if self.window is not None:
            return as_pair(self.window, "window")
        return sizing.occlusion_window(size)

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        window = self.window_for((images.shape[-2], images.shape[-1]))
        return F.occlusion(
            model,
            images,
            targets,
            window=window,
            stride=self.stride,
            baseline=self.baseline,
            batch_size=context.batch_size(self.batch_size, backward=False),
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        window = self.window_for((images.shape[-2], images.shape[-1]))
        F.occlusion(
            lambda x: torch.zeros(x.shape[0], 1, device=x.device),
            images[:1],
            0,
            window=window,
            stride=self.stride,
            baseline=self.baseline,
        )


@dataclass(frozen=True)
class Mask(AttributionMethod):
    """Smallest sufficient masks (extremal perturbations, Fong et al.); see ``functional.extremal_mask``.

    ``attribute`` returns, per probe, the mask ``[N, 1, H, W]`` of the smallest tested area that
    keeps at least ``keep`` of the target score (the largest area's mask when none does);
    ``explain`` returns the whole :class:`~lightning_xai.functional.ExtremalMasks` (every area's
    mask, the kept fractions, the smallest sufficient area per probe).

    Args:
        areas: mask areas to try, fractions of the image.
        steps: optimisation steps, one forward+backward pass of ``N * len(areas)`` images each.
        baseline: what the masked-out part becomes (``"blur"``, ``"zero"``, ``"mean"``, a number).
        keep: the fraction of the score a mask must keep to be sufficient.
        grid_step: pixels per mask-grid cell; ``None``: an eighth of the shorter image side.
    """

    name: ClassVar[str] = "mask"
    display_reduce: ClassVar[Reduction] = "positive"
    areas: tuple[float, ...] = (0.05, 0.1, 0.2)
    steps: int = 200
    baseline: float | ConstantBaselineName = "blur"
    keep: float = 0.9
    grid_step: int | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.areas, tuple)
            or not self.areas
            or not all(is_real_number(a) and 0 < a < 1 for a in self.areas)
        ):
            raise ValueError(f"`areas` must be a non-empty tuple of fractions in (0, 1), got {self.areas!r}.")
        check_positive_int(self.steps, "steps")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES)
        if not is_real_number(self.keep) or not 0 < self.keep <= 1:
            raise ValueError(f"`keep` must be a number in (0, 1], got {self.keep!r}.")
        _check_optional_int(self.grid_step, "grid_step")

    def explain(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> F.ExtremalMasks:
        """Every area's mask and the per-probe summary."""
        return F.extremal_mask(
            model,
            images,
            targets,
            areas=self.areas,
            steps=self.steps,
            baseline=self.baseline,
            keep=self.keep,
            grid_step=self.grid_step,
            generator=context.generator,
        )

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return self.explain(model, images, targets, context).best

    def attribute_with_details(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, with_gap: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The best masks and, per probe, the smallest sufficient area (``smallest_area``, ``sufficient``)."""
        masks = self.explain(model, images, targets, context)
        return masks.best, {"smallest_area": masks.smallest_area.float(), "sufficient": masks.sufficient.float()}
