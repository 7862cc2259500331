"""batches.images_from_batch: dict keys, masks beside images, uint8 images through preprocess, clear errors."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai.batches import images_from_batch, labels_from_batch
from lightning_xai.targets import images_from_batch as reexported

IMAGES = torch.rand(2, 3, 4, 4)
MASK = torch.randint(0, 3, (2, 1, 4, 4))
UINT8 = torch.arange(2 * 3 * 16, dtype=torch.uint8).view(2, 3, 4, 4)


def test_reexported_from_targets():
    assert reexported is images_from_batch


@pytest.mark.parametrize(
    ("batch", "expected", "preprocess"),
    [
        (IMAGES, IMAGES, None),
        ((IMAGES, torch.tensor([1, 0])), IMAGES, None),
        ({"label": torch.tensor([1, 0]), "image": IMAGES}, IMAGES, None),
        ({"x": IMAGES, "y": torch.tensor([1, 0])}, IMAGES, None),
        ({"mask": MASK, "pixels": IMAGES}, IMAGES, None),  # no image key: the rule over the values
        ((MASK, IMAGES), IMAGES, None),  # a mask first: int64 loses to float
        ((MASK.bool(), IMAGES[:, :1]), IMAGES[:, :1], None),  # a bool mask beside one-channel float images
        ((MASK.to(torch.uint8), UINT8), UINT8.float(), lambda x: x.float()),  # uint8 mask (one channel) vs uint8 RGB
    ],
)
def test_finds_the_images(batch, expected, preprocess):
    torch.testing.assert_close(images_from_batch(batch, preprocess=preprocess), expected)


def test_one_channel_uint8_images_beat_a_one_channel_uint8_mask():
    gray = torch.arange(2 * 64, dtype=torch.uint8).view(2, 1, 8, 8)  # 128 distinct values
    mask = torch.randint(0, 4, (2, 1, 8, 8), dtype=torch.uint8)
    found = images_from_batch((mask, gray), preprocess=lambda x: x.float() / 255)
    torch.testing.assert_close(found, gray.float() / 255)


def test_preprocess_and_batch_images():
    batch = {"image": UINT8, "meta": "id"}
    torch.testing.assert_close(images_from_batch(batch, preprocess=lambda x: x.float() / 255), UINT8.float() / 255)
    normalized = images_from_batch(IMAGES, preprocess=lambda x: (x - 0.5) / 0.25)  # applied to float images too
    torch.testing.assert_close(normalized, (IMAGES - 0.5) / 0.25)
    assert images_from_batch({"sample": {"rgb": IMAGES}}, batch_images=lambda b: b["sample"]["rgb"]) is IMAGES


def test_errors_name_batch_images_and_preprocess():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "could not find images [B, C, H, W] (a 4-D tensor) in a batch of type dict with keys ['tokens']; batches may be a tensor, "
            "a tuple/list (images, labels, ...) or a dict with an 'image'/'images'/'x'/'input' key. Otherwise pass `batch_images=` "
            "(a callable batch -> images [B, C, H, W]) and, if the model's step transforms them, `preprocess=`."
        ),
    ):
        images_from_batch({"tokens": torch.zeros(2, 7)})
    with pytest.raises(
        TypeError,
        match=re.escape(
            "the images found in the batch are torch.uint8 of shape [2, 3, 4, 4], and the attributions need the float images the "
            "model's forward takes; pass `preprocess=` (what the model's step does before forward, e.g. lambda x: x.float() / 255) "
            "and, if these are not the images, `batch_images=`."
        ),
    ):
        images_from_batch({"image": UINT8})
    with pytest.raises(
        TypeError,
        match=re.escape("`preprocess` must return float images [B, C, H, W], got torch.uint8 of shape [2, 3, 4, 4]."),
    ):
        images_from_batch(UINT8, preprocess=lambda x: x)
    with pytest.raises(
        TypeError, match=re.escape("`batch_images` must return images [B, C, H, W] with B >= 1, got [2, 4, 4].")
    ):
        images_from_batch(IMAGES, batch_images=lambda b: b[:, 0])
    with pytest.raises(
        TypeError, match=re.escape("`batch_images` must be a callable (batch -> images [B, C, H, W]) or None, got str.")
    ):
        images_from_batch(IMAGES, batch_images="image")


def test_labels_of_any_shape():
    classes, multi_hot, mask = (
        torch.tensor([1, 0]),
        torch.tensor([[1, 0, 1], [0, 0, 1]]),
        torch.zeros(2, 4, 4, dtype=torch.long),
    )
    assert labels_from_batch((IMAGES, classes), IMAGES) is classes
    assert labels_from_batch({"image": IMAGES, "labels": multi_hot}, IMAGES) is multi_hot
    assert labels_from_batch((mask, IMAGES), IMAGES) is mask  # a mask first
    assert (
        labels_from_batch({"id": torch.tensor([7]), "image": IMAGES, "seg": mask}, IMAGES) is mask
    )  # one row per image
    assert labels_from_batch(IMAGES, IMAGES) is None
    assert labels_from_batch((IMAGES,), IMAGES) is None
