"""The monitor's life during a fit: set-up checks, fixing the probes, each run guarded, resume state.

:class:`MonitorRun` is what the callback's hooks call (each hook: a guard plus one call). It
holds the collector, the engine, the budget and, on global rank 0, the recorder. After set-up
nothing here raises out of a hook: a failed run becomes a warning and a record in
``summary.json`` (unless ``strict=True``).

With several processes every rank takes part in each run: rank 0 decides whether to run and
broadcasts it, every rank explains its share of the probes (:mod:`~lightning_xai.monitor.sharding`),
and rank 0 records. Every rank enters the same collectives in the same order whatever fails.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_xai._files import atomic_write_bytes
from lightning_xai._fingerprint import check_probe_fingerprint, load_probes, load_references
from lightning_xai.history import AttributionHistory, HistoryError
from lightning_xai.loggers import XaiLogger, resolve_log_dir
from lightning_xai.monitor import messages, on_demand, ranks
from lightning_xai.monitor import settings as checks
from lightning_xai.monitor.budget import RunBudget
from lightning_xai.monitor.collector import Collector
from lightning_xai.monitor.conditions import attribution_conditions
from lightning_xai.monitor.engine import Engine, RunMoment, describe_error
from lightning_xai.monitor.images import display_rgb
from lightning_xai.monitor.model_io import model_inputs, module_device, prepare_probes
from lightning_xai.monitor.recorder import Recorder
from lightning_xai.monitor.schedule import CHECKS_KEY
from lightning_xai.monitor.sharding import Team, team_for
from lightning_xai.monitor.steps import log_step, stage_name
from lightning_xai.probes import ProbeSet
from lightning_xai.robustness import RobustnessCheck
from lightning_xai.shortcuts import Finding
from lightning_xai.targets import supports

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lightning_xai.callback import AttributionMonitor

__all__ = ["MonitorRun", "draw_in_background"]


def draw_in_background(trainer: pl.Trainer, *, strict: bool) -> bool:
    """Whether a fit's run images are drawn on a worker thread (:mod:`~lightning_xai.monitor.background`):
    when the model trains on an accelerator, whose fit leaves the CPU mostly idle. A model that trains
    on the CPU already uses every core: measured on 2 cores, drawing beside it slowed the training by
    about 20% (two thread pools on two cores), far more than the drawing took. Under ``strict=True`` a
    drawing error must raise from the hook, so never then."""
    return not strict and trainer.strategy.root_device.type != "cpu"


class MonitorRun:
    """The runtime state of an :class:`~lightning_xai.AttributionMonitor`."""

    def __init__(self, monitor: AttributionMonitor, collector: Collector, engine: Engine, budget: RunBudget) -> None:
        self.monitor = monitor
        self.collector = collector
        self.engine = engine
        self.budget = budget
        self.recorder: Recorder | None = None
        self.restored: dict[str, Any] | None = None
        self.active = True
        self.started = False
        self.checked = False
        self.stop_requested = False
        # where rank 0 of a spawned process group (ddp_spawn) leaves its results for the main process
        self.channel = Path(tempfile.gettempdir()) / f"lightning_xai-{os.getpid()}-{secrets.token_hex(6)}.json"
        self.scoring = monitor.scoring
        self.methods_recorded = False
        self.references_shared = False

    def scored_model(self, pl_module: pl.LightningModule) -> torch.nn.Module:
        """What every forward pass of the monitor calls: the explained module through ``forward=``/``output=``/``task=``/``target=``."""
        return self.scoring.model(self.monitor.explained_module(pl_module))

    def prepare(self, pl_module: pl.LightningModule, probes: ProbeSet, convert_input: Any = None) -> ProbeSet:
        """Resolves the task on the probes, fixes their target rows, and switches off analyses the task cannot serve."""
        self.scoring, prepared = prepare_probes(
            self.monitor.explained_module(pl_module), probes, self.scoring, convert_input
        )
        task = self.scoring.resolved
        if self.monitor.faithfulness is not None and not supports("faithfulness", task):
            raise ValueError(messages.analysis_refused(supports("faithfulness", task).reason))
        if self.engine.detector is not None and not supports("shortcuts", task):
            self.engine.detector = None
            rank_zero_info(messages.shortcuts_off(supports("shortcuts", task).reason))
        return prepared

    # ------------------------------------------------------------------ set-up (strict)
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Switches off for ``fast_dev_run`` and without validation data; refuses strategies it cannot serve."""
        self.active = not getattr(trainer, "fast_dev_run", False)
        if not self.active:
            rank_zero_info(messages.fast_dev_run())
            return
        at_end = [name for name in ("sanity", "robustness") if getattr(self.monitor, name) is not None]
        checks.check_strategy(trainer.strategy, checks=at_end if trainer.world_size > 1 else [])
        self.monitor.explained_module(pl_module)
        reason = checks.missing_validation(trainer, stage_name(stage)) if self.monitor.probes is None else None
        if reason is not None:
            self.active = False
            rank_zero_warn(messages.no_validation(stage_name(stage), reason))

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, new_fit: bool) -> None:
        """Opens the recorder (rank 0) and checks given probes against the model before any training."""
        self.engine.team = team_for(trainer.strategy, rank=trainer.global_rank, world_size=trainer.world_size)
        if new_fit:
            self.budget.start_fit()
            self.engine.start_fit()
        if self.monitor.probes is not None and not self.checked:
            checks.check_display_channels(self.monitor.display_mean, int(self.monitor.probes.images.shape[1]))
            self.check(pl_module, self.monitor.probes, trainer)
        if trainer.is_global_zero and self.recorder is None:
            self._open_recorder(trainer)
        self.started = True

    def check_sanity_images(self, pl_module: pl.LightningModule) -> None:
        """Checks the methods on the sanity check's images, so that bad settings fail before training."""
        if self.collector.pool.count > 0 and not self.checked:
            probes = self.prepare(pl_module, self.collector.choose_probes())
            checks.check_display_channels(self.monitor.display_mean, int(probes.images.shape[1]))
            checks.check_methods_can_run(self.scored_model(pl_module), probes, self.monitor._methods)

    # ------------------------------------------------------------------ batches
    def offer_training(self, batch: object) -> None:
        """A training batch's images for the references (rank 0). From the first batch whose images cannot be read
        (or whose ``batch_images=``/``preprocess=`` raise) on, the references are the images gathered until then,
        or expected gradients' fallback baselines (blurred probes) without any; said once (``strict=True``: raised)."""
        error = self.collector.offer_training(batch)
        if error is not None:
            if self.monitor.strict:
                raise error
            self._warn_once("unreadable_training", messages.unreadable_training(error))

    def offer_validation(self, trainer: pl.Trainer, batch: object, dataloader_idx: int) -> None:
        """A validation batch's images as probe candidates and test images. When they cannot be read and the probes
        are to be chosen from them, that is a set-up error before training (Lightning's sanity check,
        ``trainer.validate()``; ``strict=True`` always raises); once the fit has trained, the run collects nothing
        more and the probes' choice says why. With probes given, the shortcut checks test on them (said once)."""
        try:
            self.collector.offer_validation(batch, dataloader_idx=dataloader_idx)
        except Exception as error:
            before_training = trainer.sanity_checking or trainer.state.fn != "fit"
            if self.monitor.strict or (self.monitor.probes is None and before_training):
                raise
            self.collector.give_up_validation(error)
            if self.monitor.probes is not None:
                self._warn_once("unreadable_validation", messages.tests_on_probes(error))

    def _warn_once(self, key: str, message: str) -> None:
        """A warning said once per fit, by rank 0's recorder (open from the fit's or validation's start, before any
        batch; other ranks say nothing)."""
        if self.recorder is not None:
            self.recorder.warn_once(key, message)

    # ------------------------------------------------------------------ each validation run
    def validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fixes the probes (first run), then runs on rank 0's schedule (every rank), then syncs a stop request."""
        probes = ranks.fix_probes(self, trainer)
        if probes is not None:
            decision = ranks.decide(self, trainer)
            if decision.run:
                self._guarded_run(trainer, pl_module, probes)
                self.report_to_parent(trainer)
            elif decision.reason == "overhead":
                self.budget.skipped += 1
            if decision.reason == "overhead" and self.recorder is not None:
                self.recorder.warn_once(
                    "overhead",
                    messages.overhead_skip(self.budget, epoch=trainer.current_epoch, step=trainer.global_step),
                )
        self._sync_stop(trainer)

    def _guarded_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probes: ProbeSet) -> None:
        """One run on every rank; a failure is recorded by rank 0 (on any rank it raises on all, after the exchange)."""
        moment = RunMoment(trainer.current_epoch, trainer.global_step, log_step(trainer), stage_name(trainer.state.fn))
        started = time.perf_counter()
        phases: dict[str, float] = {}
        try:
            phases = self._explain(trainer, pl_module, probes, moment)
        except Exception as error:
            if self.monitor.strict:
                raise
            self.budget.failed += 1
            if self.recorder is not None:
                self.recorder.record_failure(moment, describe_error(error))
        finally:
            self.budget.add_run(time.perf_counter() - started, phases)
        if self.recorder is not None:
            self.recorder.record_cost(self.budget.overhead(), moment.log_step)
            self._warn_near_timeout(trainer, self.budget.last_run, moment)

    def _warn_near_timeout(self, trainer: pl.Trainer, seconds: float, moment: RunMoment) -> None:
        """The other ranks wait for rank 0's run in their next collective: warn when a run took half the timeout."""
        timeout = getattr(trainer.strategy, "_timeout", None)
        limit = timeout.total_seconds() if timeout is not None and hasattr(timeout, "total_seconds") else None
        if self.recorder is not None and trainer.world_size > 1 and limit and seconds >= 0.5 * limit:
            self.recorder.warn_once(
                "timeout", messages.near_timeout(seconds, limit, step=moment.global_step, world_size=trainer.world_size)
            )

    def _explain(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, probes: ProbeSet, moment: RunMoment
    ) -> dict[str, float]:
        if not self.checked or not self.methods_recorded:
            ranks.first_checks(self, pl_module, probes, trainer)
            probes = self.monitor.probes or probes
        model = self.scored_model(pl_module)
        references = ranks.shared_references(self, tuple(probes.images.shape[-2:]))  # type: ignore[arg-type]
        report = self.engine.run(
            model,
            probes,
            moment,
            convert_input=trainer.precision_plugin.convert_input,
            references=references,
            test_images=self.collector.test_images,
            deadline=self.budget.deadline(),
        )
        if self.recorder is None:  # another rank: its share is in rank 0's report
            return report.phase_seconds
        rgb = display_rgb(probes.images, *self._display_normalization(int(probes.images.shape[1])))
        self.recorder.record_run(report, probes, rgb, references)
        self._after_run(report.maps.skipped + report.maps.cut, report.maps.seconds, report.maps.total_seconds, moment)
        if report.shortcuts is not None and (report.shortcuts.new or report.shortcuts.outlined_again):
            self._react(report.shortcuts.new)  # outlined again: summary.json's findings rewritten, no reaction
        return report.phase_seconds

    def _display_normalization(self, channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """``display_mean``/``display_std``, or ``(None, None)`` (each image min-max scaled) with one warning when
        they do not fit the probes' channels (checked before training where the probes are known then)."""
        mean, std = self.monitor.display_mean, self.monitor.display_std
        try:
            checks.check_display_channels(mean, channels)
        except ValueError as error:
            if self.monitor.strict:
                raise
            if self.recorder is not None:
                self.recorder.warn_once("display", messages.display_scaled(error))
            return None, None
        return mean, std

    def _after_run(self, skipped: list[str], seconds: dict[str, float], total: float, moment: RunMoment) -> None:
        assert self.recorder is not None
        if skipped and self.monitor.max_seconds is not None:
            self.recorder.warn_once(
                "max_seconds",
                messages.time_budget(self.monitor.max_seconds, moment.global_step, list(seconds), total, skipped),
            )
        tuners = self.engine.tuners
        if tuners and all(tuner.best is not None for tuner in tuners.values()):
            self.recorder.info_once("tuned", messages.tuned(tuners))

    def _react(self, new: list[Finding]) -> None:
        assert self.recorder is not None and self.engine.detector is not None
        self.recorder.record_findings(self.engine.detector.findings)
        for finding in new:  # the user's on_shortcut failing is one warning: the run and its record stand
            try:
                self.monitor.react(finding)
            except Exception as error:
                if self.monitor.strict:
                    raise
                self.recorder.warn_once(f"on_shortcut:{describe_error(error)}", messages.on_shortcut_failed(error))

    def _sync_stop(self, trainer: pl.Trainer) -> None:
        if not self.monitor.stop_on_shortcut:
            return
        stop = self.stop_requested
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            trainer.should_stop = True
            rank_zero_info(messages.stopping())

    def check(self, pl_module: pl.LightningModule, probes: ProbeSet, trainer: pl.Trainer) -> None:
        """Prepares the probes (resolving the task) and checks every method on them (strict; one forward pass)."""
        probes = self.prepare(pl_module, probes, trainer.precision_plugin.convert_input)
        if self.monitor.probes is not None:
            self.monitor.probes = probes
        checks.check_methods_can_run(
            self.scored_model(pl_module), probes, self.monitor._methods, trainer.precision_plugin.convert_input
        )
        self.checked = True

    def record_methods(self, model: torch.nn.Module, probes: ProbeSet, trainer: pl.Trainer) -> None:
        """Each method's effective settings (the Grad-CAM layer, the occlusion window) into ``summary.json``, said once
        (rank 0 records; another rank only makes the same passes)."""
        self.methods_recorded = True
        with attribution_conditions(model, module_device(model)):
            images = model_inputs(model, probes.images[:1], trainer.precision_plugin.convert_input)
            effective = effective_settings(model, images, self.monitor._methods)
        if self.recorder is None:
            return
        self.recorder.write_sections(task=self.scoring.resolved, methods=effective)
        auto = self.monitor.num_probes is None and probes.source != "given"
        self.recorder.record_sizing(tuple(probes.images.shape[-3:]), num_probes=len(probes.images), probes_auto=auto)
        for key, entry in effective.items():
            if "layer" in entry:
                self.recorder.info_once(f"layer:{key}", messages.explained_layer(key, entry["layer"]))

    # ------------------------------------------------------------------ end of fit
    def images_done(self) -> None:
        """Waits for the images drawn in the background (a fit ending with an error; never raises)."""
        if self.recorder is None:
            return
        try:
            self.recorder.drain(close=True)
        except Exception as error:  # the training's own error is the one to see
            self.recorder.warn_once(f"images:{describe_error(error)}", messages.images_failed(error))

    def fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The settled report, the cost line, and the sanity check when asked for."""
        if self.recorder is None:
            return
        try:
            self.recorder.finish(self.engine.tracker if self.budget.runs else None)
            self.report_to_parent(trainer)
            if self.budget.runs:
                rank_zero_info(f"AttributionMonitor: {messages.cost_summary(self.budget)}.")
            left_out = [key for run in self.recorder.history.runs for key in run.get("scheduled_out", {})]
            if left_out:
                checks = left_out.count(CHECKS_KEY)
                rank_zero_info(messages.schedule_summary(len(left_out) - checks, checks))
            sanity = self.monitor.sanity
            if sanity is not None and sanity.at_end:
                self.sanity_check(trainer, pl_module, cascade=None)
            robustness = self.monitor.robustness
            if robustness is not None and robustness.at_end:
                self.robustness_check(trainer, pl_module, robustness)
        except Exception as error:
            if self.monitor.strict:
                raise
            self.recorder.warn_once(f"fit_end:{describe_error(error)}", messages.fit_end_failed(describe_error(error)))

    def sanity_check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, cascade: bool | None
    ) -> dict[str, Any]:
        """The model-randomization sanity check on the probes (see :func:`~lightning_xai.monitor.on_demand.sanity`)."""
        return on_demand.sanity(self, trainer, pl_module, cascade=cascade)

    def robustness_check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, settings: RobustnessCheck | None
    ) -> dict[str, Any]:
        """Input invariance and fragility of every method (see :func:`~lightning_xai.monitor.on_demand.robustness`)."""
        return on_demand.robustness(self, trainer, pl_module, settings)

    # ------------------------------------------------------------------ spawned processes (ddp_spawn)
    def report_to_parent(self, trainer: pl.Trainer) -> None:
        """In a process started by a spawn launcher (``ddp_spawn``), rank 0 leaves its lasting state for the main
        process, whose copy of the callback never sees a hook (read back by :meth:`collect_from_spawned`)."""
        if self.recorder is None or not isinstance(
            getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher
        ):
            return
        try:
            atomic_write_bytes(self.channel, json.dumps(self.state_dict()).encode())
        except (OSError, TypeError, ValueError) as error:
            self.recorder.warn_once(
                "channel", messages.handover_failed(describe_error(error), self.recorder.folder / "summary.json")
            )

    def collect_from_spawned(self) -> None:
        """In the main process after a ``ddp_spawn`` fit or validation: takes over rank 0's runs, findings and
        stability state (once; the hand-over file is removed). Does nothing where this process ran the hooks itself."""
        if self.started or self.recorder is not None or not self.channel.is_file():
            return
        try:
            state = json.loads(self.channel.read_bytes())
            self.channel.unlink()
        except (OSError, ValueError):
            return
        self.load_state_dict(state)

    # ------------------------------------------------------------------ state
    def history(self) -> list[dict[str, Any]]:
        """The summary entries of every run so far."""
        if self.recorder is not None:
            return list(self.recorder.history.runs)
        return list((self.restored or {}).get("runs", []))

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as plain values (``weights_only`` safe)."""
        state = dict(self.recorder.state_dict() if self.recorder is not None else (self.restored or {}))
        if self.engine.tracker is not None:
            state["stability"] = self.engine.tracker.state_dict()
        probes = self.monitor.probes
        state["probe_fingerprint"] = probes.fingerprint() if probes is not None else None
        state["findings"] = self.monitor.findings
        state["task"] = self.scoring.task
        if self.engine.detector is not None:
            state["shortcut_checks"] = self.engine.detector.state_dict()
        if self.engine.schedule is not None:
            state["schedule"] = self.engine.schedule.state_dict()
            state["checks_pending"] = self.engine.checks_pending
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues a checkpoint: stability streaks, findings and the shortcut checks' runs and tested places now;
        the history, probes and references when the recorder opens."""
        self.restored = dict(state)
        if state.get("task", "auto") != "auto":
            self.scoring = replace(self.scoring, task=state["task"])
        if self.engine.tracker is not None:
            self.engine.tracker.load_state_dict(state.get("stability", {}))
        if self.engine.schedule is not None:
            self.engine.schedule.load_state_dict(state.get("schedule", {}))
            self.engine.checks_pending = bool(state.get("checks_pending", False))
        if self.engine.detector is not None:
            self.engine.detector.findings = [Finding(**finding) for finding in state.get("findings", [])]
            self.engine.detector.load_state_dict(state.get("shortcut_checks", {}))

    def picklable(self) -> MonitorRun:
        """A copy without the open recorder (its lasting state kept for the other side), for pickling."""
        clone = copy.copy(self)
        if self.recorder is not None:
            clone.restored = self.state_dict()
        clone.recorder = None
        clone.engine = copy.copy(self.engine)
        clone.engine.team = Team()  # the exchanges of this process's ranks stay here
        return clone

    def _open_recorder(self, trainer: pl.Trainer) -> None:
        """Opens (or resumes) the history; on resume restores the probes and references from its folder."""
        search = [Path(trainer.ckpt_path).parent.parent / "xai"] if trainer.ckpt_path else []
        history_state = (
            {k: v for k, v in (self.restored or {}).items() if k in ("fit", "runs")} if self.restored else None
        )
        history = AttributionHistory.open(resolve_log_dir(trainer) / "xai", resume_state=history_state, search=search)
        self.recorder = Recorder(
            history,
            XaiLogger.for_trainer(trainer, history.folder),
            self.monitor._methods,
            stability=self.monitor.stability,
            max_relative_gap=self.monitor.faithfulness.max_relative_gap if self.monitor.faithfulness else 0.1,
            background=draw_in_background(trainer, strict=self.monitor.strict),
        )
        if self.restored is not None:
            self._restore_files(history.folder, [resolve_log_dir(trainer) / "xai", *search])
            self.recorder.resume(self.restored, self.engine.tracker)

    def _restore_files(self, folder: Path, elsewhere: list[Path]) -> None:
        """The probes a checkpoint explained (checked against its fingerprint) and its reference images: from the
        history folder, else from a folder of ``elsewhere`` whose probes match (e.g. beside a damaged summary)."""
        assert self.restored is not None
        folder = self._probe_source(folder, elsewhere)
        if self.monitor.probes is None and (folder / "probes.pt").is_file():
            saved = load_probes(folder)
            self.monitor.probes = ProbeSet(
                saved["images"], saved["labels"], saved["source"], targets_fixed="task" in self.restored
            )
        if self.monitor.probes is not None and (folder / "probes.pt").is_file():
            check_probe_fingerprint(
                self.restored.get("probe_fingerprint"), self.monitor.probes.fingerprint(), folder=folder
            )
        self.collector.references = load_references(folder)
        if (
            self.monitor.probes is None
            and self.restored.get("probe_fingerprint") is not None
            and self.recorder is not None
        ):
            self.recorder.warn_once("probes_lost", messages.probes_not_restored(folder))

    def _probe_source(self, folder: Path, elsewhere: list[Path]) -> Path:
        """``folder``, unless it has no probes.pt and one of ``elsewhere`` holds the checkpoint's probes (same fingerprint)."""
        saved = (self.restored or {}).get("probe_fingerprint")
        if (folder / "probes.pt").is_file() or self.monitor.probes is not None or saved is None:
            return folder
        for candidate in elsewhere:
            if candidate != folder and (candidate / "probes.pt").is_file():
                try:
                    found = load_probes(candidate)
                    check_probe_fingerprint(
                        saved,
                        ProbeSet(found["images"], found["labels"], found["source"]).fingerprint(),
                        folder=candidate,
                    )
                except HistoryError:
                    continue
                return candidate
        return folder


def effective_settings(model: torch.nn.Module, images: Tensor, methods: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's settings as used on ``images`` ``[1, C, H, W]``: its description, the Grad-CAM layer, the occlusion window."""
    effective: dict[str, dict[str, Any]] = {}
    for key, method in methods.items():
        entry: dict[str, Any] = {"settings": checks.describe(method, show_defaults=True)}
        if hasattr(method, "layer_for"):
            entry["layer"] = method.layer_for(model, images)
        if hasattr(method, "window_for"):
            entry["window"] = list(method.window_for(tuple(images.shape[-2:])))
        effective[key] = entry
    return effective
