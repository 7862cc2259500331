"""Expected gradients: integrated gradients averaged over a distribution of baselines.

Integrated gradients (see :mod:`lightning_xai.functional.integrated_gradients`) integrates
the input gradient along the straight line from one baseline ``x'`` to the input ``x`` and
multiplies by ``x - x'``. Expected gradients (Erion et al., 2021) averages that over baselines drawn from a
distribution (training images) and over a random point on the line, one gradient per draw:
``E[(x - x') * grad f(x' + a (x - x'))]``, ``x' ~ D``, ``a ~ U(0, 1)`` (Captum: ``GradientShap``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_positive_int,
    gather_scores,
    is_real_number,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import (
    SAMPLED_BASELINE_NAMES,
    SampledBaselineName,
    ValueRange,
    channel_range,
    check_reference_set,
    default_blur_sigma,
    gaussian_blur,
    noise_baselines_from,
)
from lightning_xai.functional.batching import BatchSize, NoiseStream, check_optional_batch_size, default_batch_size
from lightning_xai.functional.gradients import check_finite_attribution, private_generator, sum_sample_gradients
from lightning_xai.functional.integrated_gradients import check_multiply_by_inputs, checked_scores, completeness_gap

__all__ = ["SampledBaselines", "expected_gradients"]

SampledBaselines = Tensor | SampledBaselineName


def expected_gradients(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    baselines: SampledBaselines,
    n_samples: int = 64,
    sigma: float | None = None,
    value_range: ValueRange = None,
    generator: torch.Generator | None = None,
    batch_size: BatchSize | None = None,
    multiply_by_inputs: bool = True,
    return_delta: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Expected gradients: ``E[(x - x') * grad f(x' + a (x - x'))]`` over baselines and ``a ~ U(0, 1)``.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        baselines: a reference set ``[M, C, H, W]`` drawn from uniformly (e.g. training images:
            the expected-gradients choice, Captum's ``GradientShap`` with ``stdevs=0``), or a
            named distribution: ``"uniform"`` (each pixel uniform over the valid range),
            ``"gaussian"`` (the input plus noise of standard deviation ``sigma``), ``"blur"``
            (the input blurred by ``sigma`` pixels).
        n_samples: draws per image; one forward+backward pass each.
        sigma: noise level for ``"gaussian"`` (default: 0.15 x each channel's range) or blur
            radius for ``"blur"`` (default: a tenth of the longer image side).
        value_range: valid pixel range for ``"uniform"`` (default: per-channel min/max of ``inputs``).
        generator: source of the draws; ``None`` uses a private generator seeded with 0. The
            global RNG is never touched. The draws do not depend on ``batch_size``.
        batch_size: draws per forward+backward pass; ``None`` chooses automatically. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.
        multiply_by_inputs: multiply each draw's gradient by ``x - x'``. ``False`` averages the
            gradients alone, ``E[grad f(x' + a (x - x'))]`` (Captum's
            ``GradientShap(..., multiply_by_inputs=False)``).
        return_delta: also return each image's completeness gap
            ``|sum(phi) - (f(x) - mean f(x'))|`` over its drawn baselines (costs a forward pass
            per draw for noise baselines, one per reference image for a reference set); needs
            ``multiply_by_inputs=True``.

    Returns:
        Attributions ``[N, C, H, W]``, and with ``return_delta`` the gaps ``[N]``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> references = torch.rand(10, 1, 2, 2)
        >>> expected_gradients(net, torch.rand(3, 1, 2, 2), 1, baselines=references, n_samples=8).shape
        torch.Size([3, 1, 2, 2])
    """
    check_images(inputs)
    n_samples = check_positive_int(n_samples, "n_samples")
    check_multiply_by_inputs(multiply_by_inputs, return_delta)
    generator = private_generator(generator, inputs.device)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(forward_fn, inputs.device):
        images = inputs.detach().clone()
        sampler = _BaselineSampler(baselines, images, n_samples, generator, sigma, value_range, multiply_by_inputs)
        scores = checked_scores(forward_fn, images)
        targets = resolve_targets(target, scores)
        baseline_scores = torch.zeros(images.shape[0], n_samples, device=images.device)
        total = sum_sample_gradients(
            forward_fn,
            images,
            targets,
            n_samples=n_samples,
            make_samples=sampler.points,
            batch_size=batch_size,
            score_sink=sampler.record_scores(forward_fn, targets, baseline_scores) if return_delta else None,
        )
        attributions = check_finite_attribution(total / n_samples)
        if not return_delta:
            return attributions.to(inputs.dtype)
        mean_baseline_score = sampler.mean_baseline_scores(forward_fn, targets, baseline_scores)
        gap = completeness_gap(attributions, gather_scores(scores, targets), mean_baseline_score)
    return attributions.to(inputs.dtype), gap


class _BaselineSampler:
    """Draws the baselines and interpolation points of expected gradients."""

    def __init__(
        self,
        baselines: object,
        images: Tensor,
        n_samples: int,
        generator: torch.Generator,
        sigma: float | None,
        value_range: ValueRange,
        multiply_by_inputs: bool = True,
    ) -> None:
        self.images = images
        self.multiply_by_inputs = multiply_by_inputs
        self.generator = generator
        self.references: Tensor | None = None
        self.noise: NoiseStream | None = None
        total = images.shape[0] * n_samples
        if isinstance(baselines, Tensor):
            self.references = check_reference_set(baselines, images)
            picks = torch.randint(self.references.shape[0], (total,), generator=generator, device=generator.device)
            self.reference_index = picks.to(images.device)
        elif isinstance(baselines, str) and baselines in SAMPLED_BASELINE_NAMES:
            self.name = baselines
            self.low, self.high = channel_range(images, value_range)
            self.sigma = _default_sigma(baselines, images, sigma, self.low, self.high)
            self.blurred = gaussian_blur(images, float(self.sigma)) if baselines == "blur" else None
            kind: Literal["normal", "uniform"] = "uniform" if baselines == "uniform" else "normal"
            self.noise = (
                NoiseStream(generator, tuple(images.shape[1:]), kind, images.dtype) if self.blurred is None else None
            )
        else:
            shown = type(baselines).__name__ if not isinstance(baselines, str) else repr(baselines)
            raise ValueError(
                "`baselines` must be a reference tensor [M, C, H, W] or one of "
                f"{list(SAMPLED_BASELINE_NAMES)}, got {shown}."
            )
        alphas = torch.rand(total, generator=generator, device=generator.device, dtype=images.dtype)
        self.alphas = alphas.to(images.device)
        self._last_starts: Tensor | None = None

    def points(self, image_index: Tensor, sample_index: Tensor) -> tuple[Tensor, Tensor | None]:
        flat = image_index * (self.alphas.shape[0] // self.images.shape[0]) + sample_index
        starts = self._starts(image_index, flat)
        self._last_starts = starts
        difference = self.images[image_index] - starts
        alpha = self.alphas[flat].view(-1, 1, 1, 1)
        return starts + alpha * difference, difference if self.multiply_by_inputs else None

    def record_scores(
        self, forward_fn: ForwardFn, targets: Tensor, sink: Tensor
    ) -> Callable[[Tensor, Tensor, Tensor], None]:
        """A score sink for noise baselines: scores each batch's drawn baselines into ``sink[N, S]``."""

        def record(image_index: Tensor, sample_index: Tensor, _scores: Tensor) -> None:
            if self.references is None and self._last_starts is not None:
                with torch.no_grad():
                    scores = checked_scores(forward_fn, self._last_starts)
                sink[image_index, sample_index] = gather_scores(scores, targets[image_index]).float()

        return record

    def mean_baseline_scores(self, forward_fn: ForwardFn, targets: Tensor, recorded: Tensor) -> Tensor:
        """Mean target score over each image's drawn baselines, ``[N]``."""
        if self.references is None:
            return recorded.mean(dim=1)
        reference_scores = checked_scores(forward_fn, self.references)
        n_images = self.images.shape[0]
        picks = self.reference_index.view(n_images, -1)
        return reference_scores[picks, targets.view(-1, 1)].float().mean(dim=1)

    def _starts(self, image_index: Tensor, flat: Tensor) -> Tensor:
        if self.references is not None:
            return self.references[self.reference_index[flat]]
        if self.blurred is not None:
            return self.blurred[image_index]
        assert self.noise is not None
        unit = self.noise.take(image_index.shape[0])
        return noise_baselines_from(
            self.name, self.images[image_index], unit, low=self.low, high=self.high, sigma=self.sigma
        )


def _default_sigma(name: str, images: Tensor, sigma: float | None, low: Tensor, high: Tensor) -> float | Tensor:
    if sigma is not None:
        if not is_real_number(sigma) or not sigma > 0:
            raise ValueError(f"`sigma` must be a positive number or None, got {sigma!r}.")
        return float(sigma)
    if name == "gaussian":
        return 0.15 * (high - low)
    return default_blur_sigma(images)
