"""The README's main command: examples/quickstart.py trains, explains and saves every map."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["occlusion", "grad_cam", "integrated_gradients", "expected_gradients", "saliency", "smooth_grad"]


def test_quickstart_saves_maps_for_every_method(tmp_path):
    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    maps = quickstart["main"](tmp_path, epochs=1, probes=4, seed=0)
    assert sorted(maps) == sorted(METHODS)
    saved = torch.load(tmp_path / "maps.pt", weights_only=True)
    assert saved["probes"].shape == (4, 1, 32, 32) and saved["targets"].tolist() == [0, 1, 2, 3]
    for name in METHODS:
        assert torch.isfinite(saved[name]).all() and saved[name].abs().sum() > 0, name
        assert saved[name].shape[-2:] == (32, 32)
        with Image.open(tmp_path / f"{name}.png") as png:
            assert png.size == (4 * 34 + 2, 36)


def test_quickstart_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--probes",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "test accuracy" in result.stdout and "grad_cam" in result.stdout
    assert (tmp_path / "probes.png").exists()
