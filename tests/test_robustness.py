"""Robustness checks on demand: settings checks, and known answers on a tiny network."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_xai import IntegratedGradients, RobustnessCheck, Saliency
from lightning_xai.methods import MethodContext
from lightning_xai.robustness import robustness_check


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)).eval()


def _context() -> MethodContext:
    return MethodContext(torch.Generator().manual_seed(0))


def test_gradients_are_input_invariant_and_integrated_gradients_from_zero_are_not():
    images = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    methods = {"saliency": Saliency(), "integrated_gradients": IntegratedGradients(baseline="zero", n_steps=8)}
    report = robustness_check(
        _net(), images, torch.tensor([0, 1, 2, 0]), methods, _context, settings=RobustnessCheck(steps=2)
    )
    assert report["saliency"]["input_invariant"] and report["saliency"]["input_invariance_spearman"] == pytest.approx(
        1.0
    )
    assert not report["integrated_gradients"]["input_invariant"]
    assert report["integrated_gradients"]["input_invariance_spearman"] < 1.0
    for values in report.values():
        assert 0.0 <= values["fragility_topk_iou"] <= 1.0 and -1.0 <= values["fragility_spearman"] <= 1.0
        assert set(values["fails"]) <= {"input_invariance", "fragility"}


def test_the_live_model_and_the_global_rng_are_untouched():
    net = _net()
    images = torch.rand(2, 1, 4, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.get_rng_state()
    robustness_check(
        net, images, torch.tensor([0, 1]), {"saliency": Saliency()}, _context, settings=RobustnessCheck(steps=2)
    )
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epsilon": 0}, ValueError, "`epsilon` must be a share of the value range in (0, 1], got 0."),
        ({"steps": 0}, ValueError, "`steps` must be an int >= 1, got 0."),
        ({"top_k": 2.0}, ValueError, "`top_k` must be a fraction in (0, 1], got 2.0."),
        ({"shift": "one"}, TypeError, "`shift` must be a number, got 'one'."),
        (
            {"min_rank_correlation": 3},
            ValueError,
            "`min_rank_correlation` must be a rank correlation in [-1, 1], got 3.",
        ),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        RobustnessCheck(**kwargs)
