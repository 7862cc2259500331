"""Map similarity metrics against scipy / hand-made cases: identical, permuted, shifted blobs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from torchmetrics.functional.pairwise import pairwise_cosine_similarity
from torchmetrics.functional.regression import spearman_corrcoef

from lightning_xai.functional.stability import (
    average_ranks,
    compare_maps,
    cosine,
    rank_correlation,
    structural_similarity,
    top_k_iou,
)


def _blob(center: tuple[float, float], size: int = 24, width: float = 2.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    return torch.exp(-((ys - center[0]) ** 2 + (xs - center[1]) ** 2) / (2 * width**2)).view(1, 1, size, size)


def test_rank_correlation_matches_scipy_including_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 1, 6, 6), generator=generator).float()  # many ties
    b = a + torch.randint(0, 3, (3, 1, 6, 6), generator=generator).float()
    expected = [spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic for i in range(3)]
    np.testing.assert_allclose(rank_correlation(a, b).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(("levels", "size"), [(None, 32), (4, 32), (None, 7), (2, 5)])
def test_rank_correlation_and_cosine_match_torchmetrics_and_scipy_on_batches(levels, size):
    generator = torch.Generator().manual_seed(size)
    a = torch.rand(16, 1, size, size, generator=generator)
    b = 0.5 * a + torch.rand(16, 1, size, size, generator=generator)
    if levels is not None:  # ties everywhere
        a, b = (a * levels).floor(), (b * levels).floor()
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    ranks = average_ranks(flat_a)
    np.testing.assert_array_equal(ranks.numpy(), np.stack([rankdata(row) for row in flat_a.numpy()]))
    expected = [spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(flat_a, flat_b)]
    np.testing.assert_allclose(rank_correlation(a, b).numpy(), expected, rtol=1e-5, atol=1e-6)
    reference = spearman_corrcoef(flat_a.T.contiguous(), flat_b.T.contiguous())
    torch.testing.assert_close(rank_correlation(a, b), reference, rtol=0, atol=1e-5)
    cosines = torch.stack([pairwise_cosine_similarity(x[None], y[None]).reshape(()) for x, y in zip(flat_a, flat_b)])
    torch.testing.assert_close(cosine(a, b), cosines, rtol=0, atol=1e-6)


def test_identical_maps_score_one_on_every_metric():
    maps = torch.rand(4, 1, 20, 20)
    for name, values in compare_maps(maps, maps.clone()).items():
        torch.testing.assert_close(values, torch.ones(4), rtol=0, atol=1e-5, msg=name)


def test_known_permutation():
    a = torch.arange(64.0).view(1, 1, 8, 8)
    reversed_ranks = torch.flip(a, dims=(-1, -2))
    assert rank_correlation(a, reversed_ranks).item() == pytest.approx(-1.0, abs=1e-5)
    assert top_k_iou(a, reversed_ranks, k=0.25).item() == 0.0
    swapped = a.clone().flatten()
    swapped[[0, 1]] = swapped[[1, 0]]  # swap the two lowest pixels: top-k unchanged
    assert top_k_iou(a, swapped.view(1, 1, 8, 8), k=0.5).item() == 1.0
    n = 64
    assert rank_correlation(a, swapped.view(1, 1, 8, 8)).item() == pytest.approx(1 - 6 * 2 / (n * (n**2 - 1)), abs=1e-5)


def test_shifted_blobs_are_less_similar_the_further_they_move():
    base = _blob((12, 12))
    shifts = [_blob((12, 12 + d)) for d in (0, 2, 5, 9)]
    for metric in (rank_correlation, top_k_iou, structural_similarity, cosine):
        values = [metric(base, shifted).item() for shifted in shifts]
        assert values[0] == pytest.approx(1.0, abs=1e-5), metric.__name__
        assert values[0] > values[1] > values[2] > values[3], (metric.__name__, values)


def test_top_k_iou_by_hand():
    a = torch.tensor([[[[4.0, 3.0, 2.0, 1.0]]]])
    b = torch.tensor([[[[4.0, 1.0, 3.0, 2.0]]]])
    assert top_k_iou(a, b, k=0.5).item() == pytest.approx(1 / 3)  # {0, 1} vs {0, 2}


def test_constant_and_empty_maps():
    zeros, varying = torch.zeros(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    assert rank_correlation(zeros, zeros).item() == 1.0
    assert rank_correlation(zeros, varying).item() == 0.0
    assert cosine(zeros, varying).item() == 0.0


def test_multi_channel_maps_and_different_sizes():
    attributions = torch.randn(2, 3, 16, 16)
    low_res = torch.rand(2, 1, 4, 4)
    values = compare_maps(attributions, low_res)
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in values.values())


def test_mismatched_batches_are_rejected():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`maps_a` and `maps_b` must hold the same images at the same size, got [2, 1, 4, 4] and [3, 1, 4, 4]."
        ),
    ):
        rank_correlation(torch.rand(2, 1, 4, 4), torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match=re.escape("`k` must be a fraction of the pixels in (0, 1], got 0.")):
        top_k_iou(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), k=0)


def test_cosine_and_ssim_by_hand():
    a = torch.tensor([[[[1.0, 0.0]]]])
    b = torch.tensor([[[[1.0, 1.0]]]])
    assert cosine(a, b).item() == pytest.approx(2**-0.5, abs=1e-6)
    # SSIM is invariant to affine changes of one map only through normalisation: 3x+1 equals x after min-max scaling
    maps = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(structural_similarity(maps, 3 * maps + 1), torch.ones(2), rtol=0, atol=1e-5)
    assert structural_similarity(maps, 1 - maps).max() < 0


def test_cosine_of_maps_with_non_finite_or_very_large_values_is_finite():
    generator = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 1, 64, 64, generator=generator), torch.rand(2, 1, 64, 64, generator=generator)
    broken = a.clone()
    broken[0, 0, 0, 0] = float("nan")
    assert cosine(broken, b)[0].item() == 0.0 and cosine(broken, b)[1].item() == pytest.approx(cosine(a, b)[1].item())
    huge = cosine(a * 1e20, b * 1e20)  # float32 norms' product would overflow
    torch.testing.assert_close(huge, cosine(a, b), rtol=0, atol=1e-6)
