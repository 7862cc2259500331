"""Target resolution and argument checks shared by every method."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai.functional._checks import as_pair, check_images, resolve_targets

SCORES = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, [1, 0]),
        (2, [2, 2]),
        ([0, 2], [0, 2]),
        ((1, 1), [1, 1]),
        (torch.tensor([2, 1]), [2, 1]),
        (torch.tensor(1), [1, 1]),
    ],
)
def test_targets_are_resolved(target, expected):
    assert resolve_targets(target, SCORES).tolist() == expected


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (3, ValueError, "`target` must be class indices in [0, 2] for a model with 3 outputs, got [3, 3]."),
        (-1, ValueError, "`target` must be class indices in [0, 2] for a model with 3 outputs, got [-1, -1]."),
        ([0, 1, 2], ValueError, "`target` must hold one class per image (2), got 3."),
        (True, TypeError, "`target` must be an int, a sequence of 2 ints, a tensor or None, got a bool."),
        ([0.0, 1.0], TypeError, "`target` sequence must hold ints, got [0.0, 1.0]."),
        (torch.zeros(2, 1, dtype=torch.long), ValueError, "`target` tensor must be 0-D or 1-D, got shape [2, 1]."),
        ("cat", TypeError, "`target` must be an int, a sequence of ints, a tensor or None, got str."),
    ],
)
def test_bad_targets(target, error, message):
    with pytest.raises(error, match=re.escape(message)):
        resolve_targets(target, SCORES)


def test_image_checks():
    with pytest.raises(TypeError, match=re.escape("`inputs` must be a torch.Tensor of shape [N, C, H, W], got list.")):
        check_images([1, 2])
    with pytest.raises(ValueError, match=re.escape("`inputs` must hold at least one image, got shape [0, 3, 4, 4].")):
        check_images(torch.zeros(0, 3, 4, 4))
    assert as_pair([2, 3], "window") == (2, 3)
