"""Colour maps, overlays, image grids and PNG files, in plain torch (no matplotlib, no PIL)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai._files import atomic_write_bytes

__all__ = [
    "colorize",
    "draw_box",
    "draw_text",
    "encode_png",
    "enlarge",
    "labelled_columns",
    "line_plot",
    "make_grid",
    "overlay",
    "save_png",
    "to_rgb",
    "with_probability_bars",
]

# Anchor colours of matplotlib's "inferno" (perceptually uniform, dark = low, yellow = high).
_INFERNO_ANCHORS = (
    (0.001, 0.000, 0.014),
    (0.120, 0.047, 0.282),
    (0.258, 0.039, 0.406),
    (0.417, 0.090, 0.433),
    (0.578, 0.148, 0.404),
    (0.735, 0.216, 0.330),
    (0.865, 0.317, 0.226),
    (0.954, 0.469, 0.100),
    (0.987, 0.645, 0.040),
    (0.964, 0.843, 0.273),
    (0.988, 0.998, 0.645),
)


def colorize(maps: Tensor) -> Tensor:
    """Colours display maps in [0, 1] with the "inferno" colour map.

    Args:
        maps: ``[N, 1, H, W]`` values in [0, 1] (e.g. from ``functional.display_map``).

    Returns:
        ``[N, 3, H, W]`` RGB in [0, 1], float32.

    Example:
        >>> colorize(torch.tensor([[[[0.0, 1.0]]]])).shape
        torch.Size([1, 3, 1, 2])
    """
    anchors = torch.tensor(_INFERNO_ANCHORS, dtype=torch.float32, device=maps.device)
    position = maps.float().clamp(0, 1).squeeze(1) * (len(_INFERNO_ANCHORS) - 1)
    low = position.floor().long().clamp(max=len(_INFERNO_ANCHORS) - 2)
    weight = (position - low).unsqueeze(-1)
    rgb = anchors[low] * (1 - weight) + anchors[low + 1] * weight
    return rgb.permute(0, 3, 1, 2).contiguous()


def to_rgb(images: Tensor, *, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Tensor:
    """Turns model inputs back into displayable RGB in [0, 1].

    Args:
        images: ``[N, C, H, W]`` with C = 1 or 3.
        mean, std: the normalisation the inputs went through (un-done first); without them each
            image is min-max scaled.

    Returns:
        ``[N, 3, H, W]`` float32 in [0, 1].

    Example:
        >>> to_rgb(torch.tensor([[[[0.0, 2.0]]]])).flatten().tolist()
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    """
    images = images.detach().float()
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        images = images * torch.tensor(std, device=images.device).view(shape) + torch.tensor(
            mean, device=images.device
        ).view(shape)
        images = images.clamp(0, 1)
    else:
        flat = images.flatten(1)
        low = flat.amin(dim=1).view(-1, 1, 1, 1)
        spread = (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, 1, 1, 1)
        images = (images - low) / torch.where(spread > 0, spread, torch.ones_like(spread))
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]


def overlay(images_rgb: Tensor, maps: Tensor, *, alpha: float = 0.55) -> Tensor:
    """Blends coloured maps over images; maps are resized to the image size if needed.

    A map whose size divides the image's (an input-resolution map over an enlarged probe) is
    enlarged by repeating its pixels, as the probe was: each input pixel stays one flat block,
    nothing is smoothed in, and the PNG is about three times smaller. Other sizes are resized
    bilinearly.

    Args:
        images_rgb: ``[N, 3, H, W]`` in [0, 1].
        maps: ``[N, 1, h, w]`` in [0, 1].
        alpha: weight of the heat map.

    Returns:
        ``[N, 3, H, W]`` in [0, 1].

    Example:
        >>> overlay(torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 2, 2)).shape
        torch.Size([2, 3, 4, 4])
    """
    size = tuple(images_rgb.shape[-2:])
    if maps.shape[-2:] != size:
        whole_factor = size[0] % maps.shape[-2] == 0 and size[1] % maps.shape[-1] == 0
        maps = F.interpolate(maps.float(), size=size, mode="nearest" if whole_factor else "bilinear")
    return (1 - alpha) * images_rgb + alpha * colorize(maps)


def make_grid(images: Tensor, *, columns: int = 8, padding: int = 2, fill: float = 1.0) -> Tensor:
    """Lays ``[N, 3, H, W]`` images out in rows of ``columns``: ``[3, rows*(H+p)+p, cols*(W+p)+p]``.

    Example:
        >>> make_grid(torch.zeros(3, 3, 4, 4), columns=2, padding=1).shape
        torch.Size([3, 11, 11])
    """
    count, channels, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    grid = torch.full((channels, rows * (height + padding) + padding, columns * (width + padding) + padding), fill)
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index].detach().cpu().float()
    return grid


def encode_png(image: Tensor, *, compress_level: int = 6) -> bytes:
    """Encodes an RGB image ``[3, H, W]`` in [0, 1] as PNG bytes (8-bit, no interlace).

    ``compress_level`` is zlib's (0-9): 1 encodes about three times faster than 6 for files
    about a fifth larger, which is what the monitor uses inside training.

    Example:
        >>> encode_png(torch.zeros(3, 2, 2))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    height, width, _ = pixels.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), pixels.view(height, width * 3)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), compress_level))
        + chunk(b"IEND", b"")
    )


def save_png(image: Tensor, path: str | os.PathLike[str], *, compress_level: int = 6) -> Path:
    """Saves an RGB image ``[3, H, W]`` in [0, 1] as a PNG file (atomically)."""
    return atomic_write_bytes(path, encode_png(image, compress_level=compress_level))


def with_probability_bars(tiles: Tensor, probabilities: Tensor, correct: Tensor | None = None) -> Tensor:
    """Adds a bar under each tile whose length is the predicted class's probability.

    Green when the prediction equals the label, red when it does not, grey when no label is known.

    Args:
        tiles: ``[N, 3, H, W]`` in [0, 1].
        probabilities: ``[N]`` in [0, 1].
        correct: ``BoolTensor[N]``, or ``None``.

    Returns:
        ``[N, 3, H + bar, W]`` where ``bar = max(2, H // 8)``.

    Example:
        >>> with_probability_bars(torch.zeros(2, 3, 16, 10), torch.tensor([0.5, 1.0])).shape
        torch.Size([2, 3, 18, 10])
    """
    count, _, height, width = tiles.shape
    bar_height = max(2, height // 8)
    colors = torch.tensor([[0.55, 0.55, 0.55]]).expand(count, 3).clone()
    if correct is not None:
        colors[correct.cpu()] = torch.tensor([0.20, 0.75, 0.30])
        colors[~correct.cpu()] = torch.tensor([0.90, 0.20, 0.20])
    filled = (
        torch.arange(width).view(1, -1) < (probabilities.detach().float().cpu().view(-1, 1) * width).round()
    ).float()
    bars = colors.view(count, 3, 1, 1) * filled.view(count, 1, 1, width) + 0.12 * (1 - filled.view(count, 1, 1, width))
    return torch.cat([tiles.cpu().float(), bars.expand(count, 3, bar_height, width)], dim=2)


def enlarge(images: Tensor, *, min_side: int = 96, mode: str = "nearest") -> Tensor:
    """Scales ``[N, C, H, W]`` up by a whole factor so the shorter side is at least ``min_side``.

    Small inputs (digits, CIFAR) are unreadable at their own size in TensorBoard.

    Example:
        >>> enlarge(torch.zeros(1, 3, 32, 40)).shape
        torch.Size([1, 3, 96, 120])
    """
    factor = -(-min_side // min(images.shape[-2:]))
    if factor <= 1:
        return images
    size = (images.shape[-2] * factor, images.shape[-1] * factor)
    return F.interpolate(
        images.float(), size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
    )


def draw_box(
    images: Tensor,
    box: tuple[int, int, int, int],
    *,
    color: tuple[float, float, float] = (0.1, 0.9, 1.0),
    thickness: int = 2,
) -> Tensor:
    """Copies of ``images`` ``[N, 3, H, W]`` with the outline of ``box`` (top, left, bottom, right) drawn.

    Example:
        >>> out = draw_box(torch.zeros(1, 3, 8, 8), (2, 2, 6, 6), thickness=1)
        >>> out[0, 0, 2, 2:6].tolist(), out[0, 0, 4, 4].item()
        ([0.10000000149011612, 0.10000000149011612, 0.10000000149011612, 0.10000000149011612], 0.0)
    """
    out = images.clone()
    height, width = images.shape[-2:]
    top, left = max(0, box[0]), max(0, box[1])
    bottom, right = min(height, box[2]), min(width, box[3])
    paint = torch.tensor(color, dtype=out.dtype).view(1, 3, 1, 1)
    out[..., top : min(bottom, top + thickness), left:right] = paint
    out[..., max(top, bottom - thickness) : bottom, left:right] = paint
    out[..., top:bottom, left : min(right, left + thickness)] = paint
    out[..., top:bottom, max(left, right - thickness) : right] = paint
    return out


def line_plot(
    series: dict[str, tuple[Tensor, Tensor]],
    *,
    colors: dict[str, tuple[float, float, float]],
    size: tuple[int, int] = (160, 240),
    y_max: float | None = None,
) -> Tensor:
    """A small line chart ``[3, H, W]`` (white background, grey axes at 0), one coloured line per series.

    Args:
        series: ``{name: (x [K] in [0, 1], y [K])}``.
        colors: ``{name: (r, g, b)}``.
        size: ``(height, width)`` in pixels.
        y_max: top of the y axis (default: the larger of 1 and the highest value).

    Example:
        >>> plot = line_plot({"a": (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))},
        ...                  colors={"a": (1.0, 0.0, 0.0)})
        >>> plot.shape, plot[:, 40, 200].tolist()
        (torch.Size([3, 160, 240]), [1.0, 1.0, 1.0])
    """
    height, width = size
    margin = 8
    canvas = torch.ones(3, height, width)
    top = y_max if y_max is not None else max([1.0] + [float(y.max()) for _, y in series.values()])
    canvas[:, height - margin, margin : width - margin] = 0.6  # x axis (y = 0)
    canvas[:, margin : height - margin, margin] = 0.6  # y axis (x = 0)
    for name, (x, y) in series.items():
        dense_x = torch.linspace(0, 1, 4 * width)
        dense_y = _interpolate(x.float(), y.float(), dense_x)
        columns = (margin + dense_x * (width - 2 * margin - 1)).round().long()
        rows = (height - margin - (dense_y / top).clamp(0, 1) * (height - 2 * margin - 1)).round().long()
        for offset in (0, 1):
            canvas[:, (rows + offset).clamp(0, height - 1), columns] = torch.tensor(colors[name]).view(3, 1)
    return canvas


def _interpolate(x: Tensor, y: Tensor, at: Tensor) -> Tensor:
    index = torch.searchsorted(x, at.clamp(float(x[0]), float(x[-1]))).clamp(1, len(x) - 1)
    left, right = x[index - 1], x[index]
    weight = ((at - left) / (right - left).clamp(min=1e-12)).clamp(0, 1)
    return y[index - 1] * (1 - weight) + y[index] * weight


# A 3x5 pixel font for labels on images (digits, a few letters): no PIL, no font files.
_GLYPHS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    "e": "000111111100111",
    "p": "000111101111100",
    "s": "000111110011111",
    "t": "010111010010011",
    " ": "000000000000000",
    "-": "000000111000000",
}


def draw_text(text: str, *, scale: int = 2, color: float = 0.15, background: float = 1.0) -> Tensor:
    """``text`` drawn with a 3x5 pixel font: ``[3, 5*scale, 4*scale*len(text)]`` RGB in [0, 1].

    Knows the digits, ``e``, ``p``, ``s``, ``t``, ``-`` and space (enough for ``"ep 12"``); other
    characters are drawn as spaces.

    Example:
        >>> draw_text("ep 3").shape
        torch.Size([3, 10, 32])
    """
    columns = []
    for character in text:
        bits = _GLYPHS.get(character, _GLYPHS[" "])
        glyph = torch.tensor([float(b) for b in bits]).view(5, 3)
        columns += [glyph, torch.zeros(5, 1)]
    mask = torch.cat(columns, dim=1) if columns else torch.zeros(5, 0)
    mask = mask.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    return (background + (color - background) * mask).unsqueeze(0).expand(3, -1, -1).clone()


def _ink_width(text: str, scale: int) -> int:
    """Pixels :func:`draw_text` inks for ``text`` (its last character's blank column left out)."""
    return max(0, 4 * scale * len(text) - scale)


def labelled_columns(columns: list[Tensor], labels: list[str], *, padding: int = 2) -> Tensor:
    """Columns of tiles ``[P, 3, H, W]`` side by side, each with its label on top: one ``[3, H', W']`` image.

    A label wider than the tiles is drawn in the small font (``scale=1``: 4 pixels a character).

    Example:
        >>> labelled_columns([torch.zeros(2, 3, 8, 8)] * 3, ["ep 0", "ep 1", "ep 2"]).shape
        torch.Size([3, 34, 32])
    """
    height, width = columns[0].shape[-2:]
    stacked = [make_grid(column, columns=1, padding=padding) for column in columns]
    header_height = 5 * 2 + 2 * padding
    image = torch.ones(3, header_height + stacked[0].shape[-2] - padding, len(columns) * (width + padding) + padding)
    for index, (grid, label) in enumerate(zip(stacked, labels)):
        left = index * (width + padding)
        text = draw_text(label, scale=2 if _ink_width(label, 2) <= width else 1)[:, :, :width]
        image[:, padding : padding + text.shape[-2], left + padding : left + padding + text.shape[-1]] = text
        image[:, header_height - padding :, left : left + grid.shape[-1]] = grid
    return image
