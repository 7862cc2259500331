"""The monitor's analyses after the maps of a run: shortcut checks and faithfulness metrics.

Each runs on global rank 0 under attribution conditions (eval mode, no autocast, eager) and
returns scalars and images for the run's record; reactions (warnings, callbacks) happen here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai._context import attribution_conditions
from lightning_xai._explain import RunResult, module_device
from lightning_xai.faithfulness import Faithfulness, assess, completeness_metrics, sanity_check
from lightning_xai.functional._batching import BatchSize
from lightning_xai.methods import AttributionMethod, MethodContext
from lightning_xai.probes import ProbeSet
from lightning_xai.shortcuts import Finding, ShortcutDetector, outline_findings


def model_dtype_images(model: nn.Module, images: Tensor) -> Tensor:
    """``images`` on the model's device, in the dtype of its weights (bf16-true models get bf16)."""
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else images.dtype
    return images.to(device=module_device(model), dtype=dtype)


def check_shortcuts(
    detector: ShortcutDetector,
    model: nn.Module,
    result: RunResult,
    rgb: Tensor,
    test_images: Tensor,
    *,
    probe_size: tuple[int, int],
    epoch: int,
    step: int,
    on_finding: Callable[[Finding], None],
    batch_size: BatchSize | None = None,
) -> tuple[dict[str, float], dict[str, Tensor], list[Finding]]:
    """Tests this run's candidate regions; warns about and hands on each new confirmed finding.

    ``batch_size`` (an int or a tuner) sets the images per forward pass of the interventions.

    Returns:
        (scalars, with ``seconds/shortcuts``; outlined probe grids by tag ``xai/shortcut/<method>``; new findings).
    """
    started = time.perf_counter()
    with attribution_conditions(model, module_device(model)):
        images = model_dtype_images(model, test_images)
        report = detector.check(model, result.displays, images, epoch=epoch, step=step, batch_size=batch_size)
    metrics = {f"shortcut/{name}/{key}": value for name, numbers in report.per_method.items() for key, value in numbers.items()}
    metrics["seconds/shortcuts"] = time.perf_counter() - started
    outlines = {f"xai/shortcut/{name}": outline_findings(rgb, [finding], probe_size) for name, finding in report.current.items() if finding.confirmed}
    new = report.new
    for finding in new:
        rank_zero_warn(f"AttributionMonitor found a likely shortcut: {finding.message}")
        on_finding(finding)
    return metrics, outlines, new


def judge_faithfulness(
    settings: Faithfulness,
    model: nn.Module,
    probes: Tensor,
    result: RunResult,
    *,
    seed: int,
    warned: set[str],
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Ablation curves, mass-centre ablation and completeness gaps of this run's maps.

    Warns once per method (tracked in ``warned``) when its completeness gap is large. The
    scalars include ``seconds/faithfulness``.
    """
    started = time.perf_counter()
    with attribution_conditions(model, module_device(model)):
        images = model_dtype_images(model, probes)
        targets = result.targets.to(images.device)
        metrics, plots = assess(model, images, targets, result.maps, settings, seed)
    completeness = completeness_metrics(result.gaps, result.target_scores)
    metrics.update(completeness)
    for name in result.gaps:
        relative = completeness[f"completeness/{name}/relative_gap_mean"]
        if relative > settings.max_relative_gap and name not in warned:
            warned.add(name)
            rank_zero_warn(
                f"AttributionMonitor: the {name} maps are incomplete: their sum misses the score difference they "
                f"explain by {relative:.0%} of the target score on average (completeness gap). Use more steps or "
                "samples (n_steps / n_samples). This warning is shown once per method."
            )
    metrics["seconds/faithfulness"] = time.perf_counter() - started
    return metrics, plots


def randomisation_report(
    model: nn.Module,
    probes: ProbeSet,
    methods: Sequence[AttributionMethod],
    references: Tensor | None,
    settings: Faithfulness,
    *,
    seed: int,
    cascade: bool,
) -> dict[str, Any]:
    """The model-randomisation sanity check of every method on the probes, warned about when insensitive."""
    device = module_device(model)
    with attribution_conditions(model, device):
        images = model_dtype_images(model, probes.images)
        with torch.no_grad():
            targets = probes.labels if probes.labels is not None else model(images).argmax(dim=1)
        refs = model_dtype_images(model, references) if references is not None else None
        make_context = lambda: MethodContext(torch.Generator(device=device).manual_seed(seed), refs)  # noqa: E731
        report = sanity_check(model, images, targets.to(device), methods, make_context, settings=settings, seed=seed, cascade=cascade)
    sanity_summary(report, settings.insensitive_above)
    return report


def sanity_summary(report: dict[str, Any], threshold: float) -> list[str]:
    """Warns about methods whose maps barely change when the model's weights are randomised."""
    insensitive = [name for name, values in report.items() if values["insensitive"]]
    if insensitive:
        rank_zero_warn(
            f"AttributionMonitor sanity check: the {', '.join(insensitive)} maps barely change when the model's weights "
            f"are randomised (rank correlation with the trained model's maps above {threshold}): they do not explain "
            "this model (Adebayo et al., 'Sanity Checks for Saliency Maps')."
        )
    return insensitive


def no_grad_copy(tensor: Tensor) -> Tensor:
    """A detached CPU copy (for results handed to users)."""
    with torch.no_grad():
        return tensor.detach().cpu().clone()
