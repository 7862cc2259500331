"""Settings of stability tracking: how maps are compared from one validation run to the next.

The tracking itself lives in :mod:`lightning_xai.monitor.stability_tracker`; the pure comparisons
(rank correlation, top-k IoU, SSIM, cosine) in :mod:`lightning_xai.functional.stability`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_xai.functional._checks import check_positive_int

__all__ = ["Stability"]


@dataclass(frozen=True)
class Stability:
    """Settings of stability tracking.

    Args:
        top_k: fraction of pixels compared by the top-k IoU.
        threshold: mean rank correlation with the previous run at or above which a method counts
            as stable for that run.
        patience: consecutive stable runs after which a method is reported as settled.
        filmstrip_length: how many past runs each probe's filmstrip shows.
        agreement: also compare the methods with each other in every run.

    Example:
        >>> Stability(threshold=0.8).patience
        3
    """

    top_k: float = 0.1
    threshold: float = 0.9
    patience: int = 3
    filmstrip_length: int = 10
    agreement: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= 1:
            raise ValueError(f"`top_k` must be a fraction in (0, 1], got {self.top_k!r}.")
        if not -1 <= self.threshold <= 1:
            raise ValueError(f"`threshold` must be a rank correlation in [-1, 1], got {self.threshold!r}.")
        check_positive_int(self.patience, "patience")
        check_positive_int(self.filmstrip_length, "filmstrip_length")
