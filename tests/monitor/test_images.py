"""Drawing a run's images: filmstrips of thumbnails, each run's column drawn once."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.monitor.images import Filmstrips, thumbnails
from lightning_xai.render import draw_text, labelled_columns, overlay


def test_a_filmstrip_is_the_last_runs_laid_out_as_labelled_columns_and_each_column_is_drawn_once(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(5, 3, 96, 120, generator=generator)
    strips = Filmstrips(length=4)
    frames = []
    for epoch in range(0, 21, 3):
        display = torch.rand(5, 1, 32, 40, generator=generator)
        strips.add("saliency", display, rgb, epoch=epoch)
        frames.append((epoch, (thumbnails(overlay(rgb, display)) * 255).round().to(torch.uint8)))
    kept = frames[-4:]
    expected = labelled_columns([tiles.float() / 255 for _, tiles in kept], [f"ep {epoch}" for epoch, _ in kept])
    drawn = []
    monkeypatch.setattr("lightning_xai.monitor.images.labelled_columns", lambda *a, **k: drawn.append(a) or None)
    image = strips.image("saliency")
    assert strips.labels("saliency") == ["ep 9", "ep 12", "ep 15", "ep 18"]
    assert image.shape == expected.shape == (3, 14 + 5 * (48 + 2), 4 * (60 + 2) + 2)  # 96x120 tiles at half size
    assert torch.equal((image * 255).round(), (expected * 255).round())  # the same PNG pixels
    assert drawn == []  # nothing drawn again for the image: only concatenated


def test_thumbnails_shrink_by_a_whole_factor_to_no_less_than_48_pixels_and_average_the_pixels():
    tiles = torch.arange(2 * 3 * 96 * 96, dtype=torch.float32).view(2, 3, 96, 96)
    small = thumbnails(tiles)
    assert small.shape == (2, 3, 48, 48)
    assert torch.allclose(small[0, 0, 0, 0], tiles[0, 0, :2, :2].mean())
    assert thumbnails(torch.rand(1, 3, 192, 144)).shape == (1, 3, 48, 36)  # the longer side decides
    assert thumbnails(torch.rand(1, 3, 112, 112)).shape == (1, 3, 56, 56)  # not below 48
    assert thumbnails(torch.rand(1, 3, 60, 60)).shape == (1, 3, 60, 60)


@pytest.mark.parametrize(
    ("tile", "epoch", "scale"),
    [
        ((96, 96), 123, 2),  # 48-px thumbnails: up to three digits in the large font
        ((96, 96), 1000, 1),  # "ep 1000" would be cut to "ep 100" in the large font
        ((192, 144), 12, 1),  # 512x384 probes: 48x36 thumbnails
        ((192, 96), 99999, 1),  # portrait probes: the width keeps 32 px
    ],
)
def test_every_epoch_label_is_drawn_whole_above_its_thumbnails(tile, epoch, scale):
    strips = Filmstrips(length=1)
    strips.add("saliency", torch.rand(2, 1, tile[0] // 3, tile[1] // 3), torch.rand(2, 3, *tile), epoch=epoch)
    image = (strips.image("saliency") * 255).round()
    label = f"ep {epoch}"
    text = (draw_text(label, scale=scale) * 255).round()
    ink = 4 * scale * len(label) - scale
    assert ink <= image.shape[-1] - 4  # the whole label fits over the thumbnail (2 px of padding each side)
    assert torch.equal(image[:, 2 : 2 + text.shape[-2], 2 : 2 + ink], text[:, :, :ink])


def test_a_column_added_from_the_maps_grid_s_tiles_is_the_column_drawn_from_the_maps():
    generator = torch.Generator().manual_seed(1)
    rgb, display = torch.rand(3, 3, 96, 96, generator=generator), torch.rand(3, 1, 32, 32, generator=generator)
    drawn, given = Filmstrips(length=2), Filmstrips(length=2)
    drawn.add("grad_cam", display, rgb, epoch=4)
    given.add_tiles("grad_cam", overlay(rgb, display), epoch=4)
    assert given.labels("grad_cam") == ["ep 4"] and torch.equal(drawn.image("grad_cam"), given.image("grad_cam"))
