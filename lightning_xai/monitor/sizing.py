"""Default work sized to the probe images: pure decisions from the image size, and their cost in passes.

A default run (16 probes; occlusion with a window of an eighth of the image, 15 x 15
placements; 32 expected-gradients samples) costs about 5,200 forward-equivalents whatever the
image size, but one forward pass of a convolutional net costs in proportion to the pixels: the
same run takes seconds at 64 x 64 and many minutes at 512 x 512. So every setting left to the
monitor shrinks with the image's side ``s = sqrt(H * W)`` by one factor,

    ``scale = min(1, (64 / s) ** 0.75)``,

applied to the number of probes and to the expected-gradients samples, and (as a square root)
to the occlusion placements per axis. The work of a run then falls as ``s ** -1.5`` while a pass
costs ``s ** 2``: a run's wall time grows only as ``sqrt(s)`` (about 2.8x from 64 x 64 to
512 x 512 instead of 64x). Up to 64 x 64 nothing changes. Floors keep very large images useful:
at least 2 probes, 4 samples and 5 x 5 placements.

Only what the user left unset is sized (``num_probes=None``, ``Occlusion(window=None)``,
``ExpectedGradients(n_samples=None)``): explicit settings are kept. Every decision is a pure
function of the image size, so every rank (and every shard of the probes) makes the same one.
Maps are stored in ``runs/step-*.pt`` at most ``STORED_MAX_SIDE`` pixels per side (the mean
over blocks of pixels); TensorBoard tiles stay capped at 192 px by
:mod:`~lightning_xai.monitor.images`.

Example:
    >>> choose_sizing((3, 512, 512), {}, num_probes=None).to_dict()["num_probes"]
    3
    >>> occlusion_window((64, 64)), occlusion_window((512, 512)), expected_gradients_samples((512, 512))
    ((8, 8), (128, 128), 7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.batching import FORWARD_BACKWARD_COST
from lightning_xai.functional.occlusion import window_counts

__all__ = [
    "REFERENCE_SIDE",
    "STORED_MAX_SIDE",
    "PassCount",
    "Sizing",
    "choose_sizing",
    "default_num_probes",
    "downsample_map",
    "expected_gradients_samples",
    "method_passes",
    "occlusion_grid",
    "occlusion_stride",
    "occlusion_window",
    "stored_map_size",
    "work_scale",
]

REFERENCE_SIDE = 64
"""Images with ``sqrt(H * W)`` up to this many pixels get the full default work."""
EXPONENT = 0.75
"""How fast the work shrinks with the side: ``scale = (REFERENCE_SIDE / side) ** EXPONENT``."""
FULL_PROBES, MIN_PROBES = 16, 2
FULL_SAMPLES, MIN_SAMPLES = 32, 4
FULL_GRID, MIN_GRID = 15, 5
STORED_MAX_SIDE = 128
"""Longest side of the maps stored in ``runs/step-*.pt``; larger maps are averaged down to it."""

Size = tuple[int, int]


def _round(value: float) -> int:
    """Rounds halves up (Python's ``round`` rounds them to even)."""
    return math.floor(value + 0.5)


def work_scale(size: Size) -> float:
    """The factor by which default work shrinks for images of ``size`` ``(H, W)``: 1 up to 64 x 64.

    Example:
        >>> work_scale((32, 32)), round(work_scale((224, 224)), 3), round(work_scale((512, 512)), 3)
        (1.0, 0.391, 0.21)
    """
    side = math.sqrt(size[0] * size[1])
    return min(1.0, (REFERENCE_SIDE / side) ** EXPONENT)


def default_num_probes(size: Size) -> int:
    """How many probes to pick when ``num_probes`` is not given: 16, fewer for large images (at least 2).

    Example:
        >>> [default_num_probes((s, s)) for s in (32, 64, 128, 224, 512, 1024)]
        [16, 16, 10, 6, 3, 2]
    """
    return max(MIN_PROBES, _round(FULL_PROBES * work_scale(size)))


def expected_gradients_samples(size: Size) -> int:
    """Expected-gradients draws per probe when ``n_samples`` is not given: 32, fewer for large images (at least 4).

    Example:
        >>> [expected_gradients_samples((s, s)) for s in (32, 64, 128, 224, 512, 1024)]
        [32, 32, 19, 13, 7, 4]
    """
    return max(MIN_SAMPLES, _round(FULL_SAMPLES * work_scale(size)))


def occlusion_grid(size: Size) -> int:
    """Occlusion placements aimed at along each axis: 15, fewer for large images (at least 5).

    Example:
        >>> [occlusion_grid((s, s)) for s in (32, 64, 128, 224, 512, 1024)]
        [15, 15, 12, 9, 7, 5]
    """
    return max(MIN_GRID, _round(FULL_GRID * math.sqrt(work_scale(size))))


def occlusion_window(size: Size) -> Size:
    """The square occlusion window for images of ``size`` when ``window`` is not given.

    With the stride half the window, ``g`` placements per axis need a window of ``2 / (g + 1)``
    of the shorter side (rounded up, at least 2): an eighth of it up to 64 x 64 (15 placements).

    Example:
        >>> occlusion_window((32, 32)), occlusion_window((224, 224)), occlusion_window((48, 96))
        ((4, 4), (45, 45), (6, 6))
    """
    side = max(2, math.ceil(2 * min(size) / (occlusion_grid(size) + 1)))
    return side, side


def occlusion_stride(window: Size) -> Size:
    """Half the window, rounded up: the stride when ``stride`` is not given (as ``functional.occlusion``).

    Example:
        >>> occlusion_stride((8, 8)), occlusion_stride((45, 3))
        ((4, 4), (23, 2))
    """
    return (window[0] + 1) // 2, (window[1] + 1) // 2


def stored_map_size(size: Size, *, max_side: int = STORED_MAX_SIDE) -> Size:
    """The size maps of ``size`` are stored at: unchanged up to ``max_side``, else the longer side ``max_side``.

    Example:
        >>> stored_map_size((64, 64)), stored_map_size((512, 512)), stored_map_size((224, 448))
        ((64, 64), (128, 128), (64, 128))
    """
    longer = max(size)
    if longer <= max_side:
        return size
    return max(1, _round(size[0] * max_side / longer)), max(1, _round(size[1] * max_side / longer))


def downsample_map(maps: Tensor, *, max_side: int = STORED_MAX_SIDE) -> Tensor:
    """Maps ``[P, C, H, W]`` averaged over blocks of pixels down to :func:`stored_map_size` (unchanged when small).

    Example:
        >>> downsample_map(torch.ones(2, 3, 512, 256)).shape, downsample_map(torch.ones(1, 1, 8, 8)).shape
        (torch.Size([2, 3, 128, 64]), torch.Size([1, 1, 8, 8]))
    """
    size = stored_map_size((int(maps.shape[-2]), int(maps.shape[-1])), max_side=max_side)
    if size == tuple(maps.shape[-2:]):
        return maps
    return torch.nn.functional.adaptive_avg_pool2d(maps.float(), size)


@dataclass(frozen=True)
class PassCount:
    """Images through the model: ``forward`` passes and ``forward_backward`` passes.

    Example:
        >>> (PassCount(10, 2) + PassCount(1, 0)).forward_equivalents
        17.0
    """

    forward: int = 0
    forward_backward: int = 0

    def __add__(self, other: PassCount) -> PassCount:
        return PassCount(self.forward + other.forward, self.forward_backward + other.forward_backward)

    def times(self, count: int) -> PassCount:
        """The passes of ``count`` probes."""
        return PassCount(self.forward * count, self.forward_backward * count)

    @property
    def forward_equivalents(self) -> float:
        """``forward + FORWARD_BACKWARD_COST * forward_backward``."""
        return self.forward + FORWARD_BACKWARD_COST * self.forward_backward


_ONE_BACKWARD = ("grad_cam", "saliency", "guided_backprop", "deconvnet")


def method_passes(method: Any, size: Size) -> PassCount | None:
    """The passes one probe costs ``method`` on images of ``size``, or ``None`` when unknown (Captum's methods, your own).

    Example:
        >>> from lightning_xai import ExpectedGradients, GradCAM, Occlusion
        >>> method_passes(Occlusion(), (64, 64)), method_passes(ExpectedGradients(), (64, 64))
        (PassCount(forward=226, forward_backward=0), PassCount(forward=0, forward_backward=32))
        >>> method_passes(GradCAM(), (64, 64))
        PassCount(forward=0, forward_backward=1)
    """
    name = getattr(method, "name", None)
    if name == "occlusion":
        window = method.window_for(size)
        stride = occlusion_stride(window) if method.stride is None else _pair(method.stride)
        rows, cols = window_counts(size, window, stride)
        return PassCount(forward=rows * cols + 1)  # every placement, and the unperturbed image
    if name == "expected_gradients":
        return PassCount(forward_backward=method.samples_for(size))
    if name in ("smooth_grad", "integrated_gradients"):
        return PassCount(forward_backward=getattr(method, "n_samples", None) or method.n_steps)
    if name in _ONE_BACKWARD:
        return PassCount(forward_backward=1)
    if name == "guided_grad_cam":
        return PassCount(forward_backward=2)
    if name == "mask":
        return PassCount(forward_backward=method.steps * len(method.areas))
    return None


def _pair(value: int | tuple[int, int]) -> Size:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class Sizing:
    """What was chosen for images of one size, and what a run of it costs.

    Attributes:
        image_size: the probes' ``(C, H, W)``.
        num_probes: the probes explained per run.
        probes_auto: whether ``num_probes`` was chosen here (else given, or the probes were).
        methods: per method key, the settings chosen here (``window``, ``stride``, ``placements``,
            ``n_samples``); methods with nothing left to choose are absent.
        stored_size: ``(h, w)`` of the maps in ``runs/step-*.pt``.
        passes: per method key (and ``"predictions"``), the passes of one run; ``None`` when unknown.
    """

    image_size: tuple[int, int, int]
    num_probes: int
    probes_auto: bool
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored_size: Size = (0, 0)
    passes: dict[str, PassCount | None] = field(default_factory=dict)

    @property
    def total(self) -> PassCount:
        """All known passes of one run."""
        total = PassCount()
        for count in self.passes.values():
            total = total + count if count is not None else total
        return total

    @property
    def reduced(self) -> bool:
        """Whether anything chosen here is smaller than at 64 x 64 (then it is said once)."""
        return work_scale(self.image_size[1:]) < 1.0 and (
            self.probes_auto or bool(self.methods) or self.stored_size != self.image_size[1:]
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``sizing`` section of ``summary.json`` (plain values)."""
        known = {key: count for key, count in self.passes.items() if count is not None}
        return {
            "image_size": list(self.image_size),
            "scale": round(work_scale(self.image_size[1:]), 4),
            "num_probes": self.num_probes,
            "num_probes_auto": self.probes_auto,
            "methods": {key: dict(values) for key, values in self.methods.items()},
            "stored_map_size": list(self.stored_size),
            "passes": {key: [count.forward, count.forward_backward] for key, count in known.items()},
            "forward_equivalents": self.total.forward_equivalents,
            "unknown_cost": sorted(key for key, count in self.passes.items() if count is None),
        }


def _chosen_settings(method: Any, size: Size) -> dict[str, Any]:
    """The settings of ``method`` left to the monitor, as chosen for ``size``."""
    name = getattr(method, "name", None)
    if name == "occlusion" and method.window is None:
        window = method.window_for(size)
        stride = occlusion_stride(window) if method.stride is None else _pair(method.stride)
        return {"window": list(window), "stride": list(stride), "placements": list(window_counts(size, window, stride))}
    if name == "expected_gradients" and method.n_samples is None:
        return {"n_samples": method.samples_for(size)}
    return {}


def choose_sizing(
    image_size: tuple[int, ...],
    methods: Mapping[str, Any],
    *,
    num_probes: int | None,
    probes_auto: bool | None = None,
    max_side: int = STORED_MAX_SIDE,
) -> Sizing:
    """Every default sized for probes of ``image_size`` ``(C, H, W)``, with the passes a run costs.

    Args:
        image_size: the probes' ``(C, H, W)`` (a longer shape: its last three).
        methods: the monitor's methods by key.
        num_probes: the probes explained per run, or ``None`` for :func:`default_num_probes`.
        probes_auto: whether the monitor chose ``num_probes`` (default: when it is ``None``).
        max_side: longest side of the stored maps.

    Example:
        >>> from lightning_xai import GradCAM, Occlusion
        >>> sizing = choose_sizing((3, 224, 224), {"grad_cam": GradCAM(), "occlusion": Occlusion()}, num_probes=None)
        >>> sizing.num_probes, sizing.methods, sizing.stored_size, sizing.total
        (6, {'occlusion': {'window': [45, 45], 'stride': [23, 23], 'placements': [9, 9]}}, (128, 128), PassCount(forward=498, forward_backward=6))
    """
    channels, height, width = (int(side) for side in image_size[-3:])
    size = (height, width)
    probes = default_num_probes(size) if num_probes is None else int(num_probes)
    chosen = {key: settings for key, method in methods.items() if (settings := _chosen_settings(method, size))}
    passes: dict[str, PassCount | None] = {"predictions": PassCount(forward=probes)}
    for key, method in methods.items():
        per_probe = method_passes(method, size)
        passes[key] = per_probe.times(probes) if per_probe is not None else None
    return Sizing(
        image_size=(channels, height, width),
        num_probes=probes,
        probes_auto=num_probes is None if probes_auto is None else probes_auto,
        methods=chosen,
        stored_size=stored_map_size(size, max_side=max_side),
        passes=passes,
    )
