"""One validation run's work: the maps of every method, then the analyses, as one typed report.

Nothing here knows Lightning, writes a file or says anything: the callback hands in the model,
the probes and the moment; the recorder turns the :class:`RunReport` into tags, files and
messages. A failure inside one method or one analysis is kept in the report (``failures``) and
the rest of the run goes on; with ``strict=True`` it is raised instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from lightning_xai.faithfulness import Faithfulness
from lightning_xai.functional.batching import BatchSize, BatchSizeTuner
from lightning_xai.methods import AttributionMethod
from lightning_xai.monitor.analyses import (
    FaithfulnessReport,
    ShortcutReport,
    assess_faithfulness,
    check_shortcuts,
    completeness,
)
from lightning_xai.monitor.budget import Deadline
from lightning_xai.monitor.conditions import attribution_conditions
from lightning_xai.monitor.model_io import InputConverter, Predictions, model_inputs, module_device, predict
from lightning_xai.monitor.schedule import (
    CHECKS_KEY,
    CHECKS_WAIT_REASON,
    MethodSchedule,
    ScheduleName,
    checks_wait,
    sentinel_moved,
)
from lightning_xai.monitor.sharding import Team, draws_per_probe
from lightning_xai.monitor.shares import ShareError, ShareRun, describe_error, put_together
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from lightning_xai.monitor.sizing import method_passes
from lightning_xai.monitor.stability_tracker import StabilityReport, StabilityTracker
from lightning_xai.probes import ProbeSet
from lightning_xai.shortcuts import Shortcuts
from lightning_xai.stability import Stability

__all__ = ["Engine", "MapsReport", "RunMoment", "RunReport", "ShareError", "explain_maps"]


@dataclass(frozen=True)
class RunMoment:
    """When a run happens: ``epoch``, ``global_step`` (keys results), ``log_step`` (TensorBoard's x axis), ``stage``."""

    epoch: int
    global_step: int
    log_step: int
    stage: str


@dataclass
class MapsReport:
    """The maps of one run (CPU, float32) and what they cost.

    Attributes:
        predictions: the model's answers on the probes.
        maps: raw maps by method key ``[P, C|1, H', W']``; probes with non-finite scores hold zeros.
        displays: display maps ``[P, 1, H', W']`` in [0, 1].
        seconds: wall time per method.
        skipped: methods not run because ``max_seconds`` had passed.
        cut: methods stopped between two batches because ``max_seconds`` passed while they ran (no maps).
        gaps: completeness gaps ``[P']`` of path methods, for the explained probes.
        details: other per-probe numbers ``{name: [P']}`` by method (a mask's smallest sufficient area).
        failures: ``{method key: "ErrorType: message"}``.
        total_seconds: wall time of the maps.
        scheduled_out: methods the adaptive schedule left out of this run, with the reason (and
            ``"shortcuts"`` when the shortcut checks waited with them).
    """

    predictions: Predictions
    maps: dict[str, Tensor] = field(default_factory=dict)
    displays: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    gaps: dict[str, Tensor] = field(default_factory=dict)
    details: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    total_seconds: float = 0.0
    scheduled_out: dict[str, str] = field(default_factory=dict)


@dataclass
class RunReport:
    """Everything one run produced, for the recorder."""

    moment: RunMoment
    maps: MapsReport
    stability: StabilityReport | None = None
    shortcuts: ShortcutReport | None = None
    faithfulness: FaithfulnessReport | None = None
    completeness: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def phase_seconds(self) -> dict[str, float]:
        """Wall time of each part: ``maps``, ``shortcuts``, ``faithfulness``."""
        phases = {"maps": self.maps.total_seconds}
        if self.shortcuts is not None:
            phases["shortcuts"] = self.shortcuts.seconds
        if self.faithfulness is not None:
            phases["faithfulness"] = self.faithfulness.seconds
        return phases


def explain_maps(
    model: nn.Module,
    probes: ProbeSet,
    methods: Mapping[str, AttributionMethod],
    *,
    convert_input: InputConverter | None = None,
    references: Tensor | None = None,
    seed: int = 0,
    deadline: Deadline | None = None,
    with_gaps: bool = False,
    batch_sizes: Mapping[bool, BatchSize] | None = None,
    strict: bool = False,
    first_starts: bool = True,
    predictions: Predictions | None = None,
    team: Team | None = None,
) -> MapsReport:
    """Runs every method on the probes under the monitor's conditions.

    Probes whose scores are not finite are left out of this run's maps (zeros). Past the
    ``deadline`` the remaining methods are skipped (the first method always starts, unless
    ``first_starts`` is False), and a method that is running stops between two batches (``cut``):
    a run overruns ``max_seconds`` by at most one batch. A later part of the same run passes
    ``first_starts=False`` and the first part's ``predictions`` (no second forward pass).

    With several processes (``team``, see :mod:`~lightning_xai.monitor.sharding`) every rank
    predicts all probes, explains its share of them and receives every share; a method skipped,
    cut or failed on any rank has no maps. With a collective forward pass rank 0 decides the
    deadline for all (one exchange per method); otherwise the exchange of the shares is the only
    one, so a rank that fails anywhere still meets the others there. A rank's share that failed
    as a whole raises :class:`ShareError` on every rank, after the exchange.

    Example:
        >>> import torch
        >>> from lightning_xai import Saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> report = explain_maps(net, ProbeSet(torch.rand(2, 1, 2, 2), None, "given"), {"saliency": Saliency()})
        >>> report.maps["saliency"].shape, report.failures
        (torch.Size([2, 1, 2, 2]), {})
    """
    started = time.perf_counter()
    team = team or Team()
    device = module_device(model)
    share: MapsReport | str
    try:
        with attribution_conditions(model, device):
            images = model_inputs(model, probes.images, convert_input)
            share = MapsReport(
                predictions=predictions if predictions is not None else predict(model, images, probes.labels)
            )
            explained = share.predictions.explained.nonzero().flatten()
            rows = explained[team.shard(len(explained)).indices]
            refs = model_inputs(model, references, convert_input) if references is not None else None
            targets = share.predictions.targets[rows].to(device)
            run = ShareRun(model, images[rows], targets, rows.tolist(), seed, refs, batch_sizes, team)
            run.explain(share, methods, deadline, with_gaps, strict and team.world_size == 1, first_starts)
    except Exception as error:
        if strict and team.world_size == 1:
            raise
        share = describe_error(error)  # a share failed as a whole: every rank learns it from the exchange
    report = put_together(team.all_gather(share), methods, strict=strict)
    report.total_seconds = time.perf_counter() - started
    return report


class Engine:
    """Runs the maps and the analyses of each validation run; keeps what lasts between runs.

    Args:
        methods: the methods by key.
        seed: seed of every run's private generators.
        stability, shortcuts, faithfulness: analysis settings, each ``None`` when switched off.
        strict: raise failures instead of recording them.
        schedule: ``"adaptive"`` (see :mod:`~lightning_xai.monitor.schedule`; needs stability tracking
            and two methods or more) or ``"every_run"``.

    With several processes (``team``, set by the monitor; see :mod:`~lightning_xai.monitor.sharding`)
    the maps are sharded over the ranks and every rank gets them all; rank 0 takes the schedule's
    decisions for all. The analyses (stability, shortcut checks, faithfulness) run on rank 0 only
    when the model is replicated (DDP); with a collective forward pass (FSDP, FSDP2, DeepSpeed)
    they run on every rank with the same inputs and seeds, so every rank makes the same passes
    and computes the same numbers (only rank 0 records them); nothing there may depend on a clock:
    batch sizes are fixed (no tuning) and the shortcut checks' budget (``max_cost``) is counted in
    images, the same on every rank (no budget when some method's passes are unknown).
    """

    def __init__(
        self,
        methods: Mapping[str, AttributionMethod],
        *,
        seed: int,
        stability: Stability | None,
        shortcuts: Shortcuts | None,
        faithfulness: Faithfulness | None,
        strict: bool = False,
        schedule: ScheduleName = "adaptive",
    ) -> None:
        self.methods = dict(methods)
        self.seed = seed
        self.tracker = StabilityTracker(stability, self.methods) if stability is not None else None
        self.detector = ShortcutDetector(shortcuts) if shortcuts is not None else None
        self.faithfulness = faithfulness
        self.strict = strict
        self.tuners: dict[bool, BatchSizeTuner] | None = None
        adaptive = schedule == "adaptive" and self.tracker is not None and len(self.methods) > 1
        self.schedule = MethodSchedule(list(self.methods)) if adaptive else None
        self.last_accuracy: float | None = None
        self.checks_pending = False  # the last shortcut checks left candidates untested or failed (kept in checkpoints)
        self.team = Team()

    def start_fit(self) -> None:
        """Batch sizes are tuned again for each fit."""
        self.tuners = None

    def run(
        self,
        model: nn.Module,
        probes: ProbeSet,
        moment: RunMoment,
        *,
        convert_input: InputConverter | None,
        references: Tensor | None,
        test_images: Tensor | None,
        deadline: Deadline,
    ) -> RunReport:
        """The maps, then stability, shortcut checks and faithfulness of one run."""
        if self.tuners is None:  # a collective forward needs the same passes on every rank: fixed sizes, no timing
            self.tuners = (
                {}
                if self.team.collective
                else batch_size_tuners(model, probes, self.methods, forward_too=self.detector is not None)
            )

        def explain(
            methods: Mapping[str, AttributionMethod], first_starts: bool = True, predictions: Predictions | None = None
        ) -> MapsReport:
            return explain_maps(
                model,
                probes,
                methods,
                convert_input=convert_input,
                references=references,
                seed=self.seed,
                deadline=deadline,
                with_gaps=self.faithfulness is not None,
                batch_sizes=self.tuners,
                strict=self.strict,
                first_starts=first_starts,
                predictions=predictions,
                team=self.team,
            )

        maps = explain(self.methods) if self.schedule is None else self._scheduled(explain)
        report = RunReport(moment=moment, maps=maps)
        if maps.maps and (self.team.is_zero or self.team.collective):  # unsharded analyses: see Engine's docstring
            self._analyse(model, probes, report, convert_input, test_images)
        return report

    def _scheduled(self, explain: Callable[..., MapsReport]) -> MapsReport:
        """The sentinel first; the other methods as the schedule says (all of them when the sentinel's maps moved)."""
        assert self.schedule is not None and self.tracker is not None
        sentinel = self.schedule.sentinel
        first = explain({sentinel: self.methods[sentinel]})
        wake = self._wake(first, sentinel)
        settled = {key: state is not None for key, state in self.tracker.settled.items()}
        chosen, left = self.schedule.plan(settled, wake=wake)
        chosen, left, settled, wake = self.team.agree((chosen, left, settled, wake))  # rank 0 decides for all
        self.schedule.record(chosen, settled, wake=wake)
        rest = {key: self.methods[key] for key in chosen if key != sentinel}
        if rest:  # a later part of the same run: the first part's predictions, no second start past the deadline
            maps = _merge(first, explain(rest, first_starts=False, predictions=first.predictions), list(self.methods))
        else:
            maps = first
        maps.scheduled_out = left
        return maps

    def _wake(self, first: MapsReport, sentinel: str) -> bool:
        """Whether the sentinel's maps moved (see :func:`sentinel_moved`) or the probe accuracy jumped by 0.1."""
        assert self.tracker is not None
        predictions = first.predictions
        accuracy = float(
            (predictions.correct if predictions.correct is not None else predictions.target_probability).float().mean()
        )
        jumped = self.last_accuracy is not None and abs(accuracy - self.last_accuracy) >= 0.1
        self.last_accuracy = accuracy
        if sentinel not in first.maps:
            return True
        correlation = self.tracker.correlation_with_previous(sentinel, first.maps[sentinel])
        return jumped or sentinel_moved(correlation, self.tracker.settings.threshold)

    def _analyse(
        self,
        model: nn.Module,
        probes: ProbeSet,
        report: RunReport,
        convert_input: InputConverter | None,
        test_images: Tensor | None,
    ) -> None:
        maps, moment = report.maps, report.moment
        if self.tracker is not None:
            report.stability = self._guarded(
                report,
                "stability",
                lambda: self.tracker.update(
                    maps.maps, epoch=moment.epoch, step=moment.global_step, kept=maps.predictions.explained
                ),
            )  # type: ignore[union-attr]
        device = module_device(model)
        with attribution_conditions(model, device):
            if self.detector is not None and test_images is not None and self._checks_wait(maps, test_images):
                maps.scheduled_out[CHECKS_KEY] = CHECKS_WAIT_REASON
                self.detector.skip_run()
            elif self.detector is not None and test_images is not None:
                batch = (self.tuners or {}).get(False)
                images = model_inputs(model, test_images, convert_input)
                detector = self.detector

                def checks() -> ShortcutReport:
                    work, unsized = self._maps_work(maps, probes)
                    return check_shortcuts(
                        detector,
                        model,
                        maps.displays,
                        images,
                        epoch=moment.epoch,
                        step=moment.global_step,
                        batch_size=batch,  # type: ignore[arg-type]
                        probe_images=model_inputs(model, probes.images, convert_input),
                        maps_work=work,
                        unsized_seconds=unsized,
                        probe_classes=maps.predictions.predicted,
                        agree=self.team.agree if self.team.collective else None,
                    )

                report.shortcuts = self._guarded(report, "shortcuts", checks)
                # untested candidates, or checks that failed: the next run checks whatever the schedule says
                self.checks_pending = report.shortcuts is None or report.shortcuts.untested > 0
            if self.faithfulness is not None:
                kept = maps.predictions.explained
                images = model_inputs(model, probes.images[kept], convert_input)
                targets = maps.predictions.targets[kept].to(device)
                chosen = {key: value[kept] for key, value in maps.maps.items()}
                report.faithfulness = self._guarded(
                    report,
                    "faithfulness",
                    lambda: assess_faithfulness(
                        model,
                        images,
                        targets,
                        chosen,
                        self.faithfulness,
                        seed=self.seed,  # type: ignore[arg-type]
                    ),
                )
                report.completeness = completeness(maps.gaps, maps.predictions.target_score[kept])

    def _checks_wait(self, maps: MapsReport, test_images: Tensor) -> bool:
        """Whether the adaptive schedule leaves this run's shortcut checks out (see :func:`checks_wait`): not when
        the last checks left work pending, nor when the sentinel's maps show a place never tested or grown more
        concentrated (``ShortcutDetector.sees_news``). Rank 0's decision under a collective forward pass, where
        every rank runs the checks or none does."""
        if self.schedule is None or self.detector is None:
            return False
        if not checks_wait(maps.scheduled_out, list(self.methods), self.schedule.sentinel, pending=False):
            return False  # the schedule's decision, already the same on every rank
        pending = self.checks_pending or self._sees_news(maps, test_images)
        return not (self.team.agree(pending) if self.team.collective else pending)

    def _sees_news(self, maps: MapsReport, test_images: Tensor) -> bool:
        """``ShortcutDetector.sees_news`` for this run's maps; a failure there counts as news (the checks then run,
        guarded as always, rather than the whole run failing here)."""
        assert self.detector is not None
        size = (int(test_images.shape[-2]), int(test_images.shape[-1]))
        try:
            return self.detector.sees_news(maps.displays, size, maps.predictions.predicted)
        except Exception:
            if self.strict:
                raise
            return True

    def _maps_work(self, maps: MapsReport, probes: ProbeSet) -> tuple[float | None, float]:
        """The shortcut checks' budget base: the forward-equivalents of this run's maps over all probes
        (:func:`~lightning_xai.monitor.sizing.method_passes`; the probes' prediction pass included), and the
        seconds, in one process, of the maps whose passes are unknown (sharded maps took about 1/N of them).
        ``(None, 0)`` (no budget) under a collective forward pass when some are unknown: a budget read from
        each rank's clock could make the ranks' passes differ; a count is the same on every rank."""
        size = (int(probes.images.shape[-2]), int(probes.images.shape[-1]))
        count = int(probes.images.shape[0])
        work, unsized = float(count), 0.0
        for key in maps.maps:
            passes = method_passes(self.methods[key], size)
            if passes is None:
                unsized += maps.seconds.get(key, 0.0) * self.team.world_size
            else:
                work += passes.times(count).forward_equivalents
        if unsized and self.team.collective:
            return None, 0.0
        return work, unsized

    def _guarded(self, report: RunReport, name: str, work):  # type: ignore[no-untyped-def]
        try:
            return work()
        except Exception as error:
            if self.strict:
                raise
            report.failures[name] = describe_error(error)
            return None


def _merge(first: MapsReport, rest: MapsReport, order: list[str]) -> MapsReport:
    """One run's maps from two calls (the predictions of the first), in the monitor's method order."""
    merged = MapsReport(predictions=first.predictions, total_seconds=first.total_seconds + rest.total_seconds)
    for name in ("maps", "displays", "seconds", "gaps", "failures", "details"):
        both = {**getattr(first, name), **getattr(rest, name)}
        setattr(merged, name, {key: both[key] for key in order if key in both})
    merged.skipped = [key for key in order if key in first.skipped + rest.skipped]
    merged.cut = [key for key in order if key in first.cut + rest.cut]
    return merged


def batch_size_tuners(
    model: nn.Module, probes: ProbeSet, methods: Mapping[str, AttributionMethod], *, forward_too: bool = False
) -> dict[bool, BatchSizeTuner]:
    """A tuner per pass type (``False``: forward, ``True``: forward+backward) for methods without a batch size of their own.

    ``forward_too`` adds the forward tuner anyway (the shortcut interventions use it). The first
    runs try sizes as they go, later runs use the fastest
    (see :class:`~lightning_xai.functional.BatchSizeTuner`).
    """
    passes = {
        m.batch_pass for m in methods.values() if m.batch_pass is not None and getattr(m, "batch_size", None) is None
    }
    if forward_too:
        passes.add(False)
    images = probes.images[:1].to(module_device(model))
    tuners = {backward: BatchSizeTuner.for_images(images, backward=backward) for backward in sorted(passes)}
    for backward, tuner in tuners.items():  # methods that draw run one probe at a time: no batch past their samples
        drawn = [m for m in methods.values() if m.batch_pass == backward and getattr(m, "batch_size", None) is None]
        capped = drawn and all(draws_per_probe(m) and isinstance(getattr(m, "n_samples", None), int) for m in drawn)
        if capped and (backward or not forward_too):  # the shortcut checks batch forward passes freely
            most = max(int(m.n_samples) for m in drawn)  # type: ignore[attr-defined]
            tuners[backward] = BatchSizeTuner(
                tuner.device, candidates=[c for c in tuner.candidates if c <= most] or [most]
            )
    return tuners
