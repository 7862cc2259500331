"""Input gradients: the shared batched helper, saliency and SmoothGrad.

Samples are independent in eval mode, so one backward pass of the *summed* target scores
of a batch yields every sample's own input gradient; no per-sample loop is needed.
Gradients come from ``torch.autograd.grad``, never ``.backward()``: parameter ``.grad``
is left alone (validation can run in the middle of a gradient-accumulation window).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_xai.functional._checks import (
    ForwardFn,
    TargetLike,
    check_images,
    check_positive_int,
    check_score_shape,
    check_scores,
    gather_scores,
    is_real_number,
    resolve_targets,
)
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.batching import (
    BatchSize,
    NoiseStream,
    check_optional_batch_size,
    chunk_ranges,
    default_batch_size,
)

__all__ = [
    "NOISE_TUNNEL_KINDS",
    "NoiseTunnelKind",
    "SampleMaker",
    "check_finite_attribution",
    "input_gradients",
    "private_generator",
    "saliency",
    "smooth_grad",
    "sum_sample_gradients",
    "targets_from_forward",
]

NoiseTunnelKind = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
NOISE_TUNNEL_KINDS: tuple[str, ...] = get_args(NoiseTunnelKind)

# (image index [B], sample index [B]) -> (points [B, C, H, W], factor broadcastable to the points or None)
SampleMaker = Callable[[Tensor, Tensor], tuple[Tensor, "Tensor | None"]]


def input_gradients(forward_fn: ForwardFn, points: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of each point's target score with respect to that point.

    Must run with gradients enabled (see ``leave_no_trace``); the public functions do this.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        points: images ``[B, C, H, W]``.
        targets: ``LongTensor[B]``.

    Returns:
        ``(gradients [B, C, H, W], target scores [B])``; a model whose score does not depend
        on its input gets zero gradients.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> grads, scores = input_gradients(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
        >>> torch.equal(grads[1].flatten(), net[1].weight[1].detach())
        True
    """
    points = points.detach().requires_grad_(True)
    scores = gather_scores(check_score_shape(forward_fn(points), points.shape[0]), targets)
    if not scores.requires_grad:
        return torch.zeros_like(points), scores.detach()
    (grads,) = torch.autograd.grad(scores.sum(), points, allow_unused=True)
    return (torch.zeros_like(points) if grads is None else grads), scores.detach()


def sum_sample_gradients(
    forward_fn: ForwardFn,
    images: Tensor,
    targets: Tensor,
    *,
    n_samples: int,
    make_samples: SampleMaker,
    batch_size: BatchSize,
    absolute: bool = False,
    score_sink: Callable[[Tensor, Tensor, Tensor], None] | None = None,
    squares: Tensor | None = None,
) -> Tensor:
    """Sums ``gradient * factor`` over ``n_samples`` sample points per image, in batches.

    Sample ``j`` of the flattened ``N * n_samples`` work belongs to image ``j // n_samples``;
    ``make_samples`` builds the points of a batch of such samples. When ``squares``
    (``[N, C, H, W]`` float32) is given, the squares of the same terms are added to it.

    Returns:
        ``[N, C, H, W]`` float32 sums.
    """
    total = torch.zeros(images.shape, dtype=torch.float32, device=images.device)
    for start, stop in chunk_ranges(images.shape[0] * n_samples, batch_size):
        flat = torch.arange(start, stop, device=images.device)
        image_index, sample_index = flat // n_samples, flat % n_samples
        points, factor = make_samples(image_index, sample_index)
        grads, scores = input_gradients(forward_fn, points, targets[image_index])
        if absolute:
            grads = grads.abs()
        terms = (grads if factor is None else grads * factor).float()
        total.index_add_(0, image_index, terms)
        if squares is not None:
            squares.index_add_(0, image_index, terms.square())
        if score_sink is not None:
            score_sink(image_index, sample_index, scores)
    return total


def check_finite_attribution(attribution: Tensor) -> Tensor:
    """Raises when an attribution holds NaN or inf (the model produced non-finite scores or gradients)."""
    if not bool(torch.isfinite(attribution).all()):
        raise ValueError("`forward_fn` produced non-finite scores or gradients (NaN or inf) on the sampled inputs.")
    return attribution


def saliency(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    absolute: bool = True,
    batch_size: BatchSize | None = None,
) -> Tensor:
    """Vanilla gradient of the target score with respect to the input (Simonyan et al., 2014).

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        absolute: return ``|gradient|`` (Captum's ``Saliency`` default).
        batch_size: images per forward+backward pass; ``None`` chooses automatically. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.

    Returns:
        ``[N, C, H, W]``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> saliency(net, torch.rand(2, 1, 2, 2), target=0).shape
        torch.Size([2, 1, 2, 2])
    """
    check_images(inputs)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(forward_fn, inputs.device):
        images = inputs.detach().clone()
        targets = targets_from_forward(forward_fn, images, target)
        total = sum_sample_gradients(
            forward_fn,
            images,
            targets,
            n_samples=1,
            make_samples=lambda image_index, _: (images[image_index], None),
            batch_size=batch_size,
            absolute=absolute,
        )
    return check_finite_attribution(total).to(inputs.dtype)


def smooth_grad(
    forward_fn: ForwardFn,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 25,
    stdev: float = 0.15,
    stdev_mode: Literal["range", "absolute"] = "range",
    absolute: bool = True,
    kind: NoiseTunnelKind = "smoothgrad",
    generator: torch.Generator | None = None,
    batch_size: BatchSize | None = None,
) -> Tensor:
    """SmoothGrad and its noise-tunnel variants: input gradients over noisy copies of the input.

    With ``g`` the (absolute, see ``absolute``) input gradient at ``x + noise``, ``kind``
    ``"smoothgrad"`` returns ``E[g]`` (Smilkov et al., 2017), ``"smoothgrad_sq"`` ``E[g^2]``
    and ``"vargrad"`` ``E[g^2] - E[g]^2`` (Adebayo et al., 2018), the estimates Captum's
    ``NoiseTunnel(Saliency(model)).attribute(..., nt_type=kind)`` computes from its own draws.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        n_samples: noisy copies per image.
        stdev: noise standard deviation; with ``stdev_mode="range"`` (the paper's choice) a
            fraction of each image's ``max - min``, with ``"absolute"`` in input units (Captum's
            ``NoiseTunnel(stdevs=...)``).
        stdev_mode: ``"range"`` or ``"absolute"``.
        absolute: use ``|gradient|`` (Captum's ``NoiseTunnel(Saliency())`` default) rather
            than the signed gradient.
        kind: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean square) or ``"vargrad"`` (variance).
        generator: source of the noise; ``None`` uses a private generator seeded with 0, so the
            result is reproducible and the global RNG is never touched.
        batch_size: noisy images per forward+backward pass; ``None`` chooses automatically. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.

    Returns:
        ``[N, C, H, W]``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        >>> smooth_grad(net, torch.rand(2, 1, 2, 2), n_samples=4).shape
        torch.Size([2, 1, 2, 2])
    """
    check_images(inputs)
    n_samples = check_positive_int(n_samples, "n_samples")
    if kind not in NOISE_TUNNEL_KINDS:
        raise ValueError(f"`kind` must be one of {list(NOISE_TUNNEL_KINDS)}, got {kind!r}.")
    sigma = _noise_sigma(inputs, stdev, stdev_mode)
    generator = private_generator(generator, inputs.device)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=True)
    with leave_no_trace(forward_fn, inputs.device):
        images = inputs.detach().clone()
        targets = targets_from_forward(forward_fn, images, target)

        noise_stream = NoiseStream(generator, tuple(images.shape[1:]), "normal", images.dtype)

        def noisy_copies(image_index: Tensor, _sample_index: Tensor) -> tuple[Tensor, None]:
            noise = noise_stream.take(image_index.shape[0])
            return images[image_index] + noise.to(images.device) * sigma[image_index], None

        squares = torch.zeros(images.shape, dtype=torch.float32, device=images.device) if kind != "smoothgrad" else None
        total = sum_sample_gradients(
            forward_fn,
            images,
            targets,
            n_samples=n_samples,
            make_samples=noisy_copies,
            batch_size=batch_size,
            absolute=absolute,
            squares=squares,
        )
    return check_finite_attribution(_noise_tunnel_result(kind, total / n_samples, squares, n_samples)).to(inputs.dtype)


def _noise_tunnel_result(kind: str, mean: Tensor, squares: Tensor | None, n_samples: int) -> Tensor:
    if squares is None:
        return mean
    mean_square = squares / n_samples
    return mean_square if kind == "smoothgrad_sq" else (mean_square - mean.square()).clamp(min=0)


def private_generator(generator: object, device: torch.device) -> torch.Generator:
    """The caller's generator, or a fresh one on ``device`` seeded with 0 (never the global one).

    Example:
        >>> private_generator(None, torch.device("cpu")).initial_seed()
        0
    """
    if generator is None:
        return torch.Generator(device=device).manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def targets_from_forward(forward_fn: ForwardFn, images: Tensor, target: TargetLike) -> Tensor:
    """Class per image ``LongTensor[N]``: ``target`` checked against one no-grad forward pass
    (its top class when ``None``)."""
    with torch.no_grad():
        scores = check_scores(forward_fn(images), images.shape[0])
    return resolve_targets(target, scores)


def _noise_sigma(inputs: Tensor, stdev: object, stdev_mode: str) -> Tensor:
    if not is_real_number(stdev) or not stdev >= 0:
        raise ValueError(f"`stdev` must be a number >= 0, got {stdev!r}.")
    if stdev_mode == "absolute":
        return torch.full((inputs.shape[0], 1, 1, 1), float(stdev), dtype=inputs.dtype, device=inputs.device)
    if stdev_mode == "range":
        flat = inputs.detach().flatten(1)
        spread = flat.amax(dim=1) - flat.amin(dim=1)
        return (float(stdev) * spread).view(-1, 1, 1, 1)
    raise ValueError(f"`stdev_mode` must be one of ['range', 'absolute'], got {stdev_mode!r}.")
