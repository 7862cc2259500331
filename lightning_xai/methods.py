"""Attribution methods as small frozen settings objects that the monitor runs.

Each object owns its settings and delegates the maths to :mod:`lightning_xai.functional`
(the torchvision ``transforms.v2`` split: the class holds configuration, the function computes).
They are immutable, hashable by value, and pickle.

Example:
    >>> from lightning_xai import Occlusion, GradCAM
    >>> Occlusion(window=8, stride=4).name, GradCAM().name
    ('occlusion', 'grad_cam')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Union

import torch
from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.functional._batching import BatchSize, DeadlineBatches
from lightning_xai.functional._checks import as_pair, check_positive_int, is_real_number
from lightning_xai.functional.baselines import CONSTANT_BASELINE_NAMES, INPAINT_BASELINE_NAMES, SAMPLED_BASELINE_NAMES
from lightning_xai.functional.display import Reduction
from lightning_xai.functional.grad_cam_layers import Reshape, check_reshape
from lightning_xai.functional.gradients import NOISE_TUNNEL_KINDS
from lightning_xai.functional.integrated_gradients import check_multiply_by_inputs, integration_rule


@dataclass(frozen=True)
class MethodContext:
    """What the monitor hands every method besides the model and images.

    Attributes:
        generator: private random source (never the global RNG), reset for every run so two
            runs draw the same samples and their maps differ only because the model changed.
        references: training images ``[M, C, H, W]`` on the model's device, for expected
            gradients with ``baselines="training"``; ``None`` when none were seen.
        batch_sizes: batch sizes (ints or :class:`~lightning_xai.functional.BatchSizeTuner`)
            by pass type (``False``: forward only, ``True``: forward+backward), used by methods
            whose own ``batch_size`` is ``None``.
        deadline: ``() -> bool``, true once the run's ``max_seconds`` has passed: batched work then
            stops between two batches (:class:`~lightning_xai.functional._batching.TimeBudgetExceeded`).
    """

    generator: torch.Generator
    references: Tensor | None = None
    batch_sizes: Mapping[bool, BatchSize] = field(default_factory=dict)
    deadline: Callable[[], bool] | None = None

    def batch_size(self, own: int | None, *, backward: bool) -> BatchSize | None:
        """The method's own batch size if set, else the one for its pass type (else ``None``: the heuristic),
        checking the deadline between batches when there is one."""
        chosen = own if own is not None else self.batch_sizes.get(backward)
        if chosen is None or self.deadline is None:
            return chosen
        return DeadlineBatches(chosen, self.deadline)


@dataclass(frozen=True)
class AttributionMethod:
    """Base of all methods: ``attribute`` computes, ``display`` turns the result into ``[N, 1, H, W]`` in [0, 1]."""

    name: ClassVar[str] = "method"
    display_reduce: ClassVar[Reduction] = "abs_sum"
    batch_pass: ClassVar[bool | None] = None  # its batched pass type (False: forward, True: forward+backward), if any

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        """Attributions for ``images`` ``[N, C, H, W]`` and ``targets`` ``[N]``."""
        raise NotImplementedError

    def attribute_with_gap(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext
    ) -> tuple[Tensor, Tensor | None]:
        """Attributions and, for path methods, each image's completeness gap ``[N]`` (else ``None``)."""
        return self.attribute(model, images, targets, context), None

    def display(self, attributions: Tensor) -> Tensor:
        """Display maps ``[N, 1, H, W]`` in [0, 1], normalised per image."""
        return F.display_map(attributions, reduce=self.display_reduce)

    def validate(self, model: nn.Module, images: Tensor) -> None:
        """Raises a clear error when this method cannot run on ``model`` with such images."""


def _check_baseline(baseline: object, allowed: tuple[str, ...], name: str = "baseline") -> None:
    if isinstance(baseline, str) and baseline not in allowed:
        raise ValueError(f"`{name}` must be a number, a tensor or one of {list(allowed)}, got {baseline!r}.")


def _check_optional_int(value: object, name: str) -> None:
    if value is not None:
        check_positive_int(value, name)


@dataclass(frozen=True)
class Occlusion(AttributionMethod):
    """Occlusion (Zeiler & Fergus): score drop when a window is hidden; see ``functional.occlusion``.

    Args:
        window: window side(s) in pixels; ``None`` uses an eighth of the shorter image side
            (at least 2), so any image size costs about 15 x 15 placements.
        stride: step between placements; ``None`` uses half the window.
        baseline: what replaces the window (a number, ``"zero"``, ``"mean"``, ``"blur"``, ...,
            or ``"inpaint"`` / ``"inpaint_ns"``: OpenCV inpainting, ``pip install "lightning-xai[inpaint]"``).
        batch_size: occluded images per forward pass; ``None`` chooses automatically.

    Example:
        >>> Occlusion().window_for((32, 32)), Occlusion(window=(3, 5)).window_for((32, 32))
        ((4, 4), (3, 5))
    """

    name: ClassVar[str] = "occlusion"
    batch_pass: ClassVar[bool | None] = False
    display_reduce: ClassVar[Reduction] = "positive"
    window: int | tuple[int, int] | None = None
    stride: int | tuple[int, int] | None = None
    baseline: Union[float, str] = 0.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            as_pair(self.window, "window")
        if self.stride is not None:
            as_pair(self.stride, "stride")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES + INPAINT_BASELINE_NAMES)
        _check_optional_int(self.batch_size, "batch_size")

    def window_for(self, size: tuple[int, int]) -> tuple[int, int]:
        """The window used for images of ``size`` ``(H, W)``."""
        if self.window is not None:
            return as_pair(self.window, "window")
        side = max(2, math.ceil(min(size) / 8))
        return side, side

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        window = self.window_for(tuple(images.shape[-2:]))
        return F.occlusion(
            model, images, targets, window=window, stride=self.stride, baseline=self.baseline,
            batch_size=context.batch_size(self.batch_size, backward=False),
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        window = self.window_for(tuple(images.shape[-2:]))
        F.occlusion(lambda x: torch.zeros(x.shape[0], 1, device=x.device), images[:1], 0, window=window, stride=self.stride, baseline=self.baseline)


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
class _PathMethod(AttributionMethod):
    """A method with a completeness gap (integrated and expected gradients): both calls go through ``_run``."""

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return self._run(model, images, targets, context, return_delta=False)  # type: ignore[return-value]

    def attribute_with_gap(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext
    ) -> tuple[Tensor, Tensor | None]:
        if not getattr(self, "multiply_by_inputs", True):  # completeness holds only for the global attribution
            return self.attribute(model, images, targets, context), None
        return self._run(model, images, targets, context, return_delta=True)  # type: ignore[return-value]

    def _run(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool) -> object:
        raise NotImplementedError


@dataclass(frozen=True)
class ExpectedGradients(_PathMethod):
    """Expected gradients (Erion et al.); see ``functional.expected_gradients``.

    Args:
        n_samples: draws per probe (one forward+backward pass each).
        baselines: ``"training"`` (a reservoir of training images the monitor gathers from the
            batches training already sees), a reference tensor ``[M, C, H, W]``, or
            ``"uniform"``, ``"gaussian"``, ``"blur"``.
        reference_count: size of the training-image reservoir.
        batch_size: draws per pass; ``None`` chooses automatically.
        multiply_by_inputs: multiply the gradients by ``x - x'`` (``False``: averaged gradients
            alone, Captum's ``multiply_by_inputs=False``; then no completeness gap is reported).
    """

    name: ClassVar[str] = "expected_gradients"
    batch_pass: ClassVar[bool | None] = True
    n_samples: int = 32
    baselines: Union[str, Tensor] = "training"
    reference_count: int = 64
    batch_size: int | None = None
    multiply_by_inputs: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.n_samples, "n_samples")
        check_positive_int(self.reference_count, "reference_count")
        _check_baseline(self.baselines, ("training", *SAMPLED_BASELINE_NAMES), "baselines")
        _check_optional_int(self.batch_size, "batch_size")
        check_multiply_by_inputs(self.multiply_by_inputs, False)

    def _run(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool) -> object:
        baselines = self.baselines
        if isinstance(baselines, str) and baselines == "training":
            baselines = context.references if context.references is not None else "blur"
        elif isinstance(baselines, Tensor):
            baselines = baselines.to(images.device)
        return F.expected_gradients(
            model, images, targets, baselines=baselines, n_samples=self.n_samples, generator=context.generator,
            batch_size=context.batch_size(self.batch_size, backward=True), return_delta=return_delta,
            multiply_by_inputs=self.multiply_by_inputs,
        )


@dataclass(frozen=True)
class IntegratedGradients(_PathMethod):
    """Integrated gradients (Sundararajan et al.); see ``functional.integrated_gradients``.

    ``multiply_by_inputs=False`` gives the integrated gradient alone (Captum's
    ``multiply_by_inputs=False``); then no completeness gap is reported.
    """

    name: ClassVar[str] = "integrated_gradients"
    batch_pass: ClassVar[bool | None] = True
    baseline: Union[float, str] = "zero"
    n_steps: int = 32
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = "gausslegendre"
    batch_size: int | None = None
    multiply_by_inputs: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.n_steps, "n_steps")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES)
        _check_optional_int(self.batch_size, "batch_size")
        integration_rule(self.n_steps, self.method)
        check_multiply_by_inputs(self.multiply_by_inputs, False)

    def _run(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool) -> object:
        return F.integrated_gradients(
            model, images, targets, baseline=self.baseline, n_steps=self.n_steps, method=self.method,
            batch_size=context.batch_size(self.batch_size, backward=True), return_delta=return_delta,
            multiply_by_inputs=self.multiply_by_inputs,
        )


@dataclass(frozen=True)
class Saliency(AttributionMethod):
    """Vanilla input gradient (Simonyan et al.); see ``functional.saliency``."""

    name: ClassVar[str] = "saliency"
    absolute: bool = True

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.saliency(model, images, targets, absolute=self.absolute)


@dataclass(frozen=True)
class SmoothGrad(AttributionMethod):
    """SmoothGrad (Smilkov et al.) and its noise-tunnel variants; see ``functional.smooth_grad``.

    Args:
        n_samples: noisy copies per probe.
        stdev: noise level, a fraction of each image's value range.
        batch_size: noisy images per pass; ``None`` chooses automatically.
        kind: ``"smoothgrad"`` (mean gradient), ``"smoothgrad_sq"`` (mean square) or
            ``"vargrad"`` (variance), as Captum's ``NoiseTunnel(nt_type=...)``.
    """

    name: ClassVar[str] = "smooth_grad"
    batch_pass: ClassVar[bool | None] = True
    n_samples: int = 25
    stdev: float = 0.15
    batch_size: int | None = None
    kind: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"

    def __post_init__(self) -> None:
        check_positive_int(self.n_samples, "n_samples")
        if not is_real_number(self.stdev) or not self.stdev >= 0:
            raise ValueError(f"`stdev` must be a number >= 0, got {self.stdev!r}.")
        _check_optional_int(self.batch_size, "batch_size")
        if self.kind not in NOISE_TUNNEL_KINDS:
            raise ValueError(f"`kind` must be one of {list(NOISE_TUNNEL_KINDS)}, got {self.kind!r}.")

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.smooth_grad(
            model, images, targets, n_samples=self.n_samples, stdev=self.stdev, generator=context.generator,
            batch_size=context.batch_size(self.batch_size, backward=True), kind=self.kind,
        )


@dataclass(frozen=True)
class GuidedBackprop(AttributionMethod):
    """Guided backpropagation (Springenberg et al.); see ``functional.guided_backprop``.

    Only ``nn.ReLU`` modules are modified; functional ``relu`` calls keep their plain gradient.

    Args:
        batch_size: images per forward+backward pass; ``None`` chooses automatically.
    """

    name: ClassVar[str] = "guided_backprop"
    batch_pass: ClassVar[bool | None] = True
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_optional_int(self.batch_size, "batch_size")

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.guided_backprop(model, images, targets, batch_size=context.batch_size(self.batch_size, backward=True))


@dataclass(frozen=True)
class DeconvNet(AttributionMethod):
    """DeconvNet (Zeiler & Fergus); see ``functional.deconvnet``.

    Only ``nn.ReLU`` modules are modified; functional ``relu`` calls keep their plain gradient.

    Args:
        batch_size: images per forward+backward pass; ``None`` chooses automatically.
    """

    name: ClassVar[str] = "deconvnet"
    batch_pass: ClassVar[bool | None] = True
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_optional_int(self.batch_size, "batch_size")

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return F.deconvnet(model, images, targets, batch_size=context.batch_size(self.batch_size, backward=True))


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
            model, images, targets, layer=self.layer, interpolate=self.interpolate,
            batch_size=context.batch_size(self.batch_size, backward=True),
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        if self.layer is None:
            F.find_grad_cam_layer(model, images[:1])
        else:
            F.grad_cam(model, images[:1], layer=self.layer)


@dataclass(frozen=True)
class Mask(AttributionMethod):
    """Smallest sufficient masks (extremal perturbations, Fong et al.); see ``functional.extremal_mask``.

    ``attribute`` returns, per probe, the mask ``[N, 1, H, W]`` of the smallest tested area that
    keeps at least ``keep`` of the target score (the largest area's mask when none does);
    ``explain`` returns the whole :class:`~lightning_xai.functional.ExtremalMasks` (every area's
    mask, the kept fractions, the smallest sufficient area per probe).

    Args:
        areas: mask areas to try, fractions of the image.
        steps: optimisation steps, one forward+backward pass of ``N * len(areas)`` images each.
        baseline: what the masked-out part becomes (``"blur"``, ``"zero"``, ``"mean"``, a number).
        keep: the fraction of the score a mask must keep to be sufficient.
        grid_step: pixels per mask-grid cell; ``None``: an eighth of the shorter image side.
    """

    name: ClassVar[str] = "mask"
    display_reduce: ClassVar[Reduction] = "positive"
    areas: tuple[float, ...] = (0.05, 0.1, 0.2)
    steps: int = 200
    baseline: Union[float, str] = "blur"
    keep: float = 0.9
    grid_step: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.areas, tuple) or not self.areas or not all(is_real_number(a) and 0 < a < 1 for a in self.areas):
            raise ValueError(f"`areas` must be a non-empty tuple of fractions in (0, 1), got {self.areas!r}.")
        check_positive_int(self.steps, "steps")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES)
        if not is_real_number(self.keep) or not 0 < self.keep <= 1:
            raise ValueError(f"`keep` must be a number in (0, 1], got {self.keep!r}.")
        _check_optional_int(self.grid_step, "grid_step")

    def explain(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> F.ExtremalMasks:
        """Every area's mask and the per-probe summary."""
        return F.extremal_mask(
            model, images, targets, areas=self.areas, steps=self.steps, baseline=self.baseline, keep=self.keep,
            grid_step=self.grid_step, generator=context.generator,
        )

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        return self.explain(model, images, targets, context).best


class _Kwargs(tuple):
    """Keyword arguments as sorted ``(name, value)`` items: a picklable tuple whose repr shows tensors by shape."""

    def __repr__(self) -> str:
        shown = (f"{key!r}: tensor{list(value.shape)}" if isinstance(value, Tensor) else f"{key!r}: {value!r}" for key, value in self)
        return "{" + ", ".join(shown) + "}"


def _items(value: object, name: str) -> tuple[tuple[str, object], ...]:
    if isinstance(value, Mapping):
        value = tuple(sorted(value.items()))
    if not isinstance(value, tuple) or not all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in value):
        raise TypeError(f"`{name}` must be a dict of keyword arguments, got {type(value).__name__}.")
    return _Kwargs(value)


@dataclass(frozen=True)
class CaptumMethod(AttributionMethod):
    """Any Captum attribution (DeepLift, LRP, Lime, KernelShap, LayerConductance...) run on the probes.

    ``attribution_class(model, **init_kwargs).attribute(images, target=targets, **attribute_kwargs)``
    runs with gradients enabled, the model in the monitor's eval mode, the global RNGs (which
    Captum's sampling methods draw from) seeded from the monitor's private generator and restored
    afterwards, and ``internal_batch_size`` / ``perturbations_per_eval`` set from the monitor's
    batch sizes where the class takes them and ``attribute_kwargs`` does not. A ``layer`` in
    ``init_kwargs`` may be a dotted module name, relative to the LightningModule (``"net.features.3"``);
    layer attributions are upsampled bilinearly to the input size. Needs ``pip install "lightning-xai[captum]"``.

    Args:
        attribution_class: a ``captum.attr`` class or its name (``"DeepLift"``).
        init_kwargs: keyword arguments of the class besides the model (a dict; stored as sorted items).
        attribute_kwargs: keyword arguments of ``attribute`` besides the inputs and ``target``.

    Example:
        >>> CaptumMethod("DeepLift").name, CaptumMethod("LayerConductance", init_kwargs={"layer": "net.features.3"}).name
        ('captum_DeepLift', 'captum_LayerConductance')
    """

    attribution_class: Union[type, str] = "Saliency"
    init_kwargs: tuple[tuple[str, object], ...] = ()
    attribute_kwargs: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attribution_class, (type, str)):
            raise TypeError(f"`attribution_class` must be a captum.attr attribution class or its name, got {type(self.attribution_class).__name__}.")
        object.__setattr__(self, "init_kwargs", _items(self.init_kwargs, "init_kwargs"))
        object.__setattr__(self, "attribute_kwargs", _items(self.attribute_kwargs, "attribute_kwargs"))
        for key in ("inputs", "target"):
            if key in dict(self.attribute_kwargs):
                raise ValueError(f"`attribute_kwargs` must not set {key!r}: the monitor passes the probes and their classes.")

    @property
    def name(self) -> str:  # type: ignore[override]
        """``"captum_"`` and the class name, e.g. ``"captum_DeepLift"``."""
        spec = self.attribution_class
        return "captum_" + (spec if isinstance(spec, str) else spec.__name__)

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        from lightning_xai._captum import run_captum

        return run_captum(
            model, images, targets, spec=self.attribution_class, init_kwargs=dict(self.init_kwargs),
            attribute_kwargs=dict(self.attribute_kwargs), generator=context.generator,
            batch_sizes={True: context.batch_size(None, backward=True), False: context.batch_size(None, backward=False)},
        )

    def validate(self, model: nn.Module, images: Tensor) -> None:
        from lightning_xai._captum import attribution_class, resolve_init_kwargs

        attribution_class(self.attribution_class)
        resolve_init_kwargs(model, dict(self.init_kwargs))


def default_methods() -> list[AttributionMethod]:
    """The monitor's methods when none are given: Grad-CAM, occlusion and expected gradients."""
    return [GradCAM(), Occlusion(), ExpectedGradients()]
