"""When the monitor runs: fit and validate, sanity check skipped, every_n_epochs, val_check_interval."""

from __future__ import annotations

import json

import torch

from lightning_xai.probes import spread_over_classes
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def test_runs_after_each_validation_epoch_but_not_the_sanity_check(tmp_path, digits16):
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2, num_sanity_val_steps=2)
    trainer.fit(tiny_model(), *loaders(digits16))
    assert [(run["epoch"], run["global_step"], run["stage"]) for run in monitor.history] == [
        (0, 4, "fit"),
        (1, 8, "fit"),
    ]
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert [run["global_step"] for run in summary["runs"]] == [4, 8]
    assert summary["runs"][0]["methods"] == ["expected_gradients", "grad_cam", "occlusion"]


def test_trainer_validate_runs_under_inference_mode(tmp_path, digits16):
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor])
    _, val = loaders(digits16)
    trainer.validate(tiny_model(), val)
    assert [run["stage"] for run in monitor.history] == ["validate"]
    saved = torch.load(tmp_path / "version_0" / "xai" / monitor.history[0]["file"], weights_only=True)
    for name, maps in saved["maps"].items():
        assert maps.dtype == torch.float32 and torch.isfinite(maps).all() and maps.abs().sum() > 0, name


def test_every_n_epochs(tmp_path, digits16):
    monitor = cheap_monitor(every_n_epochs=2)
    make_trainer(tmp_path, [monitor], max_epochs=4).fit(tiny_model(), *loaders(digits16))
    assert [run["epoch"] for run in monitor.history] == [1, 3]


def test_several_validations_per_epoch_are_keyed_by_global_step(tmp_path, digits16):
    monitor = cheap_monitor()
    make_trainer(tmp_path, [monitor], max_epochs=1, limit_train_batches=6, val_check_interval=3).fit(
        tiny_model(), *loaders(digits16)
    )
    assert [run["global_step"] for run in monitor.history] == [3, 6]
    files = sorted(p.name for p in (tmp_path / "version_0" / "xai" / "runs").iterdir())
    assert files == ["step-00000003.pt", "step-00000006.pt"]


def test_probes_are_chosen_deterministically_and_spread_over_classes(tmp_path, digits16):
    chosen = []
    for attempt in range(2):
        monitor = cheap_monitor(num_probes=10)
        make_trainer(tmp_path / str(attempt), [monitor], max_epochs=1, limit_val_batches=4).fit(
            tiny_model(), *loaders(digits16)
        )
        chosen.append(monitor.probes)
    assert torch.equal(chosen[0].images, chosen[1].images)
    assert chosen[0].labels.tolist() == list(range(10))
    _, labels = digits16
    first_val_labels = labels[1500 : 1500 + 128]
    expected = first_val_labels[spread_over_classes(first_val_labels, 10)]
    assert chosen[0].labels.tolist() == expected.tolist()


def test_targets_are_the_true_labels_and_predictions_are_recorded(tmp_path, digits16):
    monitor = cheap_monitor()
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    saved = torch.load(tmp_path / "version_0" / "xai" / monitor.history[0]["file"], weights_only=True)
    assert torch.equal(saved["targets"], monitor.probes.labels)
    assert saved["predictions"].shape == (4,) and ((saved["probabilities"] > 0) & (saved["probabilities"] <= 1)).all()
    assert 0.0 <= monitor.history[0]["metrics"]["xai_probes/accuracy"] <= 1.0
