"""Argument checks and small helpers of the AttributionMonitor (kept out of callback.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._analyses import model_dtype_images
from lightning_xai._context import attribution_conditions
from lightning_xai._explain import module_device
from lightning_xai.functional._checks import check_scores, is_real_number
from lightning_xai.methods import AttributionMethod, ExpectedGradients, default_methods
from lightning_xai.probes import CandidatePool, ProbeSet

def load_references(path: object) -> Tensor | None:
    """The frozen reference images of a checkpointed run, if its file is still there."""
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return torch.load(path, weights_only=True)["images"]


def forward_probes(model: nn.Module, images: Tensor) -> Tensor:
    try:
        with torch.no_grad():
            scores = model(images)
    except Exception as error:  # the model's own error, re-raised with context
        raise ValueError(
            f"`probes` of shape {list(images.shape)} were rejected by {type(model).__name__}.forward: {error}"
        ) from error
    return check_scores(scores, images.shape[0], what=f"{type(model).__name__}.forward on the probes")


def check_methods_can_run(model: nn.Module, probes: ProbeSet, methods: Sequence[AttributionMethod]) -> None:
    """Runs the probes through the model once and asks each method whether it can run (clear errors)."""
    with attribution_conditions(model, module_device(model)):
        images = model_dtype_images(model, probes.images)
        scores = forward_probes(model, images)
        check_labels(probes, scores.shape[1])
        for method in methods:
            method.validate(model, images)


def check_labels(probes: ProbeSet, num_classes: int) -> None:
    if probes.labels is None:
        return
    outside = probes.labels[(probes.labels < 0) | (probes.labels >= num_classes)]
    if outside.numel():
        raise ValueError(
            f"probe targets must be classes in [0, {num_classes - 1}] for a model with {num_classes} outputs, "
            f"got {outside.tolist()}."
        )


def select_or_error(pool: CandidatePool, count: int) -> tuple[ProbeSet | None, str | None]:
    try:
        return pool.select(count), None
    except ValueError as error:
        return None, str(error)


def stage_name(stage: Any) -> str:
    """``"fit"``, ``"validate"``, ... from a ``TrainerFn`` or a string."""
    return str(getattr(stage, "value", stage))


def check_validation_data(trainer: Any, stage: Any) -> None:
    stage = stage_name(stage)
    loops = {"fit": lambda: trainer.fit_loop.epoch_loop.val_loop, "validate": lambda: trainer.validate_loop}
    if stage not in loops:
        return
    source = getattr(loops[stage](), "_data_source", None)
    defined = source.is_defined() if source is not None else True
    if not defined or trainer.limit_val_batches == 0:
        raise ValueError(
            "AttributionMonitor needs probe images: pass `probes=` (a tensor, (images, targets) or "
            "(dataset, indices)), or give the Trainer validation data to pick them from "
            f"(stage {stage!r} has {'validation disabled' if defined else 'no validation dataloader'})."
        )


def check_methods(methods: Sequence[AttributionMethod] | None) -> list[AttributionMethod]:
    methods = list(default_methods() if methods is None else methods)
    for method in methods:
        if not isinstance(method, AttributionMethod):
            raise TypeError(
                "`methods` must hold method objects such as GradCAM(), Occlusion(), ExpectedGradients(), "
                f"got {type(method).__name__}."
            )
    names = [m.name for m in methods]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"`methods` must be a non-empty list with each method at most once, got {names}.")
    return methods


def check_max_seconds(max_seconds: object) -> float | None:
    if max_seconds is None:
        return None
    if not is_real_number(max_seconds) or not max_seconds > 0:
        raise ValueError(f"`max_seconds` must be a positive number of seconds or None, got {max_seconds!r}.")
    return float(max_seconds)


def check_max_overhead(max_overhead: object) -> float | None:
    if max_overhead is None:
        return None
    if not is_real_number(max_overhead) or not max_overhead > 0:
        raise ValueError(f"`max_overhead` must be a positive share of the fit time (e.g. 0.1 for 10%) or None, got {max_overhead!r}.")
    return float(max_overhead)


def check_display_normalisation(mean: object, std: object) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if mean is None and std is None:
        return None, None
    if mean is None or std is None or len(mean) != len(std) or not len(mean):  # type: ignore[arg-type]
        raise ValueError(f"`display_mean` and `display_std` must be given together with one value per channel, got {mean!r} and {std!r}.")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[union-attr]


def uses_training_images(method: AttributionMethod) -> bool:
    return isinstance(method, ExpectedGradients) and isinstance(method.baselines, str) and method.baselines == "training"


def describe(method: AttributionMethod) -> str:
    """Short, stable description: the name plus the settings that differ from the defaults."""
    changed = []
    for spec in fields(method):
        value = getattr(method, spec.name)
        default = spec.default
        if isinstance(value, Tensor):
            changed.append(f"{spec.name}=tensor{list(value.shape)}")
        elif value != default:
            changed.append(f"{spec.name}={value!r}")
    return method.name + (f"({', '.join(changed)})" if changed else "")


def check_settings(value: Any, kind: type, name: str) -> Any:
    """``value`` when it is ``None`` or a ``kind(...)`` settings object; a clear TypeError otherwise."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"`{name}` must be a {kind.__name__}(...) or None, got {type(value).__name__}.")
    return value


def check_callable(value: Any, name: str) -> Any:
    """``value`` when it is ``None`` or callable (pass a picklable function for ``ddp_spawn``)."""
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a callable taking a Finding, or None, got {type(value).__name__}.")
    return value
