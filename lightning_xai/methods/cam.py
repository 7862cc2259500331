"""Class-activation methods: Grad-CAM and guided Grad-CAM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.functional.display import Reduction
from lightning_xai.functional.grad_cam_layers import Reshape, check_reshape
from lightning_xai.methods.base import AttributionMethod, MethodContext, _check_optional_int

__all__ = ["GradCAM", "GuidedGradCAM"]


@dataclass(frozen=True)
class GradCAM(AttributionMethod):
    """Grad-CAM (Selvaraju et al.); see ``functional.grad_cam``.

    Args:
        layer: dotted name of the module to explain, relative to the LightningModule
            (e.g. ``"net.layer4"``, ``"net.encoder.layers.1.norm1"``); ``None`` picks it with
            ``functional.find_grad_cam_layer``: the last 4-D layer of a CNN, the input of the last
            block's attention (its ``norm1``) in a transformer. :meth:`layer_for` says which.
        relu: keep only positive evidence.
        reshape: how the layer's output becomes ``[N, C, h, w]``: ``"auto"`` (convolutional maps,
            ViT tokens with or without a class token, Swin-style ``[N, h, w, C]``), ``None``
            (4-D only) or a callable like pytorch-grad-cam's ``reshape_transform``, e.g.
            ``functional.grad_cam_layers.TokenGrid(14, 14, prefix_tokens=1)``.

    Example:
        >>> import torch
        >>> from lightning_xai.demos import TinyViT
        >>> GradCAM().layer_for(TinyViT(image_size=16).eval(), torch.rand(2, 1, 16, 16))
        'encoder.layers.1.norm1'
    """

    name: ClassVar[str] = "grad_cam"
    display_reduce: ClassVar[Reduction] = "positive"
    layer: str | None = None
    relu: bool = True
    reshape: Reshape = "auto"

    def __post_init__(self) -> None:
        if self.layer is not None and not isinstance(self.layer, str):
            raise TypeError(f"`layer` must be a dotted module name (str) or None, got {type(self.layer).__name__}.")
        check_reshape(self.reshape)

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.grad_cam(model, images, targets, layer=self.layer, relu=self.relu, reshape=self.reshape)

    def layer_for(self, model: nn.Module, images: Tensor) -> str:
        """The dotted name of the layer explained for ``model`` and images like ``images`` ``[N, C, H, W]``."""
        return self.layer if self.layer is not None else F.find_grad_cam_layer(model, images[:1])

    def validate(self, model: nn.Module, images: Tensor) -> None:
        if self.layer is None and self.reshape == "auto":
            F.find_grad_cam_layer(model, images[:1])
        else:
            F.grad_cam(model, images[:1], layer=self.layer, reshape=self.reshape)


@dataclass(frozen=True)
class GuidedGradCAM(AttributionMethod):
    """Guided Grad-CAM (Selvaraju et al.); see ``functional.guided_grad_cam``.

    Args:
        layer: dotted name of the Grad-CAM layer, relative to the LightningModule; ``None``
            picks it as :class:`GradCAM` does.
        interpolate: how the Grad-CAM map is resized to the input: ``"bilinear"`` or ``"nearest"``.
        batch_size: images per forward+backward pass; ``None`` chooses automatically.
    """

    name: ClassVar[str] = "guided_grad_cam"
    batch_pass: ClassVar[bool | None] = True
    layer: str | None = None
    interpolate: Literal["bilinear", "nearest"] = "bilinear"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.layer is not None and not isinstance(self.layer, str):
            raise TypeError(f"`layer` must be a dotted module name (str) or None, got {type(self.layer).__name__}.")
        if self.interpolate not in ("bilinear", "nearest"):
            raise ValueError(f"`interpolate` must be one of ['bilinear', 'nearest'], got {self.interpolate!r}.")
        _check_optional_int(self.batch_size, "batch_size")

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.guided_grad_cam(
            model,
            images,
            targets,
            layer=self.layer,
            interpolate=self.interpolate,
            batch_size=context.batch_size(self.batch_size, backward=True),
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        if self.layer is None:
            F.find_grad_cam_layer(model, images[:1])
        else:
            F.grad_cam(model, images[:1], layer=self.layer)
