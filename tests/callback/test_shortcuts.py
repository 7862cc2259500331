"""Shortcut reactions in the monitor: on_shortcut, stop_on_shortcut, findings in the checkpoint state."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor, ExpectedGradients, Shortcuts
from lightning_xai.demos import LitClassifier
from lightning_xai.functional.shortcut import box_iou
from lightning_xai.shortcuts import Finding

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
