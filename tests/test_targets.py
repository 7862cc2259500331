"""targets: task inference, score columns per task, probe targets, probabilities.

Expected values are computed by hand on tiny tensors and nets; gradients flow through ScoreModel
into the existing methods (saliency, Grad-CAM) and are checked against hand computations and
pytorch-grad-cam's SemanticSegmentationTarget (reimplemented here).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from captum.attr import Saliency as CaptumSaliency
from torch import Tensor, nn

from lightning_xai import functional as F
from lightning_xai.targets import (
    ProbeTarget,
    ScoreFunction,
    ScoreModel,
    infer_task,
    probabilities,
    probability_kind,
    probe_targets,
    score_columns,
    supports,
)


class _NeedsScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor, scale: float) -> dict[str, Tensor]:
        return {"features": x, "logits": self.fc(x.flatten(1)) * scale}


@pytest.mark.parametrize(
    ("scores", "labels", "task"),
    [
        (torch.zeros(4, 3, 8, 8), None, "segmentation"),
        (torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]), "binary"),
        (torch.zeros(4), torch.tensor([0.0, 1.0, 1.0, 0.0]), "binary"),
        (torch.zeros(4), torch.tensor([0.3, 1.0, 2.5, 0.0]), "regression"),
        (torch.zeros(4, 1), None, "regression"),
        (torch.zeros(4, 3), None, "multiclass"),
        (torch.zeros(4, 3), torch.tensor([0, 2, 1, 1]), "multiclass"),
        (torch.zeros(2, 3), torch.tensor([[0, 1, 0], [1, 0, 0]]), "multiclass"),  # one-hot
        (torch.zeros(2, 3), torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.5, 0.0]]), "multiclass"),  # soft labels
        (torch.zeros(2, 3), torch.tensor([[0, 1, 1], [0, 0, 0]]), "multilabel"),
        (torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multilabel"),
        (torch.zeros(2, 3), torch.tensor([[0.5, 2.0, -1.0], [0.0, 1.0, 3.0]]), "regression"),
    ],
)
def test_infer_task(scores, labels, task):
    assert infer_task(scores, labels) == task


def test_infer_task_refuses_other_shapes():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cannot tell the task of scores of shape [4, 3, 8] (expected [N], [N, K] or [N, K, H, W]); pass `task=`"
        ),
    ):
        infer_task(torch.zeros(4, 3, 8))


# Scores [1, 3 classes, 2, 2]; each pixel's argmax: [[0, 1], [1, 2]].
SEGMENTATION = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 0.0]], [[0.5, 1.0], [1.0, 4.0]]]])


def test_segmentation_columns_sum_each_class_over_its_region():
    assert score_columns(SEGMENTATION, task="segmentation").tolist() == [[1.0, 5.0, 4.0]]  # predicted regions
    class_map = torch.tensor([[2, 2], [1, 0]])
    assert score_columns(SEGMENTATION, task="segmentation", region=class_map).tolist() == [[0.0, 3.0, 1.5]]
    mask = torch.tensor([[True, False], [False, True]])
    assert score_columns(SEGMENTATION, task="segmentation", region=mask).tolist() == [[1.0, 0.0, 4.5]]
    with pytest.raises(
        ValueError, match=re.escape("`region` must be [H, W] or [N, H, W] with H, W = [2, 2], got [3, 3].")
    ):
        score_columns(SEGMENTATION, task="segmentation", region=torch.zeros(3, 3))


def test_binary_columns_are_the_two_class_softmax_model():
    z = torch.tensor([2.0, -4.0, 0.0])
    columns = score_columns(z.unsqueeze(1), task="binary")
    assert columns.tolist() == [[-1.0, 1.0], [2.0, -2.0], [0.0, 0.0]]
    torch.testing.assert_close(columns.softmax(dim=1)[:, 1], z.sigmoid())
    torch.testing.assert_close(probabilities(z, task="binary")[:, 1], z.sigmoid())
    with pytest.raises(
        ValueError, match=re.escape("`task='binary'` needs one logit per image ([N] or [N, 1]), got [3, 2].")
    ):
        score_columns(torch.zeros(3, 2), task="binary")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`task` must be one of ['multiclass', 'multilabel', 'binary', 'regression', 'segmentation'], got 'detection'."
        ),
    ):
        score_columns(z, task="detection")


def test_probabilities_per_task():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    torch.testing.assert_close(probabilities(logits, task="multiclass"), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(probabilities(logits, task="multilabel"), torch.tensor([[0.5, 0.75]]))
    torch.testing.assert_close(probabilities(logits, task="regression"), logits)
    # segmentation: mean softmax probability of class k over the pixels predicted as k
    pixel = {(i, j): SEGMENTATION[0, :, i, j].softmax(dim=0) for i in range(2) for j in range(2)}
    expected = [float(pixel[0, 0][0]), (float(pixel[0, 1][1]) + float(pixel[1, 0][1])) / 2, float(pixel[1, 1][2])]
    torch.testing.assert_close(probabilities(SEGMENTATION, task="segmentation"), torch.tensor([expected]))


def test_probe_targets_multilabel_positive_and_top():
    scores = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0], [0.0, 4.0, 1.0]])
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 1]])
    positive = probe_targets(scores, labels, task="multilabel")
    assert positive == [
        ProbeTarget(0, 0, "label 0 (positive)"),
        ProbeTarget(0, 2, "label 2 (positive)"),
        ProbeTarget(1, 2, "label 2 (top score, no positive label)"),
        ProbeTarget(2, 1, "label 1 (positive)"),
        ProbeTarget(2, 2, "label 2 (positive)"),
    ]
    top = probe_targets(scores, labels, task="multilabel", multilabel_targets="top")
    assert [(t.probe, t.column, t.description) for t in top] == [
        (0, 0, "label 0 (top score)"),
        (1, 2, "label 2 (top score)"),
        (2, 1, "label 1 (top score)"),
    ]
    with pytest.raises(ValueError, match=re.escape("`multilabel_targets` must be 'positive' or 'top', got 'all'.")):
        probe_targets(scores, labels, task="multilabel", multilabel_targets="all")


def test_probe_targets_multiclass_binary_regression():
    scores = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])
    assert [(t.column, t.description) for t in probe_targets(scores, task="multiclass")] == [
        (1, "class 1 (predicted)"),
        (0, "class 0 (predicted)"),
    ]
    assert [t.column for t in probe_targets(scores, torch.tensor([2, 2]), task="multiclass")] == [2, 2]
    assert [t.column for t in probe_targets(scores, torch.tensor([[0, 0, 1], [1, 0, 0]]), task="multiclass")] == [2, 0]
    logits = torch.tensor([[1.5], [-0.5]])
    assert [(t.column, t.description) for t in probe_targets(logits, task="binary")] == [
        (1, "positive class (predicted)"),
        (0, "negative class (predicted)"),
    ]
    assert [t.column for t in probe_targets(logits, torch.tensor([0, 1]), task="binary")] == [0, 1]
    rows = probe_targets(torch.zeros(2, 2), task="regression")
    assert [(t.probe, t.column, t.description) for t in rows] == [
        (0, 0, "output 0"),
        (0, 1, "output 1"),
        (1, 0, "output 0"),
        (1, 1, "output 1"),
    ]


def test_probe_targets_segmentation_skip_the_background():
    # predicted classes [[0, 1], [1, 2]]: class 1 covers most pixels
    assert probe_targets(SEGMENTATION, task="segmentation") == [
        ProbeTarget(0, 1, "class 1 over its predicted region (2 pixels; chosen from the predicted mask)")
    ]
    labels = torch.tensor([[[0, 0], [2, 255]]])  # background and an ignore value do not count
    assert [t.column for t in probe_targets(SEGMENTATION, labels, task="segmentation")] == [2]
    assert [
        t.column for t in probe_targets(SEGMENTATION, torch.zeros(1, 2, 2, dtype=torch.long), task="segmentation")
    ] == [0]


def _segmentation_net() -> nn.Module:
    net = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.0, 0.5]))
    return net.eval()


def test_saliency_of_a_segmentation_target_by_hand():
    # out0 = 2x, out1 = 0.5 - x: class 0 wins where x > 1/6. Column k = sum of out_k over its pixels,
    # so d(column k)/dx = the class's weight on its own pixels and 0 elsewhere.
    x = torch.tensor([[[[0.1, 0.9], [0.4, 0.2]]]])
    model = ScoreModel(_segmentation_net(), task="segmentation")
    torch.testing.assert_close(model(x), torch.tensor([[2 * (0.9 + 0.4 + 0.2), 0.5 - 0.1]]))
    torch.testing.assert_close(F.saliency(model, x, 0, absolute=False), torch.tensor([[[[0.0, 2.0], [2.0, 2.0]]]]))
    torch.testing.assert_close(F.saliency(model, x, 1, absolute=False), torch.tensor([[[[-1.0, 0.0], [0.0, 0.0]]]]))
    fixed = ScoreModel(_segmentation_net(), task="segmentation", region=torch.tensor([[True, True], [False, False]]))
    torch.testing.assert_close(F.saliency(fixed, x, 1, absolute=False), torch.tensor([[[[-1.0, -1.0], [0.0, 0.0]]]]))


def test_grad_cam_of_a_segmentation_class_matches_pytorch_grad_cams_target():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1)).eval()
    images = torch.rand(2, 3, 6, 6)
    ours = F.grad_cam(ScoreModel(net, task="segmentation"), images, 1, layer="0", upsample=False, relu=False)
    # pytorch-grad-cam: SemanticSegmentationTarget(category, mask) = (output[category] * mask).sum(), mask = predicted == category
    captured: list[Tensor] = []
    handle = net[0].register_forward_hook(lambda _m, _i, out: captured.append(out))
    outputs = net(images)
    handle.remove()
    mask = (outputs.argmax(dim=1) == 1).float()
    (gradient,) = torch.autograd.grad((outputs[:, 1] * mask).sum(), captured[0])
    reference = (gradient.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1, keepdim=True)
    torch.testing.assert_close(ours, reference.detach())
    assert reference.abs().max() > 0


def test_binary_attributions_are_half_those_of_the_logit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).eval()
    x = torch.rand(3, 3, 2, 2)
    model = ScoreModel(net, task="binary")
    logit = CaptumSaliency(net).attribute(x, target=None, abs=False)
    torch.testing.assert_close(F.saliency(model, x, 1, absolute=False), logit / 2)
    torch.testing.assert_close(F.saliency(model, x, 0, absolute=False), -logit / 2)


def test_multilabel_and_dict_outputs_through_score_model():
    torch.manual_seed(0)
    module = _NeedsScale().eval()
    x = torch.rand(2, 1, 2, 2)
    model = ScoreModel(module, task="multilabel", forward=lambda m, images: m(images, scale=3.0), output="logits")
    torch.testing.assert_close(model(x), module.fc(x.flatten(1)) * 3.0)
    expected = (3.0 * module.fc.weight.detach()[2]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    torch.testing.assert_close(F.saliency(model, x, 2, absolute=False), expected)
    with pytest.raises(
        ValueError,
        match=re.escape("the model returned a dict with keys ['features', 'logits']; pass `output='features'`"),
    ):
        ScoreModel(module, task="multilabel", forward=lambda m, images: m(images, scale=1.0))(x)


def test_target_callable_gives_one_column():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    model = ScoreModel(net, task="regression", target=lambda out: out[:, 0] - out[:, 1])
    x = torch.rand(2, 1, 2, 2)
    weight = net[1].weight.detach()
    expected = (weight[0] - weight[1]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    torch.testing.assert_close(F.saliency(model, x, 0, absolute=False), expected)
    bad = ScoreModel(net, task="regression", target=lambda out: out)
    with pytest.raises(ValueError, match=re.escape("`target` must return one score per image, [N] = [2], got [2, 2].")):
        bad(x)
    with pytest.raises(
        TypeError, match=re.escape("`target` must be a callable (outputs -> [N] scores) or None, got int.")
    ):
        ScoreModel(net, task="regression", target=3)


def test_grad_cam_layers_are_named_in_the_explained_module():
    from lightning_xai.demos import TinyViT

    torch.manual_seed(0)
    vit = TinyViT(image_size=16, num_classes=4).eval()
    wrapped = ScoreModel(vit, task="multilabel")
    images = torch.rand(2, 1, 16, 16)
    assert F.find_grad_cam_layer(wrapped, images) == "encoder.layers.1.norm1"
    torch.testing.assert_close(F.grad_cam(wrapped, images, 3), F.grad_cam(vit, images, 3))


def test_supports():
    for task in ("multiclass", "multilabel", "binary", "regression", "segmentation"):
        assert supports("grad_cam", task) and supports("occlusion", task) and supports("stability", task)
    assert supports("faithfulness", "binary") and supports("shortcuts", "multiclass")
    verdict = supports("faithfulness", "regression")
    assert not verdict
    assert verdict.reason == (
        "faithfulness cannot serve regression: its deletion and insertion curves measure a softmax probability of a predicted "
        "class, which regression outputs do not have; turn it off (e.g. `faithfulness=None`) or pass `target=` with a class score."
    )
    assert not supports("shortcuts", "segmentation")
    with pytest.raises(
        ValueError, match=re.escape("`name` must be a method or analysis name (adaptive_occlusion, deconvnet,")
    ):
        supports("lime", "multiclass")


def test_score_functions_and_probability_kinds():
    # one row per (probe, positive label), each a score function of the outputs
    scores = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]])
    rows = probe_targets(scores, torch.tensor([[1, 0, 1], [0, 1, 0]]), task="multilabel")
    assert [row.score_function("multilabel")(scores)[row.probe].item() for row in rows] == [2.0, 0.5, -2.0]
    segmentation = ScoreFunction("segmentation", 2, "class 2", region=torch.tensor([[2, 2], [1, 0]]))
    assert segmentation(SEGMENTATION).tolist() == [1.5]
    kinds = [probability_kind(task) for task in ("multiclass", "multilabel", "binary", "regression", "segmentation")]
    assert kinds == ["softmax", "sigmoid", "sigmoid", "none", "softmax"]
