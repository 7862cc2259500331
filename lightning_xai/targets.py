"""Scores from any model output, and what to explain for each kind of task (pure torch, no Lightning).

Attribution methods explain one scalar score per image. This module turns whatever a model
returns into such scores:

* :func:`select_scores` / :func:`make_forward` (from :mod:`lightning_xai.outputs`, re-exported):
  the tensor of scores inside a dict, a tuple or a custom call (``output=``, ``forward=``);
* :func:`infer_task` and :func:`score_columns`: per task, the columns ``[N, K']`` that the
  methods index with an integer target (a multiclass or multilabel class, the binary classes, a
  regression output, a segmentation class summed over its region);
* :class:`ScoreModel`: a module ``images -> [N, K']`` for every method (Grad-CAM finds its
  layers in ``ScoreModel.explained_module``);
* :func:`probe_targets`, :func:`probabilities` and :func:`supports`: what to explain for each
  probe, what to show, and which analyses make sense for a task.

Reading images and labels out of batches (:func:`images_from_batch` with ``batch_images=`` and
``preprocess=``, :func:`labels_from_batch`) lives in :mod:`lightning_xai.batches`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lightning_xai.batches import images_from_batch, labels_from_batch
from lightning_xai.outputs import Forward, Output, make_forward, select_scores

__all__ = [
    "Output",
    "Probability",
    "ProbeTarget",
    "ScoreFunction",
    "ScoreModel",
    "Support",
    "Task",
    "images_from_batch",
    "infer_task",
    "labels_from_batch",
    "make_forward",
    "probabilities",
    "probability_kind",
    "probe_targets",
    "score_columns",
    "select_scores",
    "supports",
]

Task = Literal["multiclass", "multilabel", "binary", "regression", "segmentation"]
MultilabelTargets = Literal["positive", "top"]
TASKS: tuple[str, ...] = get_args(Task)


def infer_task(scores: Tensor, labels: Tensor | None = None) -> Task:
    """The task a model's scores (and the batch's labels, when known) look like.

    Rules, in order:

    1. 4-D scores ``[N, K, H, W]``: ``"segmentation"``.
    2. One output (``[N]`` or ``[N, 1]``): ``"binary"`` when labels are given and all 0 or 1,
       else ``"regression"`` (without labels a single output is taken as a value, which shows
       raw outputs rather than probabilities that could be wrong).
    3. ``[N, K]`` with K >= 2: labels ``[N, K]`` of 0s and 1s are ``"multilabel"``, unless every
       row has exactly one 1 (one-hot: ``"multiclass"``); ``[N, K]`` labels in [0, 1] whose rows
       sum to 1 are soft ``"multiclass"`` labels; other ``[N, K]`` labels are ``"regression"``;
       ``[N]`` labels or no labels are ``"multiclass"``.

    Pass ``task=`` explicitly when a batch is ambiguous (e.g. multi-label data where every image
    of the batch has exactly one label).

    Example:
        >>> infer_task(torch.zeros(4, 10)), infer_task(torch.zeros(4, 3), torch.tensor([[1, 0, 1]] * 4))
        ('multiclass', 'multilabel')
        >>> infer_task(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0])), infer_task(torch.zeros(4))
        ('binary', 'regression')
    """
    if not isinstance(scores, Tensor):
        raise TypeError(f"`scores` must be a Tensor, got {type(scores).__name__}.")
    if scores.ndim == 4:
        return "segmentation"
    if scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        return "binary" if labels is not None and _zeros_and_ones(labels) else "regression"
    if scores.ndim != 2:
        raise ValueError(
            f"cannot tell the task of scores of shape {list(scores.shape)} (expected [N], [N, K] or [N, K, H, W]); "
            "pass `task=` and, for anything else, `target=` (outputs -> [N] scores)."
        )
    if labels is None or labels.ndim == 1:
        return "multiclass"
    if _zeros_and_ones(labels):
        return "multiclass" if bool((labels.sum(dim=-1) == 1).all()) else "multilabel"
    soft = labels.is_floating_point() and bool(((labels >= 0) & (labels <= 1)).all())
    return "multiclass" if soft and torch.allclose(labels.sum(dim=-1), torch.ones(())) else "regression"


def _zeros_and_ones(labels: Tensor) -> bool:
    return labels.numel() > 0 and bool(((labels == 0) | (labels == 1)).all())


def _check_task(task: object) -> Task:
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}.")
    return task  # type: ignore[return-value]


def score_columns(scores: Tensor, *, task: Task, region: Tensor | None = None) -> Tensor:
    """The scores ``[N, K']`` that methods index with an integer target, for each task.

    * multiclass, multilabel, regression: the outputs as ``[N, K]`` (``[N]`` becomes ``[N, 1]``).
    * binary (one logit ``z``, ``[N]`` or ``[N, 1]``): ``[N, 2] = (-z/2, z/2)``, the two-class
      softmax model equal to the sigmoid: ``softmax`` of these columns is ``(1 - sigmoid(z),
      sigmoid(z))``, so code that reads softmax probabilities or the argmax stays right, and
      column 0 explains the negative class (pytorch-grad-cam's ``BinaryClassifierOutputTarget``).
      Attributions of column 1 are half those of the raw logit (Captum's ``target=None``); maps
      normalized per image are the same.
    * segmentation (``[N, K, H, W]``): column ``k`` is class ``k``'s score summed over a region
      (pytorch-grad-cam's ``SemanticSegmentationTarget``): with ``region=None`` the pixels each
      image predicts as ``k`` (its own argmax, held constant for gradients); an integer class
      map ``[H, W]`` or ``[N, H, W]`` gives the pixels of class ``k`` in it (a label mask); a
      bool/float mask ``[H, W]`` or ``[N, H, W]`` weights the pixels of every class.

    Example:
        >>> score_columns(torch.tensor([2.0, -4.0]), task="binary").tolist()
        [[-1.0, 1.0], [2.0, -2.0]]
        >>> seg = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])  # [1, 2 classes, 1, 2]: pixel 0 is class 1
        >>> score_columns(seg, task="segmentation").tolist()
        [[3.0, 2.0]]
    """
    task = _check_task(task)
    if task == "segmentation":
        return _segmentation_columns(scores, region)
    if scores.ndim == 1:
        scores = scores.unsqueeze(1)
    if scores.ndim != 2:
        raise ValueError(
            f"`task='{task}'` needs scores [N] or [N, K], got {list(scores.shape)}; pass `target=` for other outputs."
        )
    if task == "binary":
        if scores.shape[1] != 1:
            raise ValueError(f"`task='binary'` needs one logit per image ([N] or [N, 1]), got {list(scores.shape)}.")
        return torch.cat([-scores / 2, scores / 2], dim=1)
    return scores


def _segmentation_columns(scores: Tensor, region: Tensor | None) -> Tensor:
    if scores.ndim != 4:
        raise ValueError(f"`task='segmentation'` needs scores [N, K, H, W], got {list(scores.shape)}.")
    classes = scores.shape[1]
    if region is None:
        weights = nn.functional.one_hot(scores.detach().argmax(dim=1), classes).permute(0, 3, 1, 2).to(scores.dtype)
    elif region.shape[-2:] != scores.shape[-2:] or region.ndim not in (2, 3):
        raise ValueError(
            f"`region` must be [H, W] or [N, H, W] with H, W = {list(scores.shape[-2:])}, got {list(region.shape)}."
        )
    elif region.is_floating_point() or region.dtype == torch.bool:
        weights = region.to(scores.device, scores.dtype).expand(scores.shape[0], *region.shape[-2:]).unsqueeze(1)
    else:
        class_map = region.to(scores.device).long().expand(scores.shape[0], *region.shape[-2:])
        weights = torch.stack([(class_map == k) for k in range(classes)], dim=1).to(scores.dtype)
    return (scores * weights).sum(dim=(2, 3))


class ScoreModel(nn.Module):
    """A module ``images -> [N, K']`` scores for any model, output and task, for every method.

    Args:
        module: the model (e.g. the LightningModule); Grad-CAM looks its layers up here
            (``explained_module``), so layer names stay relative to it.
        task: see :data:`Task` (:func:`infer_task` guesses it).
        forward: ``(module, images) -> outputs``; ``None`` calls ``module(images)``.
        output: which entry of the outputs holds the scores (:func:`select_scores`).
        target: ``outputs -> [N]`` scores for anything else; it receives the outputs after
            ``output=`` when that is given, else the raw outputs, and gives a single column.
        region: for segmentation, see :func:`score_columns`. A fixed region applies to every
            row, so explain one probe per call with it (perturbation methods put many copies of
            one probe in a batch); ``None`` (each input's own predicted region) batches freely.

    Example:
        >>> seg = ScoreModel(nn.Conv2d(3, 4, 1), task="segmentation")
        >>> seg(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        task: Task,
        forward: Forward | None = None,
        output: Output = None,
        target: Callable[[Any], Tensor] | None = None,
        region: Tensor | None = None,
    ) -> None:
        super().__init__()
        if target is not None and not callable(target):
            raise TypeError(
                f"`target` must be a callable (outputs -> [N] scores) or None, got {type(target).__name__}."
            )
        self.explained_module = module
        self.training = False  # the wrapper has no layers of its own; `module` keeps its own modes
        self.task = _check_task(task)
        self._forward, self._output, self._target, self._region = forward, output, target, region
        make_forward(module, forward=forward, output=output)  # checks `forward`

    def forward(self, images: Tensor) -> Tensor:
        """Scores ``[N, K']`` for images ``[N, C, H, W]``."""
        module = self.explained_module
        outputs = module(images) if self._forward is None else self._forward(module, images)
        if self._target is None:
            return score_columns(select_scores(outputs, output=self._output), task=self.task, region=self._region)
        scores = self._target(outputs if self._output is None else select_scores(outputs, output=self._output))
        if not isinstance(scores, Tensor) or scores.shape != (images.shape[0],):
            shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"`target` must return one score per image, [N] = [{images.shape[0]}], got {shape}.")
        return scores.unsqueeze(1)


@dataclass(frozen=True, eq=False)
class ScoreFunction:
    """One scalar score per image from a model's outputs: column ``column`` of :func:`score_columns`.

    Attributes:
        task: the task.
        column: the column (a class, a label, an output, a segmentation class).
        description: what it is, for captions.
        region: for segmentation, see :func:`score_columns`.

    Example:
        >>> ScoreFunction("binary", 1, "positive class")(torch.tensor([[4.0], [-2.0]])).tolist()
        [2.0, -1.0]
    """

    task: Task
    column: int
    description: str = ""
    region: Tensor | None = None

    def __call__(self, outputs: Tensor) -> Tensor:
        """Scores ``[N]`` for the selected outputs (``[N]``, ``[N, K]`` or ``[N, K, H, W]``)."""
        return score_columns(outputs, task=self.task, region=self.region)[:, self.column]


@dataclass(frozen=True)
class ProbeTarget:
    """One thing to explain: probe ``probe``'s score column ``column`` (of :func:`score_columns`).

    Attributes:
        probe: index of the probe image.
        column: the integer target for the methods.
        description: what the column is, for captions (``"label 3 (positive)"``).
    """

    probe: int
    column: int
    description: str

    def score_function(self, task: Task, *, region: Tensor | None = None) -> ScoreFunction:
        """This target as a :class:`ScoreFunction` of the outputs."""
        return ScoreFunction(task, self.column, self.description, region)


def probe_targets(
    scores: Tensor,
    labels: Tensor | None = None,
    *,
    task: Task,
    multilabel_targets: MultilabelTargets = "positive",
    background: int | None = 0,
) -> list[ProbeTarget]:
    """The default targets for probes with outputs ``scores`` (and ``labels`` when known).

    * multiclass: the label (an index, or the argmax of one-hot/soft labels), else the top class;
    * multilabel: ``"positive"`` gives one row per positive label (a probe without any gets its
      top-scoring label), ``"top"`` the top-scoring label only;
    * binary: the label's class (0: negative, 1: positive), else the predicted one (``z > 0``);
    * regression: each output column;
    * segmentation: the class covering most pixels of the label mask (``[N, H, W]``), else of the
      predicted mask, not counting ``background`` unless nothing else is there.

    Example:
        >>> scores = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]])
        >>> [(t.probe, t.column) for t in probe_targets(scores, torch.tensor([[1, 0, 1], [0, 0, 0]]), task="multilabel")]
        [(0, 0), (0, 2), (1, 2)]
    """
    task = _check_task(task)
    if multilabel_targets not in ("positive", "top"):
        raise ValueError(f"`multilabel_targets` must be 'positive' or 'top', got {multilabel_targets!r}.")
    if task == "segmentation":
        return _segmentation_targets(scores, labels, background)
    columns = score_columns(scores, task=task)
    if task == "regression":
        return [ProbeTarget(i, k, f"output {k}") for i in range(columns.shape[0]) for k in range(columns.shape[1])]
    if task == "multilabel":
        return _multilabel_targets(columns, labels if multilabel_targets == "positive" else None)
    if labels is None:
        return [_class_target(i, int(k), task, "predicted") for i, k in enumerate(columns.argmax(dim=1).tolist())]
    chosen = labels.argmax(dim=1) if labels.ndim == 2 and task == "multiclass" else labels.reshape(-1)
    return [_class_target(i, int(k), task, "label") for i, k in enumerate(chosen.long().tolist())]


def _class_target(probe: int, column: int, task: str, source: str) -> ProbeTarget:
    name = ("negative class" if column == 0 else "positive class") if task == "binary" else f"class {column}"
    return ProbeTarget(probe, column, f"{name} ({source})")


def _multilabel_targets(columns: Tensor, labels: Tensor | None) -> list[ProbeTarget]:
    rows = []
    for probe in range(columns.shape[0]):
        positive = [] if labels is None else (labels[probe] == 1).nonzero().flatten().tolist()
        if positive:
            rows += [ProbeTarget(probe, int(k), f"label {k} (positive)") for k in positive]
        else:
            top = int(columns[probe].argmax())
            why = "top score" if labels is None else "top score, no positive label"
            rows.append(ProbeTarget(probe, top, f"label {top} ({why})"))
    return rows


def _segmentation_targets(scores: Tensor, labels: Tensor | None, background: int | None) -> list[ProbeTarget]:
    predicted = scores.argmax(dim=1)
    masks = labels.reshape(predicted.shape) if labels is not None and labels.numel() == predicted.numel() else predicted
    source = "label mask" if masks is not predicted else "predicted mask"
    rows = []
    for probe, mask in enumerate(masks.long()):
        classes = mask[(mask >= 0) & (mask < scores.shape[1])]  # drops ignore values such as 255
        counts = torch.bincount(classes.flatten(), minlength=scores.shape[1])
        if background is not None and background < counts.numel() and bool((counts > 0).sum() > 1):
            counts[background] = -1
        k = int(counts.argmax())
        pixels = int((predicted[probe] == k).sum())
        rows.append(
            ProbeTarget(probe, k, f"class {k} over its predicted region ({pixels} pixels; chosen from the {source})")
        )
    return rows


def probabilities(scores: Tensor, *, task: Task) -> Tensor:
    """What to show for each column of :func:`score_columns`, ``[N, K']``.

    multiclass: softmax; multilabel: sigmoid of each label; binary: ``(1 - sigmoid(z),
    sigmoid(z))``; regression: the outputs themselves; segmentation: class ``k``'s mean softmax
    probability over the pixels predicted as ``k`` (0 where there are none).

    Example:
        >>> probabilities(torch.tensor([[0.0, 0.0]]), task="multilabel").tolist()
        [[0.5, 0.5]]
    """
    task = _check_task(task)
    if task == "segmentation":
        soft = score_columns(scores.softmax(dim=1), task=task, region=scores.argmax(dim=1))
        pixels = score_columns(torch.ones_like(scores), task=task, region=scores.argmax(dim=1))
        return soft / pixels.clamp(min=1)
    columns = score_columns(scores, task=task)
    if task == "multilabel":
        return columns.sigmoid()
    return columns if task == "regression" else columns.softmax(dim=1)


Probability = Literal["softmax", "sigmoid", "none"]
_PROBABILITY: dict[str, Probability] = {
    "multiclass": "softmax",
    "multilabel": "sigmoid",
    "binary": "sigmoid",
    "regression": "none",
    "segmentation": "softmax",
}


def probability_kind(task: Task) -> Probability:
    """How :func:`probabilities` turns scores into what is shown: ``"softmax"``, ``"sigmoid"`` or ``"none"``.

    Example:
        >>> probability_kind("multilabel"), probability_kind("regression")
        ('sigmoid', 'none')
    """
    return _PROBABILITY[_check_task(task)]


@dataclass(frozen=True)
class Support:
    """Whether a method or analysis can serve a task, and why not; true in a boolean context."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


ATTRIBUTION_METHODS = (
    "occlusion",
    "adaptive_occlusion",
    "grad_cam",
    "guided_grad_cam",
    "guided_backprop",
    "deconvnet",
    "expected_gradients",
    "integrated_gradients",
    "saliency",
    "smooth_grad",
)
_SOFTMAX_ANALYSES = {"faithfulness": "its deletion and insertion curves", "shortcuts": "its interventions"}


def supports(name: str, task: Task) -> Support:
    """Whether the method or analysis ``name`` can serve ``task``.

    Every attribution method explains any scalar score, so it serves every task through
    :class:`ScoreModel`. ``"faithfulness"`` and ``"shortcuts"`` read softmax probabilities of
    the columns and predicted classes: only multiclass and binary. ``"stability"`` and
    ``"sanity"`` compare maps: every task.

    Example:
        >>> bool(supports("grad_cam", "segmentation")), supports("faithfulness", "regression").reason[:36]
        (True, 'faithfulness cannot serve regression')
    """
    task = _check_task(task)
    if name in ATTRIBUTION_METHODS or name in ("stability", "sanity"):
        return Support(True)
    if name in _SOFTMAX_ANALYSES:
        if task in ("multiclass", "binary"):
            return Support(True)
        return Support(
            False,
            f"{name} cannot serve {task}: {_SOFTMAX_ANALYSES[name]} measure a softmax probability of a predicted class, "
            f"which {task} outputs do not have; turn it off (e.g. `{name}=None`) or pass `target=` with a class score.",
        )
    known = sorted((*ATTRIBUTION_METHODS, "stability", "sanity", *_SOFTMAX_ANALYSES))
    raise ValueError(f"`name` must be a method or analysis name ({', '.join(known)}), got {name!r}.")
