"""AttributionHistory.open: a second fit never overwrites a history, a resume continues (in place,
from another version's folder, from a copied log dir), a damaged summary is kept aside."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from lightning_xai.history import AttributionHistory, HistoryError, load_run, read_summary


def _record(history: AttributionHistory, step: int) -> dict:
    return history.record(
        global_step=step,
        epoch=step // 4,
        stage="fit",
        maps={"grad_cam": torch.full((2, 1, 4, 4), float(step))},
        targets=torch.tensor([0, 1]),
        predictions=torch.tensor([0, 0]),
        probabilities=torch.tensor([0.9, 0.4]),
        metrics={},
    )


def _first_fit(folder, steps=(4, 8)) -> AttributionHistory:
    history = AttributionHistory.open(folder)
    for step in steps:
        _record(history, step)
    history.write_summary(findings=[{"method": "grad_cam", "global_step": steps[-1]}], settled={"grad_cam": None})
    (folder / "probes.pt").write_bytes(b"probes of the first fit")
    return history


def _steps_and_maps(folder) -> list[tuple[int, float]]:
    return [
        (run["global_step"], float(load_run(folder, run)["maps"]["grad_cam"][0, 0, 0, 0]))
        for run in read_summary(folder)["runs"]
    ]


def test_a_second_fit_writes_to_the_next_numbered_folder(tmp_path):
    base = tmp_path / "version_0" / "xai"
    _first_fit(base)
    before = (base / "summary.json").read_bytes()
    second = AttributionHistory.open(base)
    assert second.folder == tmp_path / "version_0" / "xai-1"
    assert (
        second.notice
        == f"{base} already holds the history of another fit (2 runs in summary.json): this fit writes to {second.folder}."
    )
    _record(second, 4)
    third = AttributionHistory.open(base)
    assert third.folder.name == "xai-2" and third.fit != second.fit
    assert (base / "summary.json").read_bytes() == before and (
        base / "probes.pt"
    ).read_bytes() == b"probes of the first fit"
    assert _steps_and_maps(second.folder) == [(4, 4.0)]
    assert AttributionHistory.open(tmp_path / "fresh" / "xai").notice is None


def test_a_resume_in_the_same_folder_keeps_findings_and_settled(tmp_path):
    base = tmp_path / "xai"
    state = _first_fit(base).state_dict()
    resumed = AttributionHistory.open(base, resume_state=state)
    assert resumed.folder == base and resumed.notice is None and resumed.fit == state["fit"]
    _record(resumed, 12)
    resumed.write_summary(settled={"grad_cam": {"epoch": 3, "global_step": 12}})
    summary = read_summary(base)
    assert summary["findings"] == [{"method": "grad_cam", "global_step": 8}]
    assert summary["settled"] == {"grad_cam": {"epoch": 3, "global_step": 12}}
    assert _steps_and_maps(base) == [(4, 4.0), (8, 8.0), (12, 12.0)]


@pytest.mark.parametrize("how", ["in place", "copied log dir"])
def test_a_resume_into_a_new_version_folder_brings_the_history_along(tmp_path, how):
    root = tmp_path / "logs"
    state = _first_fit(root / "version_0" / "xai").state_dict()
    if how == "copied log dir":
        shutil.copytree(root, tmp_path / "copy")
        shutil.rmtree(root)
        root = tmp_path / "copy"
    resumed = AttributionHistory.open(root / "version_1" / "xai", resume_state=state)
    source, folder = root / "version_0" / "xai", root / "version_1" / "xai"
    assert resumed.folder == folder
    assert resumed.notice == f"resuming the history in {source}: 2 runs up to the checkpoint copied into {folder}."
    _record(resumed, 12)
    shutil.rmtree(source)
    assert _steps_and_maps(folder) == [(4, 4.0), (8, 8.0), (12, 12.0)]
    summary = read_summary(folder)
    assert summary["findings"] == [{"method": "grad_cam", "global_step": 8}] and summary["fit"] == state["fit"]
    assert (folder / "probes.pt").read_bytes() == b"probes of the first fit"


def test_a_resume_from_an_earlier_checkpoint_keeps_the_later_runs(tmp_path):
    base = tmp_path / "xai"
    history = _first_fit(base, steps=(4,))
    state = history.state_dict()
    _record(history, 8)  # a run after the checkpoint was saved
    resumed = AttributionHistory.open(base, resume_state=state)
    assert resumed.folder == tmp_path / "xai-1"
    assert (
        resumed.notice
        == f"resuming the history in {base}: 1 run up to the checkpoint copied into {resumed.folder}, 1 later run left there."
    )
    assert [run["global_step"] for run in read_summary(base)["runs"]] == [4, 8]
    assert _steps_and_maps(resumed.folder) == [(4, 4.0)]


def test_a_resume_without_the_checkpoint_history_lists_runs_without_maps(tmp_path):
    state = _first_fit(tmp_path / "gone" / "xai").state_dict()
    shutil.rmtree(tmp_path / "gone")
    other = _first_fit(tmp_path / "version_0" / "xai").state_dict()  # another fit: same file names, other maps
    resumed = AttributionHistory.open(tmp_path / "version_1" / "xai", resume_state=state)
    assert resumed.folder == tmp_path / "version_1" / "xai" and other["fit"] != state["fit"]
    assert (
        resumed.notice
        == f"the checkpoint's history (2 runs) was not found in {resumed.folder} or beside it: they stay listed without their maps."
    )
    runs = read_summary(resumed.folder)["runs"]
    assert [(run["global_step"], run["file"]) for run in runs] == [(4, None), (8, None)]
    with pytest.raises(HistoryError, match="this run has no maps file"):
        load_run(resumed.folder, runs[0])


def test_a_resume_looks_in_the_folders_it_is_given(tmp_path):
    state = _first_fit(tmp_path / "run" / "xai").state_dict()
    elsewhere = tmp_path / "other" / "logs" / "version_0" / "xai"
    assert AttributionHistory.open(elsewhere, resume_state=state).runs[0]["file"] is None
    shutil.rmtree(elsewhere)
    resumed = AttributionHistory.open(elsewhere, resume_state=state, search=[tmp_path / "run" / "xai"])
    assert resumed.folder == elsewhere and resumed.notice.startswith(
        f"resuming the history in {tmp_path / 'run' / 'xai'}:"
    )
    assert _steps_and_maps(elsewhere) == [(4, 4.0), (8, 8.0)]
    shutil.move(
        tmp_path / "run" / "xai", tmp_path / "run" / "xai-2"
    )  # the checkpoint's fit had written to a numbered folder
    again = AttributionHistory.open(
        tmp_path / "third" / "v" / "xai", resume_state=state, search=[tmp_path / "run" / "xai"]
    )
    assert again.notice.startswith(f"resuming the history in {tmp_path / 'run' / 'xai-2'}:")


def test_an_old_checkpoint_state_with_absolute_paths_resumes_in_place(tmp_path):
    base = tmp_path / "xai"
    history = _first_fit(base)
    old_state = {"runs": [{**run, "file": str(base / run["file"])} for run in history.runs]}
    summary = read_summary(base)
    del summary["fit"]
    (base / "summary.json").write_text(__import__("json").dumps(summary))
    resumed = AttributionHistory.open(base, resume_state=old_state)
    assert resumed.folder == base and resumed.notice is None
    assert [run["file"] for run in resumed.runs] == ["runs/step-00000004.pt", "runs/step-00000008.pt"]
    assert read_summary(base)["findings"] == [{"method": "grad_cam", "global_step": 8}]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            [1, 2],
            "the checkpoint's monitor state is not a lightning_xai history state (expected a dict with a 'runs' list).",
        ),
        ({"runs": "all of them"}, "the checkpoint's monitor state is not a lightning_xai history state"),
        ({"runs": [{"global_step": 1}]}, "the checkpoint's monitor state, run 0: the key 'epoch' is missing"),
        ({"fit": 5, "runs": []}, "the checkpoint's monitor state: 'fit' must be a string, got int."),
    ],
)
def test_a_malformed_checkpoint_state_is_refused(tmp_path, state, message):
    with pytest.raises(HistoryError, match=re.escape(message)):
        AttributionHistory.open(tmp_path / "xai", resume_state=state)


def test_a_damaged_summary_is_kept_aside_never_rebuilt(tmp_path):
    base = tmp_path / "xai"
    _first_fit(base)
    (base / "summary.json").write_bytes(b'{"format": "lightning_xai.his')
    history = AttributionHistory.open(base)
    kept = base / "summary.json.damaged-1"
    assert kept.read_bytes() == b'{"format": "lightning_xai.his' and not (base / "summary.json").exists()
    assert history.folder == tmp_path / "xai-1"
    assert history.notice.startswith(
        f"{base / 'summary.json'} could not be read ({base / 'summary.json'} is truncated or not JSON"
    )
    assert history.notice.endswith(
        f"it is kept as summary.json.damaged-1 and not rebuilt. {base} already holds files of another fit: this fit writes to {history.folder}."
    )
    (base / "summary.json").write_text('{"format": "someone-else/2", "runs": []}')
    AttributionHistory.open(base)
    assert (base / "summary.json.damaged-2").is_file() and kept.is_file()


def test_a_damaged_summary_on_resume_is_kept_and_the_runs_are_not_guessed(tmp_path):
    base = tmp_path / "xai"
    state = _first_fit(base).state_dict()
    (base / "summary.json").write_text("[" * 100_000)
    resumed = AttributionHistory.open(base, resume_state=state)
    assert (base / "summary.json.damaged-1").is_file() and resumed.folder == tmp_path / "xai-1"
    assert "is nested too deeply" in resumed.notice and "was not found" in resumed.notice
    assert [run["file"] for run in resumed.runs] == [None, None]


def test_load_state_dict_brings_the_checkpoint_history_into_its_own_folder(tmp_path):
    state = _first_fit(tmp_path / "version_0" / "xai").state_dict()
    resumed = AttributionHistory(tmp_path / "version_1" / "xai")
    resumed.load_state_dict({**state, "probe_fingerprint": 0.5, "stability": {}})
    source = tmp_path / "version_0" / "xai"
    assert (
        resumed.notice == f"resuming the history in {source}: 2 runs up to the checkpoint copied into {resumed.folder}."
    )
    _record(resumed, 12)
    shutil.rmtree(source)
    assert _steps_and_maps(resumed.folder) == [(4, 4.0), (8, 8.0), (12, 12.0)]
    assert read_summary(resumed.folder)["findings"] == [{"method": "grad_cam", "global_step": 8}]


def test_a_resume_in_place_removes_a_killed_writers_temporary_files(tmp_path):
    base = tmp_path / "xai"
    state = _first_fit(base).state_dict()
    stale = [base / ".summary.json.0123456789ab.tmp", base / "runs" / ".step-00000012.pt.a1b2c3d4e5f6.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    (base / ".keep").write_bytes(b"a user's own hidden file")
    AttributionHistory.open(base, resume_state=state)
    assert not any(path.exists() for path in stale) and (base / ".keep").is_file()
