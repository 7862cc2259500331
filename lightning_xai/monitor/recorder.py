"""The only place that turns the monitor's reports into tags, messages and files (global rank 0).

It holds what is open while the monitor records: the on-disk history, the logger, the
filmstrips, and the one set of things already said (``said``), so that every "shown once"
warning is decided here. A failed write under the history folder is warned about once and the
recorder goes on with what still works (TensorBoard without the files).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_xai._fast_crc import install_fast_crc
from lightning_xai.history import AttributionHistory
from lightning_xai.loggers import XaiLogger
from lightning_xai.methods import AttributionMethod
from lightning_xai.monitor import messages, sizing, tags
from lightning_xai.monitor.artefacts import save_artefacts
from lightning_xai.monitor.background import BackgroundWork
from lightning_xai.monitor.engine import RunMoment, RunReport
from lightning_xai.monitor.images import Filmstrips, curves_plot, maps_grid, outline_findings, outlined_masks
from lightning_xai.monitor.metrics import run_metrics
from lightning_xai.monitor.stability_tracker import StabilityTracker
from lightning_xai.probes import ProbeSet
from lightning_xai.render import make_grid, overlay
from lightning_xai.shortcuts import Finding
from lightning_xai.stability import Stability

__all__ = ["Recorder", "prediction_table"]

T = TypeVar("T")


class Recorder:
    """Logs and stores the monitor's runs.

    Args:
        history: the opened history (see :meth:`~lightning_xai.history.AttributionHistory.open`).
        writer: an :class:`~lightning_xai.loggers.XaiLogger` (every logger of the trainer), a TensorBoard
            ``SummaryWriter``, or ``None`` (PNG files instead).
        methods: the methods by key.
        stability: stability settings (filmstrips, messages), or ``None`` when tracking is off.
        max_relative_gap: completeness gap above which a path method's maps are warned about.
        background: draw and log the images of a fit's runs on a worker thread (TensorBoard only; see
            :mod:`~lightning_xai.monitor.background`), so that the next epoch starts sooner (the caller
            decides when that pays: :func:`~lightning_xai.monitor.lifecycle.draw_in_background`).
    """

    def __init__(
        self,
        history: AttributionHistory,
        writer: Any | None,
        methods: Mapping[str, AttributionMethod],
        *,
        stability: Stability | None,
        max_relative_gap: float = 0.1,
        background: bool = False,
    ) -> None:
        self.methods = dict(methods)
        self.stability = stability
        self.max_relative_gap = max_relative_gap
        self.history = history
        self.logger = writer if isinstance(writer, XaiLogger) else XaiLogger(writer, history.folder)
        self.filmstrips = Filmstrips(stability.filmstrip_length) if stability is not None else None
        self.resumed_frames: list[tuple[int, dict[str, Tensor]]] = []
        self.said: set[str] = set()
        self.files_ok = True
        self.probes_logged = False
        self.artefacts_saved = False
        self.sections: dict[str, Any] = {}
        self.background = BackgroundWork() if background and self.logger.active and self.logger.thread_safe else None
        if history.notice:
            rank_zero_info(messages.history_notice(history.notice))
        if not self.logger.active:
            self.info_once("no_tensorboard", messages.no_tensorboard(history.folder))
        else:
            install_fast_crc()  # TensorBoard's pure-Python checksum costs ~110 ms per MB of images
            self.logger.layout(tags.custom_scalars_layout())

    @property
    def folder(self) -> Path:
        """``<log_dir>/xai``."""
        return self.history.folder

    # ------------------------------------------------------------------ messages
    def warn_once(self, key: str, message: str) -> None:
        """Warns with ``message`` unless something was already said under ``key``."""
        if key not in self.said:
            self.said.add(key)
            rank_zero_warn(message)

    def info_once(self, key: str, message: str) -> None:
        """Says ``message`` as an info line unless something was already said under ``key``."""
        if key not in self.said:
            self.said.add(key)
            rank_zero_info(message)

    # ------------------------------------------------------------------ runs
    def record_run(
        self, report: RunReport, probes: ProbeSet, rgb: Tensor, references: Tensor | None = None
    ) -> dict[str, Any] | None:
        """Logs one run's images, scalars and predictions, stores its maps, and says what needs saying.

        Args:
            report: the run's report.
            probes: the probes; rgb: their display images ``[P, 3, H', W']``.
            references: the frozen reference images, saved once beside the probes.
        """
        started = time.perf_counter()
        moment = report.moment
        self.drain()
        self._save_artefacts_once(probes, references)
        metrics = run_metrics(report)
        background = self.background if moment.stage == "fit" else None  # validate(): images there on return
        if background is not None:
            background.submit(lambda: self._log_images(report, rgb, probes))
        else:
            self._log_images(report, rgb, probes)
        self.logger.scalars(metrics, moment.log_step)
        self.logger.text(tags.PREDICTIONS, prediction_table(report, probes), moment.log_step)
        count = len(self.history.runs)
        entry = self._files(lambda: self._store(report, metrics))
        if entry is None:  # not written (disk fault): still listed, without a file, in `history` and later summaries
            entry = self.history.runs[-1] if len(self.history.runs) > count else self._listed(report, metrics)
        self._say(report)
        recording = time.perf_counter() - started
        self.logger.scalars({tags.phase_seconds("recording"): recording}, moment.log_step)
        if background is not None:
            background.submit(self.logger.flush)  # after the images
        else:
            self.logger.flush()
        if entry is not None:
            entry["metrics"][tags.phase_seconds("recording")] = recording
        if len(self.history.runs) == 1 or (entry is None and "first_run" not in self.said):
            phases = {**report.phase_seconds, "recording": recording}
            self.info_once(
                "first_run",
                messages.first_run(
                    len(probes.images), phases, report.maps.seconds, self.folder if self.files_ok else None
                ),
            )
        return entry

    def drain(self, *, close: bool = False) -> None:
        """Waits for the images drawn in the background (see :mod:`~lightning_xai.monitor.background`);
        a failure there is warned about once. ``close``: also stops the worker thread (end of fit)."""
        if self.background is None:
            return
        for error in self.background.close() if close else self.background.drain():
            self.warn_once(f"images:{type(error).__name__}", messages.images_failed(error))

    def record_failure(self, moment: RunMoment, error: str) -> None:
        """A run that failed as a whole: one warning per cause, an entry with ``"error"`` (and no file) in ``summary.json``."""
        self.drain()
        self.warn_once(
            f"run_failed:{error}", messages.run_failed(epoch=moment.epoch, step=moment.global_step, error=error)
        )
        count = len(self.history.runs)
        self._files(
            lambda: self.history.record_failure(
                global_step=moment.global_step, epoch=moment.epoch, stage=moment.stage, error=error
            )
        )
        if len(self.history.runs) == count:  # files off after a disk fault: listed in memory
            self.history.runs.append(
                self.history._entry(
                    moment.global_step, moment.epoch, moment.stage, [], {}, None, {"error": error}, file=None
                )
            )
        failed = sum(1 for run in self.history.runs if run.get("error"))
        self._logged(lambda: self.logger.scalars({tags.FAILED_RUNS: float(failed)}, moment.log_step))
        self._logged(self.logger.flush)

    def record_cost(self, overhead: float, step: int) -> None:
        """The monitor's overhead so far, as a scalar (a failing logger is warned about, never raised)."""
        self._logged(lambda: self.logger.scalars({tags.OVERHEAD: overhead}, step))

    def record_sizing(self, image_size: tuple[int, ...], *, num_probes: int, probes_auto: bool) -> None:
        """The defaults sized to the probes' ``(C, H, W)``: the ``sizing`` section, said once when anything shrank."""
        chosen = sizing.choose_sizing(image_size, self.methods, num_probes=num_probes, probes_auto=probes_auto)
        self.write_sections(sizing=chosen.to_dict())
        if chosen.reduced:
            self.info_once("sizing", messages.sizing(chosen))

    def record_findings(self, findings: list[Finding]) -> None:
        """Every shortcut finding so far, into ``summary.json``."""
        self.write_sections(findings=[finding.to_dict() for finding in findings])

    def record_sanity(self, report: Mapping[str, Any], *, step: int, log_step: int, threshold: float) -> None:
        """The sanity check's scalars, its summary section, and a warning for insensitive methods."""
        self.drain()
        scalars = {
            tags.sanity(key, metric): values[metric]
            for key, values in report.items()
            for metric in ("spearman", "ssim")
        }
        self.logger.scalars(scalars, log_step)
        self.logger.flush()
        self.write_sections(sanity_check={"global_step": step, **report})
        insensitive = [key for key, values in report.items() if values["insensitive"]]
        if insensitive:
            rank_zero_warn(messages.insensitive_methods(insensitive, threshold))

    def record_robustness(self, report: Mapping[str, Any], *, step: int, log_step: int, threshold: float) -> None:
        """The robustness checks' scalars, their summary section, and a warning for methods that fail them."""
        self.drain()
        keys = ("input_invariance_spearman", "fragility_topk_iou", "fragility_spearman")
        self.logger.scalars(
            {tags.robustness(key, metric): values[metric] for key, values in report.items() for metric in keys},
            log_step,
        )
        self.logger.flush()
        self.write_sections(robustness={"global_step": step, **report})
        failures = {key: values["fails"] for key, values in report.items() if values["fails"]}
        if failures:
            rank_zero_warn(messages.fragile_methods(failures, threshold))

    def write_sections(self, **sections: Any) -> None:
        """Top-level sections of ``summary.json`` (kept across later writes)."""
        self.sections.update(sections)
        self._files(lambda: self.history.write_summary(**self.sections))

    def finish(self, tracker: StabilityTracker | None) -> None:
        """At the end of fit: the images drawn in the background, the settled state into the summary, and
        methods that never settled (when they could have)."""
        if self.background is not None:
            self.drain(close=True)
            self._logged(self.logger.flush)  # the worker's last images (the hook flushed everything else)
        if tracker is None:
            return
        self.write_sections(settled=tracker.state_dict()["settled"])
        unsettled = tracker.unsettled()
        if unsettled and tracker.could_settle():
            s = tracker.settings
            rank_zero_warn(messages.unsettled(unsettled, threshold=s.threshold, patience=s.patience))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Runs and what was said (weights-only safe)."""
        return {**self.history.state_dict(), "said": sorted(self.said)}

    def resume(self, state: Mapping[str, Any], tracker: StabilityTracker | None) -> None:
        """Continues after a checkpoint (the history itself was resumed when opened): what was said, and the
        last runs' maps for the filmstrips and the tracker."""
        self.said |= set(state.get("said", []))
        self.sections.update({k: v for k, v in state.items() if k in ("findings",)})
        runs = [run for run in self.history.runs if run.get("file")]
        for run in runs[-(self.filmstrips.length if self.filmstrips else 1) :]:
            try:
                maps = self.history.load_run(run)["maps"]  # stored maps: stability compares at their size
            except Exception as error:  # damaged or missing files: the run goes on without them
                rank_zero_warn(messages.unreadable_run(run.get("file"), error))
                continue
            if tracker is not None:
                tracker.remember(maps)
            self._remember_frames(maps, run)

    # ------------------------------------------------------------------ internals
    def _remember_frames(self, maps: Mapping[str, Tensor], run: Mapping[str, Any]) -> None:
        self.resumed_frames.append((int(run.get("epoch", 0)), {k: v for k, v in maps.items() if k in self.methods}))

    def _save_artefacts_once(self, probes: ProbeSet, references: Tensor | None) -> None:
        if not self.artefacts_saved:
            self.artefacts_saved = True
            self._files(lambda: save_artefacts(self.folder, probes, references))

    def _log_images(self, report: RunReport, rgb: Tensor, probes: ProbeSet) -> None:
        step = report.moment.log_step
        if not self.probes_logged:
            self.probes_logged = True
            self._image(tags.PROBES_IMAGE, make_grid(rgb), step)
        overlaid = {key: overlay(rgb, display.cpu()) for key, display in report.maps.displays.items()}
        for key, tiles in overlaid.items():  # drawn once, for the maps grid and the filmstrip
            self._image(tags.maps_image(key), maps_grid(tiles, report.maps.predictions), step)
        self._log_filmstrips(report, rgb, overlaid)
        if report.shortcuts is not None:
            size = (int(probes.images.shape[-2]), int(probes.images.shape[-1]))
            for key, finding in report.shortcuts.current.items():
                if finding.confirmed:
                    outlined = outline_findings(rgb, [finding], size)
                    self._image(tags.shortcut_image(key), outlined, step)
        for key, details in report.maps.details.items():
            if "smallest_area" in details:
                self._image(tags.mask_image(key), outlined_masks(rgb, report.maps.maps[key]), step)
        if report.faithfulness is not None:
            for key, curves in report.faithfulness.curves.items():
                self._image(tags.faithfulness_image(key), curves_plot(curves), step)

    def _log_filmstrips(self, report: RunReport, rgb: Tensor, overlaid: Mapping[str, Tensor]) -> None:
        if self.filmstrips is None:
            return
        for epoch, maps in self.resumed_frames:
            for key, value in maps.items():
                self.filmstrips.add(key, self.methods[key].display(value), rgb, epoch=epoch)
        self.resumed_frames = []
        for key, tiles in overlaid.items():
            self.filmstrips.add_tiles(key, tiles, epoch=report.moment.epoch)
            self._image(tags.filmstrip_image(key), self.filmstrips.image(key), report.moment.log_step)

    def _image(self, tag: str, image: Tensor, step: int) -> None:
        if self.logger.active:
            self.logger.image(tag, image, step)
        else:
            self._files(lambda: self.logger.image(tag, image, step))

    def _store(self, report: RunReport, metrics: dict[str, float]) -> dict[str, Any]:
        """Writes the run; maps larger than ``sizing.STORED_MAX_SIDE`` are stored averaged down (``map_full_size``)."""
        maps, moment = report.maps, report.moment
        stored = {key: sizing.downsample_map(value) for key, value in maps.maps.items()}
        full = {key: list(maps.maps[key].shape[-2:]) for key, value in stored.items() if value is not maps.maps[key]}
        return self.history.record(
            global_step=moment.global_step,
            epoch=moment.epoch,
            stage=moment.stage,
            maps=stored,
            targets=maps.predictions.targets,
            predictions=maps.predictions.predicted,
            probabilities=maps.predictions.probability,
            metrics=metrics,
            skipped=maps.skipped,
            extra={**_extra(report), **({"map_full_size": full} if full else {})},
        )

    def _listed(self, report: RunReport, metrics: dict[str, float]) -> dict[str, Any]:
        """The run's entry without a file, kept in memory when its files could not be written."""
        maps, moment = report.maps, report.moment
        entry = self.history._entry(
            moment.global_step,
            moment.epoch,
            moment.stage,
            sorted(maps.maps),
            metrics,
            maps.skipped,
            _extra(report),
            file=None,
        )
        self.history.runs.append(entry)
        return entry

    def _say(self, report: RunReport) -> None:
        maps, moment = report.maps, report.moment
        failures = {**maps.failures, **report.failures}
        if failures:
            self.warn_once(
                "failures:" + "|".join(sorted(failures.values())),
                messages.methods_failed(failures, step=moment.global_step),
            )
        if maps.predictions.skipped_probes:
            self.warn_once(
                "nonfinite", messages.nonfinite_probes(maps.predictions.skipped_probes, step=moment.global_step)
            )
        if maps.predictions.empty_regions:
            self.warn_once("empty", messages.empty_regions(maps.predictions.empty_regions, step=moment.global_step))
        if report.stability is not None and self.stability is not None:
            for key in report.stability.newly_settled:
                rank_zero_info(
                    messages.settled(
                        key,
                        epoch=moment.epoch,
                        step=moment.global_step,
                        threshold=self.stability.threshold,
                        patience=self.stability.patience,
                    )
                )
        for key, values in report.completeness.items():
            if values["relative_gap_mean"] > self.max_relative_gap:
                self.warn_once(f"incomplete:{key}", messages.incomplete_maps(key, values["relative_gap_mean"]))
        if report.shortcuts is not None:
            for finding in report.shortcuts.new:
                rank_zero_warn(messages.shortcut_found(finding.message))
            for finding in report.shortcuts.outlined_again:
                rank_zero_info(messages.outlined_again(finding))

    def _logged(self, log: Callable[[], object]) -> None:
        """Logging outside a run's guard (after a failure, the cost): a failure is warned about once."""
        try:
            log()
        except Exception as error:
            self.warn_once(f"logger:{type(error).__name__}", messages.logging_failed(error))

    def _files(self, write: Callable[[], T]) -> T | None:
        if not self.files_ok:
            return None
        try:
            return write()
        except OSError as error:
            self.files_ok = False
            self.warn_once(
                "disk", messages.disk_failure(error.filename or self.folder, error, logging=self.logger.active)
            )
            return None


def _extra(report: RunReport) -> dict[str, Any]:
    """A run entry's ``failures`` and ``skipped_probes`` when there are any."""
    maps = report.maps
    extra: dict[str, Any] = {}
    if maps.failures or report.failures:
        extra["failures"] = {**maps.failures, **report.failures}
    if maps.predictions.skipped_probes:
        extra["skipped_probes"] = maps.predictions.skipped_probes
    if maps.predictions.empty_regions:
        extra["empty_regions"] = maps.predictions.empty_regions
    if maps.cut:
        extra["cut"] = list(maps.cut)
    if maps.scheduled_out:
        extra["scheduled_out"] = dict(maps.scheduled_out)
    if maps.details:
        extra["details"] = {
            key: {name: values.tolist() for name, values in numbers.items()} for key, numbers in maps.details.items()
        }
    return extra


def prediction_table(report: RunReport, probes: ProbeSet) -> str:
    """Markdown table: probe, label, prediction, its probability, the target's probability (sigmoids for multi-label, values for regression)."""
    predictions = report.maps.predictions
    header = _TABLE_HEADERS.get(predictions.task, _TABLE_HEADERS["multiclass"])
    shown = (lambda value: f"{value:.4g}") if predictions.task == "regression" else (lambda value: f"{value:.1%}")
    rows = [header, "|---|---|---|---|---|"]
    for index in range(predictions.predicted.shape[0]):
        label = "?" if probes.labels is None else str(int(probes.labels[index]))
        rows.append(
            f"| {index} | {label} | {int(predictions.predicted[index])} | {shown(float(predictions.probability[index]))} "
            f"| {shown(float(predictions.target_probability[index]))} |"
        )
    return "\n".join(rows)


_TABLE_HEADERS = {
    "multiclass": "| probe | label | predicted | probability | target probability |",
    "multilabel": "| probe | label | top label | its sigmoid | target sigmoid |",
    "regression": "| probe | output | largest output | its value | target value |",
    "segmentation": "| probe | class | predicted | mean probability | target mean probability |",
}
