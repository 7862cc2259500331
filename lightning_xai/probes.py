"""Choosing and holding the fixed probe images, and the reservoir of training images.

Probes are copied to the CPU as they pass by; the batches that training and validation
use are never altered.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai.batches import BatchImages, Preprocess, images_and_labels

__all__ = [
    "CandidatePool",
    "ProbeSet",
    "TrainingReservoir",
    "detached_cpu_copy",
    "probes_from_argument",
    "split_batch",
    "spread_over_classes",
    "spread_over_labels",
]

_IMAGE_KEYS = ("image", "images", "x", "input", "inputs", "pixel_values", "img")
_LABEL_KEYS = ("label", "labels", "y", "target", "targets", "class", "cls")


@dataclass(frozen=True)
class ProbeSet:
    """The fixed images that every validation run explains.

    Attributes:
        images: ``[P, C, H, W]`` on the CPU.
        labels: ``LongTensor[P]`` of true classes, or ``None`` when unknown (the model's
            prediction is then the target). Before the monitor fixes the targets
            (``targets_fixed=False``) labels of any shape as the batches hold them (multi-hot
            ``[P, K]``, masks ``[P, H, W]``, values); afterwards the score column each row explains.
        source: where they came from: ``"given"`` or ``"validation"``.
        targets_fixed: whether ``labels`` are already the columns to explain (one row per target).
    """

    images: Tensor
    labels: Tensor | None
    source: str
    targets_fixed: bool = False

    def fingerprint(self) -> float:
        """A number that changes when the probe images change (for resume checks)."""
        weights = torch.arange(1, self.images.numel() + 1, dtype=torch.float64)
        return float((self.images.double().flatten() * weights).sum() / weights.sum())


def split_batch(batch: object) -> tuple[Tensor, Tensor | None]:
    """Finds the images ``[B, C, H, W]`` and, if present, integer labels ``[B]`` in a batch.

    Understands a bare tensor, a tuple or list ``(images, labels, ...)``, and a dict with keys
    such as ``"image"``/``"images"``/``"x"`` and ``"label"``/``"labels"``/``"y"``/``"target"``.

    Example:
        >>> images, labels = split_batch((torch.zeros(2, 1, 4, 4), torch.tensor([3, 1])))
        >>> images.shape, labels.tolist()
        (torch.Size([2, 1, 4, 4]), [3, 1])
    """
    if isinstance(batch, Tensor):
        values: list[object] = [batch]
    elif isinstance(batch, Mapping):
        values = [batch[k] for k in _IMAGE_KEYS if k in batch] + [batch[k] for k in _LABEL_KEYS if k in batch]
        values += list(batch.values())
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        values = list(batch)
    else:
        values = []
    images = next((v for v in values if isinstance(v, Tensor) and v.ndim == 4 and v.is_floating_point()), None)
    if images is None:
        raise TypeError(
            "AttributionMonitor could not find images [B, C, H, W] (a 4-D float tensor) in a validation batch of type "
            f"{type(batch).__name__}; batches may be a tensor, a tuple/list (images, labels) or a dict with an "
            "'image'/'images'/'x' key. Otherwise pass `probes=` explicitly."
        )
    labels = next((v for v in values if isinstance(v, Tensor) and _is_label_vector(v, images.shape[0])), None)
    return images, labels


def _is_label_vector(value: object, count: int) -> bool:
    return (
        isinstance(value, Tensor)
        and value.ndim == 1
        and value.shape[0] == count
        and not value.is_floating_point()
        and value.dtype != torch.bool
    )


def spread_over_classes(labels: Tensor, count: int) -> Tensor:
    """Indices of ``count`` items taken round-robin over the classes, in order of appearance.

    The first item of each class comes first, then the second of each, and so on; the result
    is sorted by class, then by position, so a grid shows the classes in order.

    Example:
        >>> spread_over_classes(torch.tensor([0, 0, 0, 1, 2, 2]), 4).tolist()
        [0, 1, 3, 4]
    """
    rank = torch.zeros_like(labels)
    for value in labels.unique():
        positions = (labels == value).nonzero().flatten()
        rank[positions] = torch.arange(positions.numel())
    order = sorted(range(labels.numel()), key=lambda i: (int(rank[i]), int(labels[i]), i))[:count]
    return torch.tensor(sorted(order, key=lambda i: (int(labels[i]), i)), dtype=torch.long)


def spread_over_labels(labels: Tensor, count: int) -> Tensor:
    """Indices of ``count`` items spread over what ``labels`` ``[N, ...]`` say.

    Class indices ``[N]``: :func:`spread_over_classes`. Multi-hot ``[N, K]`` (0s and 1s): round
    robin over the labels, each round taking for every label the next unused item with that
    label positive (then items without any), sorted by position. Anything else (values, masks):
    the first ``count``.

    Example:
        >>> multi_hot = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
        >>> spread_over_labels(multi_hot, 2).tolist()
        [0, 2]
    """
    if labels.ndim == 1 and labels.dtype != torch.bool and bool((labels == labels.round()).all()):
        return spread_over_classes(labels.long(), count)  # class indices, or 0./1. labels of a binary classifier
    if labels.ndim != 2 or labels.numel() == 0 or not bool(((labels == 0) | (labels == 1)).all()):
        return torch.arange(min(count, labels.shape[0]))
    return _round_robin_labels(labels.bool(), count)


def _round_robin_labels(positive: Tensor, count: int) -> Tensor:
    chosen: list[int] = []
    queues = [positive[:, k].nonzero().flatten().tolist() for k in range(positive.shape[1])]
    queues.append((~positive.any(dim=1)).nonzero().flatten().tolist())
    while len(chosen) < min(count, positive.shape[0]) and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return torch.tensor(sorted(chosen), dtype=torch.long)


def detached_cpu_copy(tensor: Tensor) -> Tensor:
    """A CPU copy that is a normal tensor even when ``tensor`` was made under inference mode."""
    with torch.inference_mode(False):
        return tensor.detach().to("cpu", copy=True).clone()


class CandidatePool:
    """Collects the first validation images (and labels) of a run, from which probes are chosen.

    Args:
        capacity: how many images to keep at most.

    Example:
        >>> pool = CandidatePool(capacity=4)
        >>> pool.add((torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1])))
        >>> pool.add((torch.rand(3, 1, 2, 2), torch.tensor([2, 0, 2])))
        >>> pool.select(3).labels.tolist()
        [0, 1, 2]
    """

    def __init__(
        self, capacity: int, *, batch_images: BatchImages | None = None, preprocess: Preprocess | None = None
    ) -> None:
        self.capacity = capacity
        self.batch_images, self.preprocess = batch_images, preprocess
        self._images: list[Tensor] = []
        self._labels: list[Tensor] = []
        self.count = 0
        self.other_sizes = 0
        self.has_labels = True
        self.closed = False

    @property
    def full(self) -> bool:
        """Whether no more images are needed (or taken: see :meth:`close`)."""
        return self.count >= self.capacity or self.closed

    def close(self) -> None:
        """Takes no more images until :meth:`reset`."""
        self.closed = True

    def reset(self) -> None:
        """Forgets everything (a new validation run starts)."""
        self.__init__(self.capacity, batch_images=self.batch_images, preprocess=self.preprocess)  # type: ignore[misc]

    def add(self, batch: object) -> None:
        """Copies up to the remaining capacity of a batch's images and labels. Images of another size than the
        first kept (``[C, H, W]``) are left out and counted in ``other_sizes``: probes are explained as one batch."""
        if self.full:
            return
        images, labels = images_and_labels(batch, batch_images=self.batch_images, preprocess=self.preprocess)
        if self._images and images.shape[1:] != self._images[0].shape[1:]:
            self.other_sizes += images.shape[0]
            return
        take = min(images.shape[0], self.capacity - self.count)
        self._images.append(detached_cpu_copy(images[:take]))
        if labels is None or (self._labels and labels.shape[1:] != self._labels[0].shape[1:]):
            self.has_labels = False
        else:
            self._labels.append(detached_cpu_copy(labels[:take]))
        self.count += take

    def first_images(self, count: int) -> Tensor | None:
        """The first ``count`` images collected (normal tensors), or ``None`` when there are none."""
        if not self._images:
            return None
        with torch.inference_mode(False):
            return torch.cat(self._images)[:count].clone()

    def select(self, count: int) -> ProbeSet:
        """``count`` probes spread over the classes when labels are known, else the first ``count``."""
        if self.count == 0:
            raise ValueError(
                "AttributionMonitor saw no validation images to choose probes from; pass `probes=` explicitly."
            )
        with torch.inference_mode(False):  # hooks run under inference mode; probes must be normal tensors
            return self._select(count)

    def _select(self, count: int) -> ProbeSet:
        images = torch.cat(self._images)
        if not self.has_labels:
            return ProbeSet(images[:count], None, "validation")
        labels = torch.cat(self._labels)
        chosen = spread_over_labels(labels, count)
        return ProbeSet(images[chosen], labels[chosen], "validation")


class TrainingReservoir:
    """A uniform random sample of the training images seen so far (reservoir sampling, Algorithm R).

    Draws from a private generator, so training's own randomness is untouched.

    Args:
        capacity: images to keep.
        seed: seed of the private generator.

    Example:
        >>> reservoir = TrainingReservoir(capacity=4, seed=0)
        >>> for _ in range(5):
        ...     reservoir.add(torch.rand(3, 1, 2, 2))
        >>> reservoir.images.shape, reservoir.seen
        (torch.Size([4, 1, 2, 2]), 15)
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.images: Tensor | None = None
        self.seen = 0
        self._generator = torch.Generator().manual_seed(seed)

    def add(self, images: Tensor) -> None:
        """Offers every image of a batch ``[B, C, H, W]`` to the reservoir.

        With multi-scale training only batches of the first size seen are sampled (the
        monitor resizes the references to the probes' size when they differ).
        """
        if self.images is not None and images.shape[1:] != self.images.shape[1:]:
            return
        filled = 0 if self.images is None else self.images.shape[0]
        direct = min(images.shape[0], self.capacity - filled)
        if direct > 0:
            fresh = detached_cpu_copy(images[:direct])
            self.images = fresh if self.images is None else torch.cat([self.images, fresh])
        rest = images.shape[0] - direct
        if rest > 0:
            positions = torch.arange(self.seen + direct, self.seen + direct + rest, dtype=torch.float64)
            slots = (torch.rand(rest, generator=self._generator, dtype=torch.float64) * (positions + 1)).long()
            for offset in (slots < self.capacity).nonzero().flatten().tolist():
                self.images[slots[offset]] = detached_cpu_copy(images[direct + offset])  # type: ignore[index]
        self.seen += images.shape[0]

    def __getstate__(self) -> dict:
        # Plain ints, not the generator's state tensor: ``ddp_spawn`` pickles the callback through
        # shared memory, where a tensor built by ``get_state()`` fails ("unable to resize file").
        state = self.__dict__.copy()
        state["_generator"] = self._generator.get_state().tolist()
        return state

    def __setstate__(self, state: dict) -> None:
        generator_state = state.pop("_generator")
        self.__dict__.update(state)
        self._generator = torch.Generator()
        self._generator.set_state(torch.tensor(generator_state, dtype=torch.uint8))


def probes_from_argument(probes: object, *, preprocess: Preprocess | None = None) -> ProbeSet | None:
    """Turns the monitor's ``probes`` argument into a :class:`ProbeSet`.

    Accepts ``None``, a tensor ``[P, C, H, W]``, a pair ``(images, targets)`` with targets a
    sequence or tensor of P ints, or ``(dataset, indices)`` where ``dataset[i]`` gives an image
    ``[C, H, W]`` (alone, in a tuple with its label, or in a dict). Images that are not floating
    point (uint8) go through ``preprocess`` (the monitor's ``preprocess=``).

    Example:
        >>> probes_from_argument((torch.zeros(2, 1, 4, 4), [3, 5])).labels.tolist()
        [3, 5]
    """
    if probes is None:
        return None
    if isinstance(probes, Tensor):
        return ProbeSet(_checked_probe_images(probes, preprocess), None, "given")
    if isinstance(probes, (tuple, list)) and len(probes) == 2:
        first, second = probes
        if isinstance(first, Tensor):
            images = _checked_probe_images(first, preprocess)
            return ProbeSet(images, _checked_probe_labels(second, images.shape[0]), "given")
        if hasattr(first, "__getitem__") and isinstance(second, (Sequence, Tensor)) and not isinstance(second, str):
            return _probes_from_dataset(first, second, preprocess)
    raise TypeError(
        "`probes` must be None, a tensor [P, C, H, W], a pair (images, targets) or a pair (dataset, indices), "
        f"got {type(probes).__name__}."
    )


def _checked_probe_images(images: Tensor, preprocess: Preprocess | None = None) -> Tensor:
    if preprocess is not None and not images.is_floating_point():
        images = images_and_labels(images, preprocess=preprocess)[0]
    if images.ndim != 4 or not images.is_floating_point() or images.shape[0] == 0:
        raise ValueError(
            f"`probes` images must be a float tensor [P, C, H, W] with P >= 1, got {images.dtype} of shape {list(images.shape)}"
            + ("; pass `preprocess=` to convert them." if not images.is_floating_point() else ".")
        )
    return detached_cpu_copy(images)


def _checked_probe_labels(labels: object, count: int) -> Tensor:
    if (
        isinstance(labels, Tensor) and labels.ndim >= 2 and labels.shape[0] == count
    ):  # multi-hot [P, K], masks [P, H, W]
        return detached_cpu_copy(labels)
    values = labels.tolist() if isinstance(labels, Tensor) else labels
    if (
        not isinstance(values, (list, tuple))
        or len(values) != count
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError(f"`probes` targets must be {count} ints, one per image, got {labels!r}.")
    return torch.tensor(list(values), dtype=torch.long)


def _probes_from_dataset(dataset: object, indices: object, preprocess: Preprocess | None = None) -> ProbeSet:
    if not isinstance(indices, (Tensor, Sequence)) or isinstance(indices, str):
        raise TypeError(f"`probes` indices must be a sequence or tensor of ints, got {type(indices).__name__}.")
    index_list = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    if not index_list:
        raise ValueError("`probes` indices must not be empty.")
    size = len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]
    converted = [_as_index(index) for index in index_list]
    wrong = [
        index
        for index, value in zip(index_list, converted)
        if value is None or (size is not None and not 0 <= value < size)
    ]
    if wrong:
        allowed = "ints" if size is None else f"ints in [0, {size - 1}] (the dataset holds {size} items)"
        raise ValueError(f"`probes` indices must be {allowed}, got {wrong}.")
    images, labels = [], []
    for index in converted:
        item = dataset[index]  # type: ignore[index]
        item_images, item_labels = images_and_labels(_as_batch_of_one(item), preprocess=preprocess)
        images.append(item_images)
        labels.append(item_labels)
    known = all(label is not None for label in labels) and len({tuple(label.shape[1:]) for label in labels}) == 1  # type: ignore[union-attr]
    stacked_labels = torch.cat(labels) if known else None  # type: ignore[arg-type]
    return ProbeSet(_checked_probe_images(torch.cat(images)), stacked_labels, "given")


def _as_index(value: object) -> int | None:
    """``value`` as a Python int when it is an integer (``int``, NumPy's, a one-element integer tensor), else ``None``.

    Example:
        >>> _as_index(3), _as_index(torch.tensor(2)), _as_index(0.5), _as_index(True)
        (3, 2, None, None)
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _as_batch_of_one(item: object) -> object:
    def lift(value: object) -> object:
        if isinstance(value, Tensor):
            return value.unsqueeze(0) if value.ndim in (0, 3) else value
        if isinstance(value, int) and not isinstance(value, bool):
            return torch.tensor([value])
        return value

    if isinstance(item, Mapping):
        return {key: lift(value) for key, value in item.items()}
    if isinstance(item, (tuple, list)):
        return [lift(value) for value in item]
    return lift(item)
