"""Grad-CAM: a layer's activations weighted by the spatial mean of their gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (ICCV 2017). Matches Captum's ``LayerGradCam`` followed by
``LayerAttribution.interpolate(..., "bilinear")``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.functional._batching import BatchSize, check_optional_batch_size, chunk_ranges
from lightning_xai.functional._checks import (
    TargetLike,
    check_images,
    check_scores,
    gather_scores,
    normalize_target,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace


def grad_cam(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    layer: nn.Module | str | None = None,
    relu: bool = True,
    upsample: bool = True,
    batch_size: BatchSize | None = None,
) -> Tensor:
    """Grad-CAM map for each image.

    Args:
        model: the classifier, images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        layer: the module whose output is explained, or its dotted name (``"features.3"``).
            ``None`` picks the module that runs *last* in the forward pass among those with a
            4-D output larger than 1x1 and called once (usually the last convolutional block),
            found by one forward pass of the first image. The choice is remembered per model,
            module structure and input size, so later calls skip that pass.
        relu: keep only the positive evidence, as in the paper.
        upsample: resize the map bilinearly to the input size.
        batch_size: images per forward+backward pass; ``None`` runs all at once. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.

    Returns:
        ``[N, 1, H, W]`` with ``upsample=True``, else ``[N, 1, h, w]`` at the layer's resolution.

    Example:
        >>> net = torch.nn.Sequential(
        ...     torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> grad_cam(net, torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 1, 8, 8])
        >>> find_grad_cam_layer(net, torch.rand(1, 1, 8, 8))
        '1'
    """
    check_images(inputs)
    model = unwrap_compiled(_check_model(model))
    batch_size = check_optional_batch_size(batch_size) or inputs.shape[0]
    target = normalize_target(target, inputs.shape[0])
    with leave_no_trace(model, inputs.device):
        images = inputs.detach().clone()
        module = _resolve_layer(model, layer, images)
        maps = [
            _grad_cam_batch(model, module, images[start:stop], target, (start, stop), relu)
            for start, stop in chunk_ranges(images.shape[0], batch_size)
        ]
    cam = torch.cat(maps)
    if upsample:
        cam = F.interpolate(cam, size=tuple(inputs.shape[-2:]), mode="bilinear")
    return cam.to(inputs.dtype)


def find_grad_cam_layer(model: nn.Module, example: Tensor) -> str:
    """Dotted name of the layer Grad-CAM uses when ``layer=None`` (see :func:`grad_cam`).

    Args:
        model: the classifier.
        example: one or more images ``[B, C, H, W]`` to trace a forward pass with.

    Raises:
        ValueError: when no module has a 4-D output larger than 1x1.
    """
    model = unwrap_compiled(model)
    names = {module: name for name, module in model.named_modules() if module is not model}
    finished: list[tuple[nn.Module, object]] = []
    handles = [m.register_forward_hook(lambda m, _i, out: finished.append((m, out))) for m in names]
    try:
        with leave_no_trace(model, example.device), torch.no_grad():
            model(example.detach().clone())
    finally:
        for handle in handles:
            handle.remove()
    calls: dict[nn.Module, int] = {}
    for module, _ in finished:
        calls[module] = calls.get(module, 0) + 1
    for module, output in reversed(finished):
        if calls[module] == 1 and isinstance(output, Tensor) and output.ndim == 4 and output.shape[-2:].numel() > 1:
            return names[module]
    raise ValueError(
        f"Grad-CAM needs a layer with a 4-D output [N, C, h, w] larger than 1x1, and {type(model).__name__} "
        "has none that runs once per forward pass; pass `layer=` explicitly or use another method."
    )


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The original module behind ``torch.compile(model)``; ``model`` itself otherwise.

    Hooks on a compiled graph's submodules do not fire, so Grad-CAM works on the original.
    """
    original = getattr(model, "_orig_mod", None)
    return original if isinstance(original, nn.Module) else model


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module (Grad-CAM needs its layers), got {type(model).__name__}.")
    return model


# model -> {(input shape, dtype, device type, module structure): the found layer's name}
_FOUND_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()
_MAX_REMEMBERED_PER_MODEL = 8


def _found_layer(model: nn.Module, images: Tensor) -> nn.Module:
    """``find_grad_cam_layer``, remembered while the model's modules and the input size stay the same."""
    structure = tuple((name, id(module)) for name, module in model.named_modules())
    key = (tuple(images.shape[1:]), images.dtype, images.device.type, structure)
    remembered = _FOUND_LAYERS.setdefault(model, {})
    if key not in remembered:
        if len(remembered) >= _MAX_REMEMBERED_PER_MODEL:
            remembered.clear()
        remembered[key] = find_grad_cam_layer(model, images[:1])
    return model.get_submodule(remembered[key])


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None, images: Tensor) -> nn.Module:
    if layer is None:
        return _found_layer(model, images)
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ValueError(f"`layer` must name a submodule of the model ({shown}), got {layer!r}.") from None
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in model.modules()):
            raise ValueError(f"`layer` must be a submodule of the model, got a {type(layer).__name__} that is not part of it.")
        return layer
    raise TypeError(f"`layer` must be an nn.Module, a dotted module name or None, got {type(layer).__name__}.")


def _grad_cam_batch(
    model: nn.Module, layer: nn.Module, images: Tensor, target: TargetLike, rows: tuple[int, int], relu: bool
) -> Tensor:
    images = images.detach().requires_grad_(True)
    with _capture_output(layer) as captured:
        scores = check_scores(model(images), images.shape[0])
    activations = _single_4d_output(captured, layer)
    targets = resolve_targets(_target_rows(target, rows), scores)
    (gradients,) = torch.autograd.grad(gather_scores(scores, targets).sum(), activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activations).sum(dim=1, keepdim=True).detach()
    return F.relu(cam) if relu else cam


def _target_rows(target: TargetLike, rows: tuple[int, int]) -> TargetLike:
    return target[rows[0] : rows[1]] if isinstance(target, Tensor) else target


@contextmanager
def _capture_output(layer: nn.Module) -> Iterator[list[Tensor]]:
    """Records ``layer``'s output and hands a clone downstream, so later in-place ops cannot alter it."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        if not isinstance(output, Tensor):
            captured.append(output)  # type: ignore[arg-type]
            return None
        captured.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _single_4d_output(captured: list[Tensor], layer: nn.Module) -> Tensor:
    name = type(layer).__name__
    if len(captured) != 1:
        raise ValueError(f"`layer` ({name}) must run exactly once per forward pass, but it ran {len(captured)} times.")
    output = captured[0]
    if not isinstance(output, Tensor) or output.ndim != 4:
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"`layer` ({name}) must produce a 4-D output [N, C, h, w] for Grad-CAM, got {shape}.")
    return output
