"""Colour as a cue: grey images, each image's object colour, and recolouring one image in another's colour.

The colour test (:func:`~lightning_xai.functional.shortcut_interventions.color_votes`) gives each recipient
a donor's colour at its own brightness, against the recipient given its own colour the same way (what
recolouring does by itself). Images are ``[N, C, H, W]``; grey images (one channel, or equal channels) keep
what they are.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chroma", "dominant_colors", "luminance", "swap_colors", "to_gray"]


def luminance(images: Tensor) -> Tensor:
    """Brightness ``[N, 1, H, W]``: ITU-R 601 weights for 3 channels, the channel mean otherwise."""
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    return images.mean(dim=1, keepdim=True)


def to_gray(images: Tensor) -> Tensor:
    """``images`` with every channel set to their luminance (colour removed, brightness kept).

    Example:
        >>> to_gray(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0.29899999499320984, 0.29899999499320984, 0.29899999499320984]
    """
    return luminance(images).expand_as(images).clone()


def chroma(images: Tensor) -> Tensor:
    """How coloured each pixel is ``[N, 1, H, W]``: its largest channel minus its smallest (0 for grey).

    Example:
        >>> chroma(torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)).flatten().tolist()
        [0.75]
    """
    return images.amax(dim=1, keepdim=True) - images.amin(dim=1, keepdim=True)


def dominant_colors(images: Tensor) -> Tensor:
    """Each image's colour ``[N, C, 1, 1]``: the mean of its most coloured sixteenth of pixels (by
    :func:`chroma`: its object, not its grey background, whatever the object's size above that),
    scaled so that the largest channel is 1; ``(1, ..., 1)`` for a grey image. ``images`` must be
    non-negative (black at 0; :func:`swap_colors` shifts them so).

    Example:
        >>> image = torch.zeros(1, 3, 2, 2); image[0, :, 0, 0] = torch.tensor([0.5, 0.25, 0.0])
        >>> image[0, :, 1, 1] = 0.2  # a grey pixel: no weight
        >>> dominant_colors(image).flatten().tolist()
        [1.0, 0.5, 0.0]
    """
    colored = chroma(images).flatten(1)
    count = max(1, colored.shape[1] // 16)
    threshold = colored.topk(count, dim=1).values[:, -1:]
    weights = (colored >= threshold).float() * (colored > 0).float()
    weights = weights.view_as(images[:, :1])
    total = weights.sum(dim=(2, 3), keepdim=True)
    mean = (images * weights).sum(dim=(2, 3), keepdim=True) / total.clamp(min=1e-12)
    scaled = mean / mean.amax(dim=1, keepdim=True).clamp(min=1e-6)
    return torch.where(total > 1e-12, scaled, torch.ones_like(scaled))


def swap_colors(recipients: Tensor, donors: Tensor, *, black: float | None = None) -> Tensor:
    """Each recipient ``[N, C, H, W]`` in its donor's colour (:func:`dominant_colors`) at its own
    brightness (the value of HSV: each pixel's brightest channel) above ``black`` (the input value of
    black; default: the darkest value of both batches). Pass one ``black`` for a whole test, so that
    an image's recolouring does not depend on the others in its batch (the control and the candidate
    then differ only in the colour given). Computed in float32, returned in the recipients' dtype.

    One colour per donor, that of its most coloured pixels (its object), not its pixels' colours at the
    same places (the objects of two images rarely lie at one place) nor its whole image's (diluted by
    the background as much as the object is small: a cue for the object's size, not its colour).
    Keeping the luminance instead would make a digit tinted blue, given red, darker than any red digit.
    Swapping an image's colour for its own (``donors=recipients``) is the control of the colour test:
    what recolouring does by itself (see :func:`~lightning_xai.functional.shortcut_interventions.color_votes`).

    Example:
        >>> red = torch.zeros(1, 3, 2, 2); red[0, 0, 0, :] = 0.8  # a red object above a black background
        >>> blue = torch.zeros(1, 3, 2, 2); blue[0, 2, 1, 1] = 0.5  # a blue object elsewhere
        >>> swap_colors(red, blue)[0, :, 0, :].tolist()
        [[0.0, 0.0], [0.0, 0.0], [0.800000011920929, 0.800000011920929]]
    """
    if recipients.numel() == 0:
        return recipients.clone()
    if black is None:
        black = float(torch.minimum(recipients.amin(), donors.amin()))
    value = recipients.float().amax(dim=1, keepdim=True) - black
    return (black + value * dominant_colors(donors.float() - black)).to(recipients.dtype)
