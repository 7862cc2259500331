"""The images the recorder logs: map grids, filmstrips, shortcut outlines, faithfulness curves.

Pure drawing from reports to ``[3, H, W]`` RGB tensors in [0, 1]; the recorder names and writes them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from lightning_xai.monitor.model_io import Predictions
from lightning_xai.render import (
    draw_box,
    enlarge,
    labelled_columns,
    line_plot,
    make_grid,
    overlay,
    to_rgb,
    with_probability_bars,
)
from lightning_xai.shortcuts import Finding

__all__ = [
    "CURVE_COLORS",
    "Filmstrips",
    "curves_plot",
    "display_rgb",
    "maps_grid",
    "outline_findings",
    "outlined_masks",
    "outlined_regions",
]

CURVE_COLORS = {
    "deletion": (0.90, 0.25, 0.20),
    "insertion": (0.20, 0.70, 0.30),
    "deletion_random": (0.95, 0.70, 0.65),
    "insertion_random": (0.65, 0.85, 0.65),
}


UNREAD_OUTLINE: dict[str, Any] = {"color": (0.6, 0.6, 0.6), "thickness": 1}
"""How a moving region's box is drawn in a probe where the model does not read it (``Finding.boxes_read``)."""

MAX_TILE_SIDE = 192
"""Tiles are drawn at most this many pixels on their longer side: a 512x512 probe costs no more to
encode and store than a 192x192 one (16 probes of 3x512x512 made 85 MB of events per run)."""


def display_rgb(
    images: Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, *, max_side: int = MAX_TILE_SIDE
) -> Tensor:
    """Probe images as RGB in [0, 1], un-normalized and sized for display: ``[P, 3, H', W']``.

    Small images are enlarged by a whole factor (at least 96 pixels on the shorter side); large ones
    are shrunk (area averaging) to at most ``max_side`` pixels on the longer side.

    Example:
        >>> display_rgb(torch.rand(2, 1, 16, 16, dtype=torch.float64), None, None).shape
        torch.Size([2, 3, 96, 96])
        >>> display_rgb(torch.rand(1, 3, 512, 384), None, None).shape
        torch.Size([1, 3, 192, 144])
    """
    rgb = enlarge(to_rgb(images.float(), mean=mean, std=std))
    longer = max(rgb.shape[-2:])
    if longer <= max_side:
        return rgb
    size = (max(1, round(rgb.shape[-2] * max_side / longer)), max(1, round(rgb.shape[-1] * max_side / longer)))
    return torch.nn.functional.interpolate(rgb, size=size, mode="area")


def maps_grid(tiles: Tensor, predictions: Predictions) -> Tensor:
    """One method's maps over the probes, ``tiles`` ``[P, 3, H, W]`` (:func:`overlay`), with a probability bar
    under each tile.

    The bar is the predicted class's probability (multi-label: the explained label's sigmoid);
    for segmentation the explained region (the target class's predicted pixels) is outlined.
    """
    if predictions.regions is not None:
        tiles = outlined_regions(tiles, predictions.regions == predictions.targets.view(-1, 1, 1))
    return make_grid(with_probability_bars(tiles, predictions.shown_probability.clamp(0, 1), predictions.correct))


def outlined_regions(tiles: Tensor, regions: Tensor) -> Tensor:
    """``tiles`` ``[P, 3, H, W]`` with the boundary of each bool region ``[P, h, w]`` drawn in cyan.

    Example:
        >>> region = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> region[:, 1:3, 1:3] = True
        >>> outlined_regions(torch.zeros(1, 3, 8, 8), region)[0, 2].sum().item() > 0
        True
    """
    mask = torch.nn.functional.interpolate(regions.float().unsqueeze(1), size=tiles.shape[-2:], mode="nearest")
    grown = torch.nn.functional.max_pool2d(mask, 3, stride=1, padding=1)
    shrunk = -torch.nn.functional.max_pool2d(-mask, 3, stride=1, padding=1)
    edge = (grown - shrunk) > 0
    color = torch.tensor([0.1, 0.9, 1.0]).view(1, 3, 1, 1)
    return torch.where(edge, color, tiles.float())


def outlined_masks(rgb: Tensor, masks: Tensor, *, threshold: float = 0.5) -> Tensor:
    """The probes ``rgb`` ``[P, 3, H', W']`` with the outline of each one's mask ``[P, 1, H, W]`` drawn, as one grid.

    Example:
        >>> masks = torch.zeros(1, 1, 8, 8); masks[..., 2:6, 2:6] = 1
        >>> outlined_masks(torch.zeros(1, 3, 8, 8), masks)[:, 2 + 2, 2 + 2].tolist()
        [0.10000000149011612, 0.8999999761581421, 1.0]
    """
    inside = (masks.float().cpu() > threshold).float()
    inside = torch.nn.functional.interpolate(inside, size=tuple(rgb.shape[-2:]), mode="nearest")
    eroded = -torch.nn.functional.max_pool2d(-inside, kernel_size=3, stride=1, padding=1)
    edge = (inside - eroded).clamp(0, 1)
    color = torch.tensor([0.1, 0.9, 1.0]).view(1, 3, 1, 1)
    return make_grid(rgb * (1 - edge) + color * edge)


def curves_plot(curves: dict[str, Tensor]) -> Tensor:
    """Mean deletion/insertion curves with their random controls (see :data:`CURVE_COLORS`)."""
    fractions = curves["fractions"]
    series = {key: (fractions, curves[key]) for key in CURVE_COLORS if key in curves}
    return line_plot(series, colors=CURVE_COLORS)


FILMSTRIP_TILE_SIDE = 48
"""Filmstrip tiles are the maps grid's tiles shrunk by the largest whole factor that keeps their longer side at
least this many pixels (96-px tiles: 48 px) and their width at least ``FILMSTRIP_MIN_WIDTH``: a filmstrip of 16
probes over 10 runs fits a screen, and is drawn and encoded about four times faster, every run."""
FILMSTRIP_MIN_WIDTH = 32
"""Wide enough for an epoch label in the small font ("ep 99999"; up to "ep 123" in the large one at 48 px)."""


def thumbnails(tiles: Tensor, *, side: int = FILMSTRIP_TILE_SIDE, min_width: int = FILMSTRIP_MIN_WIDTH) -> Tensor:
    """Tiles ``[N, 3, H, W]`` averaged down by the largest whole factor that keeps the longer side at least ``side``
    and the width at least ``min_width``.

    Example:
        >>> thumbnails(torch.rand(2, 3, 96, 120)).shape, thumbnails(torch.rand(2, 3, 40, 40)).shape
        (torch.Size([2, 3, 48, 60]), torch.Size([2, 3, 40, 40]))
        >>> thumbnails(torch.rand(1, 3, 192, 96)).shape  # portrait: the width decides
        torch.Size([1, 3, 64, 32])
    """
    height, width = tiles.shape[-2:]
    factor = max(1, min(max(height, width) // side, width // min_width))
    return torch.nn.functional.avg_pool2d(tiles, factor) if factor > 1 else tiles


class Filmstrips:
    """The last runs' maps of every method, drawn as one image per method: probes as rows, runs as columns.

    Each column is labelled with its epoch; the tiles are :func:`thumbnails` of the maps grid's. A run's
    column is drawn once, when it is added, and kept as ``uint8``: a filmstrip is its columns side by side
    (the fixed cost of a run that only adds one).

    Args:
        length: how many runs a filmstrip shows.

    Example:
        >>> strips = Filmstrips(length=2)
        >>> rgb = torch.rand(3, 3, 96, 96)
        >>> for epoch in range(3):
        ...     strips.add("saliency", torch.rand(3, 1, 32, 32), rgb, epoch=epoch)
        >>> strips.labels("saliency"), strips.image("saliency").shape
        (['ep 1', 'ep 2'], torch.Size([3, 164, 102]))
    """

    padding = 2

    def __init__(self, length: int) -> None:
        self.length = length
        self.frames: dict[str, deque[tuple[int, Tensor]]] = {}

    def add(self, key: str, display: Tensor, rgb: Tensor, *, epoch: int) -> None:
        """Adds one run's display maps ``[P, 1, H, W]`` of a method over the probes ``rgb`` ``[P, 3, H', W']``."""
        self.add_tiles(key, overlay(rgb, display.cpu()), epoch=epoch)

    def add_tiles(self, key: str, tiles: Tensor, *, epoch: int) -> None:
        """Adds one run's maps of a method already drawn over the probes (``[P, 3, H', W']``, :func:`overlay`), as
        the maps grid has them."""
        tiles = thumbnails(tiles)
        column = labelled_columns([tiles], [f"ep {epoch}"], padding=self.padding)
        column = (column * 255).round().to(torch.uint8)
        self.frames.setdefault(key, deque(maxlen=self.length)).append((epoch, column))

    def labels(self, key: str) -> list[str]:
        """The column labels of a method's filmstrip."""
        return [f"ep {epoch}" for epoch, _ in self.frames.get(key, ())]

    def image(self, key: str) -> Tensor:
        """The filmstrip of a method: ``[3, H', W']`` RGB in [0, 1] (as :func:`labelled_columns` lays the runs out:
        neighbouring columns share their padding)."""
        columns = [column for _, column in self.frames[key]]
        strip = torch.cat([columns[0]] + [column[:, :, self.padding :] for column in columns[1:]], dim=2)
        return strip.float() / 255


def outline_findings(rgb: Tensor, findings: list[Finding], size: tuple[int, int]) -> Tensor:
    """The probes ``[P, 3, H', W']`` with each finding's box drawn (moving regions: each probe's own, thin and
    grey in probes where the model does not read it, see ``Finding.boxes_read``), as one grid."""
    scale = (rgb.shape[-2] / size[0], rgb.shape[-1] / size[1])
    rescale = lambda b: (round(b[0] * scale[0]), round(b[1] * scale[1]), round(b[2] * scale[0]), round(b[3] * scale[1]))
    outlined = rgb.clone()
    for finding in findings:
        if finding.kind == "color":
            continue
        if finding.kind == "moving_region" and len(finding.boxes) == rgb.shape[0]:
            read = finding.boxes_read if len(finding.boxes_read) == len(finding.boxes) else [True] * len(finding.boxes)
            outlined = torch.cat(
                [
                    draw_box(outlined[i : i + 1], rescale(box), **({} if seen else UNREAD_OUTLINE))
                    for i, (box, seen) in enumerate(zip(finding.boxes, read))
                ]
            )
        else:
            outlined = draw_box(outlined, rescale(finding.box))
    return make_grid(outlined)
