"""Finding the images in a batch, and turning them into what the model takes (pure torch, no Lightning).

Batches come as a tensor, a tuple/list ``(images, labels, ...)``, or a dict; some hold uint8
images, some a segmentation mask first. :func:`images_from_batch` finds the images by a fixed
rule, and ``batch_images=`` / ``preprocess=`` say it explicitly when the rule is not enough.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "BatchImages",
    "Preprocess",
    "images_and_labels",
    "images_from_batch",
    "labels_from_batch",
]

BatchImages = Callable[[object], Tensor]
Preprocess = Callable[[Tensor], Tensor]

IMAGE_KEYS = ("image", "images", "x", "input", "inputs", "pixel_values", "img")
LABEL_KEYS = ("label", "labels", "y", "target", "targets", "mask", "masks", "segmentation", "class", "cls")
_MASK_VALUES = 32  # an integer one-channel tensor with at most this many distinct values looks like a mask


def images_from_batch(
    batch: object,
    *,
    batch_images: Callable[[object], Tensor] | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The images of a batch as float ``[B, C, H, W]``, ready for the model's ``forward``.

    The rule, when ``batch_images`` is ``None``:

    1. a tensor batch is the images;
    2. a dict: the tensor under the first of the keys ``image``, ``images``, ``x``, ``input``,
       ``inputs``, ``pixel_values``, ``img``; without such a key, its values as in rule 3;
    3. a tuple or list: among its 4-D tensors, floating-point ones before uint8 ones before other
       integer or bool ones (masks are usually int64 or bool); then multi-channel before
       one-channel; then (integer one-channel tensors) not mask-like before mask-like (at most
       32 distinct values); then the first. 3-D tensors ``[B, H, W]`` are never images.

    Then ``preprocess`` (what the model's step does to the images before ``forward``, e.g.
    ``lambda x: (x.float() / 255 - mean) / std``) is applied when given; images that are not
    floating point without a ``preprocess`` are refused.

    Args:
        batch: what the dataloader yields.
        batch_images: ``batch -> images [B, C, H, W]``, replacing the rule.
        preprocess: ``images -> float images [B, C, H, W]``.

    Raises:
        TypeError: no images found, or integer images without ``preprocess``; the message names
            ``batch_images=`` and ``preprocess=``.

    Example:
        >>> mask, image = torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.rand(2, 3, 4, 4)
        >>> images_from_batch((mask, image)) is image
        True
        >>> images_from_batch({"image": torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)},
        ...                   preprocess=lambda x: x.float() / 255).tolist()
        [[[[1.0, 1.0], [1.0, 1.0]]]]
    """
    return _preprocessed(_raw_images(batch, batch_images), preprocess)


def _raw_images(batch: object, batch_images: BatchImages | None) -> Tensor:
    if batch_images is None:
        return _find_images(batch)
    if not callable(batch_images):
        raise TypeError(
            f"`batch_images` must be a callable (batch -> images [B, C, H, W]) or None, got {type(batch_images).__name__}."
        )
    images = batch_images(batch)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"`batch_images` must return images [B, C, H, W] with B >= 1, got {shape}.")
    return images


def _find_images(batch: object) -> Tensor:
    if isinstance(batch, Tensor) and batch.ndim == 4:
        return batch
    if isinstance(batch, Mapping):
        keyed = next((batch[k] for k in IMAGE_KEYS if k in batch and isinstance(batch[k], Tensor)), None)
        if keyed is not None and keyed.ndim == 4:
            return keyed
        values = list(batch.values())
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        values = list(batch)
    else:
        values = []
    candidates = [
        (position, v) for position, v in enumerate(values) if isinstance(v, Tensor) and v.ndim == 4 and v.shape[0] > 0
    ]
    if not candidates:
        raise TypeError(_not_found_message(batch))
    return min(candidates, key=lambda item: _rank(*item))[1]


def _rank(position: int, tensor: Tensor) -> tuple[int, int, int, int]:
    if tensor.is_floating_point():
        kind = 0
    elif tensor.dtype == torch.uint8:
        kind = 1
    else:
        kind = 2
    single = int(tensor.shape[1] == 1)
    mask_like = int(kind > 0 and single == 1 and torch.unique(tensor).numel() <= _MASK_VALUES)
    return kind, single, mask_like, position


def _not_found_message(batch: object) -> str:
    what = type(batch).__name__
    if isinstance(batch, Mapping):
        what += f" with keys {list(batch.keys())}"
    return (
        f"could not find images [B, C, H, W] (a 4-D tensor) in a batch of type {what}; batches may be a tensor, a tuple/list "
        "(images, labels, ...) or a dict with an 'image'/'images'/'x'/'input' key. Otherwise pass `batch_images=` "
        "(a callable batch -> images [B, C, H, W]) and, if the model's step transforms them, `preprocess=`."
    )


def _preprocessed(images: Tensor, preprocess: Callable[[Tensor], Tensor] | None) -> Tensor:
    if preprocess is None:
        if not images.is_floating_point():
            raise TypeError(
                f"the images found in the batch are {images.dtype} of shape {list(images.shape)}, and the attributions need "
                "the float images the model's forward takes; pass `preprocess=` (what the model's step does before forward, "
                "e.g. lambda x: x.float() / 255) and, if these are not the images, `batch_images=`."
            )
        return images
    if not callable(preprocess):
        raise TypeError(
            f"`preprocess` must be a callable (images -> float images [B, C, H, W]) or None, got {type(preprocess).__name__}."
        )
    ready = preprocess(images)
    if not isinstance(ready, Tensor) or ready.ndim != 4 or not ready.is_floating_point():
        shape = f"{ready.dtype} of shape {list(ready.shape)}" if isinstance(ready, Tensor) else type(ready).__name__
        raise TypeError(f"`preprocess` must return float images [B, C, H, W], got {shape}.")
    return ready


def labels_from_batch(batch: object, images: Tensor) -> Tensor | None:
    """The labels of a batch whose images are ``images``, whatever their shape, or ``None``.

    A dict's first tensor under ``label``, ``labels``, ``y``, ``target``, ``targets``, ``mask``,
    ``masks``, ``segmentation``, ``class`` or ``cls``; else the first tensor of the batch (a dict's
    values or a tuple's items) that is not ``images`` and has one row per image. Class indices
    ``[B]``, multi-hot ``[B, K]``, values ``[B]``/``[B, K]`` and masks ``[B, H, W]`` alike: pass
    them to :func:`lightning_xai.targets.infer_task` and :func:`lightning_xai.targets.probe_targets`.

    Example:
        >>> mask, image = torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.rand(2, 3, 4, 4)
        >>> labels_from_batch((mask, image), images_from_batch((mask, image))) is mask
        True
        >>> labels_from_batch({"image": image, "labels": torch.tensor([[1, 0, 1], [0, 1, 0]])}, image).shape
        torch.Size([2, 3])
    """
    count = images.shape[0]
    if isinstance(batch, Mapping):
        keyed = [batch[k] for k in LABEL_KEYS if k in batch]
        values = keyed + list(batch.values())
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        values = list(batch)
    else:
        return None
    return next(
        (v for v in values if isinstance(v, Tensor) and v is not images and v.ndim >= 1 and v.shape[0] == count), None
    )


def images_and_labels(
    batch: object, *, batch_images: BatchImages | None = None, preprocess: Preprocess | None = None
) -> tuple[Tensor, Tensor | None]:
    """The float images ``[B, C, H, W]`` of a batch (see :func:`images_from_batch`) and its labels of any shape, or ``None``.

    Example:
        >>> images, labels = images_and_labels({"image": torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "labels": torch.eye(2)},
        ...                                    preprocess=lambda x: x.float() / 255)
        >>> images.dtype, labels.shape
        (torch.float32, torch.Size([2, 2]))
    """
    found = _raw_images(batch, batch_images)
    labels = labels_from_batch(batch, found)
    return _preprocessed(found, preprocess), labels
