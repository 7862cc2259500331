"""Damaged, foreign and crafted history files: always a HistoryError naming the file, never a raw
KeyError/RecursionError/TypeError, and never a read outside the history folder."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from lightning_xai.history import SUMMARY_FORMAT, AttributionHistory, HistoryError, load_run, read_summary

ENTRY = {
    "global_step": 4,
    "epoch": 0,
    "stage": "fit",
    "methods": ["grad_cam"],
    "metrics": {"seconds/total": 0.1},
    "skipped": [],
    "file": "runs/step-00000004.pt",
}


def _history(folder) -> dict:
    history = AttributionHistory(folder)
    return history.record(
        global_step=4,
        epoch=0,
        stage="fit",
        maps={"grad_cam": torch.rand(2, 1, 4, 4)},
        targets=torch.tensor([0, 1]),
        predictions=torch.tensor([0, 0]),
        probabilities=torch.tensor([0.9, 0.4]),
        metrics={"seconds/total": 0.1},
    )


def _summary(folder, runs: list, **top) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT, **top, "runs": runs}))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format": "lightning_xai.history/1", "ru', "is truncated or not JSON"),
        (b"\xff\xfe\x00garbage\x81", "is truncated or not JSON"),
        (
            b'{"format": "someone-else/2", "runs": []}',
            "is not a lightning_xai history (format 'someone-else/2', expected 'lightning_xai.history/1').",
        ),
        (b"[1, 2, 3]", "is not a lightning_xai history (format 'list', expected 'lightning_xai.history/1')."),
        (
            b'{"format": "lightning_xai.history/1", "runs": {}}',
            "is not a lightning_xai history (format 'lightning_xai.history/1'",
        ),
        (b"[" * 200_000 + b"]" * 200_000, "is nested too deeply to be a lightning_xai summary"),
        (b'{"format": "lightning_xai.history/1", "fit": 3, "runs": []}', ": 'fit' must be a string, got int."),
    ],
    ids=[
        "truncated",
        "garbled",
        "other-format",
        "not-an-object",
        "runs-not-a-list",
        "deeply-nested",
        "fit-not-a-string",
    ],
)
def test_damaged_or_foreign_summaries_name_the_file(tmp_path, content, message):
    path = tmp_path / "summary.json"
    path.write_bytes(content)
    with pytest.raises(HistoryError, match=re.escape(f"{path}") + ".*" + re.escape(message)):
        read_summary(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": None}, "run 0: 'epoch' must be int, got NoneType (None)."),
        ({"global_step": "4"}, "run 0: 'global_step' must be int, got str ('4')."),
        ({"global_step": True}, "run 0: 'global_step' must be int, got bool (True)."),
        ({"methods": "grad_cam"}, "run 0: 'methods' must be list, got str ('grad_cam')."),
        ({"methods": [1]}, "run 0: 'methods' must be a list of strings, got [1]."),
        ({"metrics": {"a": "high"}}, "run 0: metric 'a' must be a number, got str ('high')."),
        ({"file": 12}, "run 0: 'file' must be a path relative to the history folder"),
        ({"file": ""}, "run 0: 'file' must be a path relative to the history folder"),
    ],
)
def test_malformed_entries_name_the_file_run_and_key(tmp_path, change, message):
    _summary(tmp_path, [{**ENTRY, **change}])
    with pytest.raises(HistoryError, match=re.escape(f"{tmp_path / 'summary.json'}, {message}")):
        read_summary(tmp_path)


@pytest.mark.parametrize("key", sorted(ENTRY))
def test_entries_missing_a_key_are_refused(tmp_path, key):
    _summary(tmp_path, [{k: v for k, v in ENTRY.items() if k != key}])
    message = f"{tmp_path / 'summary.json'}, run 0: the key {key!r} is missing; not a lightning_xai run entry."
    with pytest.raises(HistoryError, match=re.escape(message)):
        read_summary(tmp_path)
    with pytest.raises(HistoryError, match=re.escape(f"the key {key!r} is missing")):
        load_run(tmp_path, {k: v for k, v in ENTRY.items() if k != key})


def test_entries_that_are_not_objects_are_refused(tmp_path):
    _summary(tmp_path, [ENTRY, ["not", "a", "run"]])
    with pytest.raises(
        HistoryError, match=re.escape(f"{tmp_path / 'summary.json'}, run 1: a run must be a JSON object, got list.")
    ):
        read_summary(tmp_path)


@pytest.mark.parametrize(
    "file", ["../outside/runs/step-00000004.pt", "runs/../../outside/runs/step-00000004.pt", "/etc/passwd"]
)
def test_paths_leading_outside_the_folder_are_refused(tmp_path, file):
    folder = tmp_path / "xai"
    _summary(folder, [{**ENTRY, "file": file}])
    message = f"{folder / 'summary.json'}, run 0: the run file {file!r} is not inside the history folder {folder}; refusing to read it."
    with pytest.raises(HistoryError, match=re.escape(message)):
        read_summary(folder)
    with pytest.raises(
        HistoryError, match=re.escape(f"the run file {file!r} is not inside the history folder {folder}")
    ):
        load_run(folder, {**ENTRY, "file": file})


def test_symbolic_links_leading_outside_the_folder_are_refused(tmp_path):
    _history(tmp_path / "outside")
    folder = tmp_path / "xai"
    folder.mkdir()
    os.symlink(tmp_path / "outside" / "runs", folder / "runs")
    _summary(folder, [ENTRY])
    with pytest.raises(
        HistoryError, match=re.escape(f"the run file 'runs/step-00000004.pt' is not inside the history folder {folder}")
    ):
        read_summary(folder)


def test_old_absolute_paths_are_accepted_inside_the_folder_only(tmp_path):
    folder = tmp_path / "xai"
    entry = _history(folder)
    _summary(folder, [{**entry, "file": str(folder / entry["file"])}])
    run = read_summary(folder)["runs"][0]
    assert run["file"] == "runs/step-00000004.pt" and load_run(folder, run)["global_step"] == 4
    copy = tmp_path / "copy"
    os.rename(folder, copy)  # an old summary copied elsewhere still names the original's files
    with pytest.raises(HistoryError, match=re.escape(f"is not inside the history folder {copy}; refusing to read it.")):
        read_summary(copy)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"weights": torch.zeros(3)}, "is not a lightning_xai run file (no 'maps' in it)."),
        ([1, 2, 3], "is not a lightning_xai run file (no 'maps' in it)."),
        (
            {"maps": {"grad_cam": torch.zeros(4)}},
            "is not a lightning_xai run file: map 'grad_cam' is not a [P, C, H, W] tensor.",
        ),
        (
            {"maps": {}, "targets": torch.zeros(2)},
            "is not a lightning_xai run file: 'predictions' is missing or not a tensor.",
        ),
        (
            {"maps": {}, "targets": torch.zeros(2), "predictions": torch.zeros(2), "probabilities": torch.zeros(2)},
            "is not a lightning_xai run file: 'global_step' is missing or not an integer.",
        ),
        (
            {
                "maps": {},
                "targets": torch.zeros(2),
                "predictions": torch.zeros(2),
                "probabilities": torch.zeros(2),
                "global_step": 9,
                "epoch": 0,
            },
            "holds step 9 but summary.json lists it for step 4.",
        ),
    ],
)
def test_run_files_that_are_not_lightning_xai_runs_name_the_file(tmp_path, payload, message):
    entry = _history(tmp_path)
    path = tmp_path / entry["file"]
    torch.save(payload, path)
    with pytest.raises(HistoryError, match=re.escape(f"{path} {message}")):
        load_run(tmp_path, entry)


def test_truncated_pickled_and_missing_run_files_name_the_file(tmp_path):
    entry = _history(tmp_path)
    path = tmp_path / entry["file"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HistoryError, match=re.escape(f"{path} is truncated or not a lightning_xai run file")):
        load_run(tmp_path, entry)
    torch.save({"maps": {}, "evil": AttributionHistory(tmp_path)}, path)  # weights_only refuses arbitrary objects
    with pytest.raises(
        HistoryError, match=re.escape(f"{path} is truncated or not a lightning_xai run file (UnpicklingError")
    ):
        load_run(tmp_path, entry)
    path.unlink()
    with pytest.raises(HistoryError, match=re.escape(f"{path} is listed in summary.json but does not exist.")):
        load_run(tmp_path, entry)
    with pytest.raises(HistoryError, match=re.escape(f"{tmp_path / 'elsewhere' / 'summary.json'} does not exist")):
        read_summary(tmp_path / "elsewhere")
