"""lightning_xai: watch what your image model looks at while it trains.

Example:
    >>> from lightning_xai import AttributionMonitor, ExpectedGradients, GradCAM, Occlusion
    >>> monitor = AttributionMonitor([GradCAM(), Occlusion(), ExpectedGradients(n_samples=16)])
"""

from lightning_xai import functional
from lightning_xai.callback import AttributionMonitor
from lightning_xai.faithfulness import Faithfulness
from lightning_xai.methods import (
    AttributionMethod,
    CaptumMethod,
    DeconvNet,
    ExpectedGradients,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Mask,
    Occlusion,
    Saliency,
    SmoothGrad,
)
from lightning_xai.robustness import RobustnessCheck
from lightning_xai.sanity import SanityCheck
from lightning_xai.shortcuts import Finding, Shortcuts
from lightning_xai.stability import Stability

__version__ = "0.1.0"

__all__ = [
    "AttributionMethod",
    "AttributionMonitor",
    "CaptumMethod",
    "DeconvNet",
    "ExpectedGradients",
    "Faithfulness",
    "Finding",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "Mask",
    "Occlusion",
    "RobustnessCheck",
    "Saliency",
    "SanityCheck",
    "Shortcuts",
    "SmoothGrad",
    "Stability",
    "__version__",
    "functional",
]
