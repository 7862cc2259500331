"""Constant baselines, reference-set checks, noise baselines and the Gaussian blur."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai.functional import constant_baseline, gaussian_blur
from lightning_xai.functional.baselines import noise_baselines_from
from lightning_xai.functional.batching import NoiseStream


def test_blur_keeps_constants_and_total_mass_in_the_interior():
    flat = torch.full((2, 3, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 3.0), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(spike, 1.5)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0))
    assert blurred[0, 0, 10, 10] == blurred.max() and blurred[0, 0, 10, 10] < 0.1
    torch.testing.assert_close(blurred, blurred.flip(-1))


def test_blur_rejects_a_non_positive_sigma():
    with pytest.raises(ValueError, match=re.escape("`sigma` must be a positive number of pixels, got 0.")):
        gaussian_blur(torch.zeros(1, 1, 4, 4), 0)


def test_constant_baselines_have_the_documented_values():
    images = torch.arange(24.0).view(2, 3, 2, 2)
    assert constant_baseline(0.5, images).item() == 0.5
    assert constant_baseline("zero", images).item() == 0.0
    torch.testing.assert_close(constant_baseline("mean", images), images.mean(dim=(2, 3), keepdim=True))
    per_channel = constant_baseline(torch.tensor([1.0, 2.0, 3.0]), images).expand_as(images)
    assert per_channel[1, 2].unique().tolist() == [3.0]
    low, high = images.amin(dim=(0, 2, 3)), images.amax(dim=(0, 2, 3))
    far = constant_baseline("max_distance", images)
    assert far[0, 0, 0, 0] == high[0] and far[1, 2, 1, 1] == low[2]


def test_noise_baselines_are_drawn_from_the_private_generator_only():
    images = torch.zeros(4, 1, 8, 8)
    state = torch.get_rng_state()

    def draw() -> torch.Tensor:
        unit = NoiseStream(torch.Generator().manual_seed(0), (1, 8, 8), "normal", torch.float32).take(4)
        return noise_baselines_from("gaussian", images, unit, low=torch.tensor(0.0), high=torch.tensor(1.0), sigma=2.0)

    first, second = draw(), draw()
    assert torch.equal(first, second) and torch.equal(state, torch.get_rng_state())
    assert 1.5 < first.std() < 2.5


def test_inpaint_fills_a_hole_from_its_surroundings_and_keeps_the_rest():
    pytest.importorskip("cv2")
    from lightning_xai.functional.baselines import inpaint

    ramp = torch.linspace(0, 1, 12).view(1, 1, 1, 12).expand(2, 3, 12, 12).clone()
    ramp[1] = 2 - ramp[1]  # other values in the second image
    masks = torch.zeros(2, 1, 12, 12, dtype=torch.bool)
    masks[..., 4:8, 4:8] = True
    holed = torch.where(masks, torch.zeros(()), ramp)
    for method in ("telea", "ns"):
        filled = inpaint(holed, masks, method=method)
        assert torch.equal(filled[~masks.expand_as(filled)], holed[~masks.expand_as(holed)])
        assert (filled - ramp)[masks.expand_as(filled)].abs().max() < 0.15, method  # close to the ramp it removed


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpaint_of_8_bit_images_equals_opencv(method):
    cv2 = pytest.importorskip("cv2")
    from lightning_xai.functional.baselines import inpaint

    levels = torch.randint(0, 256, (2, 3, 12, 10), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    levels[:, :, 0, 0], levels[:, :, 0, 1] = 0, 255  # the full range, so the 8-bit mapping is the identity
    masks = torch.zeros(2, 1, 12, 10, dtype=torch.bool)
    masks[0, :, 0:4, 0:5], masks[1, :, 5:9, 3:7] = True, True
    ours = inpaint(levels.float() / 255, masks, method=method)
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    for i in range(2):
        for c in range(3):
            expected = cv2.inpaint(levels[i, c].numpy(), masks[i, 0].to(torch.uint8).numpy(), 3.0, flag)
            torch.testing.assert_close(ours[i, c], torch.from_numpy(expected).float() / 255, rtol=0, atol=1e-6)


def test_inpaint_names_the_extra_when_opencv_is_missing(monkeypatch):
    import sys

    from lightning_xai.functional.baselines import inpaint

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    message = "The inpainting baselines ('inpaint', 'inpaint_ns') need OpenCV; install it with pip install \"lightning-xai[inpaint]\" (opencv-python-headless)."
    with pytest.raises(ImportError, match=re.escape(message)):
        inpaint(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool))
