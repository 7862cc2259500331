"""Grad-CAM: a layer's activations weighted by the spatial mean of their gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (ICCV 2017). Matches Captum's ``LayerGradCam`` followed by
``LayerAttribution.interpolate(..., "bilinear")`` on convolutional layers, and
pytorch-grad-cam's ``GradCAM`` with a ``reshape_transform`` on token layers (see
:mod:`~lightning_xai.functional.grad_cam_layers` and :mod:`~lightning_xai.functional.grad_cam_search`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.functional._checks import (
    TargetLike,
    check_images,
    check_scores,
    gather_scores,
    normalize_target,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, chunk_ranges
from lightning_xai.functional.grad_cam_layers import Reshape, check_reshape, is_sequence_first, resolve_layout
from lightning_xai.functional.grad_cam_search import find_token_layer

__all__ = ["find_grad_cam_layer", "grad_cam", "unwrap_compiled"]


def grad_cam(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    layer: nn.Module | str | None = None,
    relu: bool = True,
    upsample: bool = True,
    batch_size: BatchSize | None = None,
    reshape: Reshape = "auto",
) -> Tensor:
    """Grad-CAM map for each image.

    Args:
        model: the classifier, images ``[B, C, H, W]`` to class scores ``[B, K]``. A wrapper
            module with an ``explained_module`` attribute (e.g. :class:`lightning_xai.targets.ScoreModel`)
            gives the scores while layers are looked up (and named) in ``explained_module``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        layer: the module whose output is explained, or its dotted name (``"features.3"``).
            ``None`` picks it with :func:`find_grad_cam_layer` on the first image (the input of
            the last transformer block's attention for models with token blocks, else the last
            4-D output larger than 1x1). The choice is remembered per model, module structure
            and input size, so later calls skip that pass.
        relu: keep only the positive evidence, as in the paper.
        upsample: resize the map bilinearly to the input size.
        batch_size: images per forward+backward pass; ``None`` runs all at once. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.
        reshape: how the layer's output (and its gradient) becomes ``[N, C, h, w]``: ``"auto"``
            reads ``[N, C, h, w]``, tokens ``[N, 1 + h*w, C]`` / ``[N, h*w, C]`` (``[S, N, C]``
            for sequence-first layers) and channels-last ``[N, h, w, C]`` maps (rules in
            :func:`~lightning_xai.functional.grad_cam_layers.auto_layout`); a callable does it
            yourself, like pytorch-grad-cam's ``reshape_transform`` (e.g. ``TokenGrid(14, 14)``);
            ``None`` accepts 4-D outputs only.

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
    model, root = _explained(_check_model(model))
    reshape = check_reshape(reshape)
    batch_size = check_optional_batch_size(batch_size) or inputs.shape[0]
    target = normalize_target(target, inputs.shape[0])
    with leave_no_trace(model, inputs.device):
        images = inputs.detach().clone()
        module = _resolve_layer(model, root, layer, images)
        maps = [
            _grad_cam_batch(model, (root, module), images[start:stop], target, (start, stop), relu, reshape)
            for start, stop in chunk_ranges(images.shape[0], batch_size)
        ]
    cam = torch.cat(maps)
    if upsample:
        cam = F.interpolate(cam, size=tuple(inputs.shape[-2:]), mode="bilinear")
    return cam.to(inputs.dtype)


def find_grad_cam_layer(model: nn.Module, example: Tensor) -> str:
    """Dotted name of the layer Grad-CAM uses when ``layer=None`` (see :func:`grad_cam`).

    * Models with token blocks (``nn.TransformerEncoderLayer``, or modules with an attention and
      a norm child): the input of the last block's attention, i.e. its first norm (``norm1``) in
      pre-norm blocks, as pytorch-grad-cam advises for ViT and Swin, checked to have a non-zero
      gradient on the patch tokens (details in :mod:`~lightning_xai.functional.grad_cam_search`).
      Never the patch embedding.
    * Other models: the module that runs *last* among those with a 4-D output larger than 1x1
      and called once (usually the last convolutional block).

    Args:
        model: the classifier (or a wrapper with ``explained_module``; the name is then relative to it).
        example: one or more images ``[B, C, H, W]`` to trace a forward pass with.

    Raises:
        ValueError: when no layer qualifies.

    Example:
        >>> from lightning_xai.demos import TinyViT
        >>> find_grad_cam_layer(TinyViT(image_size=16, patch_size=4).eval(), torch.rand(1, 1, 16, 16))
        'encoder.layers.1.norm1'
    """
    forward, model = _explained(model)
    with leave_no_trace(forward, example.device):
        found = find_token_layer(forward, model, example)
    if found is not None:
        return found
    return _last_4d_layer(forward, model, example)


def _last_4d_layer(forward: nn.Module, model: nn.Module, example: Tensor) -> str:
    names = {module: name for name, module in model.named_modules() if module is not model}
    finished: list[tuple[nn.Module, object]] = []
    handles = [m.register_forward_hook(lambda m, _i, out: finished.append((m, out))) for m in names]
    try:
        with leave_no_trace(forward, example.device), torch.no_grad():
            forward(example.detach().clone())
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


def _explained(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(module giving the scores, module holding the layers)``: the same unless a wrapper has ``explained_module``."""
    forward = unwrap_compiled(model)
    inner = getattr(forward, "explained_module", None)
    return forward, unwrap_compiled(inner) if isinstance(inner, nn.Module) else forward


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module (Grad-CAM needs its layers), got {type(model).__name__}.")
    return model


# model -> {(input shape, dtype, device type, module structure): the found layer's name}
_FOUND_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()
_MAX_REMEMBERED_PER_MODEL = 8


def _found_layer(forward: nn.Module, model: nn.Module, images: Tensor) -> nn.Module:
    """``find_grad_cam_layer``, remembered while the model's modules and the input size stay the same.

    Remembered per ``model`` (the module holding the layers), so a fresh wrapper around the same
    model (a ``ScoreModel`` per run) does not search again.
    """
    structure = tuple((name, id(module)) for name, module in model.named_modules())
    key = (tuple(images.shape[1:]), images.dtype, images.device.type, type(forward), structure)
    remembered = _FOUND_LAYERS.setdefault(model, {})
    if key not in remembered:
        if len(remembered) >= _MAX_REMEMBERED_PER_MODEL:
            remembered.clear()
        remembered[key] = find_grad_cam_layer(forward, images[:1])
    return model.get_submodule(remembered[key])


def _resolve_layer(forward: nn.Module, model: nn.Module, layer: nn.Module | str | None, images: Tensor) -> nn.Module:
    if layer is None:
        return _found_layer(forward, model, images)
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ValueError(f"`layer` must name a submodule of the model ({shown}), got {layer!r}.") from None
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in model.modules()):
            raise ValueError(
                f"`layer` must be a submodule of the model, got a {type(layer).__name__} that is not part of it."
            )
        return layer
    raise TypeError(f"`layer` must be an nn.Module, a dotted module name or None, got {type(layer).__name__}.")


def _grad_cam_batch(
    model: nn.Module,
    layer: tuple[nn.Module, nn.Module],
    images: Tensor,
    target: TargetLike,
    rows: tuple[int, int],
    relu: bool,
    reshape: Reshape,
) -> Tensor:
    """Grad-CAM of one chunk; ``layer`` is ``(the module holding it, the layer)``."""
    images = images.detach().requires_grad_(True)
    with _capture_output(layer[1]) as captured:
        scores = check_scores(model(images), images.shape[0])
    activations = _single_output(captured, layer[1])
    layout = _layout(activations, layer, images, reshape)
    grid = layout(activations.detach())
    targets = resolve_targets(_target_rows(target, rows), scores)
    (gradients,) = torch.autograd.grad(gather_scores(scores, targets).sum(), activations)
    weights = layout(gradients).mean(dim=(2, 3), keepdim=True)
    cam = (weights * grid).sum(dim=1, keepdim=True).detach()
    return F.relu(cam) if relu else cam


def _layout(
    activations: Tensor, layer: tuple[nn.Module, nn.Module], images: Tensor, reshape: Reshape
) -> Callable[[Tensor], Tensor]:
    root, module = layer
    sequence_first = activations.ndim == 3 and is_sequence_first(
        root, module, tuple(activations.shape), images.shape[0]
    )
    return resolve_layout(
        activations,
        reshape=reshape,
        image_size=(images.shape[-2], images.shape[-1]),
        batch=images.shape[0],
        sequence_first=sequence_first,
        name=type(module).__name__,
    )


def _target_rows(target: TargetLike, rows: tuple[int, int]) -> TargetLike:
    return target[rows[0] : rows[1]] if isinstance(target, Tensor) else target


@contextmanager
def _capture_output(layer: nn.Module) -> Iterator[list[object]]:
    """Records ``layer``'s output and hands a clone downstream, so later in-place ops cannot alter it."""
    captured: list[object] = []  # a non-tensor output too, for _single_output to refuse

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        if not isinstance(output, Tensor):
            captured.append(output)
            return None
        captured.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _single_output(captured: list[object], layer: nn.Module) -> Tensor:
    name = type(layer).__name__
    if len(captured) != 1:
        raise ValueError(f"`layer` ({name}) must run exactly once per forward pass, but it ran {len(captured)} times.")
    output = captured[0]
    if not isinstance(output, Tensor):
        raise TypeError(
            f"`layer` ({name}) must produce a tensor for Grad-CAM, got {type(output).__name__}; "
            "choose another `layer=`."
        )
    return output
