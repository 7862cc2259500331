"""outputs: the scores tensor inside a dict, a tuple or a custom call, and errors that name output=/forward=."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from lightning_xai import targets
from lightning_xai.outputs import make_forward, select_scores

OUTPUTS = {"logits": torch.tensor([[1.0, 2.0]]), "features": torch.zeros(1, 4)}


class _NeedsScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor, scale: float) -> dict[str, Tensor]:
        return {"features": x, "logits": self.fc(x.flatten(1)) * scale}


def test_reexported_from_targets():
    assert targets.select_scores is select_scores and targets.make_forward is make_forward


def test_select_scores_by_key_index_and_callable():
    assert select_scores(OUTPUTS, output="logits") is OUTPUTS["logits"]
    pair = (torch.ones(2, 3), torch.zeros(2, 5))
    assert select_scores(pair, output=1) is pair[1]
    assert select_scores(pair, output=lambda out: out[0]) is pair[0]
    assert select_scores(pair[0]) is pair[0]


def test_select_scores_errors_name_the_output_option():
    message = (
        "the model returned a dict with keys ['logits', 'features']; pass `output='logits'` (a key), an index or a callable "
        "(outputs -> scores tensor) to AttributionMonitor so that it knows which entry holds the scores."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        select_scores(OUTPUTS)
    with pytest.raises(
        ValueError, match=re.escape("the model returned a tuple of 2 items; pass `output=0` (an index)")
    ):
        select_scores((torch.zeros(1, 2), torch.zeros(1, 3)))
    with pytest.raises(
        ValueError, match=re.escape("`output='scores'` is not in the model's outputs (['logits', 'features']).")
    ):
        select_scores(OUTPUTS, output="scores")
    with pytest.raises(ValueError, match=re.escape("`output=2` is not in the model's outputs (indices 0..1).")):
        select_scores((torch.zeros(1, 2), torch.zeros(1, 3)), output=2)
    with pytest.raises(
        TypeError, match=re.escape("the scores selected with `output='features'` must be a Tensor, got list;")
    ):
        select_scores({"features": [1, 2]}, output="features")
    with pytest.raises(
        TypeError, match=re.escape("`output` must be a str key, an int index, a callable or None, got float.")
    ):
        select_scores(OUTPUTS, output=1.5)


def test_make_forward_with_extra_arguments_and_a_dict_output():
    torch.manual_seed(0)
    module, x = _NeedsScale(), torch.rand(2, 4)
    scores = make_forward(module, forward=lambda m, images: m(images, scale=2.0), output="logits")(x)
    torch.testing.assert_close(scores, module.fc(x) * 2.0)
    with pytest.raises(
        TypeError, match=re.escape("`forward` must be a callable (module, images) -> outputs or None, got str.")
    ):
        make_forward(module, forward="scale")
