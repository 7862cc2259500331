"""Argument checks shared by the functional core.

Every check raises a plain ``ValueError`` or ``TypeError`` whose message names the
argument, says what is allowed and shows what was received.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeGuard

import torch
from torch import Tensor

__all__ = [
    "ForwardFn",
    "TargetLike",
    "as_pair",
    "check_images",
    "check_positive_int",
    "check_score_shape",
    "check_scores",
    "gather_scores",
    "is_real_number",
    "normalize_target",
    "resolve_targets",
]

TargetLike = int | Sequence[int] | Tensor | None
ForwardFn = Callable[[Tensor], Tensor]


def check_images(inputs: object, name: str = "inputs") -> Tensor:
    """Checks that ``inputs`` is a floating-point image batch ``[N, C, H, W]`` with N >= 1.

    Example:
        >>> check_images(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape [N, C, H, W], got {type(inputs).__name__}.")
    if inputs.ndim != 4:
        raise ValueError(
            f"`{name}` must have 4 dimensions [N, C, H, W], got {inputs.ndim} dimensions "
            f"with shape {list(inputs.shape)}."
        )
    if not inputs.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {inputs.dtype}.")
    if inputs.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one image, got shape {list(inputs.shape)}.")
    return inputs


def is_real_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float, and not a bool (``True > 0`` must not pass a check).

    Example:
        >>> is_real_number(0.5), is_real_number(True), is_real_number("1")
        (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Checks that ``value`` is an int (not a bool) of at least ``minimum``.

    Example:
        >>> check_positive_int(3, "n_samples")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def as_pair(value: object, name: str) -> tuple[int, int]:
    """Turns an int or a pair of ints into ``(height, width)``, each >= 1.

    Example:
        >>> as_pair(4, "window"), as_pair((2, 3), "window")
        ((4, 4), (2, 3))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        pair: tuple[object, ...] = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"`{name}` must be an int or a pair of ints (height, width), got {value!r}.")
    sides: list[int] = []
    for item in pair:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"`{name}` must be an int or a pair of ints (height, width), got {value!r}.")
        if item < 1:
            raise ValueError(f"`{name}` must be >= 1 in each dimension, got {value!r}.")
        sides.append(item)
    return int(sides[0]), int(sides[1])


def check_scores(scores: object, n_images: int, *, what: str = "the model") -> Tensor:
    """Checks that a model output is a finite ``[N, K]`` tensor of class scores.

    Example:
        >>> check_scores(torch.zeros(2, 10), 2).shape
        torch.Size([2, 10])
    """
    checked = check_score_shape(scores, n_images, what=what)
    if not bool(torch.isfinite(checked).all()):
        raise ValueError(f"{what} returned non-finite scores (NaN or inf) for the given inputs.")
    return checked


def check_score_shape(scores: object, n_images: int, *, what: str = "the model") -> Tensor:
    """Checks that a model output is a ``[N, K]`` tensor, without a device sync.

    Example:
        >>> check_score_shape(torch.zeros(2, 10), 2).shape
        torch.Size([2, 10])
    """
    if not isinstance(scores, Tensor):
        raise TypeError(f"{what} must return a Tensor of class scores [N, K], got {type(scores).__name__}.")
    if scores.ndim != 2 or scores.shape[0] != n_images:
        raise ValueError(
            f"{what} must return class scores of shape [N, K] = [{n_images}, K] for {n_images} images, "
            f"got shape {list(scores.shape)}."
        )
    return scores


def resolve_targets(target: TargetLike, scores: Tensor) -> Tensor:
    """Turns ``target`` into a ``LongTensor[N]`` of class indices checked against ``scores``.

    Args:
        target: an int (the same class for every image), a sequence or 1-D tensor of N ints,
            or ``None`` for each image's highest-scoring class.
        scores: the model's output on the unperturbed images, ``[N, K]``.

    Returns:
        ``LongTensor[N]`` on ``scores.device``.

    Example:
        >>> resolve_targets(None, torch.tensor([[0.0, 1.0], [2.0, 1.0]])).tolist()
        [1, 0]
        >>> resolve_targets(1, torch.zeros(3, 2)).tolist()
        [1, 1, 1]
    """
    n_images, n_classes = scores.shape
    if target is None:
        return scores.argmax(dim=1)
    if isinstance(target, bool):
        raise TypeError(f"`target` must be an int, a sequence of {n_images} ints, a tensor or None, got a bool.")
    if isinstance(target, int):
        targets = torch.full((n_images,), target, dtype=torch.long, device=scores.device)
    else:
        # A copy: the caller's tensor may have been made under inference mode, and autograd
        # must be able to save the index for backward.
        targets = _targets_from_sequence(target, n_images).to(scores.device).clone()
    out_of_range = (targets < 0) | (targets >= n_classes)
    if bool(out_of_range.any()):
        bad = targets[out_of_range].tolist()
        raise ValueError(
            f"`target` must be class indices in [0, {n_classes - 1}] for a model with {n_classes} outputs, got {bad}."
        )
    return targets


def normalize_target(target: TargetLike, n_images: int) -> int | Tensor | None:
    """Checks the type and length of ``target`` before any model call; ranges are checked later.

    Returns ``None``, an int, or a ``LongTensor[N]`` (on the CPU) that can be sliced per batch.

    Example:
        >>> normalize_target([2, 0], 2).tolist()
        [2, 0]
    """
    if target is None:
        return None
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, bool):
        raise TypeError(f"`target` must be an int, a sequence of {n_images} ints, a tensor or None, got a bool.")
    return _targets_from_sequence(target, n_images)


def _targets_from_sequence(target: object, n_images: int) -> Tensor:
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"`target` tensor must hold integers, got dtype {target.dtype}.")
        targets = target.detach().reshape(-1).long() if target.ndim <= 1 else None
        if targets is None:
            raise ValueError(f"`target` tensor must be 0-D or 1-D, got shape {list(target.shape)}.")
        if target.ndim == 0:
            targets = targets.expand(n_images)
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            raise TypeError(f"`target` sequence must hold ints, got {list(target)!r}.")
        targets = torch.tensor(list(target), dtype=torch.long)
    else:
        raise TypeError(f"`target` must be an int, a sequence of ints, a tensor or None, got {type(target).__name__}.")
    if targets.shape[0] != n_images:
        raise ValueError(f"`target` must hold one class per image ({n_images}), got {targets.shape[0]}.")
    return targets


def gather_scores(scores: Tensor, targets: Tensor) -> Tensor:
    """Picks each row's target score: ``scores[i, targets[i]]``, shape ``[N]``.

    Example:
        >>> gather_scores(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0])).tolist()
        [2.0, 3.0]
    """
    return scores.gather(1, targets.view(-1, 1)).squeeze(1)
