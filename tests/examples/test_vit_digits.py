"""examples/vit_digits.py: AttributionMonitor() with no arguments on a small ViT gives Grad-CAM maps at the right layer."""

from __future__ import annotations

import runpy
from pathlib import Path

import torch

from lightning_xai import functional as F

ROOT = Path(__file__).resolve().parents[2]
LAYER = "net.encoder.layers.1.norm1"


def test_vit_digits_example(tmp_path, capsys):
    example = runpy.run_path(str(ROOT / "examples" / "vit_digits.py"))
    result = example["main"](tmp_path, epochs=2)
    assert result["layer"] == LAYER
    output = capsys.readouterr().out
    assert f"Grad-CAM layer: {LAYER}" in output and "raw maps and summary" in output
    xai = result["log_dir"] / "xai"
    last = torch.load(max((xai / "runs").glob("step-*.pt")), weights_only=True)
    maps, targets = last["maps"]["grad_cam"], last["targets"]
    probes = torch.load(xai / "probes.pt", weights_only=True)["images"]
    assert maps.shape == (16, 1, 16, 16)
    non_empty = maps.amax(dim=(1, 2, 3)) > 0
    assert float(non_empty.float().mean()) >= 0.5, non_empty  # the patch-embedding or last-block maps would not be
    # the monitor explained the layer it reports, as F.grad_cam does there
    model = result["model"].eval()
    torch.testing.assert_close(maps, F.grad_cam(model, probes, targets, layer=LAYER), rtol=1e-4, atol=1e-6)
    # and the last block's output would have given empty maps (only its class token feeds the head)
    assert torch.count_nonzero(F.grad_cam(model, probes, targets, layer="net.encoder.layers.1")) == 0
