"""Where the monitor is in a fit: the stage's name and the step Lightning logs validation metrics at."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["log_step", "stage_name"]


def stage_name(stage: object) -> str:
    """``"fit"``, ``"validate"``, ... from a ``TrainerFn`` or a string.

    Example:
        >>> stage_name("fit")
        'fit'
    """
    return str(getattr(stage, "value", stage))


def log_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs validation metrics at (``_batches_that_stepped``), so the monitor's curves line up with them."""
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(epoch_loop, "_batches_that_stepped", trainer.global_step))
