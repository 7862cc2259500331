"""display_map: channel reduction, percentile clipping and errors."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai.functional import display_map


def test_each_image_is_normalised_on_its_own():
    attributions = torch.stack([torch.linspace(0, 1, 16).view(1, 4, 4), torch.linspace(0, 100, 16).view(1, 4, 4)])
    maps = display_map(attributions, clip_percentile=100)
    torch.testing.assert_close(maps[0], maps[1])
    assert maps.max() == 1.0 and maps.min() == 0.0


def test_percentile_clipping_keeps_an_outlier_from_washing_out_the_map():
    attributions = torch.ones(1, 1, 10, 10)
    attributions[0, 0, 0, 0] = 1000.0
    assert display_map(attributions, clip_percentile=100).median() < 0.01
    assert display_map(attributions, clip_percentile=95).median() == 1.0


def test_reductions():
    attributions = torch.tensor([[[[2.0, -2.0]], [[1.0, -1.0]]]])  # channel sums: 3, -3
    assert display_map(attributions, reduce="abs_sum", clip_percentile=100).flatten().tolist() == [1.0, 1.0]
    assert display_map(attributions, reduce="positive", clip_percentile=100).flatten().tolist() == [1.0, 0.0]
    assert display_map(attributions, reduce="signed", clip_percentile=100).flatten().tolist() == [1.0, 0.0]
    assert display_map(torch.zeros(1, 3, 2, 2)).sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduce": "max"}, "`reduce` must be one of ['abs_sum', 'positive', 'signed'], got 'max'."),
        ({"clip_percentile": 0}, "`clip_percentile` must be a number in (0, 100], got 0."),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        display_map(torch.rand(1, 1, 2, 2), **kwargs)
