"""Odd inputs never end the fit: float64/float16 probes, NaN scores, multi-scale batches, other sizes, ``self.log`` in forward."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_xai import ExpectedGradients, GradCAM, Occlusion, Saliency
from lightning_xai._fingerprint import load_references
from lightning_xai.demos import LitClassifier, SmallCNN, load_digits
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

MARK = 7.0  # a probe whose top-left pixel holds this value gets NaN scores from _NanForMarked


class _NanForMarked(LitClassifier):
    def forward(self, images):
        scores = self.net(images)
        marked = (images[:, 0, 0, 0] == MARK).view(-1, 1)
        return torch.where(marked, torch.full_like(scores, float("nan")), scores)


class _LogsInForward(LitClassifier):
    def forward(self, images):
        self.log("forward_mean", images.mean())
        return self.net(images)


def _fit(root, monitor, model, train, val, **kwargs):
    kwargs.setdefault("limit_train_batches", 2)
    trainer = make_trainer(root, [monitor] if monitor else [], **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    assert trainer.state.finished and trainer.global_step == kwargs.get("max_epochs", 2) * kwargs["limit_train_batches"]
    return trainer, [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


@pytest.mark.parametrize(
    "make_probes",
    [
        lambda images: torch.from_numpy(images.numpy().astype(np.float64)),  # built with NumPy
        lambda images: images.half(),
    ],
)
def test_probes_of_another_floating_dtype_are_explained(tmp_path, digits16, make_probes):
    probes = make_probes(digits16[0][1500:1504])
    monitor = cheap_monitor(probes=(probes, [0, 1, 2, 3]), stability=None, shortcuts=None)
    _, said = _fit(tmp_path, monitor, tiny_model(), *loaders(digits16))
    assert [run["methods"] for run in monitor.history] == [["expected_gradients", "grad_cam", "occlusion"]] * 2
    assert not [text for text in said if "failed" in text]
    assert all("failures" not in run for run in monitor.history)


def test_float64_probes_with_bf16_true_weights(tmp_path, digits16):
    probes = torch.from_numpy(digits16[0][1500:1504].numpy().astype(np.float64))
    monitor = cheap_monitor(
        methods=[GradCAM(), Saliency()], probes=(probes, [0, 1, 2, 3]), stability=None, shortcuts=None
    )
    _, said = _fit(tmp_path, monitor, tiny_model(), *loaders(digits16), precision="bf16-true")
    assert [run["methods"] for run in monitor.history] == [["grad_cam", "saliency"]] * 2
    assert all("failures" not in run for run in monitor.history) and not [text for text in said if "failed" in text]
    maps = monitor._run.recorder.history.load_run(monitor.history[-1])["maps"]
    assert maps["saliency"].dtype == torch.float32 and bool(torch.isfinite(maps["saliency"]).all())


def test_a_nan_logit_skips_only_that_probe(tmp_path, digits16):
    probes = digits16[0][1500:1504].clone()
    probes[2, 0, 0, 0] = MARK
    monitor = cheap_monitor(probes=(probes, [0, 1, 2, 3]), stability=None, shortcuts=None)
    model = _NanForMarked(SmallCNN(in_channels=1, num_classes=10, width=4), lr=1e-2)
    _, said = _fit(tmp_path, monitor, model, *loaders(digits16))
    assert [run["skipped_probes"] for run in monitor.history] == [[2], [2]]
    assert [text for text in said if "not finite" in text] == [
        "AttributionMonitor: at step 2 the model's scores for probes [2] were not finite (NaN or inf); those probes were "
        "left out of this run's maps (zeros in the raw maps, listed under 'skipped_probes' in summary.json) and the other "
        "probes were explained. This warning is shown once."
    ]
    maps = monitor._run.recorder.history.load_run(monitor.history[-1])["maps"]
    for key, value in maps.items():
        assert torch.isfinite(value).all() and value[2].abs().sum() == 0, key
        assert all(value[i].abs().sum() > 0 for i in (0, 1, 3)), key


def test_a_nan_pixel_in_validation_data_skips_those_probes(tmp_path, digits16):
    images, labels = digits16[0].clone(), digits16[1]
    poisoned = torch.arange(len(labels)) >= 1500
    poisoned &= labels == 3
    images[poisoned, 0, 5, 5] = float("nan")
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)], num_probes=10, stability=None)
    _, said = _fit(tmp_path, monitor, tiny_model(), *loaders((images, labels)))
    nan_probes = [i for i, probe in enumerate(monitor.probes.images) if probe.isnan().any()]
    assert nan_probes and len(nan_probes) < 10
    assert [run["skipped_probes"] for run in monitor.history] == [nan_probes] * 2
    assert all("failures" not in run and run["file"] for run in monitor.history)
    assert len([text for text in said if "not finite" in text]) == 1 and f"probes {nan_probes}" in said[0]


def _multi_scale_batches(digits16, count: int):
    large_images, _ = load_digits(24)
    images, labels = digits16
    batches = []
    for index in range(count):
        chosen = slice(16 * index, 16 * (index + 1))
        batches.append((large_images[chosen] if index % 2 else images[chosen], labels[chosen]))
    return DataLoader(batches, batch_size=None)


def test_multi_scale_training_batches_feed_the_references(tmp_path, digits16):
    monitor = cheap_monitor(methods=[ExpectedGradients(n_samples=4, reference_count=8)], stability=None, shortcuts=None)
    _, val = loaders(digits16)
    _, said = _fit(tmp_path, monitor, tiny_model(), _multi_scale_batches(digits16, 4), val)
    assert [run["methods"] for run in monitor.history] == [["expected_gradients"]] * 2
    assert not [text for text in said if "failed" in text]
    assert monitor._run.collector.references.shape[-2:] == (16, 16)


def test_probes_of_another_size_than_the_training_images(tmp_path, digits16):
    large, labels = load_digits(24)
    monitor = cheap_monitor(
        methods=[ExpectedGradients(n_samples=4, reference_count=8), Saliency()],
        probes=(large[1500:1503], labels[1500:1503].tolist()),
        stability=None,
        shortcuts=None,
    )
    _, said = _fit(tmp_path, monitor, tiny_model(), *loaders(digits16))
    assert all("failures" not in run for run in monitor.history) and not [text for text in said if "failed" in text]
    maps = monitor._run.recorder.history.load_run(monitor.history[-1])["maps"]
    assert maps["expected_gradients"].shape == (3, 1, 24, 24)
    assert load_references(monitor._run.recorder.folder).shape == (
        8,
        1,
        24,
        24,
    )  # training images resized to the probes


def test_self_log_inside_forward_neither_crashes_nor_changes_logged_values(tmp_path, digits16):
    def run(root, monitor):
        torch.manual_seed(0)
        model = _LogsInForward(SmallCNN(in_channels=1, num_classes=10, width=4), lr=1e-2)
        trainer, _ = _fit(root, monitor, model, *loaders(digits16, shuffle=False))
        return trainer.logged_metrics, model

    without, _ = run(tmp_path / "without", None)
    monitor = cheap_monitor(methods=[GradCAM(), Occlusion(window=4, stride=4)], stability=None)
    with_monitor, _ = run(tmp_path / "with", monitor)
    assert len(monitor.history) == 2
    assert "forward_mean" in without and sorted(without) == sorted(with_monitor)
    for key, value in without.items():
        assert torch.equal(value, with_monitor[key]), key
