"""Baselines: what "absence of signal" means for occlusion and path methods.

Two kinds exist. A *constant* baseline gives one reference image per input (occlusion and
integrated gradients use it): a number, a tensor, or a name. A *distribution* of baselines
is sampled from (expected gradients): a reference set of real images, or a named noise model.
The names follow Sturmfels et al., "Visualizing the Impact of Feature Attribution Baselines"
(Distill, 2020).
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CONSTANT_BASELINE_NAMES",
    "ConstantBaseline",
    "ConstantBaselineName",
    "INPAINT_BASELINE_NAMES",
    "INPAINT_INSTALL",
    "InpaintName",
    "OcclusionBaseline",
    "SAMPLED_BASELINE_NAMES",
    "SampledBaselineName",
    "ValueRange",
    "channel_range",
    "check_reference_set",
    "constant_baseline",
    "default_blur_sigma",
    "gaussian_blur",
    "import_cv2",
    "inpaint",
    "noise_baselines_from",
]

ConstantBaselineName = Literal["zero", "mean", "blur", "max_distance"]
InpaintName = Literal["inpaint", "inpaint_ns"]
SampledBaselineName = Literal["uniform", "gaussian", "blur"]
ConstantBaseline = float | Tensor | ConstantBaselineName
ValueRange = tuple[float, float] | None

CONSTANT_BASELINE_NAMES: tuple[str, ...] = get_args(ConstantBaselineName)
SAMPLED_BASELINE_NAMES: tuple[str, ...] = get_args(SampledBaselineName)
INPAINT_BASELINE_NAMES: tuple[str, ...] = get_args(InpaintName)
OcclusionBaseline = ConstantBaseline | InpaintName
INPAINT_INSTALL = 'pip install "lightning-xai[inpaint]"'


def default_blur_sigma(inputs: Tensor) -> float:
    """Blur strength used by the ``"blur"`` baselines: a tenth of the longer image side.

    Example:
        >>> default_blur_sigma(torch.zeros(1, 3, 32, 20))
        3.2
    """
    return max(inputs.shape[-2:]) / 10.0


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Blurs every channel of ``images`` with a Gaussian of standard deviation ``sigma`` pixels.

    Edges are padded by replication, so a constant image stays constant.

    Args:
        images: ``[N, C, H, W]``.
        sigma: standard deviation in pixels, > 0.

    Returns:
        ``[N, C, H, W]``, the same dtype and device.

    Example:
        >>> flat = torch.full((1, 3, 8, 8), 0.5)
        >>> torch.allclose(gaussian_blur(flat, 2.0), flat)
        True
    """
    if not sigma > 0:
        raise ValueError(f"`sigma` must be a positive number of pixels, got {sigma!r}.")
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def channel_range(inputs: Tensor, value_range: ValueRange) -> tuple[Tensor, Tensor]:
    """Lowest and highest valid pixel value, each ``[1, C, 1, 1]`` (or broadcastable scalars).

    ``value_range=None`` takes each channel's minimum and maximum over the batch, which suits
    normalised images whose channels have different ranges.

    Example:
        >>> low, high = channel_range(torch.tensor([[[[0.0, 2.0]]]]), None)
        >>> low.flatten().tolist(), high.flatten().tolist()
        ([0.0], [2.0])
    """
    if value_range is None:
        return inputs.amin(dim=(0, 2, 3), keepdim=True), inputs.amax(dim=(0, 2, 3), keepdim=True)
    if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2 and value_range[0] < value_range[1]):
        raise ValueError(f"`value_range` must be None or a pair (low, high) with low < high, got {value_range!r}.")
    low = torch.tensor(float(value_range[0]), dtype=inputs.dtype, device=inputs.device)
    high = torch.tensor(float(value_range[1]), dtype=inputs.dtype, device=inputs.device)
    return low, high


def constant_baseline(
    baseline: ConstantBaseline,
    inputs: Tensor,
    *,
    value_range: ValueRange = None,
    blur_sigma: float | None = None,
) -> Tensor:
    """Builds one reference image per input, broadcastable to ``inputs`` ``[N, C, H, W]``.

    Args:
        baseline: a number; a tensor ``[C]`` (one value per channel), ``[C, H, W]`` or
            ``[N, C, H, W]``; or a name: ``"zero"`` (all zeros, black for images in [0, 1]),
            ``"mean"`` (each image's own channel means: the "average colour"),
            ``"blur"`` (a Gaussian-blurred copy of each image: "stay near the data"),
            ``"max_distance"`` (per pixel, the end of the valid range farthest from the input).
        inputs: the images ``[N, C, H, W]``.
        value_range: valid pixel range for ``"max_distance"``; ``None`` uses each channel's
            minimum and maximum over ``inputs``.
        blur_sigma: blur strength in pixels for ``"blur"``; ``None`` uses a tenth of the longer side.

    Returns:
        A tensor of ``inputs``' dtype and device, broadcastable to ``[N, C, H, W]``.

    Example:
        >>> images = torch.arange(8.0).view(2, 1, 2, 2)
        >>> constant_baseline("mean", images).flatten().tolist()
        [1.5, 5.5]
        >>> constant_baseline(torch.tensor([0.5]), images).shape
        torch.Size([1, 1, 1, 1])
    """
    if isinstance(baseline, str):
        return _named_constant_baseline(baseline, inputs, value_range, blur_sigma)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.tensor(float(baseline), dtype=inputs.dtype, device=inputs.device)
    if isinstance(baseline, Tensor):
        return _tensor_baseline(baseline, inputs)
    raise TypeError(
        f"`baseline` must be a number, a tensor or one of {list(CONSTANT_BASELINE_NAMES)}, "
        f"got {type(baseline).__name__}."
    )


def _named_constant_baseline(name: str, inputs: Tensor, value_range: ValueRange, blur_sigma: float | None) -> Tensor:
    if name == "zero":
        return torch.zeros((), dtype=inputs.dtype, device=inputs.device)
    if name == "mean":
        return inputs.mean(dim=(2, 3), keepdim=True)
    if name == "blur":
        return gaussian_blur(inputs, blur_sigma if blur_sigma is not None else default_blur_sigma(inputs))
    if name == "max_distance":
        low, high = channel_range(inputs, value_range)
        return torch.where(inputs > (low + high) / 2, low, high).expand_as(inputs)
    raise ValueError(f"`baseline` must be a number, a tensor or one of {list(CONSTANT_BASELINE_NAMES)}, got {name!r}.")


def _tensor_baseline(baseline: Tensor, inputs: Tensor) -> Tensor:
    n, c, h, w = inputs.shape
    baseline = baseline.detach().to(dtype=inputs.dtype, device=inputs.device)
    allowed = "[], [C], [C, H, W] or [N, C, H, W]"
    if baseline.ndim == 0:
        return baseline
    if baseline.ndim == 1 and baseline.shape[0] == c:
        return baseline.view(1, c, 1, 1)
    if baseline.ndim == 3 and tuple(baseline.shape) == (c, h, w):
        return baseline.unsqueeze(0)
    if baseline.ndim == 4 and tuple(baseline.shape[1:]) == (c, h, w) and baseline.shape[0] in (1, n):
        return baseline
    raise ValueError(
        f"`baseline` tensor must have shape {allowed} = [], [{c}], [{c}, {h}, {w}] or [{n}, {c}, {h}, {w}] "
        f"for inputs of shape {list(inputs.shape)}, got {list(baseline.shape)}."
    )


def check_reference_set(references: Tensor, inputs: Tensor) -> Tensor:
    """Checks a reference set of baseline images ``[M, C, H, W]`` against ``inputs``.

    Example:
        >>> check_reference_set(torch.zeros(5, 1, 4, 4), torch.ones(2, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """
    if references.ndim != 4 or tuple(references.shape[1:]) != tuple(inputs.shape[1:]) or references.shape[0] < 1:
        raise ValueError(
            f"`baselines` tensor must be a reference set [M, C, H, W] = [M, {', '.join(map(str, inputs.shape[1:]))}] "
            f"with M >= 1, got shape {list(references.shape)}."
        )
    return references.detach().to(dtype=inputs.dtype, device=inputs.device)


def noise_baselines_from(
    name: str, images: Tensor, unit: Tensor, *, low: Tensor, high: Tensor, sigma: float | Tensor
) -> Tensor:
    """Baselines from pre-drawn standard noise ``unit`` (``U(0, 1)`` for ``"uniform"``, ``N(0, 1)`` for ``"gaussian"``).

    Example:
        >>> noise_baselines_from("uniform", torch.zeros(1, 1, 1, 2), torch.tensor([[[[0.0, 0.5]]]]),
        ...                      low=torch.tensor(2.0), high=torch.tensor(4.0), sigma=1.0)
        tensor([[[[2., 3.]]]])
    """
    unit = unit.to(images.device)
    if name == "uniform":
        return low + unit * (high - low)
    if name == "gaussian":
        return images + sigma * unit
    raise ValueError(
        f"`baselines` must be a reference tensor [M, C, H, W] or one of {list(SAMPLED_BASELINE_NAMES)}, got {name!r}."
    )


def import_cv2() -> ModuleType:
    """OpenCV (``cv2``), the optional dependency of the inpainting baselines.

    Raises:
        ImportError: naming the extra to install when OpenCV is missing.
    """
    try:
        return importlib.import_module("cv2")
    except ImportError as error:
        raise ImportError(
            f"The inpainting baselines ('inpaint', 'inpaint_ns') need OpenCV; install it with {INPAINT_INSTALL} "
            "(opencv-python-headless)."
        ) from error


def inpaint(images: Tensor, masks: Tensor, *, method: Literal["telea", "ns"] = "telea", radius: float = 3.0) -> Tensor:
    """Fills the masked pixels of each image by OpenCV inpainting, channel by channel.

    Telea's fast marching method (default) or Navier-Stokes (``"ns"``) propagate the
    surrounding pixels into the hole, so an occluded patch stays close to the image's own
    content ("remove the object, keep the scene"). Pixels outside the mask are unchanged.
    Each channel of each image is mapped to 8 bits over its own min..max range and inpainted
    as an 8-bit image (OpenCV's float32 Telea path returns values far outside the surroundings),
    so filled values are quantized to 1/255 of that range. Runs on the CPU (images on a GPU are
    copied there and back).

    Args:
        images: ``[B, C, H, W]``.
        masks: ``[B, 1, H, W]`` bool, True where pixels are to be filled.
        method: ``"telea"`` or ``"ns"``.
        radius: neighbourhood radius in pixels that each filled pixel is drawn from.

    Returns:
        ``[B, C, H, W]``, the dtype and device of ``images``.

    Example:
        >>> images = torch.ones(1, 1, 6, 6)
        >>> masks = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
        >>> masks[..., 2:4, 2:4] = True
        >>> torch.allclose(inpaint(images * masks.logical_not(), masks), torch.ones(1, 1, 6, 6))
        True
    """
    cv2 = import_cv2()
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    pixels = images.detach().float()
    low = pixels.amin(dim=(2, 3), keepdim=True)
    scale = (pixels.amax(dim=(2, 3), keepdim=True) - low).clamp(min=1e-12)
    levels = ((pixels - low) / scale * 255).round().to("cpu", torch.uint8).numpy()
    holes = masks.detach().to("cpu", torch.uint8).numpy()
    filled = levels.copy()
    for index in range(levels.shape[0]):
        if holes[index, 0].any():
            for channel in range(levels.shape[1]):
                filled[index, channel] = cv2.inpaint(levels[index, channel], holes[index, 0], float(radius), flag)
    result = torch.from_numpy(filled).to(pixels.device).float() / 255 * scale + low
    return torch.where(masks, result.to(images.dtype), images)
