"""Replay over saved checkpoints reproduces the live maps; safe loading; the command line."""

from __future__ import annotations

import re

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_xai import ExpectedGradients, GradCAM, Occlusion
from lightning_xai.cli import main
from lightning_xai.demos import LitClassifier
from lightning_xai.history import load_run, read_summary
from lightning_xai.replay import load_checkpoint, replay
from tests.callback.conftest import cheap_monitor, loaders, make_trainer

METHODS = [GradCAM(), Occlusion(window=4, stride=4), ExpectedGradients(n_samples=4, reference_count=8)]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, digits16):
    root = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    monitor = cheap_monitor(methods=METHODS)
    checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=-1, save_last=True)
    trainer = make_trainer(root, [monitor, checkpoints], max_epochs=3, enable_checkpointing=True)
    trainer.fit(LitClassifier(in_channels=1, width=4, lr=1e-2), *loaders(digits16))
    return root


def _maps(folder, entry):
    return load_run(folder, entry)["maps"]


def test_replay_reproduces_the_live_maps(live_run, tmp_path):
    live = live_run / "version_0" / "xai"
    entries = replay(
        live_run / "checkpoints", LitClassifier, probes=live / "probes.pt", out_dir=tmp_path, methods=METHODS
    )
    assert [(e["epoch"], e["global_step"], e["stage"]) for e in entries] == [
        (0, 4, "replay"),
        (1, 8, "replay"),
        (2, 12, "replay"),
    ]
    live_runs = read_summary(live)["runs"]
    for live_entry, replayed in zip(live_runs, entries):
        expected, got = _maps(live, live_entry), _maps(tmp_path / "xai", replayed)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert "xai_stability/grad_cam/spearman_mean" in entries[1]["metrics"]
    assert (tmp_path / "xai" / "probes.pt").is_file() and list(tmp_path.glob("events.out.tfevents.*"))


def test_command_line_replay_and_compare(live_run, tmp_path, capsys):
    live = live_run / "version_0" / "xai"
    status = main(
        [
            "replay",
            str(live_run / "checkpoints"),
            "--module",
            "lightning_xai.demos:LitClassifier",
            "--probes",
            str(live / "probes.pt"),
            "--out",
            str(tmp_path / "replayed"),
            "--methods",
            "grad_cam",
            "occlusion:window=4,stride=4",
            "expected_gradients:n_samples=4,reference_count=8",
        ]
    )
    assert status == 0
    assert "3 checkpoints replayed" in capsys.readouterr().out
    assert main(["compare", str(live_run / "version_0"), str(tmp_path / "replayed")]) == 0
    table = capsys.readouterr().out
    assert "grad_cam" in table and "spearman mean/worst" in table
    assert main(["compare", str(live_run), str(tmp_path / "replayed"), "--json"]) == 0
    result = __import__("json").loads(capsys.readouterr().out)
    for name, values in result["methods"].items():
        assert values["spearman_mean"] == pytest.approx(1.0, abs=1e-4), name  # a replay agrees with its live run


class Custom:
    """An arbitrary object: weights_only loading refuses it."""


def test_unsafe_checkpoints_need_an_explicit_opt_in(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save(
        {"state_dict": LitClassifier(in_channels=1, width=4).state_dict(), "extra": Custom(), "global_step": 3}, path
    )
    message = f"checkpoint {path} holds Python objects that safe loading (weights_only=True) refuses"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_checkpoint(path)
    assert load_checkpoint(path, allow_unsafe_pickle=True)["global_step"] == 3


def test_replay_argument_errors(live_run, tmp_path, capsys):
    live = live_run / "version_0" / "xai"
    with pytest.raises(FileNotFoundError, match=re.escape("`checkpoints`: no such file:")):
        replay([tmp_path / "missing.ckpt"], LitClassifier, probes=live / "probes.pt", out_dir=tmp_path)
    status = main(
        [
            "replay",
            str(live_run / "checkpoints"),
            "--module",
            "lightning_xai.demos:LitClassifier",
            "--probes",
            str(live / "probes.pt"),
            "--out",
            str(tmp_path / "x"),
            "--module-kwargs",
            '{"width": 7}',
        ]
    )
    assert status == 2
    error = capsys.readouterr().err
    assert "lightning-xai replay: error: checkpoint" in error and "does not fit LitClassifier(width=7)" in error
