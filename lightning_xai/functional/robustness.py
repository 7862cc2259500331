"""Robustness checks of attribution methods: input invariance and fragility.

- **Input invariance** (Kindermans et al., "The (Un)reliability of Saliency Methods", 2019): add
  a constant shift ``s`` to every input and build a copy of the model whose first layer's bias
  absorbs it, so the copy's outputs on ``x + s`` equal the model's on ``x``. A method that
  explains the *function* should give the same maps; gradients do, gradient x input and
  integrated gradients from a zero baseline do not.
- **Fragility** (Ghorbani, Abid & Zou, "Interpretation of Neural Networks is Fragile", AAAI 2019):
  small perturbations ``|delta|_inf <= epsilon`` that keep the predicted class can still move the
  map. Random-sign perturbations are tried, and the one (keeping the prediction) that moves the
  map most is reported by its top-k overlap and rank correlation with the original map.

Both are pure functions: the live model is never modified (input invariance works on a
``copy.deepcopy``), and the results are typed dataclasses for the caller to report.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.functional._checks import check_images, check_positive_int, is_real_number
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.gradients import private_generator
from lightning_xai.functional.stability import rank_correlation, top_k_iou

__all__ = ["Fragility", "InputInvariance", "MethodFn", "fragility", "input_invariance", "shift_compensated_copy"]

# (model, images [N, C, H, W], targets [N]) -> attributions [N, C', H, W]
MethodFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
Shift = float | Tensor


@dataclass(frozen=True)
class InputInvariance:
    """Result of :func:`input_invariance`.

    Attributes:
        rank_correlation: ``[N]`` Spearman correlation of each probe's map before and after the shift.
        max_difference: ``[N]`` largest change of a map value, relative to the map's largest magnitude.
        changed: ``[N]`` bool, ``max_difference`` above the tolerance.
        invariant: no probe's map changed.
        output_difference: largest change of the model's outputs (float rounding only).
    """

    rank_correlation: Tensor
    max_difference: Tensor
    changed: Tensor
    invariant: bool
    output_difference: float


@dataclass(frozen=True)
class Fragility:
    """Result of :func:`fragility`.

    Attributes:
        top_k_overlap: ``[N]`` top-k IoU between the original map and the most-moved kept one.
        rank_correlation: ``[N]`` Spearman correlation between the same two maps.
        prediction_kept: ``[N]`` bool, whether some tried perturbation kept the predicted class
            (where none did, the two figures compare the map with itself: 1).
        perturbed: ``[N, C, H, W]``, the chosen perturbed images (the originals where none kept it).
    """

    top_k_overlap: Tensor
    rank_correlation: Tensor
    prediction_kept: Tensor
    perturbed: Tensor


class _ShiftedFirstConv(nn.Module):
    """``conv`` applied to ``x - shift``, written with the shift folded into the bias and the padding."""

    def __init__(self, conv: nn.Conv2d, shift: Tensor) -> None:
        super().__init__()
        self.conv, self.shift = conv, shift.view(1, -1, 1, 1)
        summed = conv.weight.detach().sum(dim=(2, 3))  # [out, in / groups]
        per_group = self.shift.flatten().view(conv.groups, -1)
        absorbed = torch.cat(
            [summed.view(conv.groups, -1, summed.shape[1])[g] @ per_group[g] for g in range(conv.groups)]
        )
        base = conv.bias.detach() if conv.bias is not None else torch.zeros_like(absorbed)
        self.bias = nn.Parameter(base - absorbed, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        pad_h, pad_w = cast(tuple[int, int], self.conv.padding)  # strings are refused when the copy is built
        if self.conv.padding_mode == "zeros" and (pad_h or pad_w):
            # zero padding of x is padding x + shift with the shift: pad (x - shift) with zeros, add it back
            x = F.pad(x - self.shift, (pad_w, pad_w, pad_h, pad_h)) + self.shift
            pad_h = pad_w = 0
        conv = self.conv
        if conv.padding_mode != "zeros" and (pad_h or pad_w):
            mode = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}[conv.padding_mode]
            x, pad_h, pad_w = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode), 0, 0
        return F.conv2d(x, conv.weight, self.bias, conv.stride, (pad_h, pad_w), conv.dilation, conv.groups)


def _first_layer(model: nn.Module, images: Tensor) -> tuple[str, nn.Module]:
    """Name and module of the first Conv2d or Linear to run, checked to receive the raw input."""
    names: dict[nn.Module, str] = {
        module: name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))
    }
    seen: list[tuple[nn.Module, Tensor]] = []
    handles = [
        m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0])) if not seen else None) for m in names
    ]
    try:
        with leave_no_trace(model, images.device), torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError(
            f"`model` must have a Conv2d or Linear layer to absorb the shift; {type(model).__name__} ran none."
        )
    module, received = seen[0]
    if received.numel() != images.numel() or not torch.equal(received.reshape(images.shape), images):
        raise ValueError(
            f"`model`'s first layer ({names[module]}: {type(module).__name__}) must receive the input images "
            "unchanged (up to a flatten) for its bias to absorb the shift; it receives something computed from them."
        )
    return names[module], module


def shift_compensated_copy(model: nn.Module, images: Tensor, shift: Shift) -> nn.Module:
    """A deep copy of ``model`` whose outputs on ``images + shift`` equal ``model``'s on ``images``.

    The first Conv2d/Linear layer's bias absorbs the shift (Kindermans et al.); a zero-padded
    convolution pads with the shift instead of zero, so the borders match too.

    Args:
        model: the classifier (not modified).
        images: ``[N, C, H, W]``, to find the first layer with.
        shift: a number or one value per channel ``[C]``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 2)).eval()
        >>> x = torch.rand(1, 1, 4, 4)
        >>> torch.allclose(shift_compensated_copy(net, x, 2.0)(x + 2.0), net(x), atol=1e-5)
        True
    """
    shift_t = _shift_tensor(shift, images)
    name, layer = _first_layer(model, images)
    copied = copy.deepcopy(model)
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str) and layer.padding != "valid":
            raise ValueError(
                f"`model`'s first convolution ({name}) must use numeric padding or 'valid', "
                f"got padding={layer.padding!r}."
            )
        conv = cast(nn.Conv2d, copied.get_submodule(name))  # the copy of ``layer``
        if isinstance(conv.padding, str):  # "valid"
            conv.padding = (0, 0)
        replacement: nn.Module = _ShiftedFirstConv(conv, shift_t)
    else:
        linear = cast(nn.Linear, copied.get_submodule(name))  # the copy of ``layer``
        flat_shift = shift_t.view(1, -1, 1, 1).expand(1, *images.shape[1:]).flatten()
        replacement = nn.Linear(linear.in_features, linear.out_features, bias=True).to(linear.weight)
        with torch.no_grad():
            replacement.weight.copy_(linear.weight)
            replacement.bias.copy_((linear.bias if linear.bias is not None else 0) - linear.weight @ flat_shift)
    copied.set_submodule(name, replacement.train(layer.training))
    return copied


def _shift_tensor(shift: object, images: Tensor) -> Tensor:
    channels = images.shape[1]
    if is_real_number(shift):
        return torch.full((channels,), float(shift), dtype=images.dtype, device=images.device)
    if isinstance(shift, Tensor) and shift.shape == (channels,):
        return shift.detach().to(dtype=images.dtype, device=images.device)
    shown = list(shift.shape) if isinstance(shift, Tensor) else type(shift).__name__
    raise ValueError(f"`shift` must be a number or a tensor of one value per channel [{channels}], got {shown}.")


def _map_change(before: Tensor, after: Tensor) -> Tensor:
    scale = before.detach().float().flatten(1).abs().amax(dim=1).clamp(min=1e-12)
    return (after.detach().float() - before.detach().float()).flatten(1).abs().amax(dim=1) / scale


def input_invariance(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    method_fn: MethodFn,
    *,
    shift: Shift = -1.0,
    tolerance: float = 1e-3,
) -> InputInvariance:
    """Whether ``method_fn``'s maps survive a constant input shift the model compensates exactly.

    Args:
        model: the classifier; a copy is shifted, the model itself is never modified.
        images: ``[N, C, H, W]``.
        targets: ``LongTensor[N]``, the classes explained.
        method_fn: ``(model, images, targets) -> maps [N, C', H, W]``, e.g.
            ``lambda m, x, t: functional.saliency(m, x, t)``.
        shift: the constant added to every pixel: a number or one value per channel ``[C]``.
        tolerance: a map "changed" when a value moved by more than this fraction of its largest magnitude.

    Returns:
        An :class:`InputInvariance`.

    Raises:
        ValueError: when the copy's outputs differ from the model's beyond float tolerance (the
            shift could not be compensated: e.g. the first layer does not see the raw input).

    Example:
        >>> from lightning_xai.functional import saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> report = input_invariance(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]),
        ...                           lambda m, x, t: saliency(m, x, t))
        >>> report.invariant, [round(r, 4) for r in report.rank_correlation.tolist()]
        (True, [1.0, 1.0])
    """
    check_images(images, "images")
    if not is_real_number(tolerance) or not tolerance > 0:
        raise ValueError(f"`tolerance` must be a positive number, got {tolerance!r}.")
    with leave_no_trace(model, images.device):
        originals = images.detach().clone()
        shifted_model = shift_compensated_copy(model, originals, shift)
        shifted = originals + _shift_tensor(shift, originals).view(1, -1, 1, 1)
        with torch.no_grad():
            expected, got = model(originals).float(), shifted_model(shifted).float()
        difference = float((got - expected).abs().max())
        if difference > 1e-4 * max(1.0, float(expected.abs().max())):
            raise ValueError(
                f"The shift-compensated copy of {type(model).__name__} changed the outputs by {difference:.3g}: "
                "the shift cannot be absorbed by the first layer's bias for this model."
            )
    before = method_fn(model, images, targets)
    after = method_fn(shifted_model, shifted, targets)
    change = _map_change(before, after)
    changed = change > tolerance
    return InputInvariance(
        rank_correlation(before, after), change.cpu(), changed.cpu(), not bool(changed.any()), difference
    )


def fragility(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    method_fn: MethodFn,
    *,
    epsilon: float,
    steps: int = 8,
    k: float = 0.1,
    value_range: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> Fragility:
    """How far a small perturbation that keeps the prediction can move the maps (random-sign search).

    ``steps`` random-sign perturbations ``delta = epsilon * sign(u)`` (projected onto
    ``value_range`` when given) are tried for every probe; among those that keep the model's
    predicted class, the one whose map has the smallest top-``k`` overlap with the original map
    is kept. Costs ``steps + 1`` calls of ``method_fn`` and ``steps + 1`` forward passes.

    Args:
        model: the classifier (only run, never modified).
        images: ``[N, C, H, W]``.
        targets: ``LongTensor[N]``, the classes explained.
        method_fn: ``(model, images, targets) -> maps [N, C', H, W]``.
        epsilon: the perturbation's L-infinity size, in input units.
        steps: perturbations tried per probe.
        k: the top fraction of pixels compared.
        value_range: ``(low, high)`` to clip perturbed images to, or ``None``.
        generator: source of the signs; ``None`` uses a private generator seeded with 0.

    Returns:
        A :class:`Fragility`.

    Example:
        >>> from lightning_xai.functional import saliency
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> result = fragility(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), lambda m, x, t: saliency(m, x, t),
        ...                    epsilon=0.1)
        >>> result.top_k_overlap.tolist()  # a linear model's gradient does not depend on the input
        [1.0, 1.0]
    """
    check_images(images, "images")
    if not is_real_number(epsilon) or not epsilon > 0:
        raise ValueError(f"`epsilon` must be a positive number, got {epsilon!r}.")
    steps = check_positive_int(steps, "steps")
    generator = private_generator(generator, images.device)
    originals = images.detach().clone()
    before = method_fn(model, originals, targets).detach()
    predicted = _predictions(model, originals)
    best = _FragilitySearch(before, originals, k)
    for _ in range(steps):
        signs = torch.randint(0, 2, originals.shape, generator=generator, device=generator.device).to(originals.device)
        candidate = originals + float(epsilon) * (2 * signs.to(originals.dtype) - 1)
        if value_range is not None:
            candidate = candidate.clamp(*value_range)
        kept = _predictions(model, candidate) == predicted
        if kept.any():
            best.offer(candidate, method_fn(model, candidate, targets).detach(), kept)
    return best.result()


def _predictions(model: nn.Module, images: Tensor) -> Tensor:
    with leave_no_trace(model, images.device), torch.no_grad():
        return model(images).argmax(dim=1)


class _FragilitySearch:
    """Keeps, per probe, the kept perturbation whose map overlaps least with the original."""

    def __init__(self, before: Tensor, originals: Tensor, k: float) -> None:
        self.before, self.k = before, k
        self.perturbed = originals.clone()
        self.overlap = torch.ones(originals.shape[0])
        self.correlation = torch.ones(originals.shape[0])
        self.kept = torch.zeros(originals.shape[0], dtype=torch.bool)

    def offer(self, candidate: Tensor, maps: Tensor, kept: Tensor) -> None:
        overlap, correlation = top_k_iou(self.before, maps, self.k), rank_correlation(self.before, maps)
        better = kept.cpu() & (~self.kept | (overlap < self.overlap))
        self.overlap[better], self.correlation[better] = overlap[better], correlation[better]
        self.perturbed[better.to(self.perturbed.device)] = candidate[better.to(candidate.device)]
        self.kept |= kept.cpu()

    def result(self) -> Fragility:
        return Fragility(self.overlap, self.correlation, self.kept, self.perturbed)
