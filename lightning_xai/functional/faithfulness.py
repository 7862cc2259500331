"""Faithfulness of attribution maps: does hiding what a map points at change the model's mind?

Two tests, both forward-only:

* :func:`ablation_curves`, the *deletion* and *insertion* curves of RISE (Petsiuk et al.,
  2018): hide the map's top-ranked pixels (deletion) or reveal only them on a featureless
  copy of the image (insertion), for a growing fraction of the pixels, and record the target
  score. A faithful map makes the deletion curve fall fast (small area) and the insertion
  curve rise fast (large area). A random pixel ranking gives the control curves that any
  map must beat. What "hidden" means is a baseline in the sense of Sturmfels et al.
  ("Visualizing the Impact of Feature Attribution Baselines", Distill 2020): the image's own
  channel means, or a blurred copy of it.
* :func:`mass_center_ablation`: hide one box at the map's centre of mass and compare the
  score drop with the drop caused by boxes of the same size at random places.

Scores are the target class's softmax probability (or its logit), as a fraction of the
score on the unaltered image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
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
from lightning_xai.functional.baselines import constant_baseline, import_cv2, inpaint
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, chunk_ranges, default_batch_size
from lightning_xai.functional.gradients import private_generator
from lightning_xai.functional.stability import reduce_channels

__all__ = [
    "DEFAULT_FRACTIONS",
    "FILLS",
    "Fill",
    "Filler",
    "ImageBuilder",
    "SCORES",
    "Score",
    "ablation_curves",
    "auc",
    "mass_center_ablation",
]

Fill = Literal["mean", "blur", "inpaint"]
Score = Literal["probability", "logit"]
FILLS: tuple[str, ...] = get_args(Fill)
SCORES: tuple[str, ...] = get_args(Score)
DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

# flat indices of a chunk -> (images [B, C, H, W], index of the probe each image comes from [B])
ImageBuilder = Callable[[Tensor], tuple[Tensor, Tensor]]
# (index of the probe of each image [B], pixels to replace [B, 1, H, W] bool) -> images [B, C, H, W]
Filler = Callable[[Tensor, Tensor], Tensor]


def ablation_curves(
    forward_fn: ForwardFn,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike = None,
    *,
    fractions: Sequence[float] | Tensor | None = None,
    fill: Fill = "mean",
    score: Score = "probability",
    random_control: bool = True,
    generator: torch.Generator | None = None,
    batch_size: BatchSize | None = None,
) -> dict[str, Tensor]:
    """Deletion and insertion curves of each image's attribution map (RISE), with a random control.

    Pixels are ranked by ``|sum over channels|`` of the map (a map of another size, e.g.
    Grad-CAM at layer resolution, is resized bilinearly to the image first); ties go to the
    pixel that comes first in raster order. For a fraction ``k`` the top ``round(k * H * W)``
    pixels (at least one when ``k > 0``), all channels, are replaced by the fill (deletion),
    or the fill image gets back only those original pixels (insertion). Every (probe,
    fraction, curve) image is evaluated in as few forward passes as ``batch_size`` allows.

    Args:
        forward_fn: model or function mapping images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        attributions: maps ``[N, C', h, w]`` (any number of channels and any size).
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        fractions: strictly increasing fractions of the pixels in [0, 1], at least 2;
            ``None`` uses ``DEFAULT_FRACTIONS`` (0 to 1, denser near 0).
        fill: ``"mean"`` (each image's channel means), ``"blur"`` (a Gaussian-blurred copy,
            sigma a tenth of the longer side) or ``"inpaint"`` (the removed pixels inpainted from the
            others by OpenCV, near the data manifold; one inpainting per curve point, on the CPU;
            ``pip install "lightning-xai[inpaint]"``).
        score: ``"probability"`` (softmax of the target class) or ``"logit"``; recorded as a
            fraction of the score on the unaltered image, which must be positive.
        random_control: also compute the curves of a random pixel ranking (one per image).
        generator: source of the random ranking; ``None`` uses a private generator seeded
            with 0 on the inputs' device. The global RNG is never touched.
        batch_size: images per forward pass; ``None`` chooses from the device and image size. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.

    Returns:
        ``{"fractions": [K], "deletion": [N, K], "insertion": [N, K], "deletion_auc": [N],
        "insertion_auc": [N]}``, plus ``"deletion_random"``, ``"insertion_random"`` ``[N, K]``
        and ``"deletion_random_auc"``, ``"insertion_random_auc"`` ``[N]`` with
        ``random_control``; float32 on the inputs' device. Areas as in :func:`auc`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
        >>> images = torch.rand(2, 1, 4, 4)
        >>> curves = ablation_curves(net, images, images, fractions=[0.0, 0.5, 1.0])
        >>> curves["deletion"].shape, [round(v, 4) for v in curves["deletion"][:, 0].tolist()]
        (torch.Size([2, 3]), [1.0, 1.0])
    """
    check_images(inputs)
    maps = _check_attributions(attributions, inputs)
    grid = _check_fractions(fractions)
    _check_choice(fill, "fill", FILLS)
    _check_choice(score, "score", SCORES)
    if not isinstance(random_control, bool):
        raise TypeError(f"`random_control` must be a bool, got {random_control!r} ({type(random_control).__name__}).")
    generator = private_generator(generator, inputs.device)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        targets, before = _original_scores(forward_fn, images, target, score)
        ranks = _pixel_ranks(maps.detach().clone(), images.shape[-2:]).unsqueeze(1)
        if random_control:
            ranks = torch.cat([ranks, _random_ranks(images, generator).unsqueeze(1)], dim=1)
        counts = _pixel_counts(grid, images.shape[-2] * images.shape[-1]).to(images.device)
        build = _curve_builder(images, _filler(fill, images), ranks, counts)
        shape = (*ranks.shape[:2], 2, len(counts))
        after = _scores_in_chunks(forward_fn, build, math.prod(shape), targets, score, batch_size)
    return _curve_results(grid, after.view(shape) / before.view(-1, 1, 1, 1))


def mass_center_ablation(
    forward_fn: ForwardFn,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetLike = None,
    *,
    box_fraction: float = 0.25,
    fill: Fill = "mean",
    n_random: int = 8,
    score: Score = "probability",
    generator: torch.Generator | None = None,
    batch_size: BatchSize | None = None,
) -> dict[str, Tensor]:
    """Score drop from hiding a box at each map's centre of mass, against boxes at random places.

    The map is combined over channels as ``|sum|`` (non-negative) and resized bilinearly to
    the image; its centre of mass (the image centre for an all-zero map) gets a box of
    ``round(box_fraction * H) x round(box_fraction * W)`` pixels (at least 1), moved inside
    the image where it would cross the border, filled as in :func:`ablation_curves`. The drop
    is ``1 - score_after / score_before``.

    Args:
        forward_fn: model or function mapping images ``[B, C, H, W]`` to class scores ``[B, K]``.
        inputs: images ``[N, C, H, W]``.
        attributions: maps ``[N, C', h, w]`` (any number of channels and any size).
        target: class per image: an int, N ints, or ``None`` for the model's top class.
        box_fraction: box side as a fraction of the image side, in (0, 1].
        fill: ``"mean"`` (each image's channel means), ``"blur"`` (a blurred copy) or ``"inpaint"``
            (OpenCV inpainting of the box, ``pip install "lightning-xai[inpaint]"``).
        n_random: random boxes per image (uniform over all placements inside the image), >= 1.
        score: ``"probability"`` (softmax of the target class) or ``"logit"``.
        generator: source of the random boxes; ``None`` uses a private generator seeded with 0.
        batch_size: images per forward pass; ``None`` chooses from the device and image size. A
            :class:`~lightning_xai.functional.BatchSizeTuner` picks it by timing the passes as they run.

    Returns:
        ``{"drop": [N], "random_drop": [N] (mean over the random boxes), "box": [N, 4]}``, the
        box as ``[top, left, bottom, right]`` with bottom and right exclusive (int64).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 6, 7] = 1.0
        >>> mass_center_ablation(net, torch.rand(1, 1, 8, 8), maps)["box"].tolist()
        [[6, 6, 8, 8]]
    """
    check_images(inputs)
    maps = _check_attributions(attributions, inputs)
    box_hw = _box_size(box_fraction, inputs.shape[-2:])
    _check_choice(fill, "fill", FILLS)
    n_random = check_positive_int(n_random, "n_random")
    _check_choice(score, "score", SCORES)
    generator = private_generator(generator, inputs.device)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(inputs, backward=False)
    with leave_no_trace(forward_fn, inputs.device), torch.no_grad():
        images = inputs.detach().clone()
        targets, before = _original_scores(forward_fn, images, target, score)
        centre = _center_box(_resized_map(maps.detach().clone(), images.shape[-2:]), box_hw)
        corners = torch.cat([centre.unsqueeze(1), _random_boxes(images, n_random, box_hw, generator)], dim=1)
        build = _box_builder(images, _filler(fill, images), corners, box_hw)
        after = _scores_in_chunks(forward_fn, build, corners.shape[0] * corners.shape[1], targets, score, batch_size)
    drops = 1.0 - after.view(corners.shape[:2]) / before.unsqueeze(1)
    size = torch.tensor(box_hw, device=centre.device)
    return {
        "drop": drops[:, 0],
        "random_drop": drops[:, 1:].mean(dim=1),
        "box": torch.cat([centre, centre + size], dim=1),
    }


def auc(fractions: Sequence[float] | Tensor, curves: Tensor) -> Tensor:
    """Area under each curve by the trapezoid rule, divided by the span of ``fractions``.

    With fractions from 0 to 1 this is the plain area; over a shorter span it is the mean
    height, so it stays comparable. Curves of scores as a fraction of the original score
    give areas in [0, about 1].

    Args:
        fractions: strictly increasing values in [0, 1], at least 2, ``[K]``.
        curves: ``[..., K]``.

    Returns:
        ``[...]`` float32.

    Example:
        >>> auc([0.0, 0.5, 1.0], torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])).tolist()
        [0.25, 1.0]
    """
    grid = _check_fractions(fractions)
    if not isinstance(curves, Tensor):
        raise TypeError(f"`curves` must be a torch.Tensor [..., K], got {type(curves).__name__}.")
    if curves.ndim == 0 or curves.shape[-1] != len(grid):
        raise ValueError(
            f"`curves` must have one value per fraction ({len(grid)}) along its last dimension, "
            f"got shape {list(curves.shape)}."
        )
    grid = grid.to(curves.device)
    area = torch.trapezoid(curves.double(), x=grid, dim=-1) / (grid[-1] - grid[0])
    return area.float()


def _check_attributions(attributions: object, inputs: Tensor) -> Tensor:
    maps = check_images(attributions, "attributions")
    if maps.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`attributions` must hold one map per image ({inputs.shape[0]}), got shape {list(maps.shape)}."
        )
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("`attributions` must be finite, got NaN or inf values.")
    return maps.to(inputs.device)


def _check_fractions(fractions: object) -> Tensor:
    """``fractions`` as a float64 CPU tensor ``[K]``."""
    if fractions is None:
        return torch.tensor(DEFAULT_FRACTIONS, dtype=torch.float64)
    shown = fractions.tolist() if isinstance(fractions, Tensor) else fractions
    message = f"`fractions` must be a strictly increasing sequence of at least 2 numbers in [0, 1], got {shown!r}."
    if isinstance(fractions, Tensor):
        if fractions.ndim != 1 or fractions.is_complex() or fractions.dtype == torch.bool:
            raise ValueError(message)
        grid = fractions.detach().cpu().double()
    elif isinstance(fractions, Sequence) and not isinstance(fractions, str):
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
            raise TypeError(message)
        grid = torch.tensor([float(f) for f in fractions], dtype=torch.float64)
    else:
        raise TypeError(message)
    in_range = bool(torch.isfinite(grid).all()) and grid.min() >= 0 and grid.max() <= 1
    if len(grid) < 2 or not in_range or not bool((grid.diff() > 0).all()):
        raise ValueError(message)
    return grid


def _check_choice(value: object, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")


def _box_size(box_fraction: object, size: torch.Size) -> tuple[int, int]:
    if not is_real_number(box_fraction) or not 0 < box_fraction <= 1:
        raise ValueError(f"`box_fraction` must be a number in (0, 1], got {box_fraction!r}.")
    height, width = (max(1, math.floor(box_fraction * side + 0.5)) for side in size)
    return height, width


def _filler(fill: Fill, images: Tensor) -> Filler:
    """How chosen pixels of the probes are replaced: by a fill image, or by inpainting them from the rest."""
    if fill == "inpaint":
        import_cv2()  # a clear error naming the extra, before any work
        return lambda probe, mask: inpaint(images[probe], mask)
    fills = constant_baseline(fill, images).expand_as(images)
    return lambda probe, mask: torch.where(mask, fills[probe], images[probe])


def _original_scores(forward_fn: ForwardFn, images: Tensor, target: TargetLike, score: str) -> tuple[Tensor, Tensor]:
    """Targets ``[N]`` and their scores on the unaltered images ``[N]``; the scores must be positive."""
    logits = check_scores(forward_fn(images), images.shape[0])
    targets = resolve_targets(target, logits)
    before = _target_score(logits, targets, score)
    bad = before <= 0
    if bool(bad.any()):
        raise ValueError(
            f"`score={score!r}` expresses scores as a fraction of the score on the unaltered image, which must be "
            f"positive; got {before[bad].tolist()} for images {bad.nonzero().flatten().tolist()}."
        )
    return targets, before


def _target_score(logits: Tensor, targets: Tensor, score: str) -> Tensor:
    logits = logits.float()
    return gather_scores(logits.softmax(dim=1) if score == "probability" else logits, targets)


def _resized_map(maps: Tensor, size: torch.Size) -> Tensor:
    """``|sum over channels|`` of ``maps`` at the image size, ``[N, 1, H, W]`` float32."""
    combined = reduce_channels(maps, "abs_sum")
    if combined.shape[-2:] != size:
        combined = F.interpolate(combined, size=tuple(size), mode="bilinear", align_corners=False)
    return combined


def _pixel_ranks(maps: Tensor, size: torch.Size) -> Tensor:
    """Rank of every pixel, 0 for the most important, ``[N, H * W]``; ties in raster order."""
    values = _resized_map(maps, size).flatten(1)
    order = values.sort(dim=1, descending=True, stable=True).indices
    positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _random_ranks(images: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random ranking of the pixels of each image, ``[N, H * W]``."""
    shape = (images.shape[0], images.shape[-2] * images.shape[-1])
    noise = torch.rand(shape, generator=generator, device=generator.device)
    return noise.argsort(dim=1).to(images.device)


def _pixel_counts(grid: Tensor, n_pixels: int) -> Tensor:
    """Pixels changed at each fraction: ``round(k * n_pixels)``, at least 1 when ``k > 0``."""
    counts = torch.round(grid * n_pixels).long()
    return torch.where(grid > 0, counts.clamp(min=1), counts)


def _curve_builder(images: Tensor, fill: Filler, ranks: Tensor, counts: Tensor) -> ImageBuilder:
    """Images of the flat work ``(probe, ranking, deletion/insertion, fraction)``, fraction fastest."""
    n_rankings, n_fractions = ranks.shape[1], counts.shape[0]

    def build(flat: Tensor) -> tuple[Tensor, Tensor]:
        fraction = flat % n_fractions
        insertion = (flat // n_fractions) % 2
        ranking = (flat // (2 * n_fractions)) % n_rankings
        probe = flat // (2 * n_fractions * n_rankings)
        changed = ranks[probe, ranking] < counts[fraction].unsqueeze(1)
        use_fill = (changed ^ insertion.bool().unsqueeze(1)).view(-1, 1, *images.shape[-2:])
        return fill(probe, use_fill), probe

    return build


def _center_box(maps: Tensor, box_hw: tuple[int, int]) -> Tensor:
    """Top-left corner ``[N, 2]`` of the box centred on each map's centre of mass, inside the image."""
    height, width = maps.shape[-2:]
    weights = maps.flatten(1).clamp(min=0).double()
    ys = torch.arange(height, device=maps.device, dtype=torch.float64).repeat_interleave(width)
    xs = torch.arange(width, device=maps.device, dtype=torch.float64).repeat(height)
    total = weights.sum(dim=1)
    empty = total <= 0
    safe_total = torch.where(empty, torch.ones_like(total), total)
    center_y = torch.where(empty, torch.full_like(total, (height - 1) / 2), (weights * ys).sum(dim=1) / safe_total)
    center_x = torch.where(empty, torch.full_like(total, (width - 1) / 2), (weights * xs).sum(dim=1) / safe_total)
    top = torch.floor(center_y - (box_hw[0] - 1) / 2 + 0.5).long().clamp(0, height - box_hw[0])
    left = torch.floor(center_x - (box_hw[1] - 1) / 2 + 0.5).long().clamp(0, width - box_hw[1])
    return torch.stack([top, left], dim=1)


def _random_boxes(images: Tensor, n_random: int, box_hw: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Top-left corners ``[N, n_random, 2]``, uniform over the placements inside the image."""
    shape = (images.shape[0], n_random)
    tops = torch.randint(0, images.shape[-2] - box_hw[0] + 1, shape, generator=generator, device=generator.device)
    lefts = torch.randint(0, images.shape[-1] - box_hw[1] + 1, shape, generator=generator, device=generator.device)
    return torch.stack([tops, lefts], dim=2).to(images.device)


def _box_builder(images: Tensor, fill: Filler, corners: Tensor, box_hw: tuple[int, int]) -> ImageBuilder:
    """Images of the flat work ``(probe, box)`` with the box filled, box fastest."""
    n_boxes = corners.shape[1]
    ys = torch.arange(images.shape[-2], device=images.device).view(1, -1)
    xs = torch.arange(images.shape[-1], device=images.device).view(1, -1)

    def build(flat: Tensor) -> tuple[Tensor, Tensor]:
        probe = flat // n_boxes
        top, left = corners[probe, flat % n_boxes].unbind(dim=1)
        rows = (ys >= top.view(-1, 1)) & (ys < top.view(-1, 1) + box_hw[0])
        cols = (xs >= left.view(-1, 1)) & (xs < left.view(-1, 1) + box_hw[1])
        inside = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
        return fill(probe, inside), probe

    return build


def _scores_in_chunks(
    forward_fn: ForwardFn, build: ImageBuilder, total: int, targets: Tensor, score: str, batch_size: BatchSize
) -> Tensor:
    """Target score of each of the ``total`` built images, ``[total]`` float32, ``batch_size`` at a time."""
    scores = torch.empty(total, dtype=torch.float32, device=targets.device)
    for start, stop in chunk_ranges(total, batch_size):
        batch, probe = build(torch.arange(start, stop, device=targets.device))
        logits = check_score_shape(forward_fn(batch), stop - start)
        scores[start:stop] = _target_score(logits, targets[probe], score)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("`forward_fn` returned non-finite scores (NaN or inf) for some ablated images.")
    return scores


def _curve_results(grid: Tensor, curves: Tensor) -> dict[str, Tensor]:
    """Names the ``[N, rankings, 2, K]`` curves and adds their areas (``grid`` is float64 ``[K]``)."""
    results = {"fractions": grid.float().to(curves.device)}
    for ranking, suffix in zip(range(curves.shape[1]), ("", "_random")):
        for mode, name in enumerate(("deletion", "insertion")):
            results[name + suffix] = curves[:, ranking, mode]
            results[f"{name}{suffix}_auc"] = auc(grid, curves[:, ranking, mode])
    return results
