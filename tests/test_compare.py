"""Comparing two runs: two seeds agree less than a run with itself; errors for mismatched runs."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai import GradCAM, Saliency
from lightning_xai.cli import main
from lightning_xai.compare import compare_runs
from lightning_xai.demos import LitClassifier
from lightning_xai.history import HistoryError
from tests.callback.conftest import cheap_monitor, loaders, make_trainer


def _run(root, digits, seed, probes):
    torch.manual_seed(seed)
    monitor = cheap_monitor(methods=[GradCAM(), Saliency()], probes=probes)
    make_trainer(root, [monitor], max_epochs=2).fit(LitClassifier(in_channels=1, width=4, lr=1e-2), *loaders(digits))
    return root / "version_0"


def test_two_seeds_agree_less_than_a_run_with_itself(tmp_path, digits16):
    images, labels = digits16
    probes = (images[1500:1506], labels[1500:1506])
    first, second = _run(tmp_path / "a", digits16, 0, probes), _run(tmp_path / "b", digits16, 1, probes)
    same = compare_runs(first, first)
    different = compare_runs(first, second)
    assert same["steps"] == [8, 8] and sorted(same["methods"]) == ["grad_cam", "saliency"]
    for name in ("grad_cam", "saliency"):
        assert same["methods"][name]["spearman_mean"] == pytest.approx(1.0, abs=1e-5)
        assert different["methods"][name]["spearman_mean"] < 0.99
        assert set(different["methods"][name]) == {
            f"{m}_{k}" for m in ("spearman", "topk_iou", "ssim", "cosine") for k in ("mean", "worst")
        }


def test_runs_with_different_probes_are_refused(tmp_path, digits16, capsys):
    images, labels = digits16
    first = _run(tmp_path / "a", digits16, 0, (images[:4], labels[:4]))
    second = _run(tmp_path / "b", digits16, 0, (images[4:8], labels[4:8]))
    with pytest.raises(HistoryError, match=re.escape("the runs explain different probe images")):
        compare_runs(first, second)
    assert main(["compare", str(first), str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lightning-xai compare: error:") and "holds no lightning_xai history" in error
