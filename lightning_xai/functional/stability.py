"""How similar two attribution maps of the same images are: rank correlation, top-k overlap, SSIM, cosine.

Used to compare a method's maps between validation runs (stability), between methods in one
run (agreement) and between two training runs. Every function takes two batches of maps
``[N, C, H, W]`` of the same shape (channels are combined first, see :func:`reduce_channels`)
and returns one value per image, ``[N]``.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from lightning_xai.functional._checks import check_images

__all__ = [
    "METRICS",
    "Reduction",
    "average_ranks",
    "compare_maps",
    "cosine",
    "normalize_per_image",
    "rank_correlation",
    "reduce_channels",
    "structural_similarity",
    "top_k_iou",
]

Reduction = Literal["abs_sum", "positive", "sum"]
METRICS = ("spearman", "topk_iou", "ssim", "cosine")


def reduce_channels(maps: Tensor, reduce: Reduction = "abs_sum") -> Tensor:
    """Combines the channels of attributions into one map ``[N, 1, H, W]`` (float32, not normalised).

    Example:
        >>> reduce_channels(torch.tensor([[[[1.0]], [[-3.0]]]])).item()
        2.0
    """
    summed = maps.detach().float().sum(dim=1, keepdim=True)
    return {"abs_sum": summed.abs(), "positive": summed.clamp(min=0), "sum": summed}[reduce]


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    check_images(a, "maps_a")
    check_images(b, "maps_b")
    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            "`maps_a` and `maps_b` must hold the same images at the same size, "
            f"got {list(a.shape)} and {list(b.shape)}."
        )
    if a.shape[1] != 1:
        a = reduce_channels(a)
    if b.shape[1] != 1:
        b = reduce_channels(b)
    return a.float().flatten(1), b.float().flatten(1)


def _constant(flat: Tensor) -> Tensor:
    return (flat.amax(dim=1) - flat.amin(dim=1)) <= 1e-12 * flat.abs().amax(dim=1).clamp(min=1e-30)


def rank_correlation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps over their pixels, ``[N]`` in [-1, 1].

    Ties get average ranks (as ``scipy.stats.spearmanr``). Two constant maps count as 1, one
    constant map against a varying one as 0. All pairs are ranked at once (one sort per batch): 16 maps of
    32 x 32 pixels take about a millisecond on a CPU core, where a loop over pairs took 10-20.

    Example:
        >>> a = torch.arange(16.0).view(1, 1, 4, 4)
        >>> round(rank_correlation(a, a**2).item(), 4), round(rank_correlation(a, -a).item(), 4)
        (1.0, -1.0)
    """
    a, b = _pair(maps_a, maps_b)
    constant_a, constant_b = _constant(a), _constant(b)
    result = torch.zeros(a.shape[0])
    varying = ~(constant_a | constant_b)
    if varying.any():
        ranks_a, ranks_b = average_ranks(a[varying]), average_ranks(b[varying])
        centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
        centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
        covariance = (centred_a * centred_b).sum(dim=1)
        spread = (centred_a.square().sum(dim=1) * centred_b.square().sum(dim=1)).sqrt()
        result[varying] = (covariance / spread).clamp(-1, 1).float().cpu()
    result[constant_a & constant_b] = 1.0
    return result


def average_ranks(rows: Tensor) -> Tensor:
    """The 1-based rank of each value within its row ``[N, P]``, tied values sharing the mean of their ranks (as
    ``scipy.stats.rankdata``), in float64 ``[N, P]``.

    Example:
        >>> average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])).tolist()
        [[3.5, 1.0, 3.5, 2.0]]
    """
    ordered, order = rows.sort(dim=1)
    count = rows.shape[1]
    positions = torch.arange(count, device=rows.device).expand_as(order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values  # where each position's run of ties starts
    last = torch.where(ends, positions, count).flip(1).cummin(dim=1).values.flip(1)  # ... and ends
    ranks = (first + last).double() / 2 + 1
    return torch.empty_like(ranks).scatter_(1, order, ranks)


def top_k_iou(maps_a: Tensor, maps_b: Tensor, k: float = 0.1) -> Tensor:
    """Intersection over union of each pair's top-``k`` fraction of pixels, ``[N]`` in [0, 1].

    Example:
        >>> a = torch.arange(100.0).view(1, 1, 10, 10)
        >>> top_k_iou(a, a).item(), top_k_iou(a, -a).item()
        (1.0, 0.0)
    """
    if not 0 < k <= 1:
        raise ValueError(f"`k` must be a fraction of the pixels in (0, 1], got {k!r}.")
    a, b = _pair(maps_a, maps_b)
    count = max(1, round(k * a.shape[1]))
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(count, dim=1).indices, True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(count, dim=1).indices, True)
    return ((top_a & top_b).sum(dim=1) / (top_a | top_b).sum(dim=1)).float().cpu()


def normalize_per_image(maps: Tensor) -> Tensor:
    """Min-max scales each map to [0, 1] (a constant map becomes 0).

    Example:
        >>> normalize_per_image(torch.tensor([[[[2.0, 4.0]]]])).flatten().tolist()
        [0.0, 1.0]
    """
    flat = maps.float().flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    spread = flat.amax(dim=1, keepdim=True) - low
    return ((flat - low) / torch.where(spread > 0, spread, torch.ones_like(spread))).view_as(maps)


def structural_similarity(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """SSIM of the min-max normalised maps (torchmetrics, Gaussian window), ``[N]``.

    Example:
        >>> a = torch.rand(2, 1, 16, 16)
        >>> structural_similarity(a, a).tolist()
        [1.0, 1.0]
    """
    a, b = _pair(maps_a, maps_b)
    size = maps_a.shape[-2:]
    a = normalize_per_image(a).view(-1, 1, *size)
    b = normalize_per_image(b).view(-1, 1, *size)
    kernel = min(11, *(s if s % 2 else s - 1 for s in size))
    if kernel < 3:
        a, b = (F.interpolate(t, size=(16, 16), mode="bilinear") for t in (a, b))
        kernel = 11
    sigma = 1.5 * kernel / 11
    # without return_full_image / return_contrast_sensitivity the measure is one tensor
    values = cast(
        Tensor,
        structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=kernel, sigma=sigma, reduction="none"),
    )
    return values.reshape(-1).clamp(-1, 1).cpu()


def cosine(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Cosine similarity of each pair of maps as vectors, ``[N]`` (0 when a map is all zeros).

    Example:
        >>> a = torch.rand(3, 1, 4, 4)
        >>> [round(v, 4) for v in cosine(a, 2 * a).tolist()]
        [1.0, 1.0, 1.0]
    """
    a, b = (flat.double() for flat in _pair(maps_a, maps_b))  # float64: the norms' product of large maps fits
    lengths = a.norm(dim=1) * b.norm(dim=1)
    values = (a * b).sum(dim=1) / torch.where(lengths > 0, lengths, torch.ones_like(lengths))
    return torch.nan_to_num(values.clamp(-1, 1), nan=0.0).float().cpu()


def compare_maps(maps_a: Tensor, maps_b: Tensor, *, k: float = 0.1) -> dict[str, Tensor]:
    """All four similarities of each pair of maps: ``{"spearman", "topk_iou", "ssim", "cosine"}`` → ``[N]``.

    Maps of different sizes (e.g. Grad-CAM at layer resolution) are resized bilinearly to the
    larger one first.

    Example:
        >>> maps = torch.rand(2, 1, 8, 8)
        >>> sorted(compare_maps(maps, maps))
        ['cosine', 'spearman', 'ssim', 'topk_iou']
    """
    maps_a, maps_b = _same_size(maps_a, maps_b)
    return {
        "spearman": rank_correlation(maps_a, maps_b),
        "topk_iou": top_k_iou(maps_a, maps_b, k),
        "ssim": structural_similarity(maps_a, maps_b),
        "cosine": cosine(maps_a, maps_b),
    }


def _same_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = max(a.shape[-2:], b.shape[-2:], key=lambda s: s[0] * s[1])
    resize = lambda t: t if t.shape[-2:] == size else F.interpolate(t.float(), size=tuple(size), mode="bilinear")
    return resize(a), resize(b)
