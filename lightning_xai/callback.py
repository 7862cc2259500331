"""AttributionMonitor: explain fixed probe images at the end of validation, every epoch.

The callback only decides *when*; :mod:`lightning_xai.monitor` does the work. Each hook is a
guard plus one call, as in Lightning's own ``EarlyStopping``.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pytorch_lightning import Callback
from torch import nn
from typing_extensions import override

from lightning_xai.faithfulness import Faithfulness
from lightning_xai.functional._checks import check_positive_int
from lightning_xai.methods import AttributionMethod
from lightning_xai.monitor import settings as checks
from lightning_xai.monitor.budget import RunBudget
from lightning_xai.monitor.collector import Collector
from lightning_xai.monitor.engine import Engine
from lightning_xai.monitor.lifecycle import MonitorRun
from lightning_xai.monitor.model_io import MultilabelTargets, TaskOption, check_scoring, check_task_support
from lightning_xai.monitor.schedule import ScheduleName
from lightning_xai.outputs import Forward, Output
from lightning_xai.probes import ProbeSet, probes_from_argument
from lightning_xai.robustness import RobustnessCheck
from lightning_xai.sanity import SanityCheck
from lightning_xai.shortcuts import Finding, Shortcuts
from lightning_xai.stability import Stability

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["AttributionMonitor"]

TRAINER_TOKEN = "_lightning_xai_trainer_token"
"""The attribute a monitor stamps on the ``Trainer`` it serves, to tell a later fit of that trainer from another's."""


class AttributionMonitor(Callback):
    """Explains a fixed set of probe images at the end of validation and logs the maps.

    At the end of every ``every_n_epochs``-th validation run (never during the sanity check),
    on global rank 0 and on the model's own device, each method explains each probe. Results go
    to TensorBoard (``xai/maps/<method>`` grids, one ``xai/filmstrip/<method>`` per method,
    scalars in the ``xai_*`` sections at the step of Lightning's validation metrics) or, without
    a TensorBoard logger, to PNG files; the raw maps of every run are kept under
    ``<log_dir>/xai/`` with a ``summary.json``. Every tag is listed in ``docs/reference.md``.

    The model is left exactly as it was: eval mode only during the work (each submodule's flag
    restored), buffers and every RNG restored, no ``.backward()`` (parameter gradients
    untouched), ``self.log`` muted, autocast off, compiled code run eagerly. After setup a failure
    inside the monitor is a warning and a record in ``summary.json``, never the end of the fit.

    Args:
        methods: settings objects such as ``GradCAM()``, ``Occlusion(window=8)``,
            ``ExpectedGradients()``; default: Grad-CAM, occlusion and expected gradients. One
            method may appear several times with different settings (named by its settings).
        probes: the images to explain: a tensor ``[P, C, H, W]``, a pair ``(images, targets)``,
            or ``(dataset, indices)``. ``None`` picks ``num_probes`` images from the first
            validation run, spread over the classes when labels are present.
        num_probes: how many probes to pick from validation data; ``None`` (default): 16 for images
            up to 64 x 64, fewer for larger ones (10 at 128 x 128, 6 at 224 x 224, 3 at 512 x 512; see
            :mod:`~lightning_xai.monitor.sizing`, which also sizes ``Occlusion()``'s window and
            ``ExpectedGradients()``'s samples when they are left unset, and stores maps at most 128 px
            per side). What was chosen is said once and written to ``summary.json`` (``sizing``).
        every_n_epochs: explain at the end of validation every n-th epoch (``trainer.validate``
            always explains).
        max_seconds: time budget per run: checked between the batches of every method, so a run
            overruns it by at most one batch; a method stopped that way is recorded as ``cut``, later
            methods are skipped (the first method always starts), and a warning says so once.
        max_overhead: cap on the monitor's cost as a share of the rest of the fit's wall time
            (``0.1``: at most 10% on top of training without it). A scheduled run that would
            take the share above the cap is skipped (predicted from the last run; the first run
            always happens). ``None`` (default): no cap. See :attr:`cost`.
        display_mean, display_std: the normalization applied to the inputs, undone for display.
        submodule: dotted name of the ``nn.Module`` to explain inside the LightningModule
            (e.g. ``"net"``) when ``forward`` of the LightningModule does not return class scores.
        seed: seed of the private random generators (reservoir, expected gradients).
        stability: how maps are compared from run to run; ``None`` turns it off.
        shortcuts: shortcut detection settings; ``None`` turns it off.
        on_shortcut: called with each new confirmed :class:`~lightning_xai.shortcuts.Finding` (rank 0), a copy as
            found (``monitor.findings`` has a moving region's outlines as its latest confirmation drew them).
        stop_on_shortcut: stop training cleanly (on every rank) after a confirmed finding.
        faithfulness: judge the maps themselves each run (deletion/insertion curves, mass-centre
            ablation, completeness gaps); off by default because it costs about as much as the maps.
        sanity: the model-randomization sanity check at the end of fit (``SanityCheck()``); off by default.
        robustness: input-invariance and fragility checks of every method at the end of fit
            (``RobustnessCheck()``); off by default.
        strict: raise failures inside runs instead of warning and recording them (for tests and CI).
        schedule: ``"adaptive"`` (default): the cheapest method (Grad-CAM when present) runs every time;
            the others every time until their maps settle, then at growing intervals (skipping 1 run,
            then 3, then 7 at a time), and every time again when the cheap method's maps move or the probe
            accuracy jumps; the shortcut checks wait in the runs left to the cheap method alone (unless the
            last checks left candidates untested or failed, or the cheap method's maps show a place never
            tested or grown more concentrated); what was left out is listed per run in ``summary.json``
            (``scheduled_out``). ``"every_run"``: every method, and the checks, every time.
        output: which entry of what ``forward`` returns holds the scores: a dict key
            (``"logits"``), a tuple index (``0``) or a callable ``outputs -> scores``.
        forward: ``(module, images) -> outputs``, replacing ``module(images)`` (extra arguments, wrappers).
        task: ``"auto"`` (from the outputs and the labels, see
            :func:`lightning_xai.targets.infer_task`), ``"multiclass"``, ``"multilabel"`` (sigmoid
            scores), ``"binary"`` (one logit ``[N]`` or ``[N, 1]``), ``"regression"`` or
            ``"segmentation"`` (``[N, K, H, W]``: a class's score summed over its predicted region).
        target: ``(outputs) -> [N]`` scores to explain, for anything else (one score per image).
        multilabel_targets: ``"positive"``: each probe explained for each of its positive labels
            (its top-scoring one without labels); ``"top"``: for its top-scoring label only.
        batch_images: ``batch -> images [B, C, H, W]`` when the monitor's rule (a tensor, the
            float images of a tuple before uint8 ones and masks, a dict's ``image`` key) does not find them.
        preprocess: what the model's step does to the batch images before ``forward`` (e.g.
            ``lambda x: x.float() / 255``); used for probes, references and shortcut test images alike.

    Example:
        >>> from lightning_xai import AttributionMonitor, GradCAM, Occlusion
        >>> monitor = AttributionMonitor([GradCAM(), Occlusion(window=8, stride=4)], num_probes=8)
        >>> print(monitor.state_key)
        AttributionMonitor{'methods': ["grad_cam(layer=auto, relu=True, reshape='auto')", 'occlusion(window=8, stride=4, baseline=0.0, batch_size=auto)'], 'every_n_epochs': 1, 'probes': 8}
    """

    def __init__(
        self,
        methods: Sequence[AttributionMethod] | None = None,
        *,
        probes: Any = None,
        num_probes: int | None = None,
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
        sanity: SanityCheck | None = None,
        robustness: RobustnessCheck | None = None,
        strict: bool = False,
        schedule: ScheduleName = "adaptive",
        output: Output = None,
        forward: Forward | None = None,
        task: TaskOption = "auto",
        target: Callable[[Any], Any] | None = None,
        multilabel_targets: MultilabelTargets = "positive",
        batch_images: Callable[[Any], Any] | None = None,
        preprocess: Callable[[Any], Any] | None = None,
    ) -> None:
        self._methods = checks.check_methods(methods)
        self.methods = list(self._methods.values())
        self.num_probes = None if num_probes is None else check_positive_int(num_probes, "num_probes")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.max_seconds = checks.check_max_seconds(max_seconds)
        self.max_overhead = checks.check_max_overhead(max_overhead)
        self.display_mean, self.display_std = checks.check_display_normalization(display_mean, display_std)
        self.submodule = submodule
        self.seed = checks.check_seed(seed)
        self.stability = checks.check_settings(stability, Stability, "stability")
        self.shortcuts = checks.check_settings(shortcuts, Shortcuts, "shortcuts")
        self.faithfulness = checks.check_settings(faithfulness, Faithfulness, "faithfulness")
        self.sanity = checks.check_settings(sanity, SanityCheck, "sanity")
        self.robustness = checks.check_settings(robustness, RobustnessCheck, "robustness")
        self.on_shortcut = checks.check_callable(on_shortcut, "on_shortcut")
        self.stop_on_shortcut = checks.check_bool(stop_on_shortcut, "stop_on_shortcut")
        self.strict = checks.check_bool(strict, "strict")
        self.schedule = checks.check_schedule(schedule)
        self.scoring = check_scoring(
            task=task, output=output, forward=forward, target=target, multilabel_targets=multilabel_targets
        )
        check_task_support(self.scoring.task, faithfulness=self.faithfulness is not None)
        self.batch_images = checks.check_callable(batch_images, "batch_images", "(batch -> images [B, C, H, W])")
        self.preprocess = checks.check_callable(preprocess, "preprocess", "(images -> float images [B, C, H, W])")
        self.probes: ProbeSet | None = probes_from_argument(probes, preprocess=self.preprocess)
        self._given_probes = self.probes
        self._trainer_token: str | None = None
        self._run = self._new_run()

    def _new_run(self) -> MonitorRun:
        references = max((m.reference_count for m in self.methods if checks.uses_training_images(m)), default=0)  # type: ignore[attr-defined]
        collector = Collector(
            num_probes=self.num_probes,
            test_images=self.shortcuts.test_images if self.shortcuts else 0,
            reference_count=references,
            seed=self.seed,
            batch_images=self.batch_images,
            preprocess=self.preprocess,
        )
        engine = Engine(
            self._methods,
            seed=self.seed,
            stability=self.stability,
            shortcuts=self.shortcuts,
            faithfulness=self.faithfulness,
            strict=self.strict,
            schedule=self.schedule,
        )
        budget = RunBudget(
            every_n_epochs=self.every_n_epochs, max_seconds=self.max_seconds, max_overhead=self.max_overhead
        )
        return MonitorRun(self, collector, engine, budget)

    @property
    def state_key(self) -> str:
        """Distinguishes monitors with different settings in a checkpoint (every method's effective settings).

        Lightning asks for it around every hook of every batch, so it is built once per set of settings:
        the (frozen) methods, ``every_n_epochs`` and the probes, compared by identity.
        """
        settings = (*self.methods, self.every_n_epochs, self.num_probes, self.probes)
        cached = self.__dict__.get("_state_key_cache")
        if cached is None or len(cached[0]) != len(settings) or any(a is not b for a, b in zip(cached[0], settings)):
            described = [checks.describe(m, show_defaults=True) for m in self.methods]
            key = self._generate_state_key(
                methods=described, every_n_epochs=self.every_n_epochs, probes=self._probe_description()
            )
            cached = self._state_key_cache = (settings, key)
        return cached[1]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The summary entries of every run so far (also in ``<log_dir>/xai/summary.json``)."""
        self._run.collect_from_spawned()
        return self._run.history()

    @property
    def findings(self) -> list[dict[str, Any]]:
        """Every confirmed shortcut finding so far (see :class:`~lightning_xai.shortcuts.Finding` for the fields)."""
        self._run.collect_from_spawned()
        detector = self._run.engine.detector
        return [finding.to_dict() for finding in detector.findings] if detector else []

    @property
    def cost(self) -> dict[str, float]:
        """This fit's cost so far: ``runs``, ``skipped`` (by ``max_overhead``), ``failed``, ``seconds``
        (the runs' wall time), ``training_seconds`` (the rest of the fit) and ``overhead`` (their ratio)."""
        return self._run.budget.snapshot()

    @property
    def settled(self) -> dict[str, dict[str, int] | None]:
        """Per method, the epoch and step at which its maps settled, or ``None`` (needs ``stability``)."""
        self._run.collect_from_spawned()
        tracker = self._run.engine.tracker
        return dict(tracker.settled) if tracker is not None else {}

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Strict checks before any training: the strategy, the submodule, validation data for the probes (a new
        ``Trainer`` starts afresh, see :meth:`_start_afresh_for`)."""
        self._start_afresh_for(trainer)
        self._run.setup(trainer, pl_module, stage)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Opens the history and checks given probes against the model before any training."""
        if self._run.active:
            self._run.start(trainer, pl_module, new_fit=True)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Same as ``on_fit_start`` for ``trainer.validate()``."""
        if self._run.active and not self._run.started:
            self._run.start(trainer, pl_module, new_fit=False)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Offers the batch's images to the reservoir of training images (rank 0, a copy, until first used)."""
        if self._run.active and trainer.is_global_zero:
            self._run.offer_training(batch)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Starts collecting probe candidates (and shortcut test images) afresh until they are fixed."""
        if self._run.active:
            self._run.collector.start_validation()

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Copies the first validation images as probe candidates and shortcut test images."""
        if self._run.active:
            self._run.offer_validation(trainer, batch, dataloader_idx)

    @override
    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Checks the sanity check's images against the methods, so bad settings fail before training."""
        if self._run.active and self.probes is None:
            self._run.check_sanity_images(pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fixes the probes on the first run, then explains them (rank 0, on schedule)."""
        if self._run.active and not trainer.sanity_checking:
            self._run.validation_end(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reports the cost and methods whose maps never settled; runs the sanity check if asked to."""
        if self._run.active:
            self._run.fit_end(trainer, pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """The fit ends with an error: the images still being drawn are written before the loggers close."""
        if self._run.active:
            self._run.images_done()

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        """Run history, stability state, findings and probe fingerprint: plain values only (``weights_only`` safe)."""
        return self._run.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continues the history of a checkpointed run."""
        self._run.load_state_dict(state_dict)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_run"] = self._run.picklable()
        state["_trainer_token"] = None  # a copy continues its history wherever it lands (ddp_spawn, a saved monitor)
        return state

    # ------------------------------------------------------------------ on demand
    def sanity_check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, cascade: bool | None = None
    ) -> dict[str, Any]:
        """Model-randomization sanity check (Adebayo et al.) of every method, on the probes.

        Maps of copies of the model whose weights are randomized, cascading from the top layer,
        are compared with the trained model's maps (rank correlation, SSIM). A method whose maps
        barely change is reported as insensitive to the model (a warning, ``"sanity_check"`` in
        ``summary.json``, scalars ``xai_sanity/<method>/{spearman,ssim}``). The live model is never
        modified. Call it after fit, or pass ``sanity=SanityCheck()`` to run it when fit ends.

        Returns:
            ``{method: {"spearman", "ssim", "insensitive", "layers": [...]}}`` (rank 0; ``{}`` elsewhere).
        """
        return self._run.sanity_check(trainer, pl_module, cascade=cascade)

    def robustness_check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, settings: RobustnessCheck | None = None
    ) -> dict[str, Any]:
        """Input invariance and fragility of every method, on the probes (see :class:`~lightning_xai.RobustnessCheck`).

        Each method's maps are recomputed for a shifted copy of the model that compensates the shift
        exactly (Kindermans et al.) and for small perturbations that keep the prediction (Ghorbani
        et al.); methods whose maps move are named in a warning, ``"robustness"`` in ``summary.json``
        and scalars ``xai_robustness/<method>/*``. The live model is never modified.

        Returns:
            ``{method: {"input_invariance_spearman", "input_invariant", "fragility_topk_iou",
            "fragility_spearman", "fails"}}`` (rank 0; ``{}`` elsewhere).
        """
        return self._run.robustness_check(trainer, pl_module, settings)

    # ------------------------------------------------------------------ helpers for MonitorRun
    def explained_module(self, pl_module: nn.Module) -> nn.Module:
        """The module the maps explain: ``pl_module`` or its ``submodule``."""
        if self.submodule is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.submodule)
        except AttributeError:
            raise ValueError(
                f"`submodule` must name a submodule of {type(pl_module).__name__}, got {self.submodule!r}."
            ) from None

    def _start_afresh_for(self, trainer: pl.Trainer) -> None:
        """A monitor handed to another ``Trainer`` (a sweep that builds its callbacks once) starts as a new one:
        its runs go to that trainer's log dir, with probes chosen anew (or the ones given). The same trainer's
        later fits and ``validate`` calls continue, as do resumed checkpoints (restored after this hook) and pickled
        copies (a monitor saved and loaded). Under ``ddp_spawn`` this hook runs in the spawned processes only, so
        there a monitor continues its history in the next trainer too: build one per trainer."""
        token = getattr(trainer, TRAINER_TOKEN, None)
        if token is None:
            token = secrets.token_hex(8)
            setattr(trainer, TRAINER_TOKEN, token)
        if self._trainer_token is not None and token != self._trainer_token:
            self._run.images_done()  # the last trainer's files and events are closed
            self.probes = self._given_probes
            self._run = self._new_run()
        self._trainer_token = token

    def react(self, finding: Finding) -> None:
        """Asks to stop when ``stop_on_shortcut``, then hands a new finding to ``on_shortcut`` (whose error, if it
        raises, is the caller's to report: the stop stands)."""
        if self.stop_on_shortcut:
            self._run.stop_requested = True
        if self.on_shortcut is not None:
            self.on_shortcut(copy.deepcopy(finding))  # as found: a later run may outline it again

    def _probe_description(self) -> Any:
        if self.probes is not None and self.probes.source == "given":
            return f"given{list(self.probes.images.shape)}"
        return self.num_probes if self.num_probes is not None else "auto"
