"""Task types, outputs and batches with a real Trainer: multi-label, segmentation, binary, regression,
dict/tuple outputs (`output=`), extra arguments (`forward=`), `target=`, uint8 images (`preprocess=`),
masks first, `batch_images=`; the effective settings in summary.json.

Each case trains a tiny model for one epoch on small synthetic data and checks what the monitor
explained against the model's own outputs, computed here by hand.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, Faithfulness, GradCAM, Saliency
from lightning_xai.monitor import tags
from tests.callback.conftest import make_trainer

N, SIZE = 32, 8


class Lit(pl.LightningModule):
    """A LightningModule around ``net`` whose loss and batch reading are given."""

    def __init__(
        self,
        net: nn.Module,
        loss: Callable[[Any, Any], Tensor],
        read: Callable[[Any], tuple[Tensor, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.loss, self.read = net, loss, read or (lambda batch: (batch[0], batch[1]))

    def forward(self, x: Tensor) -> Any:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = self.read(batch)
        return self.loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self.read(batch)
        self.log("val_loss", self.loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def conv_net(outputs: int, *, dense: bool = True) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
    if dense:
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))
    return nn.Sequential(*layers, nn.Conv2d(4, outputs, 1))


def images(seed: int = 0) -> Tensor:
    return torch.rand(N, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def fit(
    tmp_path: Path, model: pl.LightningModule, dataset: Any, monitor: AttributionMonitor, **trainer: Any
) -> pl.Trainer:
    loader = dataset if isinstance(dataset, DataLoader) else DataLoader(dataset, batch_size=8)
    run = make_trainer(
        tmp_path, [monitor], **{"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2, **trainer}
    )
    run.fit(model, loader, loader)
    return run


def last_run(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    xai = tmp_path / "version_0" / "xai"
    summary = json.loads((xai / "summary.json").read_text())
    run = torch.load(max((xai / "runs").glob("step-*.pt")), weights_only=True)
    return summary, run, torch.load(xai / "probes.pt", weights_only=True)


def saliency(model: nn.Module, probes: Tensor, score: Callable[[Tensor], Tensor]) -> Tensor:
    x = probes.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(x).sum(), x)
    return grad.abs()


def test_multilabel_probes_spread_over_labels_each_explained_for_its_positive_labels(tmp_path, caplog):
    x = images()
    labels = torch.zeros(N, 3)
    labels[torch.arange(N), torch.arange(N) % 3] = 1
    labels[::4, 2] = 1  # every fourth image has a second label
    model = Lit(conv_net(3), nn.functional.binary_cross_entropy_with_logits)
    monitor = AttributionMonitor([Saliency()], num_probes=4, strict=True)
    with caplog.at_level(logging.INFO):
        fit(tmp_path, model, TensorDataset(x, labels), monitor)
    assert "shortcut checks are off" in caplog.text
    summary, run, probes = last_run(tmp_path)
    assert summary["task"] == "multilabel"
    # four probes cover the three labels; a probe with two positive labels is explained twice
    assert set(probes["labels"].tolist()) == {0, 1, 2}
    net = model.eval()
    rows = probes["images"]
    expected_rows = [(i, k) for i in range(len(x[:4])) for k in range(3) if labels[i, k] == 1]
    assert torch.equal(rows, torch.cat([x[i : i + 1] for i, _ in expected_rows]))
    assert probes["labels"].tolist() == [k for _, k in expected_rows]
    sigmoid = net(rows).sigmoid()
    targets = probes["labels"]
    torch.testing.assert_close(run["probabilities"], sigmoid.gather(1, sigmoid.argmax(1, keepdim=True)).squeeze(1))
    by_hand = saliency(net, rows, lambda images: net(images).gather(1, targets.view(-1, 1)).squeeze(1))
    torch.testing.assert_close(run["maps"]["saliency"], by_hand, rtol=1e-4, atol=1e-6)
    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={"tensors": 0})
    events.Reload()
    table = events.Tensors(f"{tags.PREDICTIONS}/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| probe | label | top label | its sigmoid | target sigmoid |")
    first = sigmoid[0, targets[0]]
    assert (
        f"| 0 | {int(targets[0])} | {int(sigmoid[0].argmax())} | {float(sigmoid[0].max()):.1%} | {float(first):.1%} |"
        in table
    )


def test_segmentation_explains_the_class_over_its_region_masks_first(tmp_path):
    x = images(1)
    masks = (x[:, :1] > 0.5).long()  # [N, 1, H, W] integer mask, first in the batch
    model = Lit(
        conv_net(2, dense=False), lambda out, y: nn.functional.cross_entropy(out, y[:, 0]), read=lambda b: (b[1], b[0])
    )
    monitor = AttributionMonitor([Saliency(), GradCAM()], num_probes=3, strict=True)
    fit(tmp_path, model, TensorDataset(masks, x), monitor)
    summary, run, probes = last_run(tmp_path)
    assert summary["task"] == "segmentation"
    assert summary["methods"]["grad_cam"]["layer"] == "net"  # the last 4-D output: the per-pixel class scores
    net = model.eval()
    rows, targets = probes["images"], probes["labels"]
    assert torch.equal(rows, x[:3])
    # the target is the class covering most of the label mask, background (0) aside
    assert targets.tolist() == [1 if bool(m.any()) else 0 for m in masks[:3]]

    def region_score(images: Tensor) -> Tensor:
        out = net(images)
        region = out.argmax(dim=1) == targets.view(-1, 1, 1)
        return (out.gather(1, targets.view(-1, 1, 1, 1).expand(-1, 1, *out.shape[-2:]))[:, 0] * region).sum(dim=(1, 2))

    torch.testing.assert_close(run["maps"]["saliency"], saliency(net, rows, region_score), rtol=1e-4, atol=1e-6)


class _PredictsBackground(nn.Module):
    """Per-pixel scores for 2 classes that favour the background (class 0) everywhere, for now."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([50.0, 0.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def test_segmentation_probes_whose_class_is_predicted_nowhere_are_left_out_not_called_stable(tmp_path):
    x = images(3)
    masks = (x[:, 0] > 0.5).long()  # the object class on about half of every image: the probes' target
    model = Lit(_PredictsBackground(), lambda out, y: 0.0 * out.sum(), read=lambda b: (b[0], b[1]))  # it stays so
    monitor = AttributionMonitor([Saliency(), GradCAM()], num_probes=3, shortcuts=None)
    with pytest.warns(UserWarning, match=r"predicts the target class of probes \[0, 1, 2\] on no pixel"):
        fit(tmp_path, model, TensorDataset(x, masks), monitor, max_epochs=4)
    summary, run, _ = last_run(tmp_path)
    assert [entry.get("empty_regions") for entry in summary["runs"]] == [[0, 1, 2]] * 4
    assert run["maps"] == {}  # nothing to explain: no maps that are all zeros
    assert monitor.settled == {"saliency": None, "grad_cam": None}  # not "perfectly stable"


@pytest.mark.parametrize("shape", ["[N]", "[N, 1]"])
def test_binary_one_logit(tmp_path, shape):
    x = images(2)
    labels = (x.mean(dim=(1, 2, 3)) > 0.5).float()
    flat = shape == "[N]"
    net = nn.Sequential(conv_net(1), nn.Flatten(0)) if flat else conv_net(1)
    model = Lit(net, lambda out, y: nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), y))
    fit(tmp_path, model, TensorDataset(x, labels), AttributionMonitor([Saliency()], num_probes=4, strict=True))
    summary, run, probes = last_run(tmp_path)
    assert summary["task"] == "binary"
    index = torch.cdist(probes["images"].flatten(1), x.flatten(1)).argmin(dim=1)
    assert probes["labels"].tolist() == labels[index].long().tolist()
    assert sorted(probes["labels"].tolist()) == [0, 0, 1, 1]  # spread over the two classes
    logit = model.eval()(probes["images"]).reshape(-1)
    positive = torch.stack([1 - logit.sigmoid(), logit.sigmoid()], dim=1)
    torch.testing.assert_close(run["probabilities"], positive.gather(1, run["predictions"].view(-1, 1)).squeeze(1))


def test_regression_explains_each_output_and_faithfulness_is_refused(tmp_path):
    x = images(3)
    values = torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)
    model = Lit(conv_net(2), nn.functional.mse_loss)
    fit(
        tmp_path,
        model,
        TensorDataset(x, values),
        AttributionMonitor([Saliency()], num_probes=2, strict=True, shortcuts=None),
    )
    summary, run, probes = last_run(tmp_path)
    assert summary["task"] == "regression"
    assert probes["labels"].tolist() == [0, 1, 0, 1]
    torch.testing.assert_close(
        run["maps"]["saliency"][1], saliency(model.eval(), probes["images"][1:2], lambda i: model(i)[:, 1])[0]
    )
    message = "faithfulness cannot serve regression"
    with pytest.raises(ValueError, match=re.escape(message)):
        AttributionMonitor([Saliency()], task="regression", faithfulness=Faithfulness())


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = conv_net(10)

    def forward(self, x: Tensor, scale: float = 1.0) -> dict[str, Tensor]:
        return {"features": x.flatten(1), "logits": self.body(x) * scale}


def uint8_dict_batches(seed: int = 4) -> DataLoader:
    x = (images(seed) * 255).to(torch.uint8)
    return DataLoader([{"image": x[i], "label": i % 10} for i in range(N)], batch_size=8)


def test_dict_outputs_need_output_and_uint8_dict_batches_need_preprocess(tmp_path):
    preprocess = lambda images: images.float() / 255
    model = Lit(
        DictNet(),
        lambda out, y: nn.functional.cross_entropy(out["logits"], y),
        read=lambda b: (preprocess(b["image"]), b["label"]),
    )
    monitor = AttributionMonitor([Saliency()], num_probes=4, output="logits", preprocess=preprocess, strict=True)
    fit(tmp_path, model, uint8_dict_batches(), monitor)
    summary, run, probes = last_run(tmp_path)
    assert summary["task"] == "multiclass"
    torch.testing.assert_close(probes["images"], preprocess(next(iter(uint8_dict_batches()))["image"][:4]))
    # without `preprocess=` the uint8 images are refused, naming the option
    with pytest.raises(TypeError, match=re.escape("pass `preprocess=`")):
        fit(
            tmp_path / "raw",
            model,
            uint8_dict_batches(),
            AttributionMonitor([Saliency()], num_probes=4, output="logits"),
        )
    # without `output=` the dict of outputs is refused, naming the option
    monitor = AttributionMonitor([Saliency()], num_probes=4, preprocess=preprocess, strict=True)
    with pytest.raises(ValueError, match=re.escape("pass `output='features'` (a key)")):
        fit(tmp_path / "dict", model, uint8_dict_batches(), monitor)


def test_forward_with_extra_argument_and_target_callable(tmp_path):
    x = images(5)
    labels = torch.arange(N) % 10
    model = Lit(DictNet(), lambda out, y: nn.functional.cross_entropy(out["logits"], y))
    monitor = AttributionMonitor(
        [Saliency()],
        num_probes=2,
        forward=lambda module, images: module.net(images, scale=2.0),
        target=lambda outputs: outputs["logits"][:, 3],
        batch_images=lambda batch: batch[0],
        strict=True,
        shortcuts=None,
    )
    fit(tmp_path, model, TensorDataset(x, labels), monitor)
    summary, run, probes = last_run(tmp_path)
    net = model.eval()
    torch.testing.assert_close(
        run["maps"]["saliency"],
        saliency(net, probes["images"], lambda i: net.net(i, 2.0)["logits"][:, 3]),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"task": "ordinal"},
            ValueError,
            "`task` must be one of ['auto', 'multiclass', 'multilabel', 'binary', 'regression', 'segmentation'], got 'ordinal'.",
        ),
        (
            {"output": 1.5},
            TypeError,
            "`output` must be a dict key (str), a tuple index (int), a callable (outputs -> scores) or None, got float.",
        ),
        ({"forward": "net"}, TypeError, "`forward` must be a callable (module, images) -> outputs or None, got str."),
        ({"target": 3}, TypeError, "`target` must be a callable (outputs) -> [N] scores or None, got int."),
        ({"multilabel_targets": "all"}, ValueError, "`multilabel_targets` must be 'positive' or 'top', got 'all'."),
        (
            {"batch_images": "image"},
            TypeError,
            "`batch_images` must be a callable (batch -> images [B, C, H, W]), or None, got str.",
        ),
        (
            {"preprocess": 255},
            TypeError,
            "`preprocess` must be a callable (images -> float images [B, C, H, W]), or None, got int.",
        ),
    ],
)
def test_options_are_checked_at_construction(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        AttributionMonitor(**kwargs)
