"""The one path from images to the model, and the model's predictions on the probes.

Every forward pass the monitor makes (probe checks, maps, analyses, sanity checks) gets its
images through :func:`model_inputs`: on the model's device, in its weights' floating dtype,
then through the precision plugin's ``convert_input`` (``bf16-true``/``16-true``). Images of
any floating dtype (NumPy's float64, half precision) and any device are accepted.

And every one of them calls the model through :meth:`Scoring.model`: the module itself for a
plain classifier, else a :class:`MonitorModel` that applies the monitor's ``forward=``,
``output=``, ``task=`` and ``target=`` and returns score columns ``[N, K']`` (see
:func:`lightning_xai.targets.score_columns`), so ``functional/`` and ``methods`` keep taking
``forward_fn(images) -> [N, K]``. :func:`prepare_probes` resolves ``task="auto"`` on the probes
and fixes what each probe row explains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lightning_xai.functional._checks import check_score_shape
from lightning_xai.monitor import messages
from lightning_xai.monitor.conditions import attribution_conditions
from lightning_xai.outputs import Forward, Output, select_scores
from lightning_xai.probes import ProbeSet
from lightning_xai.targets import ScoreModel, Task, infer_task, probabilities, probe_targets, score_columns, supports

__all__ = [
    "InputConverter",
    "MonitorModel",
    "MultilabelTargets",
    "Predictions",
    "Scoring",
    "TaskOption",
    "check_scoring",
    "check_task_support",
    "model_inputs",
    "module_device",
    "predict",
    "prepare_probes",
    "weights_dtype",
]

InputConverter = Callable[[Tensor], Tensor]
TaskOption = Literal["auto", "multiclass", "multilabel", "binary", "regression", "segmentation"]
MultilabelTargets = Literal["positive", "top"]


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


@dataclass(frozen=True)
class Scoring:
    """How the monitor reads scores out of the model: its ``task=``, ``output=``, ``forward=``, ``target=``, ``multilabel_targets=``.

    Example:
        >>> Scoring().model(nn.Identity()).__class__.__name__, Scoring(task="multilabel").model(nn.Identity()).task
        ('Identity', 'multilabel')
    """

    task: TaskOption = "auto"
    output: Output = None
    forward: Forward | None = None
    target: Callable[[Any], Tensor] | None = None
    multilabel_targets: MultilabelTargets = "positive"

    @property
    def resolved(self) -> Task:
        """The task once known (``"multiclass"`` while still ``"auto"``; ``"regression"`` for a ``target=`` score)."""
        if self.task == "auto":
            return "regression" if self.target is not None else "multiclass"
        return self.task

    def model(self, module: nn.Module) -> nn.Module:
        """``module`` itself for a plain classifier, else a :class:`MonitorModel` giving score columns ``[N, K']``."""
        if self.output is None and self.forward is None and self.target is None and self.resolved == "multiclass":
            return module
        return MonitorModel(module, task=self.resolved, forward=self.forward, output=self.output, target=self.target)

    def selected_outputs(self, module: nn.Module, images: Tensor) -> Tensor:
        """The model's scores tensor (after ``forward=`` and ``output=``), as the model returns it."""
        try:
            outputs = module(images) if self.forward is None else self.forward(module, images)
        except Exception as error:  # the model's own error, re-raised with context
            raise ValueError(
                f"`probes` of shape {list(images.shape)} were rejected by {type(module).__name__}.forward: {error}"
            ) from error
        return select_scores(outputs, output=self.output)


def check_scoring(
    *, task: object, output: object, forward: object, target: object, multilabel_targets: object
) -> Scoring:
    """The monitor's scoring options, checked: each error names the option.

    Example:
        >>> check_scoring(task="auto", output="logits", forward=None, target=None, multilabel_targets="positive").output
        'logits'
    """
    tasks = get_args(TaskOption)
    if task not in tasks:
        raise ValueError(f"`task` must be one of {list(tasks)}, got {task!r}.")
    if output is not None and not callable(output) and (isinstance(output, bool) or not isinstance(output, (str, int))):
        raise TypeError(
            f"`output` must be a dict key (str), a tuple index (int), a callable (outputs -> scores) or None, got {type(output).__name__}."
        )
    for name, value, what in (
        ("forward", forward, "(module, images) -> outputs"),
        ("target", target, "(outputs) -> [N] scores"),
    ):
        if value is not None and not callable(value):
            raise TypeError(f"`{name}` must be a callable {what} or None, got {type(value).__name__}.")
    if multilabel_targets not in get_args(MultilabelTargets):
        raise ValueError(f"`multilabel_targets` must be 'positive' or 'top', got {multilabel_targets!r}.")
    return Scoring(task, output, forward, target, multilabel_targets)  # type: ignore[arg-type]


class MonitorModel(ScoreModel):
    """The model as the monitor's methods see it: ``images -> [N, K']`` score columns of its task.

    Grad-CAM finds (and names) layers in ``explained_module``. :meth:`answers` also gives what
    is shown: probabilities per column (softmax, sigmoids, raw values) and, for segmentation,
    each image's predicted class map.
    """

    def answers(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(columns [N, K'], shown [N, K'], class map [N, H, W] or None)`` for images ``[N, C, H, W]``."""
        module = self.explained_module
        outputs = module(images) if self._forward is None else self._forward(module, images)
        if self._target is not None:
            columns = self(images)
            return columns, columns, None
        raw = select_scores(outputs, output=self._output)
        if self.task != "segmentation" and raw.ndim == 4:
            raise ValueError(_task_mismatch(self.task, raw))
        columns = score_columns(raw, task=self.task, region=self._region)
        regions = raw.argmax(dim=1) if self.task == "segmentation" else None
        return columns, probabilities(raw, task=self.task), regions


def _task_mismatch(task: str, raw: Tensor) -> str:
    return f"`task='{task}'` cannot read outputs of shape {list(raw.shape)}; pass `task='segmentation'` or `target=` (outputs -> [N] scores)."


@dataclass
class Predictions:
    """The model's answers on the probe rows of one run (CPU tensors).

    Attributes:
        scores: ``[P, K']`` float32 score columns.
        predicted: ``[P]`` argmax columns (the top class or label).
        probability: ``[P]`` what is shown for the predicted column: a softmax probability
            (multiclass, binary), a sigmoid (multilabel), a raw value (regression, ``target=``).
        targets: ``[P]`` columns the maps explain: the labels when known, else ``predicted``.
        target_probability, target_score: ``[P]`` of the target column.
        correct: ``BoolTensor[P]`` (prediction equals label; multilabel: the target label's
            sigmoid above 0.5), or ``None`` without labels or for regression and segmentation.
        finite: ``BoolTensor[P]``: probes whose scores are all finite; the others are not explained this run.
        task: the task the scores were read as.
        regions: segmentation: each probe's predicted class map ``[P, H, W]``; else ``None``.
        empty: ``BoolTensor[P]``: segmentation probes whose target class is predicted on no pixel (their score is
            a sum over no pixels: every map would be zeros); they are not explained this run either.
    """

    scores: Tensor
    predicted: Tensor
    probability: Tensor
    targets: Tensor
    target_probability: Tensor
    target_score: Tensor
    correct: Tensor | None
    finite: Tensor
    task: str = "multiclass"
    regions: Tensor | None = None
    empty: Tensor | None = None

    @property
    def explained(self) -> Tensor:
        """``BoolTensor[P]``: the probes explained this run (finite scores, and a target region that is not empty)."""
        return self.finite if self.empty is None else self.finite & ~self.empty

    @property
    def skipped_probes(self) -> list[int]:
        """Indices of probes with non-finite scores."""
        return (~self.finite).nonzero().flatten().tolist()

    @property
    def empty_regions(self) -> list[int]:
        """Indices of segmentation probes whose target class is predicted on no pixel (see ``empty``)."""
        return [] if self.empty is None else (self.empty & self.finite).nonzero().flatten().tolist()

    @property
    def shown_probability(self) -> Tensor:
        """``[P]`` for bars under map tiles: the target's probability for multilabel (its sigmoid), else the predicted one's."""
        return self.target_probability if self.task == "multilabel" else self.probability


def predict(model: nn.Module, images: Tensor, labels: Tensor | None) -> Predictions:
    """Runs the probes through ``model`` once (no gradients) and reads its answers.

    Args:
        model: the module to explain (or its :class:`MonitorModel`), in the monitor's conditions.
        images: model inputs ``[P, C, H, W]`` (see :func:`model_inputs`).
        labels: ``LongTensor[P]`` of score columns, or ``None``.

    Example:
        >>> out = predict(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.ones(2, 1, 2, 2), None)
        >>> out.targets.shape, out.finite.tolist()
        (torch.Size([2]), [True, True])
    """
    task = getattr(model, "task", "multiclass")
    with torch.no_grad():
        if isinstance(model, MonitorModel):
            raw, shown, regions = model.answers(images)
        else:
            raw, shown, regions = model(images), None, None
    scores = check_score_shape(raw, images.shape[0], what=f"{type(model).__name__}.forward on the probes")
    scores = scores.detach().float().cpu()
    finite = torch.isfinite(scores).all(dim=1)
    safe = torch.where(finite.view(-1, 1), scores, torch.zeros_like(scores))
    shown = (
        torch.softmax(safe, dim=1)
        if shown is None
        else torch.where(finite.view(-1, 1), shown.detach().float().cpu(), 0.0)
    )
    predicted = safe.argmax(dim=1)
    targets = labels.cpu().long() if labels is not None else predicted
    target_probability = shown.gather(1, targets.view(-1, 1)).squeeze(1)
    return Predictions(
        scores=scores,
        predicted=predicted,
        probability=shown.gather(1, predicted.view(-1, 1)).squeeze(1),
        targets=targets,
        target_probability=target_probability,
        target_score=safe.gather(1, targets.view(-1, 1)).squeeze(1),
        correct=_correct(task, predicted, targets, target_probability) if labels is not None else None,
        finite=finite,
        task=task,
        regions=regions.detach().cpu() if regions is not None else None,
        empty=None if regions is None else ~(regions.detach().cpu() == targets.view(-1, 1, 1)).flatten(1).any(dim=1),
    )


def _correct(task: str, predicted: Tensor, targets: Tensor, target_probability: Tensor) -> Tensor | None:
    if task in ("multiclass", "binary"):
        return predicted == targets
    return target_probability > 0.5 if task == "multilabel" else None


def prepare_probes(
    module: nn.Module, probes: ProbeSet, scoring: Scoring, convert_input: InputConverter | None = None
) -> tuple[Scoring, ProbeSet]:
    """Resolves ``task="auto"`` on the probes and fixes what each probe row explains.

    Runs the probes through ``module`` once (``forward=``, ``output=``), infers the task from the
    scores and the labels (:func:`~lightning_xai.targets.infer_task`) unless given, and returns the
    probes with ``labels`` as score columns, one row per target: a multi-label probe appears once
    per positive label (``multilabel_targets="positive"``), a regression probe once per output.
    Probes already fixed (``targets_fixed``) are returned as they are.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0]])
        >>> scoring, rows = prepare_probes(net, ProbeSet(torch.rand(2, 1, 2, 2), multi_hot, "given"), Scoring())
        >>> scoring.task, rows.labels.tolist(), rows.images.shape[0]
        ('multilabel', [0, 2, 1], 3)
    """
    if probes.targets_fixed:
        return scoring, probes
    labels = probes.labels
    if scoring.target is not None:
        chosen = Scoring(scoring.resolved, scoring.output, scoring.forward, scoring.target, scoring.multilabel_targets)
        return chosen, replace(probes, labels=None, targets_fixed=True)
    with attribution_conditions(module, module_device(module)), torch.no_grad():
        raw = (
            scoring.selected_outputs(module, model_inputs(module, probes.images, convert_input)).detach().float().cpu()
        )
    task = infer_task(raw, labels) if scoring.task == "auto" else scoring.task
    chosen = replace(scoring, task=task)
    return chosen, _target_rows(probes, raw, chosen)


def _target_rows(probes: ProbeSet, raw: Tensor, scoring: Scoring) -> ProbeSet:
    task, labels = scoring.resolved, probes.labels
    integer_labels = (
        labels is not None and labels.ndim == 1 and not labels.is_floating_point() and labels.dtype != torch.bool
    )
    if task == "multiclass":
        if labels is not None and labels.ndim == 2 and labels.shape == raw.shape:
            return replace(probes, labels=labels.argmax(dim=1), targets_fixed=True)
        return replace(probes, labels=labels.long() if integer_labels else None, targets_fixed=True)  # type: ignore[union-attr]
    if (task == "multilabel" and (scoring.multilabel_targets == "top" or labels is None or labels.ndim != 2)) or (
        task == "binary" and labels is None
    ):
        return replace(probes, labels=labels.long() if integer_labels else None, targets_fixed=True)  # type: ignore[union-attr]
    if task == "binary":
        labels = labels.reshape(-1).round().long()  # type: ignore[union-attr]
    rows = probe_targets(raw, labels if task != "regression" else None, task=task)
    index = torch.tensor([row.probe for row in rows], dtype=torch.long)
    columns = torch.tensor([row.column for row in rows], dtype=torch.long)
    return ProbeSet(probes.images[index], columns, probes.source, targets_fixed=True)


def check_task_support(task: str, *, faithfulness: bool) -> None:
    """Refuses, naming it, an analysis that cannot serve ``task`` (``faithfulness`` reads softmax probabilities).

    Example:
        >>> check_task_support("multiclass", faithfulness=True)
    """
    if task != "auto" and faithfulness:
        support = supports("faithfulness", task)  # type: ignore[arg-type]
        if not support:
            raise ValueError(messages.analysis_refused(support.reason))
