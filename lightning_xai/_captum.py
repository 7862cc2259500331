"""Running any Captum attribution on the probes under the monitor's guarantees (see ``methods.CaptumMethod``).

Captum is an optional dependency (``pip install "lightning-xai[captum]"``); it is imported only here.
"""

from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import BatchSize, default_batch_size

__all__ = ["CAPTUM_INSTALL", "attribution_class", "resolve_init_kwargs", "run_captum"]

CAPTUM_INSTALL = 'pip install "lightning-xai[captum]"'


def _captum_attr() -> Any:
    try:
        return importlib.import_module("captum.attr")
    except ImportError as error:
        raise ImportError(f"CaptumMethod needs Captum; install it with {CAPTUM_INSTALL}.") from error


def attribution_class(spec: object) -> type:
    """The Captum attribution class named or given by ``spec`` (a class or a name in ``captum.attr``).

    Example:
        >>> attribution_class("Saliency").__name__
        'Saliency'
    """
    if isinstance(spec, str):
        found = getattr(_captum_attr(), spec, None)
        if not isinstance(found, type):
            raise ValueError(
                f"`attribution_class` must name an attribution class of captum.attr (e.g. 'DeepLift'), got {spec!r}."
            )
        return found
    base = getattr(_captum_attr(), "Attribution", None) if isinstance(spec, type) else None
    if not (isinstance(spec, type) and base is not None and issubclass(spec, base)):
        shown = spec.__name__ if isinstance(spec, type) else type(spec).__name__
        raise TypeError(f"`attribution_class` must be a captum.attr attribution class or its name, got {shown}.")
    return spec


def resolve_init_kwargs(model: nn.Module, init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``init_kwargs`` with a ``layer`` given as a dotted name replaced by that submodule of ``model``."""
    resolved = dict(init_kwargs)
    layer = resolved.get("layer")
    if isinstance(layer, str):
        try:
            resolved["layer"] = model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ValueError(
                f"`init_kwargs['layer']` must name a submodule of the model ({shown}), got {layer!r}."
            ) from None
    return resolved


@contextmanager
def _seeded_global_rngs(generator: torch.Generator) -> Iterator[None]:
    """Seeds torch, NumPy and Python's global RNGs from ``generator`` (Captum draws from them) and restores them
    after."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        torch.manual_seed(seed)  # restored by leave_no_trace's fork_rng around this block
        np.random.seed(seed)
        random.seed(seed)
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _batching_kwargs(
    method: Any, images: Tensor, given: Mapping[str, Any], batch_sizes: Mapping[bool, BatchSize | None]
) -> dict[str, int]:
    """``internal_batch_size`` / ``perturbations_per_eval`` where ``attribute`` takes them and the caller did not
    set them."""
    accepted = inspect.signature(method.attribute).parameters
    chosen: dict[str, int] = {}
    for name, backward in (("internal_batch_size", True), ("perturbations_per_eval", False)):
        if name in accepted and name not in given:
            size = batch_sizes.get(backward)
            size = (
                size
                if isinstance(size, int)
                else getattr(size, "best", None) or default_batch_size(images, backward=backward)
            )
            chosen[name] = size if backward else max(1, size // images.shape[0])
    return chosen


def run_captum(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    spec: object,
    init_kwargs: Mapping[str, Any],
    attribute_kwargs: Mapping[str, Any],
    generator: torch.Generator,
    batch_sizes: Mapping[bool, BatchSize | None],
) -> Tensor:
    """Runs ``spec(model, **init_kwargs).attribute(images, target=targets, **attribute_kwargs)``.

    Gradients are enabled (also under ``inference_mode``), the global RNGs are seeded from
    ``generator`` and restored afterwards, buffers of a model in training mode are restored,
    and batch sizes go to ``internal_batch_size`` / ``perturbations_per_eval`` where Captum
    takes them. Layer attributions ``[N, C, h, w]`` are upsampled bilinearly to the input size.

    Returns:
        ``[N, C', H, W]`` float attributions, detached.
    """
    cls = attribution_class(spec)
    with leave_no_trace(model, images.device), _seeded_global_rngs(generator):
        method = cls(model, **resolve_init_kwargs(model, init_kwargs))
        extra = _batching_kwargs(method, images, attribute_kwargs, batch_sizes)
        result = method.attribute(images.detach().clone(), target=targets, **{**extra, **attribute_kwargs})
    if isinstance(result, tuple):
        result = result[0]
    if not isinstance(result, Tensor) or result.ndim != 4 or result.shape[0] != images.shape[0]:
        shown = list(result.shape) if isinstance(result, Tensor) else type(result).__name__
        raise ValueError(
            f"{cls.__name__} must return attributions [N, C, h, w] for N = {images.shape[0]} images, got {shown}."
        )
    if result.shape[-2:] != images.shape[-2:]:
        result = F.interpolate(result.float(), size=tuple(images.shape[-2:]), mode="bilinear")
    return result.detach()
