"""Colour maps, overlays, grids and the PNG encoder (decoded back with PIL)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from lightning_xai.render import colorize, encode_png, make_grid, overlay, save_png, to_rgb


def test_png_round_trips_through_pil(tmp_path):
    image = torch.rand(3, 5, 7)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    assert decoded.shape == (5, 7, 3)
    expected = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(decoded, expected)
    path = save_png(image, tmp_path / "sub" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), expected)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left


def test_colour_map_runs_from_dark_to_bright():
    colours = colorize(torch.linspace(0, 1, 11).view(1, 1, 1, 11))[0, :, 0].T
    brightness = colours.sum(dim=1)
    assert brightness[0] < 0.05 and brightness[-1] > 2.5
    assert (brightness[1:] >= brightness[:-1]).all()


def test_overlay_repeats_pixels_for_whole_factors_and_blends_bilinearly_otherwise():
    maps = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    blocky = overlay(torch.zeros(1, 3, 6, 6), maps, alpha=1.0)
    torch.testing.assert_close(blocky, colorize(maps.repeat_interleave(3, 2).repeat_interleave(3, 3)))
    smooth = overlay(torch.zeros(1, 3, 5, 5), maps, alpha=1.0)  # 5 is not a multiple of 2
    torch.testing.assert_close(smooth, colorize(torch.nn.functional.interpolate(maps, size=(5, 5), mode="bilinear")))


def test_to_rgb_undoes_normalisation_and_expands_grey():
    original = torch.rand(2, 1, 4, 4)
    restored = to_rgb((original - 0.5) / 0.25, mean=(0.5,), std=(0.25,))
    assert restored.shape == (2, 3, 4, 4)
    torch.testing.assert_close(restored[:, 1:2], original)


def test_overlay_resizes_low_resolution_maps_and_grid_lays_out_rows():
    blended = overlay(torch.zeros(3, 3, 8, 8), torch.ones(3, 1, 2, 2), alpha=1.0)
    torch.testing.assert_close(blended, colorize(torch.ones(3, 1, 8, 8)))
    grid = make_grid(blended, columns=2, padding=1)
    assert grid.shape == (3, 2 * 9 + 1, 2 * 9 + 1)
    assert grid[:, 10:, 10:].eq(1.0).all()  # the empty fourth cell is background
