"""History you can resume, move and trust: findings, settled state, runs and probes carried across a resume."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import Occlusion, Stability
from lightning_xai.history import HistoryError, load_run, read_summary
from lightning_xai.monitor import engine as engine_module
from lightning_xai.monitor.analyses import ShortcutReport
from lightning_xai.monitor.artefacts import save_tensors
from lightning_xai.shortcuts import Finding
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def _plant_finding(detector, model, displays, test_images, *, epoch, step, batch_size=None, **options):
    """Stands in for the shortcut checks (any further options ignored): one confirmed finding at the first run, none after."""
    if detector.findings:
        return ShortcutReport()
    finding = Finding(
        epoch=epoch,
        global_step=step,
        method="occlusion",
        box=[0, 0, 4, 4],
        score=1.0,
        confirmed=True,
        message="planted",
    )
    detector.findings.append(finding)
    return ShortcutReport(new=[finding])


def _monitor():
    return cheap_monitor(methods=[Occlusion(window=4, stride=4)], stability=Stability(patience=1, threshold=-1.0))


def _trainer(root, monitor, **kwargs):
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=-1)
    return make_trainer(root, [monitor, checkpoint], limit_train_batches=2, enable_checkpointing=True, **kwargs)


def _other_validation(digits):
    """Validation images in another order: picking probes again would pick other images."""
    images, labels = digits
    return DataLoader(TensorDataset(images[1500:].flip(0), labels[1500:].flip(0)), batch_size=32)


@pytest.fixture(scope="module")
def first_fit(tmp_path_factory, digits16):
    root = tmp_path_factory.mktemp("first")
    monitor = _monitor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "check_shortcuts", _plant_finding)
        _trainer(root, monitor).fit(tiny_model(), *loaders(digits16))
    summary = read_summary(root / "version_0" / "xai")
    assert [run["global_step"] for run in summary["runs"]] == [2, 4] and summary["findings"][0]["message"] == "planted"
    checkpoint = torch.load(root / "ckpt" / "last.ckpt", weights_only=True)
    state = json.dumps(checkpoint["callbacks"][monitor.state_key])
    assert str(root) not in state and '"runs/step-00000002.pt"' in state  # no absolute path in the checkpoint either
    return root, monitor.probes


@pytest.fixture
def copy_of_first_fit(first_fit, tmp_path):
    root, probes = first_fit
    shutil.copytree(root, tmp_path / "run")
    return tmp_path / "run", probes


def _resume(root, digits, monkeypatch, **kwargs):
    monkeypatch.setattr(engine_module, "check_shortcuts", _plant_finding)
    monitor = _monitor()
    trainer = _trainer(root, monitor, max_epochs=3, **kwargs)
    trainer.fit(tiny_model(), loaders(digits)[0], _other_validation(digits), ckpt_path=root / "ckpt" / "last.ckpt")
    return monitor, trainer


def test_resume_keeps_findings_settled_runs_and_probes(copy_of_first_fit, digits16, monkeypatch):
    root, probes = copy_of_first_fit
    monitor, trainer = _resume(root, digits16, monkeypatch)
    assert trainer.global_step == 6
    assert torch.equal(monitor.probes.images, probes.images)  # restored from probes.pt, not picked again
    summary = read_summary(root / "version_0" / "xai")
    assert (
        [run["global_step"] for run in summary["runs"]] == [2, 4, 6] == [run["global_step"] for run in monitor.history]
    )
    assert (
        [finding["message"] for finding in summary["findings"]]
        == ["planted"]
        == [f["message"] for f in monitor.findings]
    )
    assert summary["settled"]["occlusion"] == {"epoch": 1, "global_step": 4} == monitor.settled["occlusion"]
    for run in summary["runs"]:
        assert load_run(root / "version_0" / "xai", run)["global_step"] == run["global_step"]


def test_a_moved_log_dir_still_resumes(copy_of_first_fit, digits16, monkeypatch, tmp_path):
    root, probes = copy_of_first_fit
    moved = shutil.move(root, tmp_path / "moved")
    monitor, _ = _resume(moved, digits16, monkeypatch)
    folder = moved / "version_0" / "xai"
    summary = read_summary(folder)
    assert [run["file"] for run in summary["runs"]] == [
        "runs/step-00000002.pt",
        "runs/step-00000004.pt",
        "runs/step-00000006.pt",
    ]
    assert all(load_run(folder, run)["maps"]["occlusion"].shape == (4, 1, 16, 16) for run in summary["runs"])
    assert torch.equal(monitor.probes.images, probes.images)


def test_probes_that_do_not_match_the_checkpoint_fail_before_training(copy_of_first_fit, digits16, monkeypatch):
    root, probes = copy_of_first_fit
    folder = root / "version_0" / "xai"
    save_tensors(
        folder / "probes.pt", {"images": probes.images + 0.5, "labels": probes.labels, "source": probes.source}
    )
    with pytest.raises(
        HistoryError,
        match=re.escape(f"the probes in {folder / 'probes.pt'} are not the ones the checkpoint was explaining"),
    ):
        _resume(root, digits16, monkeypatch)
    assert [run["global_step"] for run in read_summary(folder)["runs"]] == [2, 4]
    assert not (folder / "runs" / "step-00000006.pt").exists()


def test_a_second_fit_into_the_same_folder_starts_a_numbered_history(copy_of_first_fit, digits16, caplog):
    root, _ = copy_of_first_fit
    monitor = _monitor()
    with caplog.at_level(logging.INFO):
        make_trainer(root, [monitor], limit_train_batches=2, max_epochs=1).fit(tiny_model(), *loaders(digits16))
    base = root / "version_0" / "xai"
    assert (
        f"AttributionMonitor: {base} already holds the history of another fit (2 runs in summary.json): this fit writes to {base}-1."
        in caplog.text
    )
    assert [run["global_step"] for run in read_summary(base)["runs"]] == [2, 4]  # untouched
    assert [run["global_step"] for run in read_summary(root / "version_0" / "xai-1")["runs"]] == [2]


def test_a_copied_log_dir_resumes_with_its_own_files(first_fit, digits16, monkeypatch, tmp_path):
    original, _ = first_fit
    before = (original / "version_0" / "xai" / "summary.json").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    for path in (copy / "version_0" / "xai" / "runs").iterdir():  # the copy's own maps, told apart from the original's
        payload = torch.load(path, weights_only=True)
        payload["maps"] = {key: torch.full_like(value, 7.0) for key, value in payload["maps"].items()}
        torch.save(payload, path)
    monitor, _ = _resume(copy, digits16, monkeypatch)
    folder = copy / "version_0" / "xai"
    assert [run["global_step"] for run in read_summary(folder)["runs"]] == [2, 4, 6]
    assert all(bool((load_run(folder, run)["maps"]["occlusion"] == 7.0).all()) for run in monitor.history[:2])
    assert (original / "version_0" / "xai" / "summary.json").read_bytes() == before  # the original is never written


def test_a_damaged_summary_is_kept_aside_and_said_on_resume(copy_of_first_fit, digits16, monkeypatch, caplog):
    root, probes = copy_of_first_fit
    base = root / "version_0" / "xai"
    (base / "summary.json").write_text('{"format": "lightning_xai.history/1", "runs": [')
    with caplog.at_level(logging.INFO):
        monitor, trainer = _resume(root, digits16, monkeypatch)
    assert trainer.global_step == 6 and (base / "summary.json.damaged-1").is_file()
    assert (
        f"{base / 'summary.json'} could not be read (" in caplog.text
        and "it is kept as summary.json.damaged-1 and not rebuilt." in caplog.text
    )
    assert [run["global_step"] for run in monitor.history] == [2, 4, 6]
    assert torch.equal(
        monitor.probes.images, probes.images
    )  # the probes beside the damaged summary match the checkpoint


def test_lost_probes_on_resume_are_said(copy_of_first_fit, digits16, monkeypatch):
    root, probes = copy_of_first_fit
    (root / "version_0" / "xai" / "probes.pt").unlink()
    with pytest.warns(
        UserWarning, match=re.escape("AttributionMonitor: the probes the checkpoint was explaining were not found")
    ):
        monitor, trainer = _resume(root, digits16, monkeypatch)
    assert trainer.global_step == 6 and not torch.equal(monitor.probes.images, probes.images)


def test_a_resume_on_two_processes_explains_the_checkpoints_probes_on_every_rank(copy_of_first_fit):
    from tests.faults.test_processes import _run_script

    root, probes = copy_of_first_fit
    _run_script("resume", root, timeout=300)
    ranks = [json.loads((root / f"resume-rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["fingerprint"] for report in ranks] == [probes.fingerprint()] * 2  # restored, not picked again
    assert ranks[0]["runs"] == [2, 4, 6]  # rank 0 continues the history; the others never record
