"""Whether the images of a class carry a mark at a fixed place: what sits there recurs in that class.

A class mark (a source tag, a watermark on one class) is the same content at the same place in the images of
the class that carries it; what sits at that place in other classes' images is different. A piece of an object
is not: where objects sit at varying places, the content of one box in the images of the object's class is
whatever part of the object, or of the background, happens to be there, no closer to the other images of the
class than to anyone else's. The transplant tests cannot tell the two apart when the piece is telling (the base
stroke of a 2, pasted into a 7, makes it a 2); this property can, without the model.

For each image of the carrying classes, the distance to a class is the distance of the box's content to that of
the class's ``NEAREST_COPIES``-th closest image at the same box (one or two copies elsewhere, mistakes of the
model, do not count). The image *carries* the mark when its closest class is a carrying class. A mark recurs
when most of the carrying classes' images carry it.

Measured at stop 35 (classes: labels, 128 validation images, 3rd closest copy): the planted class-0 tag of the
evidence suite and the held-out 6x6 mark on class 2 (its 6x6 and 9x9 boxes): 1.0 of the class's images; the box
of the one false class mark on clean digits at random places on stripes (held-out seed 56): 0.0; pieces of clean
objects at random places 0.39-0.43, of centred objects 0.83-0.93 (those fail the other tests of a class mark).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.functional.shortcut import Box
from lightning_xai.functional.shortcut_recurrence import NEAREST_COPIES

__all__ = ["MARK_RECURS", "carried_share"]

MARK_RECURS = 0.5
"""A class mark is reported only when more than this share of the carrying classes' images carry it (most)."""


def carried_share(
    images: Tensor, classes: Tensor, box: Box, carriers: Sequence[int], *, nearest: int = NEAREST_COPIES
) -> float:
    """The share of the images of ``carriers`` whose content at ``box`` is closest to a carrying class's.

    Args:
        images: ``[N, C, H, W]``.
        classes: ``[N]`` (long) each image's class (the model's predictions).
        box: ``(top, left, bottom, right)``.
        carriers: the classes said to carry a mark there.
        nearest: the rank of the copy a class's distance is measured to (see the module).

    Returns:
        A share in [0, 1]; 0.0 when no carrying class has ``nearest`` other images or no other class has
        ``nearest`` images (nothing to compare).

    Example:
        >>> images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> classes = torch.arange(40) % 4
        >>> images[classes == 0, :, 0:2, 0:2] = 5.0  # class 0 carries a tag at the top-left corner
        >>> carried_share(images, classes, (0, 0, 2, 2), [0]), carried_share(images, classes, (4, 4, 6, 6), [0]) < 0.5
        (1.0, True)
    """
    top, left, bottom, right = box
    patches = images[:, :, top:bottom, left:right].flatten(1).float().cpu()
    distances = torch.cdist(patches, patches)
    distances.fill_diagonal_(float("inf"))  # an image is no copy of itself
    labels = classes.cpu()
    members = {k: (labels == k).nonzero().flatten() for k in labels.unique().tolist()}
    ranked = {k: m for k, m in members.items() if m.numel() > nearest}  # nearest others besides the image
    carrying = [k for k in carriers if k in ranked]
    if not carrying or not any(k not in carriers for k in ranked):
        return 0.0
    order = list(ranked)
    to_class = torch.stack(
        [distances[:, ranked[k]].topk(nearest, dim=1, largest=False).values[:, -1] for k in order], dim=1
    )  # [N, K]: each image's distance to each class
    own = torch.cat([members[k] for k in carrying])
    closest = torch.tensor(order)[to_class[own].argmin(dim=1)]
    return float(torch.isin(closest, torch.tensor(list(carriers))).float().mean())
