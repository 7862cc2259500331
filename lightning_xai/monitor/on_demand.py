"""The checks of the methods that run on demand or at the end of fit: the sanity and robustness checks.

Each runs on the probes under the monitor's conditions, on global rank 0 only, and is recorded by
the recorder when one is open (scalars, a ``summary.json`` section, a warning naming the methods
that fail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_xai.methods import MethodContext
from lightning_xai.monitor.conditions import attribution_conditions
from lightning_xai.monitor.model_io import model_inputs, module_device, predict
from lightning_xai.monitor.settings import check_strategy
from lightning_xai.monitor.steps import log_step
from lightning_xai.robustness import RobustnessCheck, robustness_check
from lightning_xai.sanity import SanityCheck, sanity_check

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lightning_xai.monitor.lifecycle import MonitorRun

__all__ = ["ProbeCheck", "on_probes", "robustness", "sanity", "torch_generator"]

ProbeCheck = Callable[[nn.Module, Tensor, Tensor, Callable[[], MethodContext]], dict[str, Any]]


def torch_generator(device: torch.device, seed: int) -> torch.Generator:
    """A private generator on ``device`` seeded with ``seed``.

    Example:
        >>> torch_generator(torch.device("cpu"), 0).initial_seed()
        0
    """
    return torch.Generator(device=device).manual_seed(seed)


def sanity(
    run: MonitorRun, trainer: pl.Trainer, pl_module: pl.LightningModule, *, cascade: bool | None
) -> dict[str, Any]:
    """The model-randomization sanity check on the probes (rank 0), recorded when a recorder is open."""
    settings = run.monitor.sanity or SanityCheck()
    settings = replace(settings, cascade=cascade) if cascade is not None else settings
    methods, seed = run.monitor._methods, run.monitor.seed
    report = on_probes(
        run,
        trainer,
        pl_module,
        lambda model, images, targets, context: sanity_check(
            model, images, targets, methods, context, settings=settings, seed=seed
        ),
    )
    if report and run.recorder is not None:
        run.recorder.record_sanity(
            report, step=trainer.global_step, log_step=log_step(trainer), threshold=settings.insensitive_above
        )
    return report


def robustness(
    run: MonitorRun, trainer: pl.Trainer, pl_module: pl.LightningModule, settings: RobustnessCheck | None
) -> dict[str, Any]:
    """Input invariance and fragility of every method on the probes (rank 0), recorded when a recorder is open."""
    chosen = settings or run.monitor.robustness or RobustnessCheck()
    methods, seed = run.monitor._methods, run.monitor.seed
    report = on_probes(
        run,
        trainer,
        pl_module,
        lambda model, images, targets, context: robustness_check(
            model, images, targets, methods, context, settings=chosen, seed=seed
        ),
        "robustness",
    )
    if report and run.recorder is not None:
        run.recorder.record_robustness(
            report, step=trainer.global_step, log_step=log_step(trainer), threshold=chosen.min_rank_correlation
        )
    return report


def on_probes(
    run: MonitorRun, trainer: pl.Trainer, pl_module: pl.LightningModule, check: ProbeCheck, name: str = "sanity"
) -> dict[str, Any]:
    """Runs ``check`` on the probes under the monitor's conditions (rank 0 only; ``{}`` elsewhere or before probes).

    Refused with several processes and a collective forward pass (FSDP, FSDP2, DeepSpeed), where
    rank-0-only passes would hang: see :func:`~lightning_xai.monitor.settings.check_strategy`.
    """
    if trainer.world_size > 1:
        check_strategy(trainer.strategy, checks=[name])
    probes = run.monitor.probes
    if not trainer.is_global_zero or probes is None:
        return {}
    model = run.scored_model(pl_module)
    device = module_device(model)
    references = run.collector.references
    seed = run.monitor.seed
    with attribution_conditions(model, device):
        images = model_inputs(model, probes.images, trainer.precision_plugin.convert_input)
        targets = predict(model, images, probes.labels).targets.to(device)
        refs = model_inputs(model, references) if references is not None else None
        return check(model, images, targets, lambda: MethodContext(torch_generator(device, seed), refs))
