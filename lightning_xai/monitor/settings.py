"""The checks of ``AttributionMonitor(...)``'s arguments and set-up: strict, early, each error naming the argument.

Also gives each method its *key*: its name (``grad_cam``), or, when one method appears several
times with different settings, its name with the settings that differ
(``occlusion(window=4)``). Keys name maps in tags, files and ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_positive_int, check_score_shape, is_real_number
from lightning_xai.methods import AttributionMethod, ExpectedGradients, default_methods
from lightning_xai.monitor.conditions import attribution_conditions
from lightning_xai.monitor.model_io import InputConverter, model_inputs, module_device
from lightning_xai.monitor.sharding import collective_forward
from lightning_xai.monitor.sizing import PassCount, method_passes
from lightning_xai.probes import ProbeSet

__all__ = [
    "check_bool",
    "check_callable",
    "check_display_channels",
    "check_display_normalization",
    "check_labels",
    "check_max_overhead",
    "check_max_seconds",
    "check_methods",
    "check_methods_can_run",
    "check_schedule",
    "check_seed",
    "check_settings",
    "check_strategy",
    "describe",
    "method_keys",
    "missing_validation",
    "uses_training_images",
]

SettingsT = TypeVar("SettingsT")
NO_PASSES = PassCount()
"""What a method of unknown passes (Captum's, your own) is taken to need here: nothing is asked of it."""


def check_methods(methods: Sequence[AttributionMethod] | None) -> dict[str, AttributionMethod]:
    """The monitor's methods by key, in the order given (the defaults when ``None``).

    Example:
        >>> from lightning_xai import GradCAM, Occlusion
        >>> list(check_methods([GradCAM(), Occlusion(window=4), Occlusion(window=8)]))
        ['grad_cam', 'occlusion(window=4)', 'occlusion(window=8)']
    """
    if isinstance(methods, AttributionMethod) or not (methods is None or isinstance(methods, Iterable)):
        raise TypeError(
            f"`methods` must be a list of method objects such as [GradCAM(), Occlusion()], got {methods!r}; "
            "pass one method as a list of one."
        )
    chosen = list(default_methods() if methods is None else methods)
    for method in chosen:
        if not isinstance(method, AttributionMethod):
            raise TypeError(
                "`methods` must hold method objects such as GradCAM(), Occlusion(), ExpectedGradients(), "
                f"got {type(method).__name__}."
            )
    descriptions = [describe(m) for m in chosen]
    if not chosen or len(set(descriptions)) != len(descriptions):
        raise ValueError(f"`methods` must be a non-empty list with each setting at most once, got {descriptions}.")
    return dict(zip(method_keys(chosen), chosen))


def method_keys(methods: Sequence[AttributionMethod]) -> list[str]:
    """Each method's key: its name when unique among ``methods``, else its description."""
    names = [m.name for m in methods]
    return [m.name if names.count(m.name) == 1 else describe(m, compact=True) for m in methods]


def describe(method: AttributionMethod, *, compact: bool = False, show_defaults: bool = False) -> str:
    """The name plus the settings that differ from the defaults (all settings with ``show_defaults``).

    Automatic settings (``None``, chosen from the image size) show as ``auto``.

    Example:
        >>> from lightning_xai import Occlusion
        >>> describe(Occlusion(window=8, stride=4)), describe(Occlusion(), show_defaults=True)
        ('occlusion(window=8, stride=4)', 'occlusion(window=auto, stride=auto, baseline=0.0, batch_size=auto)')
    """
    shown = []
    for spec in fields(method):
        value = getattr(method, spec.name)
        if isinstance(value, Tensor):
            shown.append(f"{spec.name}=tensor{list(value.shape)}")
        elif show_defaults or value != spec.default:
            shown.append(f"{spec.name}={'auto' if value is None else repr(value)}")
    separator = "," if compact else ", "
    return method.name + (f"({separator.join(shown)})" if shown else "")


def uses_training_images(method: AttributionMethod) -> bool:
    """Whether the method needs the reservoir of training images (expected gradients' default baselines)."""
    return (
        isinstance(method, ExpectedGradients) and isinstance(method.baselines, str) and method.baselines == "training"
    )


def check_max_seconds(max_seconds: object) -> float | None:
    """A positive number of seconds, or ``None``."""
    if max_seconds is None:
        return None
    if not is_real_number(max_seconds) or not max_seconds > 0:  # type: ignore[operator]
        raise ValueError(f"`max_seconds` must be a positive number of seconds or None, got {max_seconds!r}.")
    return float(max_seconds)  # type: ignore[arg-type]


def check_max_overhead(max_overhead: object) -> float | None:
    """A positive share of the fit time, or ``None``."""
    if max_overhead is None:
        return None
    if not is_real_number(max_overhead) or not max_overhead > 0:  # type: ignore[operator]
        raise ValueError(
            f"`max_overhead` must be a positive share of the fit time (e.g. 0.1 for 10%) or None, got {max_overhead!r}."
        )
    return float(max_overhead)  # type: ignore[arg-type]


def check_display_normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``display_mean`` and ``display_std``: both ``None``, or one value per channel each."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None or len(mean) != len(std) or not len(mean):
        raise ValueError(
            f"`display_mean` and `display_std` must be given together with one value per channel, got {mean!r} and {std!r}."
        )
    if not all(float(v) > 0 for v in std):
        raise ValueError(f"`display_std` must hold positive numbers (the data's standard deviations), got {std!r}.")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check_display_channels(mean: Sequence[float] | None, channels: int) -> None:
    """``display_mean``/``display_std`` hold one value per channel of the images, or one value for all."""
    if mean is not None and len(mean) not in (1, channels):
        raise ValueError(
            f"`display_mean` and `display_std` must hold one value per channel of the images ({channels}) or one "
            f"for all, got {len(mean)} values."
        )


def check_bool(value: object, name: str) -> bool:
    """``value`` when it is a bool.

    Example:
        >>> check_bool(True, "strict")
        True
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


SEED_LIMIT = 2**63
"""Seeds are the seeds of torch generators: non-negative 64-bit ints."""


def check_seed(seed: object) -> int:
    """A seed in ``[0, 2**63)``.

    Example:
        >>> check_seed(7)
        7
    """
    value = check_positive_int(seed, "seed", minimum=0)
    if value >= SEED_LIMIT:
        raise ValueError(f"`seed` must be an int in [0, 2**63 - 1] (a torch generator's seed), got {value}.")
    return value


def check_settings(value: Any, kind: type[SettingsT], name: str) -> SettingsT | None:
    """``value`` when it is ``None`` or a ``kind(...)`` settings object; a clear TypeError otherwise."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"`{name}` must be a {kind.__name__}(...) or None, got {type(value).__name__}.")
    return value


def check_schedule(schedule: object) -> Literal["adaptive", "every_run"]:
    """``"adaptive"`` or ``"every_run"``."""
    if schedule not in ("adaptive", "every_run"):
        raise ValueError(f"`schedule` must be one of ['adaptive', 'every_run'], got {schedule!r}.")
    return schedule  # type: ignore[return-value]


def check_callable(value: Any, name: str, what: str = "taking a Finding") -> Any:
    """``value`` when it is ``None`` or callable (pass a picklable function for ``ddp_spawn``)."""
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a callable {what}, or None, got {type(value).__name__}.")
    return value


def check_methods_can_run(
    model: nn.Module,
    probes: ProbeSet,
    methods: Mapping[str, AttributionMethod],
    convert_input: InputConverter | None = None,
) -> None:
    """Runs the probes through the model once and asks each method whether it can run (clear errors, before training).

    Non-finite scores are not an error here: such probes are left out of the runs where they occur.
    """
    with attribution_conditions(model, module_device(model)):
        images = model_inputs(model, probes.images, convert_input)
        try:
            with torch.no_grad():
                scores = model(images)
        except Exception as error:  # the model's own error, re-raised with context
            raise ValueError(
                f"`probes` of shape {list(images.shape)} were rejected by {type(model).__name__}.forward: {error}"
            ) from error
        scores = check_score_shape(scores, images.shape[0], what=f"{type(model).__name__}.forward on the probes")
        with torch.no_grad():  # sampling methods explain one probe at a time: a squeeze() would drop its batch
            one = model(images[:1])  # (on every rank alike under a collective forward pass)
        check_score_shape(one, 1, what=f"{type(model).__name__}.forward on one probe (as methods that sample pass it)")
        check_labels(probes, scores.shape[1])
        size = (int(images.shape[-2]), int(images.shape[-1]))
        needing = [
            key for key, method in methods.items() if (method_passes(method, size) or NO_PASSES).forward_backward
        ]
        _check_gradients_reach_the_input(model, images, needing)
        for method in methods.values():
            method.validate(model, images)


def _check_gradients_reach_the_input(model: nn.Module, images: Tensor, needing: Sequence[str]) -> None:
    """The methods ``needing`` a backward pass get none from a forward that detaches its scores (``torch.no_grad()``
    or ``.detach()`` inside it): said before training, from one probe's forward pass."""
    if not needing:
        return
    with torch.inference_mode(False), torch.enable_grad():
        probe = images[:1].detach().clone().requires_grad_(True)
        scores = model(probe)
    if not (isinstance(scores, Tensor) and scores.requires_grad):
        raise ValueError(
            f"{type(model).__name__}.forward returns scores without a gradient (torch.no_grad() or .detach() "
            f"inside it?), and {', '.join(needing)} need one. Let gradients through forward, or pass `methods=` "
            "without them (e.g. [Occlusion()])."
        )


def check_labels(probes: ProbeSet, num_classes: int) -> None:
    """Probe labels must be classes of the model."""
    if probes.labels is None:
        return
    outside = probes.labels[(probes.labels < 0) | (probes.labels >= num_classes)]
    if outside.numel():
        raise ValueError(
            f"probe targets must be classes in [0, {num_classes - 1}] for a model with {num_classes} outputs, "
            f"got {outside.tolist()}."
        )


UNSUPPORTED_STRATEGIES = ("XLAFSDPStrategy",)


def check_strategy(strategy: object, *, checks: Sequence[str] = ()) -> None:
    """Refuses the strategies the monitor cannot serve, before any training.

    Every multi-process strategy is served (the probes are sharded over the ranks, see
    :mod:`~lightning_xai.monitor.sharding`), except XLA's FSDP. With a collective forward pass
    (FSDP, FSDP2 through ``ModelParallelStrategy``, DeepSpeed) the ``checks`` asked for that
    explain randomized or shifted copies of the model (``"sanity"``, ``"robustness"``) are refused
    too (pass them only with several processes: one process has nothing to share).

    Example:
        >>> check_strategy(object(), checks=["sanity"])
    """
    name = type(strategy).__name__
    if name in UNSUPPORTED_STRATEGIES:
        raise ValueError(
            f"AttributionMonitor cannot explain a model sharded by {name}: its collectives are not supported. "
            "Use FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy or strategy='ddp', or replay the checkpoints "
            "afterwards with lightning_xai.replay."
        )
    if checks and collective_forward(strategy):
        raise ValueError(
            f"AttributionMonitor cannot run the {' and '.join(checks)} check under {name}: it explains randomized "
            "or shifted copies of the model, which a sharded model cannot give. Pass sanity=None and robustness=None, or run "
            "the checks on a checkpoint in one process (lightning_xai.replay)."
        )


def missing_validation(trainer: Any, stage: str) -> str | None:
    """Why there is no validation data to pick probes from in ``stage`` (``None`` when there is some)."""
    loops = {"fit": lambda: trainer.fit_loop.epoch_loop.val_loop, "validate": lambda: trainer.validate_loop}
    if stage not in loops:
        return None
    source = getattr(loops[stage](), "_data_source", None)
    if source is not None and not source.is_defined():
        return "the Trainer has no validation dataloader"
    if trainer.limit_val_batches == 0:
        return "validation is disabled (limit_val_batches=0)"
    return None
