"""Grey images, each image's object colour and recolouring, checked by hand."""

from __future__ import annotations

import torch

from lightning_xai.functional.shortcut_colors import dominant_colors, swap_colors, to_gray


def test_grey_keeps_the_brightness_and_a_swap_the_recipient_s_brightness_in_the_donor_s_colour():
    red, blue = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1), torch.tensor([0, 0, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(to_gray(red), torch.full((1, 3, 1, 1), 0.299))
    swapped = swap_colors(red, blue)
    assert torch.allclose(swapped.amax(dim=1), red.amax(dim=1))  # brightness (value) of the recipient...
    assert swapped[0, 2, 0, 0] > swapped[0, 0, 0, 0]  # ...colour of the donor


def test_a_colour_swap_recolours_the_recipient_s_object_wherever_the_donor_s_object_was():
    recipient, donor = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    recipient[:, 0, 0:3, 0:3] = 0.9  # a red object at the top left
    donor[:, 2, 5:8, 5:8] = 0.6  # a blue object at the bottom right
    swapped = swap_colors(recipient, donor)
    assert torch.allclose(swapped[0, 2, 0:3, 0:3], torch.full((3, 3), 0.9)) and float(swapped[0, :2].abs().sum()) == 0
    grey = torch.rand(2, 3, 8, 8).mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    assert torch.allclose(swap_colors(grey, grey.flip(0)), grey)  # grey images keep what they are


def test_an_object_s_colour_does_not_depend_on_its_size_or_the_input_range():
    small, large = torch.full((1, 3, 16, 16), 0.1), torch.full((1, 3, 16, 16), 0.1)
    small[0, :, 0:4, 0:4] = torch.tensor([0.8, 0.4, 0.0]).view(3, 1, 1)  # an orange object of 16 pixels...
    large[0, :, 0:12, 0:12] = torch.tensor([0.8, 0.4, 0.0]).view(3, 1, 1)  # ...and of 144, on the same grey
    assert torch.allclose(dominant_colors(small), dominant_colors(large))
    assert torch.allclose(dominant_colors(small).flatten(), torch.tensor([1.0, 0.5, 0.0]))
    red, blue = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    red[0, 0, :2] = 1.0
    blue[0, 2, 2:] = 1.0
    normalised = swap_colors(red * 2 - 1, blue * 2 - 1)  # inputs scaled to [-1, 1]: the same swap
    assert torch.allclose(normalised, swap_colors(red, blue) * 2 - 1)
    darker = torch.cat([blue, torch.full_like(blue, -5.0)])  # another, darker donor in the batch...
    alone = swap_colors(red, blue, black=0.0)
    assert torch.equal(swap_colors(red.repeat(2, 1, 1, 1), darker, black=0.0)[:1], alone)  # ...changes nothing
    assert swap_colors(red.bfloat16(), blue.bfloat16()).dtype == torch.bfloat16
    assert swap_colors(red[:0], blue[:0]).shape == (0, 3, 4, 4)  # no recipient: nothing to swap
