"""One validation run of the monitor: explain the probes, then hand the results on."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_xai._context import attribution_conditions
from lightning_xai.functional._checks import check_scores
from lightning_xai.functional._batching import BatchSize, BatchSizeTuner
from lightning_xai.history import AttributionHistory
from lightning_xai.loggers import XaiLogger
from lightning_xai.methods import AttributionMethod, MethodContext
from lightning_xai.probes import ProbeSet
from lightning_xai.render import enlarge, make_grid, overlay, to_rgb, with_probability_bars


@dataclass
class RunResult:
    """What one run produced: raw maps (float32, CPU), display maps, timings and predictions."""

    maps: dict[str, Tensor] = field(default_factory=dict)
    displays: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    targets: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    predictions: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    probabilities: Tensor = field(default_factory=lambda: torch.empty(0))
    target_probabilities: Tensor = field(default_factory=lambda: torch.empty(0))
    target_scores: Tensor = field(default_factory=lambda: torch.empty(0))
    gaps: dict[str, Tensor] = field(default_factory=dict)
    total_seconds: float = 0.0


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for an empty module)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def explain_probes(
    model: nn.Module,
    probes: ProbeSet,
    methods: Sequence[AttributionMethod],
    *,
    convert_input: Callable[[Tensor], Tensor],
    references: Tensor | None,
    seed: int,
    max_seconds: float | None,
    with_gaps: bool = False,
    batch_sizes: Mapping[bool, BatchSize] | None = None,
) -> RunResult:
    """Runs every method on the probes under attribution conditions.

    Past ``max_seconds`` the remaining methods are skipped (the first method always runs, so
    every run produces at least one map). ``batch_sizes`` (ints or tuners, see
    :func:`batch_size_tuners`) go to methods without a batch size of their own.
    """
    started = time.perf_counter()
    device = module_device(model)
    result = RunResult()
    with attribution_conditions(model, device):
        images = convert_input(probes.images.to(device))
        _predict(model, images, probes, result)
        refs = convert_input(references.to(device)) if references is not None else None
        for method in methods:
            if max_seconds is not None and result.maps and time.perf_counter() - started > max_seconds:
                result.skipped.append(method.name)
                continue
            method_started = time.perf_counter()
            generator = torch.Generator(device=device).manual_seed(seed)
            context = MethodContext(generator=generator, references=refs, batch_sizes=dict(batch_sizes or {}))
            attributions, gap = method.attribute_with_gap(model, images, result.targets.to(device), context) if with_gaps else (
                method.attribute(model, images, result.targets.to(device), context), None
            )
            attributions = attributions.float()
            if gap is not None:
                result.gaps[method.name] = gap.float().cpu()
            result.maps[method.name] = attributions.cpu()
            result.displays[method.name] = method.display(attributions).cpu()
            result.seconds[method.name] = time.perf_counter() - method_started
    result.total_seconds = time.perf_counter() - started
    return result


def batch_size_tuners(
    model: nn.Module, probes: ProbeSet, methods: Sequence[AttributionMethod], *, forward_too: bool = False
) -> dict[bool, BatchSizeTuner]:
    """A tuner per pass type (``False``: forward, ``True``: forward+backward) that methods without
    a batch size of their own run, for images like the probes; ``forward_too`` adds the forward
    tuner anyway (the shortcut interventions use it).

    The first runs try sizes as they go, later runs use the fastest (see
    :class:`~lightning_xai.functional.BatchSizeTuner`).
    """
    passes = {m.batch_pass for m in methods if m.batch_pass is not None and getattr(m, "batch_size", None) is None}
    if forward_too:
        passes.add(False)
    images = probes.images[:1].to(module_device(model))
    return {backward: BatchSizeTuner.for_images(images, backward=backward) for backward in sorted(passes)}


def tuned_message(tuners: Mapping[bool, BatchSizeTuner]) -> str:
    """The line for the log once every tuner has settled: the batch size of each pass type."""
    shown = ", ".join(f"{'forward+backward' if backward else 'forward'} {tuner.best}" for backward, tuner in sorted(tuners.items()))
    device = next(iter(tuners.values())).device
    return (
        f"AttributionMonitor: tuned the batch sizes on {device} while explaining: {shown} images per pass (the fastest "
        "of the sizes tried); methods given a batch_size keep theirs."
    )


def first_run_message(result: RunResult, folder: object) -> str:
    """What the monitor says after its first run: how long each method took, and where things are."""
    timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.seconds.items())
    return (
        f"AttributionMonitor: explained {result.targets.shape[0]} probes in {result.total_seconds:.2f}s ({timings}); "
        f"raw maps and summary.json under {folder}."
    )


def budget_warning(result: RunResult, max_seconds: float | None, step: int) -> str:
    """What the monitor says the first time ``max_seconds`` makes it skip methods."""
    return (
        f"AttributionMonitor exceeded its time budget (max_seconds={max_seconds}) at step {step}: "
        f"{', '.join(result.seconds)} took {result.total_seconds:.1f}s, so {', '.join(result.skipped)} did not run. "
        "Skipped methods are listed in summary.json for every run; raise `max_seconds`, use fewer probes or "
        "cheaper settings. This warning is shown once."
    )


def _predict(model: nn.Module, images: Tensor, probes: ProbeSet, result: RunResult) -> None:
    with torch.no_grad():
        scores = check_scores(model(images), images.shape[0]).float().cpu()
    probabilities = torch.softmax(scores, dim=1)
    result.probabilities, result.predictions = probabilities.max(dim=1)
    result.targets = probes.labels if probes.labels is not None else result.predictions
    result.target_scores = scores.gather(1, result.targets.view(-1, 1)).squeeze(1)
    result.target_probabilities = probabilities.gather(1, result.targets.view(-1, 1)).squeeze(1)


def display_rgb(images: Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Tensor:
    """Probe images as RGB in [0, 1], un-normalised and enlarged for display: ``[P, 3, H', W']``."""
    return enlarge(to_rgb(images, mean=mean, std=std))


def _correct(result: RunResult, probes: ProbeSet) -> Tensor | None:
    return result.predictions == probes.labels if probes.labels is not None else None


def publish(
    result: RunResult,
    probes: ProbeSet,
    rgb: Tensor,
    *,
    logger: XaiLogger,
    history: AttributionHistory,
    step: int,
    epoch: int,
    stage: str,
    extra_metrics: dict[str, float] | None = None,
    extra_images: dict[str, Tensor] | None = None,
) -> dict:
    """Logs the run's grids, scalars and prediction table, and appends it to the on-disk history.

    ``extra_metrics`` (e.g. stability scores) are logged under ``xai/`` and kept in the summary;
    ``extra_images`` are logged under their own tags.
    """
    correct = _correct(result, probes)
    for name, display in result.displays.items():
        tiles = with_probability_bars(overlay(rgb, display), result.probabilities, correct)
        logger.image(f"xai/{name}", make_grid(tiles), step)
    metrics = {f"seconds/{name}": seconds for name, seconds in result.seconds.items()}
    metrics["seconds/total"] = result.total_seconds
    metrics["target_probability"] = float(result.target_probabilities.mean())
    if correct is not None:
        metrics["probe_accuracy"] = float(correct.float().mean())
    metrics.update(extra_metrics or {})
    for tag, image in (extra_images or {}).items():
        logger.image(tag, image, step)
    logger.scalars({f"xai/{key}": value for key, value in metrics.items()}, step)
    logger.text("xai/predictions", prediction_table(result, probes), step)
    logger.flush()
    return history.record(
        global_step=step,
        epoch=epoch,
        stage=stage,
        maps=result.maps,
        targets=result.targets,
        predictions=result.predictions,
        probabilities=result.probabilities,
        metrics=metrics,
        skipped=result.skipped,
    )


def prediction_table(result: RunResult, probes: ProbeSet) -> str:
    """Markdown table: probe, label, prediction, its probability, the target's probability."""
    rows = ["| probe | label | predicted | probability | target probability |", "|---|---|---|---|---|"]
    for index in range(result.predictions.shape[0]):
        label = "?" if probes.labels is None else str(int(probes.labels[index]))
        rows.append(
            f"| {index} | {label} | {int(result.predictions[index])} | {float(result.probabilities[index]):.1%} "
            f"| {float(result.target_probabilities[index]):.1%} |"
        )
    return "\n".join(rows)
