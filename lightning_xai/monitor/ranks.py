"""What the ranks of a multi-process fit do together around a run: rank 0 decides and shares, every rank checks.

Each function takes the :class:`~lightning_xai.monitor.lifecycle.MonitorRun` and the trainer and
is called on every rank, which enters the same collectives in the same order whatever fails:

- :func:`decide`: whether this run happens (rank 0 holds the schedule and the cost);
- :func:`fix_probes`: rank 0's probes and shortcut test images, on the first run;
- :func:`first_checks`: the methods checked on the probes (every rank), failures exchanged;
- :func:`shared_references`: rank 0's reference images for expected gradients (its training
  reservoir, or the ones restored on resume).

In one process they do what the monitor always did, with nothing exchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lightning_xai.monitor import messages
from lightning_xai.monitor.budget import RunDecision
from lightning_xai.monitor.shares import ShareError, describe_error
from lightning_xai.monitor.steps import stage_name
from lightning_xai.probes import ProbeSet

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lightning_xai.monitor.lifecycle import MonitorRun

__all__ = ["decide", "first_checks", "fix_probes", "shared_references"]


def decide(run: MonitorRun, trainer: pl.Trainer) -> RunDecision:
    """Whether this run happens: rank 0's decision, on every rank."""
    fitting = stage_name(trainer.state.fn) == "fit"
    decision = run.budget.decide(epoch=trainer.current_epoch, fitting=fitting) if trainer.is_global_zero else None
    return run.engine.team.agree(decision) or RunDecision(False, "not_zero")


def fix_probes(run: MonitorRun, trainer: pl.Trainer) -> ProbeSet | None:
    """On the first run, every rank takes rank 0's probes (picked now, given, or restored on resume) and its
    shortcut test images (so that every rank tests the same images); ``None`` when there are none."""
    if run.collector.wants_probes:
        chosen, error, tests = _choose(run, trainer) if trainer.is_global_zero else (None, None, None)
        if trainer.world_size > 1:
            chosen, error, tests = trainer.strategy.broadcast((chosen, error, tests), src=0)
            run.collector.test_images = tests
        if error is not None:
            if run.monitor.strict:
                raise ValueError(error)
            if run.recorder is not None:
                run.recorder.warn_once("no_probes", messages.no_probes(error))
            return None
        run.monitor.probes = chosen
        run.collector.fix_test_images(chosen)  # type: ignore[arg-type]
        _check_test_images(run)
    return run.monitor.probes


MIN_SHORTCUT_TEST_IMAGES = 2
"""The shortcut checks split their test images into a half that selects and a half that decides."""


def _check_test_images(run: MonitorRun) -> None:
    """Switches the shortcut checks off, saying so once, when there are too few test images (the same on every rank)."""
    tests = run.collector.test_images
    if run.engine.detector is not None and tests is not None and tests.shape[0] < MIN_SHORTCUT_TEST_IMAGES:
        run.engine.detector = None
        rank_zero_info(messages.few_test_images(int(tests.shape[0]), MIN_SHORTCUT_TEST_IMAGES))


def _choose(run: MonitorRun, trainer: pl.Trainer) -> tuple[ProbeSet | None, str | None, Tensor | None]:
    """Rank 0's probes (or why there are none) and its shortcut test images."""
    chosen = run.monitor.probes
    if chosen is None:
        try:
            chosen = run.prepare(
                trainer.lightning_module, run.collector.choose_probes(), trainer.precision_plugin.convert_input
            )
        except (ValueError, TypeError) as error:  # after setup nothing raises out of a hook (unless strict)
            return None, str(error), None
        if run.collector.pool.other_sizes:
            rank_zero_info(messages.mixed_sizes(tuple(chosen.images.shape[1:]), run.collector.pool.other_sizes))
    run.collector.fix_test_images(chosen)
    return chosen, None, run.collector.test_images


def first_checks(run: MonitorRun, pl_module: pl.LightningModule, probes: ProbeSet, trainer: pl.Trainer) -> None:
    """The first run's checks of the methods on the probes (every rank: it also resolves the task there) and their
    effective settings (forward passes: on every rank under a collective forward pass, on rank 0 otherwise).

    A failure on any rank is raised on every rank after the exchange, so that all skip the same collectives, and
    every rank takes the checks again in the next run (a rank whose own checks passed would otherwise skip this
    exchange there, while the failed one waits in it).
    """
    team = run.engine.team
    failure: Exception | None = None
    try:
        if not run.checked:
            run.check(pl_module, probes, trainer)
        if not run.methods_recorded and (team.is_zero or team.collective):
            run.record_methods(run.scored_model(pl_module), run.monitor.probes or probes, trainer)
        run.methods_recorded = True
    except Exception as error:
        failure = error
    said = team.all_gather(describe_error(failure) if failure is not None else None)
    failed = [f"rank {rank}: {text}" for rank, text in enumerate(said) if text]
    if failed:  # every rank checks again next run, so that all enter the same exchanges then
        run.checked = run.methods_recorded = False
    if failure is not None:
        raise failure
    if failed:
        raise ShareError("; ".join(failed))


def shared_references(run: MonitorRun, size: tuple[int, int]) -> Tensor | None:
    """The reference images for expected gradients, resized to ``size``: rank 0's on every rank (sent once)."""
    team = run.engine.team
    if team.world_size > 1 and not run.references_shared:
        mine = run.collector.freeze_references(size) if team.is_zero else None
        run.collector.references = team.agree(mine)
        run.references_shared = run.collector.references is not None
    return run.collector.freeze_references(size)
