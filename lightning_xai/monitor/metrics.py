"""A run report's numbers under their tag names (:mod:`~lightning_xai.monitor.tags`): TensorBoard scalars and ``summary.json`` metrics."""

from __future__ import annotations

from lightning_xai.monitor import tags
from lightning_xai.monitor.engine import RunReport

__all__ = ["run_metrics"]


def run_metrics(report: RunReport) -> dict[str, float]:
    """Every scalar of one run, by tag.

    Example:
        >>> import torch
        >>> from lightning_xai.monitor.engine import MapsReport, RunMoment
        >>> from lightning_xai.monitor.model_io import predict
        >>> predictions = predict(torch.nn.Flatten(), torch.ones(2, 1, 1, 3), torch.tensor([0, 2]))
        >>> maps = MapsReport(predictions=predictions, seconds={"saliency": 0.5}, total_seconds=0.6)
        >>> sorted(run_metrics(RunReport(RunMoment(0, 10, 9, "fit"), maps)))
        ['xai_cost/seconds_maps', 'xai_cost/seconds_saliency', 'xai_cost/seconds_total', 'xai_probes/accuracy', 'xai_probes/target_probability']
    """
    maps = report.maps
    kept = maps.predictions.explained
    metrics: dict[str, float] = {tags.seconds(key): value for key, value in maps.seconds.items()}
    metrics.update({tags.phase_seconds(phase): value for phase, value in report.phase_seconds.items()})
    metrics[tags.SECONDS_TOTAL] = sum(report.phase_seconds.values())
    if bool(kept.any()):
        metrics[tags.TARGET_PROBABILITY] = float(maps.predictions.target_probability[kept].mean())
        if maps.predictions.correct is not None:
            metrics[tags.PROBE_ACCURACY] = float(maps.predictions.correct[kept].float().mean())
    metrics.update(_stability(report))
    metrics.update(_shortcuts(report))
    metrics.update(_faithfulness(report))
    metrics.update(_masks(report))
    return metrics


def _stability(report: RunReport) -> dict[str, float]:
    out: dict[str, float] = {}
    if report.stability is None:
        return out
    for key, scores in report.stability.scores.items():
        for metric, (mean, worst) in scores.items():
            out[tags.stability(key, f"{metric}_mean")] = mean
            out[tags.stability(key, f"{metric}_worst")] = worst
    for key, settled in report.stability.settled.items():
        out[tags.settled(key)] = float(settled)
    for (first, second), (mean, worst) in report.stability.agreement.items():
        out[tags.agreement(first, second, "spearman_mean")] = mean
        out[tags.agreement(first, second, "spearman_worst")] = worst
    return out


def _shortcuts(report: RunReport) -> dict[str, float]:
    if report.shortcuts is None:
        return {}
    metrics = {
        tags.shortcut(key, name): float(value)
        for key, values in report.shortcuts.per_method.items()
        for name, value in values.items()
    }
    metrics[tags.shortcut("checks", "untested")] = float(report.shortcuts.untested)
    metrics[tags.shortcut("checks", "waiting")] = float(report.shortcuts.waiting)
    return metrics


def _masks(report: RunReport) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, details in report.maps.details.items():
        if "smallest_area" in details and details["smallest_area"].numel():
            out[tags.mask(key, "smallest_area_mean")] = float(details["smallest_area"].mean())
            out[tags.mask(key, "smallest_area_max")] = float(details["smallest_area"].max())
        if "sufficient" in details and details["sufficient"].numel():
            out[tags.mask(key, "sufficient")] = float(details["sufficient"].mean())
    return out


def _faithfulness(report: RunReport) -> dict[str, float]:
    out: dict[str, float] = {}
    if report.faithfulness is not None:
        for key, values in report.faithfulness.per_method.items():
            out.update({tags.faithfulness(key, name): value for name, value in values.items()})
        out.update({tags.faithfulness("random", name): value for name, value in report.faithfulness.random.items()})
    for key, values in report.completeness.items():
        out.update({tags.completeness(key, name): value for name, value in values.items()})
    return out
