"""Attribution methods as small frozen settings objects that the monitor runs.

Each object owns its settings and delegates the maths to :mod:`lightning_xai.functional`
(the torchvision ``transforms.v2`` split: the class holds configuration, the function computes).
They are immutable, hashable by value, and pickle.

Example:
    >>> from lightning_xai import Occlusion, GradCAM
    >>> Occlusion(window=8, stride=4).name, GradCAM().name
    ('occlusion', 'grad_cam')
"""

from lightning_xai import functional as F
from lightning_xai.methods.base import AttributionMethod, MethodContext
from lightning_xai.methods.cam import GradCAM, GuidedGradCAM
from lightning_xai.methods.captum import CaptumMethod
from lightning_xai.methods.gradients import (
    DeconvNet,
    ExpectedGradients,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from lightning_xai.methods.perturbation import Mask, Occlusion

__all__ = [
    "AttributionMethod",
    "CaptumMethod",
    "DeconvNet",
    "ExpectedGradients",
    "F",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "Mask",
    "MethodContext",
    "Occlusion",
    "Saliency",
    "SmoothGrad",
    "default_methods",
]


def default_methods() -> list[AttributionMethod]:
    """The monitor's methods when none are given: Grad-CAM, occlusion and expected gradients."""
    return [GradCAM(), Occlusion(), ExpectedGradients()]
