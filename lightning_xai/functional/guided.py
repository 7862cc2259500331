"""Guided backpropagation, DeconvNet and guided Grad-CAM: gradients with modified ReLU rules.

The three ways of passing a gradient back through a ReLU ``y = max(x, 0)``:

- plain gradient (saliency): ``grad_x = grad_y * [x > 0]``;
- DeconvNet (Zeiler & Fergus, 2014): ``grad_x = max(grad_y, 0)`` (the forward mask is ignored);
- guided backpropagation (Springenberg et al., 2015): ``grad_x = max(grad_y, 0) * [x > 0]``.

Guided Grad-CAM (Selvaraju et al., 2017) multiplies guided backpropagation by the Grad-CAM
map upsampled to the input size: "a lens that focuses the pixel-wise map". All three match
Captum's ``GuidedBackprop``, ``Deconvolution`` and ``GuidedGradCam``.

Only ``torch.nn.ReLU`` *modules* are modified (in-place ones included), through forward hooks
that exist only during the call. ReLUs applied as functions (``torch.relu``, ``F.relu``,
``x.clamp(min=0)``) in a model's ``forward`` are not modules and keep their plain gradient,
as in Captum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.functional._checks import TargetLike, check_images
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, default_batch_size
from lightning_xai.functional.grad_cam import grad_cam, unwrap_compiled
from lightning_xai.functional.gradients import check_finite_attribution, sum_sample_gradients, targets_from_forward

__all__ = ["ReluRule", "deconvnet", "guided_backprop", "guided_grad_cam"]

ReluRule = Literal["guided", "deconvnet"]


class _GuidedRelu(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes only positive gradients, where ``x > 0``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _DeconvRelu(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes only positive gradients, wherever ``x`` was."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


@contextmanager
def relu_rule(model: nn.Module, rule: ReluRule) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` module of ``model`` back-propagates with ``rule``.

    A forward pre-hook keeps the ReLU's input and hands the module a clone (so an in-place
    ReLU cannot overwrite it); a forward hook replaces the module's output by the same values
    computed by the rule's autograd function. The hooks are removed on exit, also on error.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))
        >>> with relu_rule(net, "guided"):
        ...     len(net[1]._forward_hooks)
        1
        >>> len(net[1]._forward_hooks)
        0
    """
    function = {"guided": _GuidedRelu, "deconvnet": _DeconvRelu}[rule]
    kept: dict[nn.Module, Tensor] = {}

    def keep_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kept[module] = args[0]
        return (args[0].clone(), *args[1:])

    def replace_output(module: nn.Module, _args: tuple[Any, ...], _output: Tensor) -> Tensor:
        return function.apply(kept.pop(module))

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = [m.register_forward_pre_hook(keep_input) for m in relus]
    handles += [m.register_forward_hook(replace_output) for m in relus]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _modified_gradients(
    model: nn.Module, inputs: Tensor, target: TargetLike, rule: ReluRule, batch_size: BatchSize | None
) -> Tensor:
    check_images(inputs)
    model = unwrap_compiled(_check_model(model))
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(model, inputs.device):
        images = inputs.detach().clone()
        targets = targets_from_forward(model, images, target)
        with relu_rule(model, rule):
            total = sum_sample_gradients(
                model,
                images,
                targets,
                n_samples=1,
                make_samples=lambda index, _: (images[index], None),
                batch_size=batch_size,
            )
    return check_finite_attribution(total).to(inputs.dtype)


def guided_backprop(
    model: nn.Module, inputs: Tensor, target: TargetLike = None, *, batch_size: BatchSize | None = None
) -> Tensor:
    """Guided backpropagation (Springenberg et al., 2015), as Captum's ``GuidedBackprop``.

    The input gradient of the target score, with every ``nn.ReLU`` module passing back only
    positive gradients where its input was positive. Functional ReLUs (``torch.relu``,
    ``F.relu``) are not modules and are not modified: their plain gradient is used.

    Args:
        model: the classifier, images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        batch_size: images per forward+backward pass; ``None`` chooses automatically.

    Returns:
        ``[N, C, H, W]``, signed.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
        >>> guided_backprop(net, torch.rand(2, 1, 2, 2), 0).shape
        torch.Size([2, 1, 2, 2])
    """
    return _modified_gradients(model, inputs, target, "guided", batch_size)


def deconvnet(
    model: nn.Module, inputs: Tensor, target: TargetLike = None, *, batch_size: BatchSize | None = None
) -> Tensor:
    """DeconvNet (Zeiler & Fergus, 2014), as Captum's ``Deconvolution``.

    The input gradient of the target score, with every ``nn.ReLU`` module passing back the
    positive part of the incoming gradient, whatever its forward input was. Functional ReLUs
    (``torch.relu``, ``F.relu``) are not modules and are not modified: their plain gradient is used.

    Args:
        model: the classifier, images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        batch_size: images per forward+backward pass; ``None`` chooses automatically.

    Returns:
        ``[N, C, H, W]``, signed.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
        >>> deconvnet(net, torch.rand(2, 1, 2, 2), 1).shape
        torch.Size([2, 1, 2, 2])
    """
    return _modified_gradients(model, inputs, target, "deconvnet", batch_size)


def guided_grad_cam(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    layer: nn.Module | str | None = None,
    interpolate: Literal["bilinear", "nearest"] = "bilinear",
    batch_size: BatchSize | None = None,
) -> Tensor:
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

    Equal to Captum's ``GuidedGradCam(model, layer).attribute(..., interpolate_mode=interpolate)``
    (Captum's default mode is ``"nearest"``; the paper and this function upsample bilinearly).
    Functional ReLUs are not modified (see :func:`guided_backprop`).

    Args:
        model: the classifier, images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        layer: the Grad-CAM layer (module or dotted name); ``None`` picks it as :func:`grad_cam` does.
        interpolate: how the Grad-CAM map ``[N, 1, h, w]`` is resized to ``[N, 1, H, W]``.
        batch_size: images per forward+backward pass; ``None`` chooses automatically.

    Returns:
        ``[N, C, H, W]``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        ...                     nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> guided_grad_cam(net, torch.rand(2, 1, 8, 8), layer="1").shape
        torch.Size([2, 1, 8, 8])
    """
    check_images(inputs)
    if interpolate not in ("bilinear", "nearest"):
        raise ValueError(f"`interpolate` must be one of ['bilinear', 'nearest'], got {interpolate!r}.")
    model = unwrap_compiled(_check_model(model))
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(model, inputs.device):
        targets = targets_from_forward(model, inputs.detach().clone(), target)
    cam = grad_cam(model, inputs, targets, layer=layer, relu=True, upsample=False, batch_size=batch_size)
    cam = F.interpolate(cam, size=tuple(inputs.shape[-2:]), mode=interpolate)
    return (guided_backprop(model, inputs, targets, batch_size=batch_size) * cam).to(inputs.dtype)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module (its ReLU modules are modified), got {type(model).__name__}."
        )
    return model
