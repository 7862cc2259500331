"""Pure-torch attribution functions: tensor in, tensor out.

Every function takes an image batch ``Tensor[N, C, H, W]`` and a ``target`` (an int, N ints,
or ``None`` for the model's top class), works under ``torch.no_grad()`` and
``torch.inference_mode()``, and leaves parameter gradients, module modes, hooks, buffers, the
inputs and the global RNG as they were.
"""

from lightning_xai.functional.adaptive_occlusion import adaptive_occlusion
from lightning_xai.functional.baselines import constant_baseline, gaussian_blur
from lightning_xai.functional.batching import BatchSizeTuner
from lightning_xai.functional.display import display_map
from lightning_xai.functional.expected_gradients import expected_gradients
from lightning_xai.functional.grad_cam import find_grad_cam_layer, grad_cam
from lightning_xai.functional.gradients import input_gradients, saliency, smooth_grad
from lightning_xai.functional.guided import deconvnet, guided_backprop, guided_grad_cam
from lightning_xai.functional.integrated_gradients import completeness_gap, integrated_gradients
from lightning_xai.functional.masks import ExtremalMasks, extremal_mask
from lightning_xai.functional.occlusion import occlusion
from lightning_xai.functional.robustness import Fragility, InputInvariance, fragility, input_invariance
from lightning_xai.functional.tuning import measure_batch_size

__all__ = [
    "BatchSizeTuner",
    "ExtremalMasks",
    "Fragility",
    "InputInvariance",
    "adaptive_occlusion",
    "completeness_gap",
    "constant_baseline",
    "deconvnet",
    "display_map",
    "expected_gradients",
    "extremal_mask",
    "find_grad_cam_layer",
    "fragility",
    "gaussian_blur",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "input_gradients",
    "input_invariance",
    "integrated_gradients",
    "measure_batch_size",
    "occlusion",
    "saliency",
    "smooth_grad",
]
