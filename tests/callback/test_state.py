"""Checkpoints and copies: resume continues the history, weights_only loading, pickling, two monitors."""

from __future__ import annotations

import json
import pickle

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import GradCAM, Occlusion
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def _fit_with_checkpoints(root, digits, monitors, *, max_epochs, ckpt_path=None, version=0):
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=-1)
    trainer = make_trainer(
        root,
        [*monitors, checkpoint],
        max_epochs=max_epochs,
        enable_checkpointing=True,
        logger=TensorBoardLogger(root, name="", version=version),
    )
    trainer.fit(tiny_model(), *loaders(digits), ckpt_path=ckpt_path)
    return trainer


def test_resume_continues_the_history(tmp_path, digits16):
    first = cheap_monitor()
    _fit_with_checkpoints(tmp_path, digits16, [first], max_epochs=2)
    assert [run["epoch"] for run in first.history] == [0, 1]

    resumed = cheap_monitor()
    _fit_with_checkpoints(
        tmp_path, digits16, [resumed], max_epochs=3, ckpt_path=tmp_path / "checkpoints" / "last.ckpt", version=1
    )
    assert [run["epoch"] for run in resumed.history] == [0, 1, 2]
    summary = json.loads((tmp_path / "version_1" / "xai" / "summary.json").read_text())
    assert [run["global_step"] for run in summary["runs"]] == [4, 8, 12]
    # earlier runs' files were copied into the resumed history, paths relative to it, and are readable there
    first_file = summary["runs"][0]["file"]
    assert first_file == "runs/step-00000004.pt"
    assert torch.load(tmp_path / "version_1" / "xai" / first_file, weights_only=True)["global_step"] == 4


def test_checkpoint_loads_with_weights_only_and_two_monitors_coexist(tmp_path, digits16):
    grad_cam_only = cheap_monitor(methods=[GradCAM()])
    occlusion_only = cheap_monitor(methods=[Occlusion(window=4)], every_n_epochs=2)
    assert grad_cam_only.state_key != occlusion_only.state_key
    _fit_with_checkpoints(tmp_path, digits16, [grad_cam_only, occlusion_only], max_epochs=2)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(checkpoint["callbacks"][grad_cam_only.state_key]["runs"]) == 2
    assert len(checkpoint["callbacks"][occlusion_only.state_key]["runs"]) == 1
    assert [run["methods"] for run in grad_cam_only.history] == [["grad_cam"], ["grad_cam"]]


def test_the_monitor_pickles_before_and_after_fit(tmp_path, digits16):
    monitor = cheap_monitor()
    assert pickle.loads(pickle.dumps(monitor)).state_key == monitor.state_key
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    copy = pickle.loads(pickle.dumps(monitor))
    assert torch.equal(copy.probes.images, monitor.probes.images)
    assert copy.state_dict()["runs"] == monitor.state_dict()["runs"]
    make_trainer(tmp_path / "again", [copy], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    assert len(copy.history) == 2


def test_state_key_is_built_once_and_follows_a_change_of_settings(monkeypatch):
    monitor = cheap_monitor(methods=[GradCAM()])
    first = monitor.state_key
    described = []
    monkeypatch.setattr("lightning_xai.callback.checks.describe", lambda *a, **k: described.append(a) or "x")
    assert [monitor.state_key for _ in range(100)] == [first] * 100
    assert described == []  # Lightning asks around every hook of every batch: no re-description
    monitor.every_n_epochs = 3
    assert "'every_n_epochs': 3" in monitor.state_key
    assert len(described) == 1  # described again after the change, once
    monitor.methods = [Occlusion(window=4), GradCAM()]
    assert monitor.state_key == "AttributionMonitor{'methods': ['x', 'x'], 'every_n_epochs': 3, 'probes': 4}"
    assert len(described) == 3  # and again, each method


def _summary_epochs(folder) -> list[int]:
    return [run["epoch"] for run in json.loads((folder / "xai" / "summary.json").read_text())["runs"]]


def test_a_monitor_handed_to_another_trainer_starts_afresh_in_that_trainer_s_log_dir(tmp_path, digits16):
    monitor = cheap_monitor()
    make_trainer(tmp_path / "first", [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    first_probes = monitor.probes
    images, labels = digits16
    wider = torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear")  # another model's images
    second, model = make_trainer(tmp_path / "second", [monitor], max_epochs=1), tiny_model()
    second.fit(model, *loaders((wider, labels)))
    assert _summary_epochs(tmp_path / "first" / "version_0") == [0, 1]  # nothing added to the first fit's history
    assert _summary_epochs(tmp_path / "second" / "version_0") == [0]
    assert monitor.probes is not first_probes and tuple(monitor.probes.images.shape[-2:]) == (20, 20)
    assert monitor.cost["runs"] == 1 and monitor.cost["failed"] == 0
    probes = monitor.probes
    second.validate(model, loaders((wider, labels))[1])  # the same trainer again: its history continues
    assert _summary_epochs(tmp_path / "second" / "version_0") == [0, 1] and monitor.probes is probes
