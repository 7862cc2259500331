"""Settings of the faithfulness metrics: judging the explanations themselves while training.

Maps can look convincing and be wrong. For every method, on the same probes as the maps:

- **deletion / insertion curves** (RISE): hide the map's top pixels (by each image's mean colour
  and by blurring) and watch the target probability fall; or reveal only them and watch it rise.
  Areas under the curves are logged with a random pixel ranking as the control any map must beat;
- **mass-centre ablation**: the probability drop when a box at the map's centre of mass is
  hidden, against boxes of the same size at random places;
- **completeness gap** of integrated and expected gradients: how far the attributions' sum is
  from the score difference they should explain (too few steps or samples when large).

The model-randomisation sanity check has its own settings: :class:`lightning_xai.SanityCheck`.
The work is done by :mod:`lightning_xai.monitor.analyses` with :mod:`lightning_xai.functional.faithfulness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_xai.functional.faithfulness import DEFAULT_FRACTIONS

__all__ = ["Faithfulness"]


@dataclass(frozen=True)
class Faithfulness:
    """Settings of the faithfulness metrics (all computed on the probes, each validation run).

    Args:
        fractions: shares of pixels removed or inserted along the curves (default 0 to 1 in 10 steps).
        fills: what replaces removed pixels: ``"mean"`` (each image's channel means), ``"blur"``,
            ``"inpaint"`` (OpenCV inpainting, ``pip install "lightning-xai[inpaint]"``).
        box_fraction: side of the mass-centre box as a share of the image side.
        n_random_boxes: random boxes the mass-centre drop is compared with.
        max_relative_gap: completeness gap, relative to the target score, above which a warning
            says that integrated or expected gradients use too few steps or samples.

    Example:
        >>> Faithfulness().fills
        ('mean', 'blur')
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    fills: tuple[Literal["mean", "blur", "inpaint"], ...] = ("mean", "blur")
    box_fraction: float = 0.25
    n_random_boxes: int = 8
    max_relative_gap: float = 0.1

    def __post_init__(self) -> None:
        if not self.fills or any(fill not in ("mean", "blur", "inpaint") for fill in self.fills):
            raise ValueError(
                f"`fills` must be a non-empty tuple of 'mean', 'blur' and/or 'inpaint', got {self.fills!r}."
            )
        if not 0 < self.box_fraction <= 1:
            raise ValueError(f"`box_fraction` must be in (0, 1], got {self.box_fraction!r}.")
        if not self.max_relative_gap > 0:
            raise ValueError(f"`max_relative_gap` must be positive, got {self.max_relative_gap!r}.")
