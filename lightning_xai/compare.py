"""Comparing two runs' explanations, e.g. two seeds of the same model: do they look at the same things?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_xai._fingerprint import load_probes
from lightning_xai.functional.stability import METRICS, compare_maps
from lightning_xai.history import HistoryError, find_history_folder, load_run, read_summary

__all__ = ["compare_runs", "format_comparison"]


def compare_runs(run_a: str | Path, run_b: str | Path, *, k: float = 0.1) -> dict[str, Any]:
    """Agreement between the final maps of two runs, per method.

    Args:
        run_a, run_b: log directories (or their ``xai`` folders) written by the monitor or by replay.
        k: fraction of pixels for the top-k IoU.

    Returns:
        ``{"runs": [folder_a, folder_b], "steps": [step_a, step_b], "methods": {method: {"spearman_mean": ...,
        "spearman_worst": ..., "topk_iou_mean": ..., ...}}}`` over the probes.

    Raises:
        HistoryError: naming the file, when a folder is not a history, a file is damaged or foreign, a
            folder has no run with maps, or the runs explain different probes.

    Example:
        >>> compare_runs("/nonexistent/a", "/nonexistent/b")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        lightning_xai.history.HistoryError: /nonexistent/a holds no lightning_xai history
        (no summary.json in it, in xai/ or in */xai/).
    """
    folders = [find_history_folder(run_a), find_history_folder(run_b)]
    finals = [_final_run(folder) for folder in folders]
    _check_same_probes(folders, finals)
    shared = sorted(set(finals[0]["maps"]) & set(finals[1]["maps"]))
    if not shared:
        raise HistoryError(f"the runs share no method: {sorted(finals[0]['maps'])} vs {sorted(finals[1]['maps'])}.")
    methods = {}
    for name in shared:
        maps_a, maps_b = finals[0]["maps"][name], finals[1]["maps"][name]
        if maps_a.shape[:2] != maps_b.shape[:2]:
            raise HistoryError(
                f"the {name} maps have different shapes ({list(maps_a.shape)} in {folders[0]}, {list(maps_b.shape)} in "
                f"{folders[1]}); compare runs with the same probes."
            )
        scores = compare_maps(maps_a, maps_b, k=k)
        methods[name] = {
            f"{metric}_{kind}": value
            for metric, values in scores.items()
            for kind, value in _mean_worst(values).items()
        }
    return {"runs": [str(f) for f in folders], "steps": [int(r["global_step"]) for r in finals], "methods": methods}


def format_comparison(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`compare_runs`' result: one row per method, mean / worst per metric."""
    header = f"{'method':<22}" + "".join(f"{m + ' mean/worst':>22}" for m in METRICS)
    lines = [
        f"A: {result['runs'][0]} (step {result['steps'][0]})",
        f"B: {result['runs'][1]} (step {result['steps'][1]})",
        header,
    ]
    for name, values in result["methods"].items():
        cells = "".join(f"{values[f'{m}_mean']:>13.3f} / {values[f'{m}_worst']:<6.3f}" for m in METRICS)
        lines.append(f"{name:<22}{cells}")
    return "\n".join(lines)


def _final_run(folder: Path) -> dict[str, Any]:
    """The last run that has maps (failed runs have no file)."""
    runs = [run for run in read_summary(folder)["runs"] if run["file"] is not None]
    if not runs:
        raise HistoryError(f"{folder / 'summary.json'} lists no run with maps yet.")
    return load_run(folder, runs[-1])


def _check_same_probes(folders: list[Path], finals: list[dict[str, Any]]) -> None:
    probe_files = [folder / "probes.pt" for folder in folders]
    if all(path.is_file() for path in probe_files):
        images = [load_probes(path)["images"] for path in probe_files]
        if images[0].shape != images[1].shape or not torch.allclose(images[0], images[1]):
            raise HistoryError(
                f"the runs explain different probe images ({probe_files[0]} vs {probe_files[1]}); "
                "compare runs with the same probes."
            )
    elif finals[0]["targets"].shape != finals[1]["targets"].shape:
        raise HistoryError("the runs explain different numbers of probes; compare runs with the same probes.")


def _mean_worst(per_probe: Tensor) -> dict[str, float]:
    return {"mean": float(per_probe.mean()), "worst": float(per_probe.min())}
