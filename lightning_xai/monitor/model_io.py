"""The one path from images to the model, and the model's predictions on the probes.

Every forward pass the monitor makes (probe checks, maps, analyses, sanity checks) gets its
images through :func:`model_inputs`: on the model's device, in its weights' floating dtype,
then through the precision plugin's ``convert_input`` (``bf16-true``/``16-true``). Images of
any floating dtype (NumPy's float64, half precision) and any device are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_score_shape

__all__ = ["InputConverter", "Predictions", "model_inputs", "module_device", "predict", "weights_dtype"]

InputConverter = Callable[[Tensor], Tensor]


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for an empty module).

    Example:
        >>> module_device(nn.Linear(1, 1))
        device(type='cpu')
    """
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def weights_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (float32 without one)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def model_inputs(model: nn.Module, images: Tensor, convert_input: InputConverter | None = None) -> Tensor:
    """``images`` ``[N, C, H, W]`` as the model takes them: its device, its weights' dtype, the precision plugin's conversion.

    Example:
        >>> model_inputs(nn.Linear(2, 2), torch.zeros(1, 1, 1, 2, dtype=torch.float64)).dtype
        torch.float32
    """
    if not images.is_floating_point():
        raise TypeError(
            f"images for the model must be floating point, got dtype {images.dtype}; pass `preprocess=` to convert them."
        )
    converted = images.to(device=module_device(model), dtype=weights_dtype(model))
    return convert_input(converted) if convert_input is not None else converted


@dataclass
class Predictions:
    """The model's answers on the probes of one run (CPU tensors).

    Attributes:
        scores: ``[P, K]`` float32 class scores.
        predicted: ``[P]`` argmax classes.
        probability: ``[P]`` softmax probability of the predicted class.
        targets: ``[P]`` classes the maps explain: the labels when known, else ``predicted``.
        target_probability, target_score: ``[P]`` of the target class.
        correct: ``BoolTensor[P]`` (prediction equals label), or ``None`` without labels.
        finite: ``BoolTensor[P]``: probes whose scores are all finite; the others are not explained this run.
    """

    scores: Tensor
    predicted: Tensor
    probability: Tensor
    targets: Tensor
    target_probability: Tensor
    target_score: Tensor
    correct: Tensor | None
    finite: Tensor

    @property
    def skipped_probes(self) -> list[int]:
        """Indices of probes with non-finite scores."""
        return (~self.finite).nonzero().flatten().tolist()


def predict(model: nn.Module, images: Tensor, labels: Tensor | None) -> Predictions:
    """Runs the probes through ``model`` once (no gradients) and reads its answers.

    Args:
        model: the module to explain, in the monitor's conditions.
        images: model inputs ``[P, C, H, W]`` (see :func:`model_inputs`).
        labels: ``LongTensor[P]`` or ``None``.

    Example:
        >>> out = predict(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.ones(2, 1, 2, 2), None)
        >>> out.targets.shape, out.finite.tolist()
        (torch.Size([2]), [True, True])
    """
    with torch.no_grad():
        raw = model(images)
    scores = check_score_shape(raw, images.shape[0], what=f"{type(model).__name__}.forward on the probes")
    scores = scores.detach().float().cpu()
    finite = torch.isfinite(scores).all(dim=1)
    safe = torch.where(finite.view(-1, 1), scores, torch.zeros_like(scores))
    probabilities = torch.softmax(safe, dim=1)
    probability, predicted = probabilities.max(dim=1)
    targets = labels.cpu().long() if labels is not None else predicted
    return Predictions(
        scores=scores,
        predicted=predicted,
        probability=probability,
        targets=targets,
        target_probability=probabilities.gather(1, targets.view(-1, 1)).squeeze(1),
        target_score=safe.gather(1, targets.view(-1, 1)).squeeze(1),
        correct=(predicted == targets) if labels is not None else None,
        finite=finite,
    )
