"""Grad-CAM on token layers: turning a layer's output into a grid ``[N, C, h, w]``.

A convolutional layer gives ``[N, C, h, w]`` directly. A vision transformer's blocks give tokens
``[N, 1 + h*w, C]`` (a class token first, then the patches row by row), a Swin-style network
gives ``[N, h*w, C]`` or channels-last maps ``[N, h, w, C]``, and ``nn.TransformerEncoderLayer``
with ``batch_first=False`` gives ``[S, N, C]``. As in pytorch-grad-cam's ``reshape_transform``,
a *reshape* turns both the activations and their gradients into ``[N, C, h, w]``; Grad-CAM is then
computed on that grid.

``reshape="auto"`` reads the layout from the output's shape and the input size (rules in
:func:`auto_layout`); a callable (for example :class:`TokenGrid`) does it explicitly; ``None``
accepts ``[N, C, h, w]`` outputs only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch  # noqa: F401  (doctests)
from torch import Tensor, nn

from lightning_xai.functional._checks import check_positive_int

__all__ = [
    "Reshape",
    "TokenGrid",
    "auto_layout",
    "batch_size_of",
    "channels_last",
    "check_reshape",
    "find_token_grid",
    "is_sequence_first",
    "resolve_layout",
]

Reshape = Callable[[Tensor], Tensor] | Literal["auto"] | None
Layout = Callable[[Tensor], Tensor]
PREFIX_TOKENS = (0, 1, 2)  # class token, class + distillation token (DeiT)


@dataclass(frozen=True)
class TokenGrid:
    """A reshape for tokens with a known grid: ``[N, prefix_tokens + h*w, C]`` → ``[N, C, h, w]``.

    The first ``prefix_tokens`` tokens (class, distillation or register tokens) are dropped, the
    rest are read row by row. Channels-last maps ``[N, h, w, C]`` are accepted too.

    Args:
        height: grid rows ``h``.
        width: grid columns ``w``.
        prefix_tokens: tokens before the patch tokens.

    Example:
        >>> TokenGrid(2, 3, prefix_tokens=1)(torch.rand(4, 7, 16)).shape
        torch.Size([4, 16, 2, 3])
    """

    height: int
    width: int
    prefix_tokens: int = 1

    def __post_init__(self) -> None:
        check_positive_int(self.height, "height")
        check_positive_int(self.width, "width")
        check_positive_int(self.prefix_tokens, "prefix_tokens", minimum=0)

    def __call__(self, activation: Tensor) -> Tensor:
        """``[N, prefix_tokens + h*w, C]`` or ``[N, h, w, C]`` → ``[N, C, h, w]``."""
        grid = (self.height, self.width)
        if activation.ndim == 4 and tuple(activation.shape[1:3]) == grid:
            return channels_last(activation)
        expected = self.prefix_tokens + self.height * self.width
        if activation.ndim != 3 or activation.shape[1] != expected:
            raise ValueError(
                f"TokenGrid({self.height}, {self.width}, prefix_tokens={self.prefix_tokens}) needs tokens "
                f"[N, {expected}, C] or a map [N, {self.height}, {self.width}, C], got {list(activation.shape)}."
            )
        return _from_tokens(activation, prefix=self.prefix_tokens, grid=grid, sequence_first=False)


def channels_last(activation: Tensor) -> Tensor:
    """A reshape for channels-last maps (Swin-style): ``[N, h, w, C]`` → ``[N, C, h, w]``.

    Example:
        >>> channels_last(torch.rand(2, 4, 5, 8)).shape
        torch.Size([2, 8, 4, 5])
    """
    return activation.permute(0, 3, 1, 2)


def check_reshape(reshape: object) -> Reshape:
    """Checks the ``reshape`` option: ``"auto"``, ``None`` or a callable.

    Example:
        >>> check_reshape("auto")
        'auto'
    """
    if reshape is None or reshape == "auto" or (callable(reshape) and not isinstance(reshape, str)):
        return reshape
    raise TypeError(
        "`reshape` must be 'auto', None or a callable that turns the layer's output into [N, C, h, w] "
        f"(e.g. TokenGrid(14, 14, prefix_tokens=1)), got {reshape!r}."
    )


def find_token_grid(tokens: int, image_size: tuple[int, int]) -> tuple[int, int, int] | None:
    """``(prefix_tokens, h, w)`` when ``tokens`` are a few prefix tokens plus a patch grid of the image.

    A grid ``h x w`` fits an ``H x W`` image when some patch side ``p`` gives ``h = H // p`` or
    ``ceil(H / p)`` and the same for ``w`` (patches without or with padding). Prefixes 0, 1 and 2
    are tried in this order; grids of a single cell do not count.

    Example:
        >>> find_token_grid(65, (32, 32)), find_token_grid(96, (32, 48)), find_token_grid(50, (32, 32))
        ((1, 8, 8), (0, 8, 12), (1, 7, 7))
    """
    height, width = image_size
    for prefix in PREFIX_TOKENS:
        cells = tokens - prefix
        if cells < 2:
            continue
        for patch in range(1, max(height, width) + 1):
            for grid in _patch_grids(height, width, patch):
                if grid[0] * grid[1] == cells:
                    return prefix, grid[0], grid[1]
    return None


def _patch_grids(height: int, width: int, patch: int) -> set[tuple[int, int]]:
    floor = (height // patch, width // patch)
    ceil = (-(-height // patch), -(-width // patch))
    return {floor, ceil}


def _is_grid_of(sizes: tuple[int, int], image_size: tuple[int, int]) -> bool:
    return any(sizes in _patch_grids(*image_size, patch) for patch in range(1, max(image_size) + 1))


def auto_layout(shape: tuple[int, ...], image_size: tuple[int, int], *, sequence_first: bool = False) -> Layout | None:
    """How ``reshape="auto"`` turns an output of ``shape`` into ``[N, C, h, w]``, or ``None``.

    Rules, for images of ``image_size`` ``(H, W)``:

    * 4-D ``[N, C, h, w]`` is used as it is, unless its sizes 1 and 2 are a patch grid of the
      image and sizes 2 and 3 are not: then it is a channels-last map ``[N, h, w, C]``.
    * 3-D ``[N, S, C]`` (``[S, N, C]`` when ``sequence_first``) is tokens: ``S`` must be 0, 1 or
      2 prefix tokens plus a patch grid of the image (:func:`find_token_grid`); the prefix is
      dropped and the rest read row by row.

    Example:
        >>> layout = auto_layout((2, 65, 16), (32, 32))
        >>> layout(torch.rand(2, 65, 16)).shape
        torch.Size([2, 16, 8, 8])
        >>> auto_layout((2, 8, 8, 16), (32, 32))(torch.rand(2, 8, 8, 16)).shape
        torch.Size([2, 16, 8, 8])
    """
    if len(shape) == 4:
        last = _is_grid_of((shape[1], shape[2]), image_size) and not _is_grid_of((shape[2], shape[3]), image_size)
        return channels_last if last else _as_is
    if len(shape) == 3:
        found = find_token_grid(shape[0] if sequence_first else shape[1], image_size)
        if found is not None:
            prefix, height, width = found
            return functools.partial(_from_tokens, prefix=prefix, grid=(height, width), sequence_first=sequence_first)
    return None


def _as_is(activation: Tensor) -> Tensor:
    return activation


def _from_tokens(tokens: Tensor, *, prefix: int, grid: tuple[int, int], sequence_first: bool) -> Tensor:
    if sequence_first:
        tokens = tokens.transpose(0, 1)
    count, _, channels = tokens.shape
    return tokens[:, prefix:].reshape(count, grid[0], grid[1], channels).permute(0, 3, 1, 2)


def is_sequence_first(model: nn.Module, layer: nn.Module, shape: tuple[int, ...], batch: int) -> bool:
    """Whether a 3-D output of ``layer`` is ``[S, N, C]`` rather than ``[N, S, C]``.

    The shape decides when only one of its first two sizes equals the batch size ``batch``;
    otherwise the nearest ``nn.MultiheadAttention`` in or around ``layer`` does (its
    ``batch_first``); without one, batch first.
    """
    if len(shape) == 3 and (shape[0] == batch) != (shape[1] == batch):
        return shape[1] == batch
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    module: nn.Module | None = layer
    while module is not None:
        attention = next((m for m in module.modules() if isinstance(m, nn.MultiheadAttention)), None)
        if attention is not None:
            return not attention.batch_first
        module = parents.get(module)
    return False


def resolve_layout(
    activation: Tensor, *, reshape: Reshape, image_size: tuple[int, int], batch: int, sequence_first: bool, name: str
) -> Layout:
    """The function that turns ``activation`` (and its gradient) into ``[N, C, h, w]``, or a clear error.

    Args:
        activation: the layer's output.
        reshape: ``"auto"``, ``None`` or a callable (see :func:`check_reshape`).
        image_size: ``(H, W)`` of the explained images.
        batch: how many images were explained (``N``).
        sequence_first: whether a 3-D output is ``[S, N, C]`` (see :func:`is_sequence_first`).
        name: the layer's class name, for messages.
    """
    if reshape is not None and reshape != "auto":
        return functools.partial(_checked_reshape, reshape=reshape, batch=batch)
    shape = tuple(activation.shape)
    if reshape is None:
        if len(shape) == 4:
            return _as_is
        raise ValueError(
            f"`layer` ({name}) must produce a 4-D output [N, C, h, w] for Grad-CAM with `reshape=None`, "
            f"got {list(shape)}; pass `reshape='auto'` or a callable that returns [N, C, h, w]."
        )
    if len(shape) in (3, 4) and batch_size_of(shape, sequence_first=sequence_first) != batch:
        raise ValueError(
            f"`layer` ({name}) gives an output of shape {list(shape)} without one entry per image (N = {batch}) in its "
            f"{'second' if sequence_first else 'first'} dimension (e.g. attention over windows); "
            "choose another `layer=` or pass `reshape=` a callable that returns [N, C, h, w]."
        )
    layout = auto_layout(shape, image_size, sequence_first=sequence_first)
    if layout is not None:
        return layout
    raise ValueError(_unresolved_message(name, shape, image_size))


def batch_size_of(shape: tuple[int, ...], *, sequence_first: bool) -> int:
    """The batch size of an output of ``shape``: its second size for sequence-first tokens, else its first.

    Example:
        >>> batch_size_of((65, 2, 16), sequence_first=True), batch_size_of((2, 65, 16), sequence_first=False)
        (2, 2)
    """
    return shape[1] if sequence_first and len(shape) == 3 else shape[0]


def _unresolved_message(name: str, shape: tuple[int, ...], image_size: tuple[int, int]) -> str:
    size = f"{image_size[0]}x{image_size[1]}"
    if len(shape) == 3:
        return (
            f"`layer` ({name}) gives tokens {list(shape)} that Grad-CAM cannot lay out on a patch grid "
            f"of the {size} images (0, 1 or 2 prefix tokens plus h*w patches); "
            "pass `reshape=` a callable that returns [N, C, h, w] (e.g. TokenGrid(h, w, prefix_tokens=1)) "
            "or choose another `layer=`."
        )
    return (
        f"`layer` ({name}) must produce a 4-D output [N, C, h, w], tokens [N, S, C] or a channels-last map "
        f"[N, h, w, C] for Grad-CAM, got {list(shape)}; choose another `layer=` or pass `reshape=` a callable "
        "that returns [N, C, h, w]."
    )


def _checked_reshape(activation: Tensor, *, reshape: Callable[[Tensor], Tensor], batch: int) -> Tensor:
    grid = reshape(activation)
    if not isinstance(grid, Tensor) or grid.ndim != 4 or grid.shape[0] != batch:
        shape = list(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(f"`reshape` must return [N, C, h, w] with N = {batch} images, got {shape}.")
    return grid
