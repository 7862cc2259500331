"""The on-disk record of every validation run: raw maps in one file per run, and summary.json.

Layout under ``<log_dir>/xai/``::

    summary.json              {"format": ..., "runs": [{"global_step", "epoch", "stage", "methods",
                               "metrics", "skipped", "file"}, ...]}
    runs/step-00000120.pt     {"maps": {method: [P, C|1, H, W] float32}, "targets", "predictions",
                               "probabilities", "global_step", "epoch"}

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written file, and earlier runs stay readable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_xai._files import atomic_write_bytes

SUMMARY_FORMAT = "lightning_xai.history/1"


class HistoryError(ValueError):
    """A history folder or one of its files is missing, truncated or not written by lightning_xai."""


def find_history_folder(path: str | Path) -> Path:
    """The folder holding ``summary.json``: ``path`` itself, ``path/xai``, or the only ``*/xai`` below it.

    Raises:
        HistoryError: when there is none or more than one.
    """
    path = Path(path)
    candidates = [path, path / "xai"] + sorted(path.glob("*/xai")) + sorted(path.glob("*/*/xai"))
    found = [c for c in dict.fromkeys(candidates) if (c / "summary.json").is_file()]
    if len(found) == 1 or (found and found[0] in (path, path / "xai")):
        return found[0]
    if not found:
        raise HistoryError(f"{path} holds no lightning_xai history (no summary.json in it, in xai/ or in */xai/).")
    raise HistoryError(f"{path} holds several histories ({', '.join(map(str, found))}); name one of them.")


def read_summary(folder: str | Path) -> dict[str, Any]:
    """Reads and checks ``<folder>/summary.json``.

    Raises:
        HistoryError: naming the file, when it is missing, truncated or of another format.
    """
    path = Path(folder) / "summary.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise HistoryError(f"{path} does not exist: not a lightning_xai history folder.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HistoryError(f"{path} is truncated or not JSON ({error}); it was not written by lightning_xai.") from None
    if not isinstance(document, dict) or document.get("format") != SUMMARY_FORMAT or not isinstance(document.get("runs"), list):
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise HistoryError(f"{path} is not a lightning_xai history (format {found!r}, expected {SUMMARY_FORMAT!r}).")
    return document


class AttributionHistory:
    """Appends validation runs to ``folder`` and keeps their summary.

    Args:
        folder: the ``xai`` folder under the run's log directory.

    Example:
        >>> import tempfile
        >>> history = AttributionHistory(Path(tempfile.mkdtemp()))
        >>> entry = history.record(global_step=10, epoch=0, stage="fit", maps={"saliency": torch.zeros(2, 1, 4, 4)},
        ...                        targets=torch.tensor([0, 1]), predictions=torch.tensor([0, 0]),
        ...                        probabilities=torch.tensor([0.9, 0.6]), metrics={"seconds/saliency": 0.01})
        >>> entry["file"], [run["global_step"] for run in history.load_summary()["runs"]]
        ('runs/step-00000010.pt', [10])
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.runs: list[dict[str, Any]] = []

    @property
    def summary_path(self) -> Path:
        """``<folder>/summary.json``."""
        return self.folder / "summary.json"

    def record(
        self,
        *,
        global_step: int,
        epoch: int,
        stage: str,
        maps: dict[str, Tensor],
        targets: Tensor,
        predictions: Tensor,
        probabilities: Tensor,
        metrics: dict[str, float],
        skipped: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Writes one run's raw maps, then appends it to ``summary.json``; returns the summary entry."""
        relative = self._free_name(global_step)
        payload = {
            "global_step": global_step,
            "epoch": epoch,
            "stage": stage,
            "maps": {name: value.detach().float().cpu() for name, value in maps.items()},
            "targets": targets.cpu(),
            "predictions": predictions.cpu(),
            "probabilities": probabilities.float().cpu(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(self.folder / relative, buffer.getvalue())
        entry = {
            "global_step": global_step,
            "epoch": epoch,
            "stage": stage,
            "methods": sorted(maps),
            "metrics": {key: float(value) for key, value in metrics.items()},
            "skipped": list(skipped or []),
            "file": relative,
            **(extra or {}),
        }
        self.runs.append(entry)
        self.write_summary()
        return entry

    def write_summary(self, **sections: Any) -> None:
        """Rewrites ``summary.json`` atomically with every run so far (plus extra top-level sections)."""
        self._sections = {**getattr(self, "_sections", {}), **sections}
        document = {"format": SUMMARY_FORMAT, **self._sections, "runs": self.runs}
        atomic_write_bytes(self.summary_path, json.dumps(document, indent=2).encode())

    def load_summary(self) -> dict[str, Any]:
        """Reads ``summary.json`` back (see :func:`read_summary`)."""
        return read_summary(self.folder)

    def load_run(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Loads one run's raw maps (see :func:`load_run`)."""
        return load_run(self.folder, entry)

    def state_dict(self) -> dict[str, Any]:
        """The run list, with absolute file paths (a resumed run may log to a new folder)."""
        return {"runs": [{**run, "file": str(self._absolute(run["file"]))} for run in self.runs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues the run list of a checkpoint."""
        self.runs = [dict(run) for run in state.get("runs", [])]

    def _absolute(self, file: str) -> Path:
        path = Path(file)
        return path if path.is_absolute() else (self.folder / path).resolve()

    def _free_name(self, global_step: int) -> str:
        name = f"runs/step-{global_step:08d}.pt"
        suffix = 1
        while (self.folder / name).exists():
            name = f"runs/step-{global_step:08d}-{suffix}.pt"
            suffix += 1
        return name


def load_run(folder: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Loads one run's file (``weights_only``: tensors, numbers and strings only).

    Raises:
        HistoryError: naming the file, when it is missing, truncated or not a run file.
    """
    path = Path(entry["file"])
    path = path if path.is_absolute() else Path(folder) / path
    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise HistoryError(f"{path} is listed in summary.json but does not exist.") from None
    except Exception as error:  # torch raises several types for damaged files
        raise HistoryError(f"{path} is truncated or not a lightning_xai run file ({type(error).__name__}: {error}).") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("maps"), dict):
        raise HistoryError(f"{path} is not a lightning_xai run file (no 'maps' in it).")
    return payload
