"""Held-out settings for the shortcut evidence: image sizes, channels, marks and a model the suite never used.

``benchmarks/shortcut_suite.py`` is 32x32 RGB with 4x4 marks and two models; the detector was designed
on it. These settings vary what it was not designed on: 1-channel 28x28 digits (20x20, centred with
+-2 px of jitter) with a 3x3 shade in the bottom-left corner (the digit's frame can reach it), 48x48 RGB
shapes (18-26 px at random places) with a 6x6 yellow mark on one class only (class 2, at the top edge),
and clean controls of each plus digits on diagonal stripes (edges and texture everywhere, also at the
border). Three clean controls added at stop 37, run on fresh seeds before any change to the detector: 12x12
digits at random places (the size of a large mark, each class's pieces recurring at varying places), digits on
colour gratings of every direction and period, and 40x40 shapes of 8-30 px on smooth colour blotches. Four planted
settings added at stop 38, also run on fresh seeds before any change to the detector: a class-coded 5x5 shade at a
random corner of those 40x40 blotchy shapes and a 4x4 shade at a random place along the border of the 1-channel
28x28 digits (moving marks on bases, sizes and channels the moving tests were not designed on), and colour encoding
the class of the 12 px digits (the whole image tinted) and of 7-12 px shapes that touch a random corner (only the
shape tinted: objects at the corners, where a colour piece could pass for a mark at places). ``GAPNet``
is a third model: batch norm, strided convolutions and global average pooling. Run
them with
``python benchmarks/shortcut_evidence.py --held-out --seeds 5 --first-seed 50`` (SmallCNN and GAPNet by
default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from shortcut_suite import TRAIN, VAL, Box, Data, _tint, _tint_shapes, paint_shape, shapes
from shortcut_suite import _shade as _shades_at
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_xai.demos import load_digits


def digits28(seed: int) -> tuple[Tensor, Tensor]:
    """1-channel 28x28 digits ``[N, 1, 28, 28]``: 20x20, centred with +-2 px of jitter, on noise up to 0.2."""
    return _digits_on_noise(
        seed,
        (28, 20, 1),
        0.2,
        lambda generator: ((28 - 20) // 2 + torch.randint(-2, 3, (2,), generator=generator)).tolist(),
    )


def _digits_on_noise(
    seed: int, sizes: tuple[int, int, int], noise: float, place: Callable[[torch.Generator], list[int]]
) -> tuple[Tensor, Tensor]:
    """Digits of ``side`` px on ``channels`` x ``size`` x ``size`` noise up to ``noise`` (``sizes``: size, side,
    channels), each at ``place(generator)`` (top, left)."""
    size, side, channels = sizes
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_digits(8)
    order = torch.randperm(len(labels), generator=generator)[: TRAIN + VAL]
    glyphs = F.interpolate(images[order], size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
    out = torch.rand(len(order), channels, size, size, generator=generator) * noise
    for index, glyph in enumerate(glyphs):
        top, left = place(generator)
        region = out[index, :, top : top + side, left : left + side]
        out[index, :, top : top + side, left : left + side] = torch.maximum(region, glyph)
    return out, labels[order]


def shapes48(seed: int) -> tuple[Tensor, Tensor]:
    """48x48 RGB shapes ``[N, 3, 48, 48]`` (the suite's six kinds, 18-26 px, random colours and places) on noise."""
    size = 48
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (TRAIN + VAL,), generator=generator)
    out = torch.rand(TRAIN + VAL, 3, size, size, generator=generator) * 0.25
    for index, label in enumerate(labels.tolist()):
        side = int(torch.randint(18, 27, (1,), generator=generator))
        top, left = torch.randint(0, size - side + 1, (2,), generator=generator).tolist()
        paint_shape(out[index], label, (top, left), side, generator)
    return out, labels


def striped_digits(seed: int) -> tuple[Tensor, Tensor]:
    """32x32 RGB digits (20x20 at random offsets) on grey diagonal stripes: period 4-8 px, random phase and
    direction, contrast 0.2."""
    size, side = 32, 20
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_digits(8)
    order = torch.randperm(len(labels), generator=generator)[: TRAIN + VAL]
    glyphs = F.interpolate(images[order], size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.empty(len(order), 3, size, size)
    for index, glyph in enumerate(glyphs):
        period = float(torch.randint(4, 9, (1,), generator=generator))
        phase = float(torch.rand(1, generator=generator)) * period
        sign = 1.0 if float(torch.rand(1, generator=generator)) < 0.5 else -1.0
        out[index] = (((x + sign * y + phase) % period) < period / 2).float() * 0.2
        top, left = torch.randint(0, size - side + 1, (2,), generator=generator).tolist()
        region = out[index, :, top : top + side, left : left + side]
        out[index, :, top : top + side, left : left + side] = torch.maximum(region, glyph)
    return out, labels[order]


def small_digits(seed: int) -> tuple[Tensor, Tensor]:
    """32x32 RGB digits of 12x12 (the size of a large mark) at random places on noise up to 0.25: a third of
    them touch the border band, and each class's pieces recur at varying places, as a moving mark's would."""
    return _digits_on_noise(
        seed, (32, 12, 3), 0.25, lambda generator: torch.randint(0, 32 - 12 + 1, (2,), generator=generator).tolist()
    )


def grating_digits(seed: int) -> tuple[Tensor, Tensor]:
    """32x32 RGB digits (16-22 px at random places) on a sinusoidal grating of random orientation, period 3-10 px,
    phase and colour (amplitude up to 0.3 per channel): smooth texture of every direction, also at the border."""
    size = 32
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_digits(8)
    order = torch.randperm(len(labels), generator=generator)[: TRAIN + VAL]
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.empty(len(order), 3, size, size)
    for index, image in enumerate(images[order]):
        angle, phase = (float(v) * 2 * torch.pi for v in torch.rand(2, generator=generator))
        period = 3 + 7 * float(torch.rand(1, generator=generator))
        wave = torch.sin(
            (x * torch.cos(torch.tensor(angle)) + y * torch.sin(torch.tensor(angle))) * 2 * torch.pi / period + phase
        )
        color = torch.rand(3, 1, 1, generator=generator) * 0.3
        out[index] = (wave + 1) / 2 * color
        side = int(torch.randint(16, 23, (1,), generator=generator))
        glyph = F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        top, left = torch.randint(0, size - side + 1, (2,), generator=generator).tolist()
        region = out[index, :, top : top + side, left : left + side]
        out[index, :, top : top + side, left : left + side] = torch.maximum(region, glyph)
    return out, labels[order]


def blotchy_shapes40(seed: int) -> tuple[Tensor, Tensor]:
    """40x40 RGB shapes (the suite's six kinds) of 8-30 px at random places on smooth colour blotches (5x5 noise
    up to 0.35, upsampled): objects from smaller than a candidate box to most of the image, often at the border."""
    size = 40
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (TRAIN + VAL,), generator=generator)
    coarse = torch.rand(TRAIN + VAL, 3, 5, 5, generator=generator) * 0.35
    out = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    for index, label in enumerate(labels.tolist()):
        side = int(torch.randint(8, 31, (1,), generator=generator))
        top, left = torch.randint(0, size - side + 1, (2,), generator=generator).tolist()
        paint_shape(out[index], label, (top, left), side, generator)
    return out, labels


def _shade(images: Tensor, codes: Tensor, box: Box, num_classes: int) -> Tensor:
    out = images.clone()
    out[:, :, box[0] : box[2], box[1] : box[3]] = (0.1 + 0.9 * codes.float() / (num_classes - 1)).view(-1, 1, 1, 1)
    return out


def random_corners(size: int, side: int, inset: int) -> Callable[[torch.Generator], Box]:
    """A ``side`` box at one of the four corners of a ``size`` image, ``inset`` px from the edges, drawn at random."""

    def draw(generator: torch.Generator) -> Box:
        far = size - side - inset
        top, left = [(inset, far)[int(v)] for v in torch.randint(0, 2, (2,), generator=generator)]
        return top, left, top + side, left + side

    return draw


def random_border(size: int, side: int, inset: int) -> Callable[[torch.Generator], Box]:
    """A ``side`` box at a random place along a random edge of a ``size`` image, ``inset`` px from it."""

    def draw(generator: torch.Generator) -> Box:
        edge = int(torch.randint(0, 4, (1,), generator=generator))
        offset = int(torch.randint(inset, size - side - inset + 1, (1,), generator=generator))
        far = size - side - inset
        top, left = [(inset, offset), (far, offset), (offset, inset), (offset, far)][edge]
        return top, left, top + side, left + side

    return draw


def _moving(base: tuple[Tensor, Tensor], draw: Callable[[torch.Generator], Box], seed: int, num_classes: int) -> Data:
    """A class-coded shade at a box drawn for each image (the shuffled copy: the same boxes, shuffled codes)."""
    images, labels = base
    generator = torch.Generator().manual_seed(seed + 13)
    boxes = [draw(generator) for _ in range(len(labels))]
    marked = _shades_at(images, labels, boxes, num_classes)
    shuffled = _shades_at(images, labels[torch.randperm(len(labels), generator=generator)], boxes, num_classes)
    return _split(marked, shuffled, labels, "moving_region", boxes[TRAIN:], [], num_classes)


def _tinted(base: tuple[Tensor, Tensor], num_classes: int, *, objects_only: bool, seed: int) -> Data:
    """Colour encodes the class: the whole image (``objects_only=False``) or only the objects (pixels whose every
    channel is at least 0.4) take their class's hue, as in the suite's colour settings."""
    images, labels = base
    tint = _tint_shapes if objects_only else _tint
    generator = torch.Generator().manual_seed(seed + 13)
    marked = tint(images, labels, [], num_classes)
    shuffled = tint(images, labels[torch.randperm(len(labels), generator=generator)], [], num_classes)
    return _split(marked, shuffled, labels, "color", [], [], num_classes)


def _yellow_on_class_2(images: Tensor, codes: Tensor, box: Box, num_classes: int) -> Tensor:
    out = images.clone()
    out[codes == 2, :, box[0] : box[2], box[1] : box[3]] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)
    return out


def _planted(
    base: tuple[Tensor, Tensor],
    planter: Callable[[Tensor, Tensor, Box, int], Tensor],
    kind: str,
    box: Box,
    seed: int,
    num_classes: int,
) -> Data:
    images, labels = base
    generator = torch.Generator().manual_seed(seed + 13)
    marked = planter(images, labels, box, num_classes)
    shuffled = planter(images, labels[torch.randperm(len(labels), generator=generator)], box, num_classes)
    return _split(marked, shuffled, labels, kind, [box] * VAL, [2] if kind == "class_mark" else [], num_classes)


def _split(
    marked: Tensor,
    shuffled: Tensor,
    labels: Tensor,
    kind: str,
    boxes: list[Box | None],
    classes: list[int],
    num_classes: int,
) -> Data:
    """The planted images split into training and validation, with the validation images' shuffled copy."""
    return Data(
        (marked[:TRAIN], labels[:TRAIN]),
        (marked[TRAIN:], labels[TRAIN:]),
        shuffled[TRAIN:],
        kind,
        boxes,
        classes,
        num_classes,
        channels=marked.shape[1],
    )


def _clean(base: tuple[Tensor, Tensor], num_classes: int) -> Data:
    images, labels = base
    return Data(
        (images[:TRAIN], labels[:TRAIN]),
        (images[TRAIN:], labels[TRAIN:]),
        None,
        "clean",
        num_classes=num_classes,
        channels=images.shape[1],
    )


HELD_OUT: dict[str, Callable[[int], Data]] = {
    "held out: 1-channel 28x28 digits + 3x3 shade": lambda s: _planted(
        digits28(s), _shade, "region", (24, 1, 27, 4), s, 10
    ),
    "held out: 48x48 shapes + 6x6 mark on class 2": lambda s: _planted(
        shapes48(s), _yellow_on_class_2, "class_mark", (1, 21, 7, 27), s, 6
    ),
    "clean, held out: 1-channel 28x28 digits": lambda s: _clean(digits28(s), 10),
    "clean, held out: 48x48 shapes at random places": lambda s: _clean(shapes48(s), 6),
    "clean, held out: digits on diagonal stripes": lambda s: _clean(striped_digits(s), 10),
    # Designed at stop 37 and run on fresh seeds before any change to the detector (the guard of stop 36 out of
    # sample): marks' size, every texture direction, objects of every size.
    "clean, held out: 12 px digits at random places": lambda s: _clean(small_digits(s), 10),
    "clean, held out: digits on colour gratings": lambda s: _clean(grating_digits(s), 10),
    "clean, held out: 40x40 shapes of 8-30 px on blotches": lambda s: _clean(blotchy_shapes40(s), 6),
    # Designed at stop 38 and run on fresh seeds before any change to the detector: moving marks and colour on
    # bases, sizes and channels the detector's moving and colour paths were never designed on.
    "held out: 40x40 shapes on blotches + 5x5 shade at a random corner": lambda s: _moving(
        blotchy_shapes40(s), random_corners(40, 5, 1), s, 6
    ),
    "held out: 1-channel 28x28 digits + 4x4 shade on the border": lambda s: _moving(
        digits28(s), random_border(28, 4, 1), s, 10
    ),
    "held out: colour encodes the class (12 px digits at random places)": lambda s: _tinted(
        small_digits(s), 10, objects_only=False, seed=s
    ),
    "held out: colour encodes the class (shapes touching a random corner)": lambda s: _tinted(
        shapes(s, centered=False, in_corner=(7, 12)), 6, objects_only=True, seed=s
    ),
}


class GAPNet(nn.Module):
    """Three 3x3 convolutions (16, 32 and 64 channels, the last two of stride 2) with batch norm and ReLU,
    global average pooling and a linear layer: ``[N, C, H, W] -> [N, classes]``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((in_channels, 16, 1), (16, 32, 2), (32, 64, 2)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
