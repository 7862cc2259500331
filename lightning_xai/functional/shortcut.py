"""Finding a small image region that carries the prediction, and testing it by intervention.

A shortcut (a decoy swatch, a watermark, a tag in a corner) shows up in attribution maps as
heat that sits at the *same place* in images of different classes. Heat alone is not proof (a
centred object also draws heat to the centre of every image), so each candidate box is tested
by intervention: replace it with a fill and count changed predictions, compare the score drop
with equally sized boxes elsewhere, and paste it from images of another class to see whether
the prediction follows the patch.

Boxes are ``(top, left, bottom, right)`` in input pixels, bottom and right exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.functional._checks import ForwardFn, check_images, check_score_shape
from lightning_xai.functional._no_trace import leave_no_trace
from lightning_xai.functional.baselines import default_blur_sigma, gaussian_blur, import_cv2, inpaint
from lightning_xai.functional.batching import BatchSize, check_optional_batch_size, chunk_ranges, default_batch_size

__all__ = [
    "Box",
    "Fill",
    "as_box",
    "box_iou",
    "box_means",
    "box_shape",
    "box_sums",
    "concentrated_boxes",
    "fill_images",
    "hide_box",
    "keep_box",
    "intervene",
    "mass_outside",
    "paste",
    "random_boxes",
]

Box = tuple[int, int, int, int]
Fill = Literal["mean", "blur", "inpaint"]


def as_box(box: Sequence[int]) -> Box:
    """``(top, left, bottom, right)`` from a box's four numbers (a finding keeps its box as a list).

    Example:
        >>> as_box([0, 2, 4, 6])
        (0, 2, 4, 6)
    """
    return box[0], box[1], box[2], box[3]


def box_iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes.

    Example:
        >>> (box_iou((0, 0, 4, 4), (0, 0, 4, 4)), box_iou((0, 0, 4, 4), (2, 0, 6, 4)),
        ...  box_iou((0, 0, 2, 2), (4, 4, 6, 6)))
        (1.0, 0.3333333333333333, 0.0)
    """
    height = max(0, min(first[2], second[2]) - max(first[0], second[0]))
    width = max(0, min(first[3], second[3]) - max(first[1], second[1]))
    overlap = height * width
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area(first) + area(second) - overlap)


def box_shape(box: Sequence[int]) -> tuple[int, int]:
    """A box's ``(height, width)``: two proposals of a moving region are the same place when their boxes have
    the same shape (the places move, the mark's size does not).

    Example:
        >>> box_shape((0, 12, 4, 16)), box_shape([12, 0, 16, 4]) == box_shape((0, 0, 4, 4))
        ((4, 4), True)
    """
    return box[2] - box[0], box[3] - box[1]


def concentrated_boxes(maps: Tensor, sizes: Sequence[int], *, per_size: int = 1) -> list[tuple[Box, float]]:
    """Square boxes where the probes' attribution mass is most concentrated, on average over probes.

    Each map is made non-negative and scaled to total mass 1; the mean over probes is scanned with
    every box size; a box's score is its mass divided by its share of the image area (1 = no
    concentration). A place that is hot in images of every class scores high.

    Args:
        maps: ``[N, 1, H, W]`` non-negative maps (e.g. display maps).
        sizes: box sides in pixels.
        per_size: best non-overlapping boxes kept per size.

    Returns:
        ``[(box, concentration), ...]``, best first.

    Example:
        >>> maps = torch.zeros(3, 1, 8, 8); maps[:, :, :2, :2] = 1.0
        >>> concentrated_boxes(maps, [2])[0]
        ((0, 0, 2, 2), 16.0)
    """
    check_images(maps, "maps")
    flat = maps.detach().float().clamp(min=0).flatten(1)
    mass = flat / flat.sum(dim=1, keepdim=True).clamp(min=1e-12)
    mean_mass = mass.mean(dim=0).view(1, 1, *maps.shape[-2:])
    found: list[tuple[Box, float]] = []
    for size in sizes:
        found.extend(_best_positions(mean_mass, int(size), per_size))
    return sorted(found, key=lambda item: -item[1])


def box_sums(values: Tensor, height: int, width: int) -> Tensor:
    """The sum of every ``height`` x ``width`` box of ``values`` ``[N, C, H, W]``, at each top-left
    corner ``[N, C, H - height + 1, W - width + 1]``, from an integral image: the cost does not grow
    with the box (a stride-1 average pool with a 128-pixel kernel on 512x512 maps took tens of seconds).

    Example:
        >>> box_sums(torch.arange(9.0).view(1, 1, 3, 3), 2, 2).flatten().tolist()
        [8.0, 12.0, 20.0, 24.0]
    """
    integral = F.pad(values.double().cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
    sums = (
        integral[..., height:, width:]
        - integral[..., :-height, width:]
        - integral[..., height:, :-width]
        + integral[..., :-height, :-width]
    )
    return sums.to(values.dtype)


def box_means(values: Tensor, height: int, width: int) -> Tensor:
    """The mean of every ``height`` x ``width`` box of ``values`` ``[N, C, H, W]``, at each top-left corner
    (:func:`box_sums` over the box's area).

    Example:
        >>> box_means(torch.arange(9.0).view(1, 1, 3, 3), 2, 2).flatten().tolist()
        [2.0, 3.0, 5.0, 6.0]
    """
    return box_sums(values, height, width) / (height * width)


def _best_positions(mean_mass: Tensor, size: int, count: int) -> list[tuple[Box, float]]:
    height, width = mean_mass.shape[-2:]
    if size > min(height, width):
        return []
    inside = box_sums(mean_mass, size, size)  # mass of the box at each top-left position
    concentration = (inside / (size * size / (height * width)))[0, 0]
    picked: list[tuple[Box, float]] = []
    for index in concentration.flatten().argsort(descending=True).tolist():
        top, left = divmod(index, concentration.shape[1])
        box = (top, left, top + size, left + size)
        if all(box_iou(box, other) == 0 for other, _ in picked):
            picked.append((box, float(concentration[top, left])))
        if len(picked) == count:
            break
    return picked


def fill_images(images: Tensor, fill: Fill) -> Tensor | None:
    """What replaces a box: each image's channel means, or a blurred copy of it, ``[N, C, H, W]``;
    ``None`` for ``"inpaint"`` (each box is then inpainted from the rest of its image, see :func:`hide_box`)."""
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if fill == "blur":
        return gaussian_blur(images, default_blur_sigma(images))
    if fill == "inpaint":
        import_cv2()  # a clear error naming the extra, before any work
        return None
    raise ValueError(f"`fill` must be one of ['mean', 'blur', 'inpaint'], got {fill!r}.")


def _box_mask(images: Tensor, box: Box) -> Tensor:
    mask = torch.zeros(images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
    mask[..., box[0] : box[2], box[1] : box[3]] = True
    return mask


def hide_box(images: Tensor, fills: Tensor | None, box: Box) -> Tensor:
    """``images`` ``[N, C, H, W]`` with ``box`` replaced by ``fills``, or inpainted from the rest when ``fills`` is ``None``.

    Example:
        >>> hide_box(torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3), (0, 0, 1, 2)).flatten().tolist()
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if fills is None:
        return inpaint(images, _box_mask(images, box))
    return paste(images, fills, box)


def keep_box(images: Tensor, fills: Tensor | None, box: Box) -> Tensor:
    """Only ``box`` of ``images`` kept, everything else replaced by ``fills`` (inpainted from the box when ``None``)."""
    if fills is None:
        return inpaint(images, ~_box_mask(images, box))
    return paste(fills, images, box)


def paste(recipients: Tensor, donors: Tensor, box: Box) -> Tensor:
    """Copies of ``recipients`` with ``box`` taken from ``donors`` (same shape, or broadcastable).

    Example:
        >>> paste(torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3), (0, 0, 1, 2)).flatten().tolist()
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    out = recipients.clone()
    top, left, bottom, right = box
    out[..., top:bottom, left:right] = donors.expand_as(recipients)[..., top:bottom, left:right]
    return out


def _probabilities(forward_fn: ForwardFn, images: Tensor, batch_size: BatchSize) -> Tensor:
    parts = []
    for start, stop in chunk_ranges(images.shape[0], batch_size):
        scores = check_score_shape(forward_fn(images[start:stop]), stop - start)
        parts.append(torch.softmax(scores.float(), dim=1))
    return torch.cat(parts)


def random_boxes(size: tuple[int, int], box: Box, count: int, generator: torch.Generator) -> list[Box]:
    """``count`` boxes of ``box``'s size at random positions that do not overlap it (fewer if none fit)."""
    height, width = box[2] - box[0], box[3] - box[1]
    positions = [
        (top, left, top + height, left + width)
        for top in range(size[0] - height + 1)
        for left in range(size[1] - width + 1)
        if box_iou((top, left, top + height, left + width), box) == 0
    ]
    if not positions:
        return []
    picks = torch.randperm(len(positions), generator=generator)[:count].tolist()
    return [positions[i] for i in picks]


def intervene(
    forward_fn: ForwardFn,
    images: Tensor,
    box: Box,
    *,
    fill: Fill = "mean",
    n_random: int = 8,
    max_donors: int = 8,
    generator: torch.Generator | None = None,
    batch_size: BatchSize | None = None,
) -> dict[str, float]:
    """Tests whether ``box`` carries the prediction, by ablation and by transplant.

    Args:
        forward_fn: images ``[B, C, H, W]`` to class scores ``[B, K]``.
        images: probes ``[N, C, H, W]``.
        box: the candidate region.
        fill: what replaces the box when ablating (``"mean"``: the image's channel means).
        n_random: equally sized boxes elsewhere to compare the score drop with.
        max_donors: images of other predicted classes pasted into each probe.
        generator: private randomness for the random boxes and donors (default: seed 0).
        batch_size: images per forward pass. A :class:`~lightning_xai.functional.BatchSizeTuner` picks it by
            timing the passes as they run.

    Returns:
        ``keep_rate`` (share of probes whose prediction stays the same when *everything but* the
        box is replaced: the box alone carries it), ``flip_rate`` (share of probes whose
        prediction changes when the box is replaced), ``random_flip_rate`` (the same for boxes
        elsewhere),
        ``drop`` (mean fall of the predicted class's probability), ``random_drop`` (the same for
        boxes elsewhere), ``drop_ratio``, ``follow_rate`` (share of transplants, from an image
        predicted as another class, after which the prediction becomes the donor's class) and
        ``best_class_follow_rate`` (the same for the donor class whose patch is followed most).
    """
    check_images(images)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    batch_size = check_optional_batch_size(batch_size) or default_batch_size(images, backward=False)
    with leave_no_trace(forward_fn, images.device), torch.no_grad():
        images = images.detach().clone()
        before = _probabilities(forward_fn, images, batch_size)
        predicted = before.argmax(dim=1)
        fills = fill_images(images, fill)
        ablation = _ablation(forward_fn, images, fills, box, before, predicted, n_random, generator, batch_size)
        transplant = _transplant(forward_fn, images, box, predicted, max_donors, generator, batch_size)
    return {**ablation, **transplant}


def _ablation(
    forward_fn: ForwardFn,
    images: Tensor,
    fills: Tensor | None,
    box: Box,
    before: Tensor,
    predicted: Tensor,
    n_random: int,
    generator: torch.Generator,
    batch_size: BatchSize,
) -> dict[str, float]:
    boxes = [box, *random_boxes((images.shape[-2], images.shape[-1]), box, n_random, generator)]
    ablated = torch.cat([hide_box(images, fills, b) for b in boxes])
    after = _probabilities(forward_fn, ablated, batch_size).view(len(boxes), images.shape[0], -1)
    base = before.gather(1, predicted.view(-1, 1)).squeeze(1)
    drops = base.unsqueeze(0) - after.gather(2, predicted.view(1, -1, 1).expand(len(boxes), -1, 1)).squeeze(2)
    drop = float(drops[0].mean())
    random_drop = float(drops[1:].mean()) if len(boxes) > 1 else 0.0
    kept_only = keep_box(images, fills, box)  # everything replaced except the box
    kept = _probabilities(forward_fn, kept_only, batch_size).argmax(dim=1)
    flips = (after.argmax(dim=2) != predicted.unsqueeze(0)).float()
    return {
        "keep_rate": float((kept == predicted).float().mean()),
        "flip_rate": float(flips[0].mean()),
        "random_flip_rate": float(flips[1:].mean()) if len(boxes) > 1 else 0.0,
        "drop": drop,
        "random_drop": random_drop,
        "drop_ratio": drop / max(random_drop, 1e-3),
    }


def _transplant(
    forward_fn: ForwardFn,
    images: Tensor,
    box: Box,
    predicted: Tensor,
    max_donors: int,
    generator: torch.Generator,
    batch_size: BatchSize,
) -> dict[str, float]:
    recipients: list[int] = []
    donors: list[int] = []
    for index in range(images.shape[0]):
        others = (predicted != predicted[index]).nonzero().flatten()
        chosen = others[torch.randperm(others.numel(), generator=generator)[:max_donors].to(others.device)]
        recipients += [index] * chosen.numel()
        donors += chosen.tolist()
    if not recipients:
        return {"follow_rate": 0.0, "best_class_follow_rate": 0.0}
    recipient_index, donor_index = torch.tensor(recipients), torch.tensor(donors)
    pasted = paste(images[recipient_index.to(images.device)], images[donor_index.to(images.device)], box)
    followed = (
        _probabilities(forward_fn, pasted, batch_size).argmax(dim=1).cpu() == predicted.cpu()[donor_index]
    ).float()
    donor_classes = predicted.cpu()[donor_index]
    per_class = [followed[donor_classes == c].mean() for c in donor_classes.unique() if (donor_classes == c).sum() >= 3]
    return {
        "follow_rate": float(followed.mean()),
        "best_class_follow_rate": float(max(per_class)) if per_class else 0.0,
    }


def mass_outside(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's (non-negative) attribution mass that lies outside the object mask, ``[N]``.

    Example:
        >>> maps = torch.ones(1, 1, 2, 2); masks = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.bool)
        >>> mass_outside(maps, masks).tolist()
        [0.5]
    """
    check_images(maps, "maps")
    if masks.shape[0] != maps.shape[0] or masks.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"`masks` must be [N, 1, H, W] = {[maps.shape[0], 1, *maps.shape[-2:]]} like the maps, "
            f"got {list(masks.shape)}."
        )
    values = maps.detach().float().clamp(min=0).sum(dim=1)
    outside = (values * (~masks.bool().reshape(values.shape))).flatten(1).sum(dim=1)
    return (outside / values.flatten(1).sum(dim=1).clamp(min=1e-12)).cpu()
