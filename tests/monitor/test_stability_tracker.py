"""The stability tracker compares only the probes explained in both runs (skipped probes' maps are zeros)."""

from __future__ import annotations

import pytest
import torch

from lightning_xai import Saliency, Stability
from lightning_xai.functional.stability import rank_correlation
from lightning_xai.monitor.stability_tracker import StabilityTracker


def test_probes_left_out_of_a_run_are_neither_compared_nor_called_stable():
    generator = torch.Generator().manual_seed(0)
    tracker = StabilityTracker(Stability(patience=1), {"saliency": Saliency()})
    first, second = torch.rand(3, 1, 8, 8, generator=generator), torch.rand(3, 1, 8, 8, generator=generator)
    second[0] = first[0]  # probe 0 kept its map, probe 1 moved, probe 2 was left out of both runs (zeros)
    first[2] = second[2] = 0
    kept = torch.tensor([True, True, False])
    tracker.update({"saliency": first}, epoch=0, step=1, kept=kept)
    report = tracker.update({"saliency": second}, epoch=1, step=2, kept=kept)
    expected = rank_correlation(first[:2], second[:2])  # two zero maps would have counted as 1
    assert report.scores["saliency"]["spearman"] == pytest.approx((float(expected.mean()), float(expected.min())))
    nothing = tracker.update(
        {"saliency": torch.zeros(3, 1, 8, 8)}, epoch=2, step=3, kept=torch.zeros(3, dtype=torch.bool)
    )
    assert nothing.scores == {} and nothing.agreement == {}
    again = tracker.update({"saliency": second}, epoch=3, step=4, kept=torch.ones(3, dtype=torch.bool))
    assert again.scores == {}  # the last run explained no probe: nothing to compare with
