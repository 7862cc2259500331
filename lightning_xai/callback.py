"""AttributionMonitor: explain fixed probe images at the end of validation, every epoch.

The callback only decides *when*; :mod:`lightning_xai.functional` decides *what*. Each hook is
a guard plus one call, as in Lightning's own ``EarlyStopping``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_xai._analyses import check_shortcuts, judge_faithfulness, randomisation_report
from lightning_xai._cost import MonitorCost
from lightning_xai._explain import RunResult, batch_size_tuners, budget_warning, display_rgb, explain_probes, first_run_message, tuned_message
from lightning_xai._monitor_checks import (
    check_callable,
    check_display_normalisation,
    check_max_overhead,
    check_max_seconds,
    check_methods,
    check_methods_can_run,
    check_settings,
    check_validation_data,
    describe,
    load_references,
    select_or_error,
    stage_name,
    uses_training_images,
)
from lightning_xai._session import MonitorSession
from lightning_xai.faithfulness import Faithfulness
from lightning_xai.functional._batching import BatchSizeTuner
from lightning_xai.functional._checks import check_positive_int
from lightning_xai.loggers import find_tensorboard_writer, resolve_log_dir
from lightning_xai.methods import AttributionMethod
from lightning_xai.probes import CandidatePool, ProbeSet, TrainingReservoir, probes_from_argument, split_batch
from lightning_xai.shortcuts import Finding, ShortcutDetector, Shortcuts
from lightning_xai.stability import Stability

class AttributionMonitor(Callback):
    """Explains a fixed set of probe images at the end of validation and logs the maps.

    At the end of every ``every_n_epochs``-th validation run (never during the sanity check),
    on global rank 0 and on the model's own device, each method explains each probe. Results go
    to TensorBoard (``xai/probes``, ``xai/<method>`` image grids, ``xai/...`` scalars at
    ``trainer.global_step``) or, without a TensorBoard logger, to PNG files; the raw maps of
    every run are kept under ``<log_dir>/xai/`` with a ``summary.json``.

    The model is left exactly as it was: eval mode only during the work (each submodule's flag
    restored), no ``.backward()`` (parameter gradients untouched), a private RNG, autocast off,
    compiled code run eagerly.

    Args:
        methods: settings objects such as ``GradCAM()``, ``Occlusion(window=8)``,
            ``ExpectedGradients()``; default: Grad-CAM, occlusion and expected gradients.
        probes: the images to explain: a tensor ``[P, C, H, W]``, a pair ``(images, targets)``,
            or ``(dataset, indices)``. ``None`` picks ``num_probes`` images from the first
            validation run, spread over the classes when labels are present.
        num_probes: how many probes to pick from validation data.
        every_n_epochs: explain at the end of validation every n-th epoch (``trainer.validate``
            always explains).
        max_seconds: time budget per run; methods that would start after it are skipped (the
            first method always runs) and the first time this happens a warning says so.
        max_overhead: cap on the monitor's cost as a share of the rest of the fit's wall time
            (``0.1``: at most 10% on top of training without it). A scheduled run that would
            take the share above the cap is skipped (predicted from the last run; the first run
            always happens) and the first skip is warned about. ``None`` (default): no cap.
            The cost is reported at the end of fit and in :attr:`cost`.
        display_mean, display_std: the normalisation applied to the inputs, undone for display
            so overlays look like the images (default: each image min-max scaled).
        submodule: dotted name of the ``nn.Module`` to explain inside the LightningModule
            (e.g. ``"net"``) when ``forward`` of the LightningModule does not return class scores.
        seed: seed of the private random generators (reservoir, expected gradients).
        stability: how maps are compared from run to run (``xai/stability/*`` scalars, the
            "settled" report, filmstrips, agreement between methods); ``None`` turns it off.
        shortcuts: shortcut detection settings (``xai/shortcut/*``, warnings, ``findings``);
            ``None`` turns it off.
        on_shortcut: called with each new confirmed :class:`~lightning_xai.shortcuts.Finding` (rank 0).
        faithfulness: judge the maps themselves each run (deletion/insertion curves, mass-centre
            ablation, completeness gaps; ``xai/faithfulness/*``, ``xai/completeness/*``); off
            by default because it costs about as much as the maps.
        stop_on_shortcut: stop training cleanly (on every rank) after a confirmed finding.

    Example:
        >>> from lightning_xai import AttributionMonitor, GradCAM, Occlusion
        >>> monitor = AttributionMonitor([GradCAM(), Occlusion(window=8, stride=4)], num_probes=8)
        >>> monitor.state_key
        "AttributionMonitor{'methods': ['grad_cam', 'occlusion(window=8, stride=4)'], 'every_n_epochs': 1, 'probes': 8}"
    """

    def __init__(
        self,
        methods: Sequence[AttributionMethod] | None = None,
        *,
        probes: Any = None,
        num_probes: int = 16,
        every_n_epochs: int = 1,
        max_seconds: float | None = None,
        max_overhead: float | None = None,
        display_mean: Sequence[float] | None = None,
        display_std: Sequence[float] | None = None,
        submodule: str | None = None,
        seed: int = 0,
        stability: Stability | None = Stability(),
        shortcuts: Shortcuts | None = Shortcuts(),
        on_shortcut: Callable[[Finding], None] | None = None,
        stop_on_shortcut: bool = False,
        faithfulness: Faithfulness | None = None,
    ) -> None:
        self.methods = check_methods(methods)
        self.num_probes = check_positive_int(num_probes, "num_probes")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.max_seconds = check_max_seconds(max_seconds)
        self.max_overhead = check_max_overhead(max_overhead)
        self.display_mean, self.display_std = check_display_normalisation(display_mean, display_std)
        self.submodule = submodule
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.stability = check_settings(stability, Stability, "stability")
        self.shortcuts = check_settings(shortcuts, Shortcuts, "shortcuts")
        self.faithfulness = check_settings(faithfulness, Faithfulness, "faithfulness")
        self.on_shortcut = check_callable(on_shortcut, "on_shortcut")
        self.stop_on_shortcut = bool(stop_on_shortcut)
        self.probes: ProbeSet | None = probes_from_argument(probes)
        self._init_state()

    def _init_state(self) -> None:
        """Runtime state: what is collected and remembered during training."""
        self._pool = CandidatePool(capacity=max(16 * self.num_probes, 256))
        reference_count = max((m.reference_count for m in self.methods if uses_training_images(m)), default=0)
        self._reservoir = TrainingReservoir(reference_count, seed=self.seed) if reference_count else None
        self._references: torch.Tensor | None = None
        self._detector = ShortcutDetector(self.shortcuts) if self.shortcuts is not None else None
        self._test_images: torch.Tensor | None = None
        self._stop_requested = False
        self._gap_warned: set[str] = set()
        self._validated = False
        self._budget_warned = False
        self._cost = MonitorCost()
        self._tuners: dict[bool, BatchSizeTuner] | None = None
        self._tuned_reported = False
        self._overhead_warned = False
        self._pending_state: dict[str, Any] | None = None
        self._session: MonitorSession | None = None

    @property
    def state_key(self) -> str:
        """Distinguishes monitors with different settings in a checkpoint."""
        return self._generate_state_key(
            methods=[describe(m) for m in self.methods], every_n_epochs=self.every_n_epochs, probes=self._probe_description()
        )

    @property
    def history(self) -> list[dict[str, Any]]:
        """The summary entries of every run so far (also in ``<log_dir>/xai/summary.json``)."""
        return list(self._session.history.runs) if self._session else list((self._pending_state or {}).get("runs", []))

    @property
    def findings(self) -> list[dict[str, Any]]:
        """Every confirmed shortcut finding so far: ``epoch``, ``global_step``, ``method``, ``box``
        (``[top, left, bottom, right]``, input pixels, bottom/right exclusive), ``score``,
        ``confirmed``, ``message`` and the intervention rates."""
        return [finding.to_dict() for finding in self._detector.findings] if self._detector else []

    @property
    def cost(self) -> dict[str, float]:
        """This fit's cost so far: ``runs``, ``skipped`` (by ``max_overhead``), ``seconds`` (the
        runs' wall time), ``training_seconds`` (the rest of the fit) and ``overhead`` (their ratio)."""
        return self._cost.snapshot()

    @property
    def settled(self) -> dict[str, dict[str, int] | None]:
        """Per method, the epoch and step at which its maps settled, or ``None`` (needs ``stability``)."""
        tracker = self._session.tracker if self._session else None
        return dict(tracker.settled) if tracker is not None else {}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Fails early when no probes were given and there is no validation data to pick them from."""
        if self.probes is None:
            check_validation_data(trainer, stage)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Opens the history and checks given probes against the model before any training."""
        self._cost.start_fit()
        self._tuners, self._tuned_reported = None, False  # batch sizes are tuned again for this fit
        self._start(trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """Same as ``on_fit_start`` for ``trainer.validate()``."""
        if self._session is None:
            self._start(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Offers the batch's images to the reservoir of training images (rank 0, a copy, until first used)."""
        if self._reservoir is not None and self._references is None and trainer.is_global_zero:
            self._reservoir.add(split_batch(batch)[0])

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Starts collecting probe candidates (and shortcut test images) afresh until they are fixed."""
        if self._collecting:
            self._pool.reset()

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Copies the first validation images as probe candidates and shortcut test images."""
        if self._collecting and dataloader_idx == 0 and not self._pool.full:
            self._pool.add(batch)

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        """Checks the sanity check's images against the methods, so bad settings fail before training."""
        if self.probes is None and self._pool.count > 0 and not self._validated:
            self._validate(pl_module, self._pool.select(self.num_probes))
            self._validated = False  # the real probes come from the first validation run

    @property
    def _collecting(self) -> bool:
        return self.probes is None or (self._detector is not None and self._test_images is None)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Fixes the probes on the first run, then explains them (rank 0, on schedule)."""
        if trainer.sanity_checking:
            return
        self._fix_probes(trainer, pl_module)
        if not self._should_skip_run(trainer):
            with self._cost.timing_run():
                self._run(trainer, pl_module)
        self._sync_stop(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Reports methods whose maps never settled; runs the sanity check if asked to."""
        if self._session is not None:
            self._session.finish()
        if self._cost.runs:
            rank_zero_info(f"AttributionMonitor: {self._cost.describe()}.")
        if self.faithfulness is not None and self.faithfulness.sanity_check_at_end:
            self.sanity_check(trainer, pl_module)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Run history, stability state and flags: strings, numbers, lists and dicts only (``weights_only`` safe)."""
        state = dict(self._session.state_dict() if self._session else (self._pending_state or {}))
        state["probe_fingerprint"] = self.probes.fingerprint() if self.probes is not None else None
        state["findings"] = self.findings
        state["budget_warned"] = self._budget_warned
        if self._session is not None and self._references is not None:
            state["references_file"] = str((self._session.folder / "references.pt").resolve())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continues the history of a checkpointed run."""
        self._pending_state = dict(state_dict)
        self._budget_warned = bool(state_dict.get("budget_warned", False))
        self._references = load_references(state_dict.get("references_file"))
        if self._detector is not None:
            self._detector.findings = [Finding(**finding) for finding in state_dict.get("findings", [])]
        if self._session is not None:
            self._session.history.load_state_dict(self._pending_state)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._session is not None:  # keep the history, drop the open logger and files
            state["_pending_state"] = self.state_dict()
        state["_session"] = None
        return state

    # ------------------------------------------------------------------ work
    def _start(self, trainer: Any, pl_module: Any) -> None:
        if self.probes is not None and not self._validated:
            self._validate(pl_module, self.probes)
        if trainer.is_global_zero and self._session is None:
            folder = resolve_log_dir(trainer) / "xai"
            writer = find_tensorboard_writer(trainer)
            self._session = MonitorSession(folder, writer, self.methods, self.stability, self._pending_state)

    def _fix_probes(self, trainer: Any, pl_module: Any) -> None:
        """On the first validation run: choose the probes (rank 0, broadcast) and the shortcut test images."""
        chosen_now = self.probes is None
        if chosen_now:
            chosen, error = select_or_error(self._pool, self.num_probes) if trainer.is_global_zero else (None, None)
            if trainer.world_size > 1:
                chosen, error = trainer.strategy.broadcast((chosen, error), src=0)
            if error is not None:
                raise ValueError(error)
            self.probes = chosen
        if self._detector is not None and self._test_images is None:
            first = self._pool.first_images(self._detector.settings.test_images)
            self._test_images = first if first is not None else self.probes.images  # type: ignore[union-attr]
        self._pool.reset()
        if chosen_now or not self._validated:
            self._validate(pl_module, self.probes)  # type: ignore[arg-type]

    def _should_skip_run(self, trainer: Any) -> bool:
        if not trainer.is_global_zero or self._session is None:
            return True
        fitting = stage_name(trainer.state.fn) == "fit"
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return True
        if fitting and self.max_overhead is not None and self._cost.would_exceed(self.max_overhead):
            self._skip_for_overhead(trainer)
            return True
        return False

    def _skip_for_overhead(self, trainer: Any) -> None:
        if not self._overhead_warned:
            self._overhead_warned = True
            rank_zero_warn(self._cost.skip_warning(self.max_overhead, epoch=trainer.current_epoch, step=trainer.global_step))  # type: ignore[arg-type]
        self._cost.skipped += 1

    def _run(self, trainer: Any, pl_module: Any) -> None:
        assert self._session is not None and self.probes is not None
        if self._references is None and self._reservoir is not None and self._reservoir.images is not None:
            self._references = self._reservoir.images.clone()  # frozen from now on: every run uses the same set
        if self._tuners is None:  # per fit: the first runs try batch sizes as they go
            self._tuners = batch_size_tuners(self._model(pl_module), self.probes, self.methods, forward_too=self._detector is not None)
        result = explain_probes(
            self._model(pl_module),
            self.probes,
            self.methods,
            convert_input=trainer.precision_plugin.convert_input,
            references=self._references,
            seed=self.seed,
            max_seconds=self.max_seconds,
            with_gaps=self.faithfulness is not None,
            batch_sizes=self._tuners,
        )
        self._session.save_artefacts(self.probes, self._references)  # once per session
        rgb = display_rgb(self.probes.images, self.display_mean, self.display_std)
        step, epoch, stage = trainer.global_step, trainer.current_epoch, stage_name(trainer.state.fn)
        metrics, images = self._analyse(pl_module, result, rgb, epoch=epoch, step=step)
        self._session.record(result, self.probes, rgb, step=step, epoch=epoch, stage=stage, extra_metrics=metrics, extra_images=images)
        self._report(result, trainer)

    def _analyse(self, pl_module: Any, result: RunResult, rgb: Tensor, *, epoch: int, step: int) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Shortcut checks and faithfulness metrics of this run (each when switched on)."""
        metrics: dict[str, float] = {}
        images: dict[str, Tensor] = {}
        model = self._model(pl_module)
        if self._detector is not None and self._test_images is not None and result.displays:
            found, outlines, new = check_shortcuts(
                self._detector, model, result, rgb, self._test_images, probe_size=tuple(self.probes.images.shape[-2:]),  # type: ignore[union-attr, arg-type]
                epoch=epoch, step=step, on_finding=self._react, batch_size=(self._tuners or {}).get(False),
            )
            metrics.update(found)
            images.update(outlines)
            if new:
                self._session.write_findings(self.findings)  # type: ignore[union-attr]
        if self.faithfulness is not None and result.maps:
            judged, plots = judge_faithfulness(self.faithfulness, model, self.probes.images, result, seed=self.seed, warned=self._gap_warned)  # type: ignore[union-attr]
            metrics.update(judged)
            images.update(plots)
        return metrics, images

    def _react(self, finding: Finding) -> None:
        if self.on_shortcut is not None:
            self.on_shortcut(finding)
        self._stop_requested = self._stop_requested or self.stop_on_shortcut

    def sanity_check(self, trainer: Any, pl_module: Any, *, cascade: bool = True) -> dict[str, Any]:
        """Model-randomisation sanity check (Adebayo et al.) of every method, on the probes.

        Maps of copies of the model whose weights are randomised, cascading from the top layer,
        are compared with the trained model's maps (rank correlation, SSIM). A method whose maps
        barely change is reported as insensitive to the model (a warning, and ``"sanity_check"``
        in ``summary.json``; scalars ``xai/sanity/<method>/{spearman,ssim}``). The live model is
        never modified. Call it after fit, or let ``Faithfulness(sanity_check_at_end=True)`` do it.

        Returns:
            ``{method: {"spearman", "ssim", "insensitive", "layers": [...]}}`` (rank 0; ``{}`` elsewhere).
        """
        if not trainer.is_global_zero or self.probes is None:
            return {}
        report = randomisation_report(
            self._model(pl_module), self.probes, self.methods, self._references, self.faithfulness or Faithfulness(), seed=self.seed, cascade=cascade
        )
        if self._session is not None:
            scalars = {f"xai/sanity/{name}/{key}": values[key] for name, values in report.items() for key in ("spearman", "ssim")}
            self._session.logger.scalars(scalars, trainer.global_step)
            self._session.logger.flush()
            self._session.history.write_summary(sanity_check={"global_step": trainer.global_step, **report})
        return report

    def _sync_stop(self, trainer: Any) -> None:
        if not self.stop_on_shortcut:
            return
        stop = self._stop_requested
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            trainer.should_stop = True
            rank_zero_info("AttributionMonitor: stopping training after a confirmed shortcut (stop_on_shortcut=True).")

    def _report(self, result: RunResult, trainer: Any) -> None:
        if len(self._session.history.runs) == 1:  # type: ignore[union-attr]
            rank_zero_info(first_run_message(result, self._session.history.folder))  # type: ignore[union-attr]
        if self._tuners and not self._tuned_reported and all(tuner.best is not None for tuner in self._tuners.values()):
            self._tuned_reported = True
            rank_zero_info(tuned_message(self._tuners))
        if result.skipped and not self._budget_warned:
            self._budget_warned = True
            rank_zero_warn(budget_warning(result, self.max_seconds, trainer.global_step))

    def _model(self, pl_module: nn.Module) -> nn.Module:
        if self.submodule is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.submodule)
        except AttributeError:
            raise ValueError(f"`submodule` must name a submodule of {type(pl_module).__name__}, got {self.submodule!r}.") from None

    def _validate(self, pl_module: nn.Module, probes: ProbeSet) -> None:
        """Runs the probes through the model once and asks each method whether it can run."""
        check_methods_can_run(self._model(pl_module), probes, self.methods)
        self._validated = True

    def _probe_description(self) -> Any:
        if self.probes is not None and self.probes.source == "given":
            return f"given{list(self.probes.images.shape)}"
        return self.num_probes

