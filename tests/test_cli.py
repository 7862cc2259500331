"""The command line on damaged, foreign and crafted files: one line naming the file, exit status 2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lightning_xai.cli import build_parser, main
from lightning_xai.compare import compare_runs
from lightning_xai.demos import LitClassifier
from lightning_xai.history import AttributionHistory, HistoryError, read_summary

PROBES = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _history(folder, *, seed: int = 0, probes: torch.Tensor = PROBES, steps=(4, 8)) -> AttributionHistory:
    generator = torch.Generator().manual_seed(seed)
    history = AttributionHistory.open(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = probes.shape[0]
    for step in steps:
        history.record(
            global_step=step,
            epoch=step // 4,
            stage="fit",
            maps={"grad_cam": torch.rand(count, 1, 16, 16, generator=generator)},
            targets=torch.zeros(count, dtype=torch.long),
            predictions=torch.zeros(count, dtype=torch.long),
            probabilities=torch.full((count,), 0.5),
            metrics={},
        )
    torch.save({"images": probes, "labels": None, "source": "given"}, folder / "probes.pt")
    return history


@pytest.fixture
def two_runs(tmp_path):
    _history(tmp_path / "a" / "version_0" / "xai", seed=0)
    _history(tmp_path / "b" / "version_0" / "xai", seed=1)
    return tmp_path / "a", tmp_path / "b"


def _compare_error(capsys, run_a, run_b) -> str:
    assert main(["compare", str(run_a), str(run_b)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("lightning-xai compare: error: ")
    return captured.err


def test_compare_works_on_good_histories_and_skips_failed_runs(two_runs, capsys):
    run_a, run_b = two_runs
    AttributionHistory.open(run_b / "version_0" / "xai", resume_state=_state(run_b)).record_failure(
        global_step=12, epoch=3, stage="fit", error="RuntimeError: boom"
    )
    assert main(["compare", str(run_a), str(run_b), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == [8, 8] and 0.0 < result["methods"]["grad_cam"]["spearman_mean"] < 0.9
    assert compare_runs(run_a, run_a)["methods"]["grad_cam"]["spearman_mean"] == pytest.approx(1.0)


def _state(run) -> dict:
    summary = read_summary(run / "version_0" / "xai")
    return {"fit": summary["fit"], "runs": summary["runs"]}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: b"[" * 100_000, "summary.json is nested too deeply to be a lightning_xai summary"),
        (lambda s: s[:50], "summary.json is truncated or not JSON"),
        (
            lambda s: s.replace(b'"epoch"', b'"epoque"'),
            "summary.json, run 0: the key 'epoch' is missing; not a lightning_xai run entry.",
        ),
        (
            lambda s: s.replace(b'"global_step": 8', b'"global_step": "8"'),
            "summary.json, run 1: 'global_step' must be int, got str ('8').",
        ),
        (
            lambda s: s.replace(b'"runs/step-00000008.pt"', b'"../../../b/version_0/xai/runs/step-00000008.pt"'),
            "is not inside the history folder",
        ),
        (
            lambda s: s.replace(b'"runs/step-00000008.pt"', b'"/etc/hostname"'),
            "the run file '/etc/hostname' is not inside the history folder",
        ),
        (
            lambda s: s.replace(b'"lightning_xai.history/1"', b'"lightning_xai.history/9"'),
            "is not a lightning_xai history (format 'lightning_xai.history/9'",
        ),
    ],
    ids=["deeply-nested", "truncated", "missing-key", "wrong-type", "dot-dot", "absolute", "other-format"],
)
def test_compare_refuses_damaged_or_crafted_summaries(two_runs, capsys, damage, message):
    run_a, run_b = two_runs
    path = run_a / "version_0" / "xai" / "summary.json"
    path.write_bytes(damage(path.read_bytes()))
    error = _compare_error(capsys, run_a, run_b)
    assert str(path.parent) in error and message in error
    with pytest.raises(HistoryError, match=re.escape(message)):
        compare_runs(run_a, run_b)


def test_compare_refuses_foreign_run_and_probe_files(two_runs, capsys):
    run_a, run_b = two_runs
    folder = run_a / "version_0" / "xai"
    torch.save({"images": PROBES}, folder / "runs" / "step-00000008.pt")
    error = _compare_error(capsys, run_a, run_b)
    assert f"{folder / 'runs' / 'step-00000008.pt'} is not a lightning_xai run file (no 'maps' in it)." in error
    _history(folder.parent / "xai-fresh", seed=0)
    (folder.parent / "xai-fresh" / "probes.pt").write_bytes(b"garbage")
    error = _compare_error(capsys, folder.parent / "xai-fresh", run_b)
    assert f"{folder.parent / 'xai-fresh' / 'probes.pt'} is truncated or not a lightning_xai probes file" in error


def test_compare_refuses_runs_of_different_probes(tmp_path, capsys):
    _history(tmp_path / "a", probes=PROBES)
    _history(tmp_path / "b", probes=PROBES[:2])
    error = _compare_error(capsys, tmp_path / "a", tmp_path / "b")
    assert "the runs explain different probe images" in error
    (tmp_path / "a" / "probes.pt").unlink()
    error = _compare_error(capsys, tmp_path / "a", tmp_path / "b")
    assert "the runs explain different numbers of probes" in error


def test_compare_of_a_history_with_only_failed_runs(tmp_path, capsys):
    history = _history(tmp_path / "a", steps=())
    history.record_failure(global_step=4, epoch=0, stage="fit", error="OSError: disk full")
    _history(tmp_path / "b")
    assert f"{tmp_path / 'a' / 'summary.json'} lists no run with maps yet." in _compare_error(
        capsys, tmp_path / "a", tmp_path / "b"
    )


def _checkpoint(path) -> None:
    model = LitClassifier(in_channels=1, width=4)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "global_step": 4,
            "epoch": 0,
            "hyper_parameters": {"in_channels": 1, "width": 4},
        },
        path,
    )


def _replay(tmp_path, probes, checkpoints, out) -> int:
    return main(
        [
            "replay",
            str(checkpoints),
            "--module",
            "lightning_xai.demos:LitClassifier",
            "--probes",
            str(probes),
            "--out",
            str(out),
            "--methods",
            "grad_cam",
        ]
    )


def test_replay_refuses_damaged_probes_and_checkpoints(tmp_path, capsys):
    _checkpoint(tmp_path / "good.ckpt")
    (tmp_path / "probes.pt").write_bytes(b"\x00\x01 not a probes file")
    assert _replay(tmp_path, tmp_path / "probes.pt", tmp_path / "good.ckpt", tmp_path / "out") == 2
    assert (
        f"lightning-xai replay: error: {tmp_path / 'probes.pt'} is truncated or not a lightning_xai probes file"
        in capsys.readouterr().err
    )
    torch.save({"images": PROBES, "labels": None, "source": "given"}, tmp_path / "probes.pt")
    (tmp_path / "bad.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:300])
    assert _replay(tmp_path, tmp_path / "probes.pt", tmp_path / "bad.ckpt", tmp_path / "out") == 2
    assert (
        f"lightning-xai replay: error: checkpoint {tmp_path / 'bad.ckpt'} is truncated or not a PyTorch checkpoint"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_replay_never_overwrites_an_earlier_history(tmp_path, capsys):
    _checkpoint(tmp_path / "model.ckpt")
    earlier = _history(tmp_path / "out" / "xai")
    before = (earlier.folder / "summary.json").read_bytes()
    assert _replay(tmp_path, earlier.folder / "probes.pt", tmp_path / "model.ckpt", tmp_path / "out") == 0
    output = capsys.readouterr().out
    assert (
        f"replay: {tmp_path / 'out' / 'xai'} already holds the history of another fit (2 runs in summary.json)"
        in output
    )
    assert (earlier.folder / "summary.json").read_bytes() == before
    assert [run["stage"] for run in read_summary(tmp_path / "out" / "xai-1")["runs"]] == ["replay"]


def test_the_parser_reads_both_commands():
    assert build_parser().parse_args(["compare", "a", "b", "--json"]).json is True
    replay_arguments = build_parser().parse_args(
        [
            "replay",
            "c.ckpt",
            "--module",
            "lightning_xai.demos:LitClassifier",
            "--probes",
            "p.pt",
            "--out",
            "o",
            "--methods",
            "grad_cam",
        ]
    )
    assert replay_arguments.module is LitClassifier and [m.name for m in replay_arguments.methods] == ["grad_cam"]


def test_every_method_class_can_be_named_on_the_command_line():
    from lightning_xai.cli import parse_method
    from lightning_xai.methods import DeconvNet, GuidedBackprop, GuidedGradCAM, Mask

    assert parse_method("guided_backprop") == GuidedBackprop()
    assert parse_method("deconvnet") == DeconvNet()
    assert parse_method("guided_grad_cam:interpolate=nearest") == GuidedGradCAM(interpolate="nearest")
    assert parse_method("mask:steps=50") == Mask(steps=50)
