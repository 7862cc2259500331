"""examples/multilabel_digits.py: AttributionMonitor() recognizes a multi-label model, explains each probe once per
positive label, shows sigmoids, and each label's Grad-CAM map falls on the half that holds that digit."""

from __future__ import annotations

import runpy
from pathlib import Path

import torch

from lightning_xai.demos import load_digits

ROOT = Path(__file__).resolve().parents[2]


def test_multilabel_digits_example(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "multilabel_digits.py"))
    result = example["main"](tmp_path, epochs=2)
    assert result["summary"]["task"] == "multilabel"
    assert "task: multilabel" in capsys.readouterr().out
    xai = result["log_dir"] / "xai"
    run = torch.load(max((xai / "runs").glob("step-*.pt")), weights_only=True)
    probes = torch.load(xai / "probes.pt", weights_only=True)
    rows, targets = probes["images"], probes["labels"]
    # each row is a validation pair explained for one of its positive labels, every positive label once
    pairs, multi_hot = example["digit_pairs"]()
    index = torch.cdist(rows.flatten(1), pairs.flatten(1)).argmin(dim=1)
    assert bool((multi_hot[index, targets] == 1).all())
    for probe in index.unique():
        assert sorted(targets[index == probe].tolist()) == multi_hot[probe].nonzero().flatten().tolist()
    # probabilities are sigmoids of the top label
    model = result["model"].eval()
    with torch.no_grad():
        sigmoid = model(rows).sigmoid()
    torch.testing.assert_close(run["probabilities"], sigmoid.max(dim=1).values, rtol=1e-4, atol=1e-5)
    # a label's Grad-CAM map lies on the half that holds that digit (pairs of two different digits)
    _, digits = load_digits(16)
    partner = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    left, right = digits[index], digits[partner][index]
    different = left != right
    maps = run["maps"]["grad_cam"][:, 0]
    halves = torch.stack([maps[..., :16].sum(dim=(1, 2)), maps[..., 16:].sum(dim=(1, 2))], dim=1)
    own = torch.where(targets == left, halves[:, 0], halves[:, 1]) / halves.sum(dim=1).clamp(min=1e-12)
    assert int(different.sum()) >= 8
    assert float((own[different] > 0.5).float().mean()) >= 0.75, own[different]
