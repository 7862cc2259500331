"""What the monitor holds open while it runs on rank 0: history, logger, stability tracker.

Rebuilt after unpickling or resuming (it is never pickled itself); its lasting state goes into
the callback's ``state_dict``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_xai._explain import RunResult, publish
from lightning_xai._files import atomic_write_bytes
from lightning_xai.history import AttributionHistory
from lightning_xai.loggers import XaiLogger
from lightning_xai.methods import AttributionMethod
from lightning_xai.probes import ProbeSet
from lightning_xai.render import make_grid
from lightning_xai.stability import Stability, StabilityTracker


class MonitorSession:
    """Records validation runs into the history, TensorBoard and the stability tracker.

    Args:
        folder: ``<log_dir>/xai``.
        writer: TensorBoard ``SummaryWriter`` or ``None`` (PNG fallback).
        methods: the monitor's methods (for display and stability reductions).
        stability: stability settings, or ``None`` to skip stability tracking.
        state: a previous ``state_dict()`` to continue from (resume), or ``None``.
    """

    def __init__(
        self,
        folder: Path,
        writer: Any | None,
        methods: list[AttributionMethod],
        stability: Stability | None,
        state: dict[str, Any] | None,
    ) -> None:
        self.methods = methods
        self.history = AttributionHistory(folder)
        self.logger = XaiLogger(writer, folder)
        self.tracker = StabilityTracker(stability, methods) if stability is not None else None
        self.probes_logged = False
        self.artefacts_saved = False
        if state is not None:
            self._resume(state)

    @property
    def folder(self) -> Path:
        """``<log_dir>/xai``."""
        return self.history.folder

    def record(
        self,
        result: RunResult,
        probes: ProbeSet,
        rgb: Tensor,
        *,
        step: int,
        epoch: int,
        stage: str,
        extra_metrics: dict[str, float] | None = None,
        extra_images: dict[str, Tensor] | None = None,
    ) -> dict[str, Any]:
        """Logs and stores one run; returns its summary entry."""
        if not self.probes_logged:
            self.logger.image("xai/probes", make_grid(rgb), step)
            self.probes_logged = True
        metrics: dict[str, float] = dict(extra_metrics or {})
        images: dict[str, Tensor] = dict(extra_images or {})
        if self.tracker is not None:
            report = self.tracker.update(result.maps, result.displays, rgb, epoch=epoch, step=step)
            metrics.update(report.metrics)
            images.update(report.filmstrips)
            for name in report.newly_settled:
                rank_zero_info(
                    f"AttributionMonitor: {name} maps settled at epoch {epoch} (step {step}): rank correlation with the "
                    f"previous run >= {self.tracker.settings.threshold} for {self.tracker.settings.patience} runs."
                )
        entry = publish(
            result, probes, rgb, logger=self.logger, history=self.history, step=step, epoch=epoch, stage=stage,
            extra_metrics=metrics, extra_images=images,
        )
        self._write_settled()
        return entry

    def write_findings(self, findings: list[dict[str, Any]]) -> None:
        """Puts every shortcut finding so far into ``summary.json``."""
        self.history.write_summary(findings=findings)

    def save_artefacts(self, probes: ProbeSet, references: Tensor | None) -> None:
        """Saves the probes and reference images next to the history (once), for replay and comparisons."""
        if self.artefacts_saved:
            return
        self.artefacts_saved = True
        payload: dict[str, Any] = {"images": probes.images, "labels": probes.labels, "source": probes.source}
        _save(self.folder / "probes.pt", payload)
        if references is not None:
            _save(self.folder / "references.pt", {"images": references})

    def finish(self) -> None:
        """At the end of fit: says which methods never settled, and records it in the summary."""
        if self.tracker is None or len(self.history.runs) < 2:
            return
        unsettled = self.tracker.unsettled()
        self._write_settled()
        if unsettled:
            rank_zero_warn(
                f"AttributionMonitor: the {', '.join(unsettled)} maps had not settled by the end of training (rank "
                f"correlation with the previous run below {self.tracker.settings.threshold} within the last "
                f"{self.tracker.settings.patience} runs): the explanations were still changing. See the "
                "xai/stability/* curves in TensorBoard."
            )

    def state_dict(self) -> dict[str, Any]:
        """History and stability state (weights-only safe)."""
        state: dict[str, Any] = dict(self.history.state_dict())
        if self.tracker is not None:
            state["stability"] = self.tracker.state_dict()
        return state

    def _write_settled(self) -> None:
        if self.tracker is not None:
            self.history.write_summary(settled=self.tracker.state_dict()["settled"])

    def _resume(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state)
        if self.tracker is None:
            return
        self.tracker.load_state_dict(state.get("stability", {}))
        for run in self.history.runs[-self.tracker.settings.filmstrip_length :]:
            try:
                maps = self.history.load_run(run)["maps"]
            except (OSError, RuntimeError, KeyError) as error:
                rank_zero_warn(f"AttributionMonitor: could not read the earlier run {run.get('file')} ({error}); its maps are left out of the filmstrips.")
                continue
            displays = {m.name: m.display(maps[m.name]) for m in self.methods if m.name in maps}
            self.tracker.remember(maps, displays)


def _save(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
