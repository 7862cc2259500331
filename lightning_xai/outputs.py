"""Scores from any model output: a dict key, a tuple index, a callable, or a custom call (pure torch).

``output=`` picks the scores tensor out of what ``forward`` returns; ``forward=`` replaces
``module(images)`` with any call ``(module, images) -> outputs`` (extra arguments, wrappers).
Messages for outputs that are not a tensor name these options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch  # noqa: F401  (doctests)
from torch import Tensor, nn

__all__ = ["Forward", "Output", "make_forward", "select_scores"]

Output = str | int | Callable[[Any], Tensor] | None
Forward = Callable[[nn.Module, Tensor], Any]


def select_scores(outputs: object, *, output: Output = None) -> Tensor:
    """The scores tensor in a model's outputs.

    Args:
        outputs: what the model returned.
        output: a dict key (``"logits"``), a tuple/list index, a callable ``outputs -> Tensor``,
            or ``None`` when the outputs are the scores tensor itself.

    Raises:
        ValueError: ``output=None`` and the outputs are a dict, tuple or list (which entry?), or
            the key or index does not exist.
        TypeError: the selected scores are not a tensor.

    Example:
        >>> select_scores({"logits": torch.zeros(2, 3), "features": torch.zeros(2, 8)}, output="logits").shape
        torch.Size([2, 3])
        >>> select_scores((torch.zeros(2, 3), torch.zeros(2, 8)), output=0).shape
        torch.Size([2, 3])
    """
    selected: object
    if callable(output):
        selected = output(outputs)
    elif output is None:
        if isinstance(outputs, (Mapping, tuple, list)):
            raise ValueError(_which_entry_message(outputs))
        selected = outputs
    else:
        selected = _entry(outputs, output)
    if not isinstance(selected, Tensor):
        raise TypeError(
            f"the scores selected with `output={_shown(output)}` must be a Tensor, got {type(selected).__name__}; "
            "pass `output=` a key, an index or a callable that returns the scores tensor."
        )
    return selected


def _which_entry_message(outputs: Mapping[object, object] | tuple[object, ...] | list[object]) -> str:
    if isinstance(outputs, Mapping):
        keys = list(outputs.keys())
        example = next((k for k in keys if isinstance(k, str)), keys[0] if keys else "logits")
        what = f"a dict with keys {keys}"
        hint = f"`output={example!r}` (a key)"
    else:
        what = f"a {type(outputs).__name__} of {len(outputs)} items"
        hint = "`output=0` (an index)"
    return (
        f"the model returned {what}; pass {hint}, an index or a callable (outputs -> scores tensor) "
        "to AttributionMonitor so that it knows which entry holds the scores."
    )


def _entry(outputs: object, output: object) -> object:
    if isinstance(output, bool) or not isinstance(output, (str, int)):
        raise TypeError(f"`output` must be a str key, an int index, a callable or None, got {type(output).__name__}.")
    try:
        return outputs[output]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        available = (
            list(outputs.keys())
            if isinstance(outputs, Mapping)
            else (f"indices 0..{len(outputs) - 1}" if isinstance(outputs, Sequence) else type(outputs).__name__)
        )
        raise ValueError(f"`output={output!r}` is not in the model's outputs ({available}).") from None


def _shown(output: Output) -> str:
    return getattr(output, "__name__", "callable") if callable(output) else repr(output)


def make_forward(
    module: nn.Module, *, forward: Forward | None = None, output: Output = None
) -> Callable[[Tensor], Tensor]:
    """A function ``images -> scores`` from a module, an optional custom call and an output selector.

    Args:
        module: the model.
        forward: ``(module, images) -> outputs``, for extra arguments or wrappers
            (``lambda m, x: m(x, timestep=0)``); ``None`` calls ``module(images)``.
        output: see :func:`select_scores`.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> fn = make_forward(net, forward=lambda m, x: {"logits": m(x)}, output="logits")
        >>> fn(torch.rand(2, 4)).shape
        torch.Size([2, 3])
    """
    if forward is not None and not callable(forward):
        raise TypeError(
            f"`forward` must be a callable (module, images) -> outputs or None, got {type(forward).__name__}."
        )

    def scores(images: Tensor) -> Tensor:
        outputs = module(images) if forward is None else forward(module, images)
        return select_scores(outputs, output=output)

    return scores
