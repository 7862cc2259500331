"""Gradient methods: saliency, SmoothGrad, integrated and expected gradients, guided backprop, DeconvNet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, cast

from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.functional._checks import check_positive_int, is_real_number
from lightning_xai.functional.baselines import (
    CONSTANT_BASELINE_NAMES,
    SAMPLED_BASELINE_NAMES,
    ConstantBaselineName,
    SampledBaselineName,
)
from lightning_xai.functional.gradients import NOISE_TUNNEL_KINDS
from lightning_xai.functional.integrated_gradients import check_multiply_by_inputs, integration_rule
from lightning_xai.methods.base import AttributionMethod, MethodContext, _check_baseline, _check_optional_int
from lightning_xai.monitor import sizing

__all__ = ["DeconvNet", "ExpectedGradients", "GuidedBackprop", "IntegratedGradients", "Saliency", "SmoothGrad"]


@dataclass(frozen=True)
class _PathMethod(AttributionMethod):
    """A method with a completeness gap (integrated and expected gradients): both calls go through ``_run``."""

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        # without the delta the functional call returns the attributions alone
        return cast(Tensor, self._run(model, images, targets, context, return_delta=False))

    def attribute_with_gap(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext
    ) -> tuple[Tensor, Tensor | None]:
        if not getattr(self, "multiply_by_inputs", True):  # completeness holds only for the global attribution
            return self.attribute(model, images, targets, context), None
        return cast(tuple[Tensor, Tensor], self._run(model, images, targets, context, return_delta=True))

    def _run(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class ExpectedGradients(_PathMethod):
    """Expected gradients (Erion et al.); see ``functional.expected_gradients``.

    Args:
        n_samples: draws per probe (one forward+backward pass each); ``None`` is sized to the image
            (:func:`~lightning_xai.monitor.sizing.expected_gradients_samples`): 32 up to 64 x 64,
            fewer above (13 at 224 x 224, 7 at 512 x 512, at least 4).
        baselines: ``"training"`` (a reservoir of training images the monitor gathers from the
            batches training already sees), a reference tensor ``[M, C, H, W]``, or
            ``"uniform"``, ``"gaussian"``, ``"blur"``.
        reference_count: size of the training-image reservoir.
        batch_size: draws per pass; ``None`` chooses automatically.
        multiply_by_inputs: multiply the gradients by ``x - x'`` (``False``: averaged gradients
            alone, Captum's ``multiply_by_inputs=False``; then no completeness gap is reported).

    Example:
        >>> ExpectedGradients().samples_for((64, 64)), ExpectedGradients().samples_for((512, 512))
        (32, 7)
        >>> ExpectedGradients(n_samples=16).samples_for((512, 512))
        16
    """

    name: ClassVar[str] = "expected_gradients"
    batch_pass: ClassVar[bool | None] = True
    n_samples: int | None = None
    baselines: Literal["training"] | SampledBaselineName | Tensor = "training"
    reference_count: int = 64
    batch_size: int | None = None
    multiply_by_inputs: bool = True

    def __post_init__(self) -> None:
        _check_optional_int(self.n_samples, "n_samples")
        check_positive_int(self.reference_count, "reference_count")
        _check_baseline(self.baselines, ("training", *SAMPLED_BASELINE_NAMES), "baselines")
        _check_optional_int(self.batch_size, "batch_size")
        check_multiply_by_inputs(self.multiply_by_inputs, False)

    def samples_for(self, size: tuple[int, int]) -> int:
        """The draws per probe used for images of ``size`` ``(H, W)``."""
        return self.n_samples if self.n_samples is not None else sizing.expected_gradients_samples(size)

    def _run(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        baselines: SampledBaselineName | Tensor
        if isinstance(self.baselines, str) and self.baselines == "training":
            baselines = context.references if context.references is not None else "blur"
        elif isinstance(self.baselines, Tensor):
            baselines = self.baselines.to(images.device)
        else:
            baselines = self.baselines
        return F.expected_gradients(
            model,
            images,
            targets,
            baselines=baselines,
            n_samples=self.samples_for((images.shape[-2], images.shape[-1])),
            generator=context.generator,
            batch_size=context.batch_size(self.batch_size, backward=True),
            return_delta=return_delta,
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
    baseline: float | ConstantBaselineName = "zero"
    n_steps: int = 32
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = (
        "gausslegendre"
    )
    batch_size: int | None = None
    multiply_by_inputs: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.n_steps, "n_steps")
        _check_baseline(self.baseline, CONSTANT_BASELINE_NAMES)
        _check_optional_int(self.batch_size, "batch_size")
        integration_rule(self.n_steps, self.method)
        check_multiply_by_inputs(self.multiply_by_inputs, False)

    def _run(
        self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext, *, return_delta: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        return F.integrated_gradients(
            model,
            images,
            targets,
            baseline=self.baseline,
            n_steps=self.n_steps,
            method=self.method,
            batch_size=context.batch_size(self.batch_size, backward=True),
            return_delta=return_delta,
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
            model,
            images,
            targets,
            n_samples=self.n_samples,
            stdev=self.stdev,
            generator=context.generator,
            batch_size=context.batch_size(self.batch_size, backward=True),
            kind=self.kind,
        )


@dataclass(frozen=True)
class _ReluRuleMethod(AttributionMethod):
    """One batched backward pass with a rule for ``nn.ReLU`` modules (``functional.guided``): guided
    backprop and DeconvNet share everything but the rule."""

    batch_pass: ClassVar[bool | None] = True
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_optional_int(self.batch_size, "batch_size")

    def attribute(self, model: nn.Module, images: Tensor, targets: Tensor, context: MethodContext) -> Tensor:
        function = F.guided_backprop if self.name == "guided_backprop" else F.deconvnet
        return function(model, images, targets, batch_size=context.batch_size(self.batch_size, backward=True))


@dataclass(frozen=True)
class GuidedBackprop(_ReluRuleMethod):
    """Guided backpropagation (Springenberg et al.); see ``functional.guided_backprop``.

    Only ``nn.ReLU`` modules are modified; functional ``relu`` calls keep their plain gradient.

    Args:
        batch_size: images per forward+backward pass; ``None`` chooses automatically.
    """

    name: ClassVar[str] = "guided_backprop"


@dataclass(frozen=True)
class DeconvNet(_ReluRuleMethod):
    """DeconvNet (Zeiler & Fergus); see ``functional.deconvnet``.

    Only ``nn.ReLU`` modules are modified; functional ``relu`` calls keep their plain gradient.

    Args:
        batch_size: images per forward+backward pass; ``None`` chooses automatically.
    """

    name: ClassVar[str] = "deconvnet"
