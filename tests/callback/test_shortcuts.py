"""Shortcut reactions in the monitor: on_shortcut, stop_on_shortcut, findings and the checks' runs in the checkpoint state."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, ExpectedGradients, Occlusion, Shortcuts
from lightning_xai.demos import LitClassifier
from lightning_xai.functional.shortcut import box_iou
from lightning_xai.history import read_summary
from lightning_xai.monitor import engine as engine_module
from lightning_xai.monitor.analyses import ShortcutReport
from lightning_xai.monitor.shortcut_detector import ShortcutDetector
from lightning_xai.shortcuts import Finding
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def decoy_loaders():
    example = runpy.run_path(str(ROOT / "examples" / "decoy_digits.py"))
    images, labels, _ = example["make_data"](0, clean=False, kind="shade", corner="top_left")
    train = DataLoader(TensorDataset(images[:1500], labels[:1500]), batch_size=64, shuffle=True)
    return train, DataLoader(TensorDataset(images[1500:], labels[1500:]), batch_size=64)


def _stopping_fit(root: Path, loaders, on_shortcut, match: str) -> tuple[AttributionMonitor, pl.Trainer]:
    """A 6-epoch decoy fit with ``stop_on_shortcut`` and ``on_shortcut``, expecting a warning matching ``match``."""
    monitor = AttributionMonitor(
        [ExpectedGradients(n_samples=16)],
        display_mean=(0.0,),
        display_std=(1.0,),
        on_shortcut=on_shortcut,
        stop_on_shortcut=True,
    )
    trainer = pl.Trainer(
        max_epochs=6,
        default_root_dir=root,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    with pytest.warns(UserWarning, match=match):
        trainer.fit(LitClassifier(in_channels=1, width=16, pooled_size=4), *loaders)
    return monitor, trainer


def test_stop_on_shortcut_and_on_shortcut(tmp_path, decoy_loaders):
    seen: list[Finding] = []
    monitor, trainer = _stopping_fit(tmp_path, decoy_loaders, seen.append, "found a likely shortcut")
    assert len(seen) == 1 and isinstance(seen[0], Finding) and box_iou(tuple(seen[0].box), (1, 1, 5, 5)) >= 0.5
    assert seen[0].kind == "region" and seen[0].p_value <= seen[0].level  # the swatch of every class, with its evidence
    assert trainer.current_epoch == seen[0].epoch + 1 < 6  # stopped right after the finding's epoch
    state = monitor.state_dict()
    assert state["findings"] == monitor.findings
    restored = AttributionMonitor([ExpectedGradients(n_samples=16)])
    restored.load_state_dict(state)
    assert restored.findings == monitor.findings


def _refuses(finding: Finding) -> None:
    raise ValueError("user callback failed")


def test_an_on_shortcut_that_raises_is_one_warning_and_the_stop_and_the_run_stand(tmp_path, decoy_loaders):
    said = "`on_shortcut` raised ValueError: user callback failed. The finding is recorded"
    monitor, trainer = _stopping_fit(tmp_path, decoy_loaders, _refuses, said)
    (finding,) = monitor.findings
    assert trainer.current_epoch == finding["epoch"] + 1 < 6  # the stop stands
    assert monitor.cost["failed"] == 0 and all("error" not in run for run in monitor.history)


def test_given_probes_still_get_validation_test_images(tmp_path, decoy_loaders):
    train, val = decoy_loaders
    images, labels = val.dataset.tensors
    # after one short epoch no heat is concentrated enough to make a candidate: the suspect box is tested regardless
    monitor = AttributionMonitor(
        [ExpectedGradients(n_samples=16)],
        probes=(images[:4], labels[:4]),
        shortcuts=Shortcuts(suspect_regions=[(1, 1, 5, 5)]),
    )
    trainer = pl.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        limit_train_batches=2,
    )
    trainer.fit(LitClassifier(in_channels=1, width=4, pooled_size=4), train, val)
    assert (
        monitor._run.collector.test_images is not None
        and monitor._run.collector.test_images.shape[0] == Shortcuts().test_images
    )  # from validation, not the 4 probes
    metrics = monitor.history[0]["metrics"]
    assert (
        "xai_shortcuts/expected_gradients/flip_rate" in metrics
        and metrics["xai_shortcuts/expected_gradients/peak_concentration"] > 0
    )


def _moving(epoch: int, step: int, boxes: list[list[int]], read: list[bool]) -> Finding:
    return Finding(
        epoch,
        step,
        "test_gradients",
        [0, 0, 4, 4],
        1.0,
        True,
        "moving.",
        kind="moving_region",
        boxes=boxes,
        boxes_read=read,
        outlined_after=epoch,
    )


def _found_then_outlined_again(detector, model, displays, test_images, *, epoch, step, **options):
    """Stands in for the shortcut checks: a moving region found at the first run, confirmed with other outlines at
    the second (the detector's own redrawing), the same outlines after."""
    if not detector.findings:
        found = _moving(epoch, step, [[0, 0, 4, 4]] * 4, [False] * 4)
        detector.findings.append(found)
        return ShortcutReport(new=[found])
    fresh = _moving(epoch, step, [[0, 0, 4, 4], [0, 12, 4, 16], [12, 0, 16, 4], [0, 0, 4, 4]], [True] * 4)
    return ShortcutReport(outlined_again=detector._outline_again([fresh]))


def test_a_moving_region_outlined_again_is_rewritten_in_the_summary_and_said_once_without_a_new_reaction(
    tmp_path, digits16, monkeypatch, caplog
):
    seen: list[Finding] = []
    monkeypatch.setattr(engine_module, "check_shortcuts", _found_then_outlined_again)
    monitor = cheap_monitor(methods=[Occlusion(window=4, stride=4)], on_shortcut=seen.append)
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="found a likely shortcut: moving."):
        make_trainer(tmp_path, [monitor], max_epochs=3, num_sanity_val_steps=0).fit(tiny_model(), *loaders(digits16))
    assert len(seen) == 1 and seen[0].epoch == 0  # outlined again: no second reaction
    assert seen[0].boxes == [[0, 0, 4, 4]] * 4 and seen[0].outlined_after == 0  # handed a copy, as found
    (finding,) = monitor.findings
    assert finding["boxes"][1:3] == [[0, 12, 4, 16], [12, 0, 16, 4]] and finding["boxes_read"] == [True] * 4
    assert finding["epoch"] == 0 and finding["outlined_after"] == 1  # the epoch-2 run drew the same outlines
    assert (
        finding["message"]
        == "moving. Outlined again after epoch 1: filling it lowers the predicted class by 10% or more in every probe."
    )
    assert read_summary(tmp_path / "version_0" / "xai")["findings"] == monitor.findings
    said = [r.getMessage() for r in caplog.records if "confirmed again" in r.getMessage()]
    assert len(said) == 1 and "found after epoch 0 was confirmed again after epoch 1" in said[0]
    assert "in 4 of 4 probes" in said[0]


def _fit_with_checkpoint(root: Path, digits, monitor: AttributionMonitor, *, max_epochs: int, ckpt_path=None) -> None:
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)
    trainer = make_trainer(root, [monitor, checkpoint], max_epochs=max_epochs, enable_checkpointing=True, logger=False)
    trainer.fit(tiny_model(), *loaders(digits), ckpt_path=ckpt_path)


def test_a_resumed_fit_goes_on_with_the_checks_runs_and_tested_places(tmp_path, digits16, monkeypatch):
    """The false-alarm rate is shared out over a whole fit's runs (run r gets rate / (r (r + 1))): a resumed fit
    must go on counting from the checkpoint's run, not start again at run 1 with a fresh share."""
    seen: list[tuple[int, int]] = []  # per check of the resumed fit: places known before it, the run it counts as
    original = ShortcutDetector.check

    def counting(self, *args, **kwargs):
        known = len(self.retests.records)
        report = original(self, *args, **kwargs)
        seen.append((known, self.runs))
        return report

    first = cheap_monitor(methods=[Occlusion(window=4, stride=4)], schedule="every_run")
    _fit_with_checkpoint(tmp_path, digits16, first, max_epochs=2)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"][first.state_key]
    detector = first._run.engine.detector
    assert saved["shortcut_checks"]["runs"] == detector.runs == 2
    assert saved["shortcut_checks"]["places"]  # places were tested, so their waits have something to go on from
    assert [place["box"] for place in saved["shortcut_checks"]["places"]] == [
        list(record.box) for record in detector.retests.records
    ]
    monkeypatch.setattr(ShortcutDetector, "check", counting)
    resumed = cheap_monitor(methods=[Occlusion(window=4, stride=4)], schedule="every_run")
    _fit_with_checkpoint(tmp_path, digits16, resumed, max_epochs=3, ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert seen == [(len(saved["shortcut_checks"]["places"]), 3)]
    assert resumed._run.engine.detector.runs == 3
