"""Planted-shortcut and clean data sets for the shortcut evidence table (32x32 RGB, no downloads).

Each setting builds ``Data``: training and validation images with labels, the ground truth of what
was planted (one box per validation image, or the marked classes, or "color"), and the validation
images with the shortcut shuffled (planted from a random permutation of the labels), so that the
accuracy drop shows whether the model used it. Bases: scikit-learn's digits (centred at 24x24 as in
MNIST, or 20x20 at random offsets) and coloured shapes (6 classes, random colours, centred or at
random places, or of 7-12 px touching a random corner: a clean control added at stop 28, after a hunt found
false alarms on such shapes at stop 27) on noisy backgrounds. Colour is planted on both: the whole digit image tinted with its
class's hue, or only the shape recoloured (its grey noise background left as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_xai.demos import load_digits

SIZE, SIDE, TRAIN, VAL = 32, 4, 1400, 160
Box = tuple[int, int, int, int]
CORNER_BOXES: tuple[Box, ...] = ((1, 1, 5, 5), (1, 27, 5, 31), (27, 1, 31, 5), (27, 27, 31, 31))
HUES = torch.tensor(
    [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, 0.5, 0],
        [0.5, 0, 1],
        [0, 0.5, 1],
        [0.6, 1, 0.3],
    ]
)


@dataclass
class Data:
    """One generated data set; ``boxes``: planted box per validation image (``None``: no place)."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    shuffled_val: Tensor | None
    kind: str  # "region", "moving_region", "class_mark", "color" or "clean"
    boxes: list[Box | None] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    num_classes: int = 10
    channels: int = 3


def _noise(count: int, generator: torch.Generator, level: float = 0.25) -> Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=generator) * level


def digits(seed: int, *, centered: bool) -> tuple[Tensor, Tensor]:
    """Grey digits on noise, as RGB: 24x24 centred (the MNIST layout) or 20x20 at random offsets."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_digits(8)
    order = torch.randperm(len(labels), generator=generator)[: TRAIN + VAL]
    side = 24 if centered else 20
    glyphs = F.interpolate(images[order], size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
    out = _noise(len(order), generator)
    for index, glyph in enumerate(glyphs):
        top, left = (
            ((SIZE - side) // 2,) * 2
            if centered
            else torch.randint(0, SIZE - side + 1, (2,), generator=generator).tolist()
        )
        out[index, :, top : top + side, left : left + side] = torch.maximum(
            out[index, :, top : top + side, left : left + side], glyph
        )
    return out, labels[order]


def _shape_mask(kind: int, side: int) -> Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    r = (x**2 + y**2).sqrt()
    masks = [
        r <= 1,
        torch.ones(side, side, dtype=torch.bool),
        y >= 2 * x.abs() - 1,
        (x.abs() < 0.3) | (y.abs() < 0.3),
        (r <= 1) & (r >= 0.55),
        x.abs() + y.abs() <= 1,
    ]
    return masks[kind].float()


def shapes(seed: int, *, centered: bool, in_corner: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Six shapes (disc, square, triangle, cross, ring, diamond) of 12-16 px in random colours on noise; with
    ``in_corner`` (smallest, largest side), shapes of that size that touch a random corner of the image."""
    generator = torch.Generator().manual_seed(seed)
    count = TRAIN + VAL
    labels = torch.randint(0, 6, (count,), generator=generator)
    out = _noise(count, generator)
    smallest, largest = in_corner or (12, 16)
    for index, label in enumerate(labels.tolist()):
        side = int(torch.randint(smallest, largest + 1, (1,), generator=generator))
        if in_corner is not None:
            top, left = [(SIZE - side) * int(v) for v in torch.randint(0, 2, (2,), generator=generator)]
        elif centered:
            top, left = [(SIZE - side) // 2 + int(v) for v in torch.randint(-1, 2, (2,), generator=generator)]
        else:
            top, left = torch.randint(0, SIZE - side + 1, (2,), generator=generator).tolist()
        paint_shape(out[index], label, (top, left), side, generator)
    return out, labels


def paint_shape(image: Tensor, kind: int, place: tuple[int, int], side: int, generator: torch.Generator) -> None:
    """Paints shape ``kind`` of ``side`` pixels at ``place`` (top, left) of ``image`` ``[3, H, W]`` in place, in a
    colour drawn from ``generator`` (every channel 0.4-1)."""
    top, left = place
    color = 0.4 + 0.6 * torch.rand(3, 1, 1, generator=generator)
    mask = _shape_mask(kind, side)
    region = image[:, top : top + side, left : left + side]
    image[:, top : top + side, left : left + side] = region * (1 - mask) + color * mask


def _shade(images: Tensor, codes: Tensor, boxes: list[Box], num_classes: int) -> Tensor:
    out = images.clone()
    for index, (code, box) in enumerate(zip(codes.tolist(), boxes)):
        out[index, :, box[0] : box[2], box[1] : box[3]] = 0.1 + 0.9 * code / (num_classes - 1)
    return out


def _border_box(generator: torch.Generator) -> Box:
    edge, offset = (
        int(torch.randint(0, 4, (1,), generator=generator)),
        int(torch.randint(1, SIZE - SIDE - 1, (1,), generator=generator)),
    )
    top, left = [(1, offset), (SIZE - SIDE - 1, offset), (offset, 1), (offset, SIZE - SIDE - 1)][edge]
    return top, left, top + SIDE, left + SIDE


def _glyph(images: Tensor, codes: Tensor, boxes: list[Box], num_classes: int) -> Tensor:
    patterns = torch.randint(0, 2, (num_classes, SIDE, SIDE), generator=torch.Generator().manual_seed(99)).float()
    out = images.clone()
    for index, (code, box) in enumerate(zip(codes.tolist(), boxes)):
        out[index, :, box[0] : box[2], box[1] : box[3]] = patterns[code]
    return out


def _mark(images: Tensor, codes: Tensor, boxes: list[Box], num_classes: int) -> Tensor:
    out = images.clone()
    for index, (code, box) in enumerate(zip(codes.tolist(), boxes)):
        if code == 0:
            out[index, :, box[0] : box[2], box[1] : box[3]] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)
    return out


def _tint(images: Tensor, codes: Tensor, boxes: list[Box], num_classes: int) -> Tensor:
    return images * HUES[codes].view(-1, 3, 1, 1)


def _tint_shapes(images: Tensor, codes: Tensor, boxes: list[Box], num_classes: int) -> Tensor:
    """The shapes (every channel at least 0.4; the noise stays below 0.25) in their code's hue at their own
    brightness (brightest channel); the grey noise around them is left as it is."""
    shape = images.amin(dim=1, keepdim=True) >= 0.4
    return torch.where(shape, images.amax(dim=1, keepdim=True) * HUES[codes].view(-1, 3, 1, 1), images)


Planter = Callable[[Tensor, Tensor, list[Box], int], Tensor]


def _planted(
    base: tuple[Tensor, Tensor],
    planter: Planter,
    kind: str,
    seed: int,
    *,
    place: str,
    agree: float = 1.0,
    num_classes: int = 10,
) -> Data:
    images, labels = base
    generator = torch.Generator().manual_seed(seed + 7)
    if place == "fixed":
        boxes: list[Box] = [CORNER_BOXES[0]] * len(labels)
    elif place == "corners":
        boxes = [CORNER_BOXES[int(i)] for i in torch.randint(0, 4, (len(labels),), generator=generator)]
    elif place == "border":
        boxes = [_border_box(generator) for _ in range(len(labels))]
    else:
        boxes = [CORNER_BOXES[1]] * len(labels)
    codes = labels.clone()
    disagree = torch.rand(len(labels), generator=generator) > agree
    codes[disagree] = torch.randint(0, num_classes, (int(disagree.sum()),), generator=generator)
    planted = planter(images, codes, boxes, num_classes)
    shuffled = planter(images, codes[torch.randperm(len(codes), generator=generator)], boxes, num_classes)
    truth = boxes[TRAIN:] if kind in ("region", "moving_region", "class_mark") else []
    return Data(
        (planted[:TRAIN], labels[:TRAIN]),
        (planted[TRAIN:], labels[TRAIN:]),
        shuffled[TRAIN:],
        kind,
        list(truth),
        [0] if kind == "class_mark" else [],
        num_classes,
    )


def _clean(base: tuple[Tensor, Tensor], num_classes: int) -> Data:
    images, labels = base
    return Data(
        (images[:TRAIN], labels[:TRAIN]), (images[TRAIN:], labels[TRAIN:]), None, "clean", num_classes=num_classes
    )


SETTINGS: dict[str, Callable[[int], Data]] = {
    "shade, fixed corner (shifted digits)": lambda s: _planted(
        digits(s, centered=False), _shade, "region", s, place="fixed"
    ),
    "shade, random corner (Ross et al.)": lambda s: _planted(
        digits(s, centered=False), _shade, "moving_region", s, place="corners"
    ),
    "shade, random place on the border": lambda s: _planted(
        digits(s, centered=False), _shade, "moving_region", s, place="border"
    ),
    "per-class glyph, fixed corner": lambda s: _planted(digits(s, centered=True), _glyph, "region", s, place="other"),
    "mark on class 0 only": lambda s: _planted(digits(s, centered=False), _mark, "class_mark", s, place="other"),
    "shade agreeing with 85% of labels": lambda s: _planted(
        digits(s, centered=False), _shade, "region", s, place="fixed", agree=0.85
    ),
    "colour encodes the class": lambda s: _planted(digits(s, centered=False), _tint, "color", s, place="fixed"),
    "colour encodes the class (shapes at random places)": lambda s: _planted(
        shapes(s, centered=False), _tint_shapes, "color", s, place="fixed", num_classes=6
    ),
    "shapes + shade, fixed corner": lambda s: _planted(
        shapes(s, centered=False), _shade, "region", s, place="fixed", num_classes=6
    ),
    "clean: centred digits (MNIST layout)": lambda s: _clean(digits(s, centered=True), 10),
    "clean: shifted digits": lambda s: _clean(digits(s, centered=False), 10),
    "clean: centred shapes": lambda s: _clean(shapes(s, centered=True), 6),
    "clean: shapes at random places": lambda s: _clean(shapes(s, centered=False), 6),
    "clean: shapes touching a random corner": lambda s: _clean(shapes(s, centered=False, in_corner=(7, 12)), 6),
}
