"""What the user sees: TensorBoard's own reader and server, and the PNG fallback without TensorBoard."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pytorch_lightning.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai.monitor import images, recorder, tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

METHODS = ["expected_gradients", "grad_cam", "occlusion"]
METHOD_TAGS = [tags.maps_image(name) for name in METHODS]
STEPS = [3, 7]  # Lightning logs validation metrics at the batches that stepped before the last one's increment


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, digits16) -> Path:
    root = tmp_path_factory.mktemp("tensorboard")
    monitor = cheap_monitor(display_mean=(0.0,), display_std=(1.0,))
    make_trainer(root, [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    return root / "version_0"


def _accumulator(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_images_are_logged_per_run_at_the_step_of_the_validation_metrics(logged_run):
    events = _accumulator(logged_run)
    assert set(METHOD_TAGS + ["xai/probes"]) <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("xai/probes")] == STEPS[:1]  # logged once
    for tag in METHOD_TAGS:
        steps = [e.step for e in events.Images(tag)]
        assert steps == STEPS, tag
        picture = np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)))
        # 4 probes of 16 px enlarged to 96 px plus a 12-px prediction bar, in one row with 2-px padding
        assert picture.shape == (2 + 96 + 12 + 2, 4 * 98 + 2, 3), tag
        assert picture.std() > 10, f"{tag} looks blank"
    probes = np.asarray(Image.open(io.BytesIO(events.Images("xai/probes")[0].encoded_image_string)))
    assert probes.shape == (2 + 96 + 2, 4 * 98 + 2, 3)  # the images alone, no prediction bar


def test_the_monitors_scalars_line_up_with_lightnings_validation_metrics(logged_run):
    events = _accumulator(logged_run)
    lightning_steps = [s.step for s in events.Scalars("val_loss")]
    assert lightning_steps == STEPS
    for tag in (tags.SECONDS_TOTAL, tags.PROBE_ACCURACY, tags.stability("grad_cam", "spearman_mean")):
        assert [s.step for s in events.Scalars(tag)] == lightning_steps[-len(events.Scalars(tag)) :], tag


def test_scalars_sit_in_sections_a_person_scans(logged_run):
    events = _accumulator(logged_run)
    scalars = {tag for tag in events.Tags()["scalars"] if tag.startswith("xai")}
    expected = {tags.seconds(name) for name in METHODS} | {
        tags.SECONDS_TOTAL,
        tags.PROBE_ACCURACY,
        tags.TARGET_PROBABILITY,
    }
    assert expected <= scalars
    sections = {tag.split("/")[0] for tag in scalars}
    assert sections == {"xai_probes", "xai_stability", "xai_agreement", "xai_shortcuts", "xai_cost"}
    assert all(tags.matches_pattern(tag) for tag in scalars), sorted(t for t in scalars if not tags.matches_pattern(t))
    seconds = events.Scalars(tags.SECONDS_TOTAL)
    assert [s.step for s in seconds] == STEPS and all(s.value > 0 for s in seconds)
    accuracy = [s.value for s in events.Scalars(tags.PROBE_ACCURACY)]
    assert all(0.0 <= value <= 1.0 for value in accuracy)


def test_every_logged_tag_is_in_the_schema_and_the_layout_is_written(logged_run):
    events = _accumulator(logged_run)
    logged = set(events.Tags()["images"]) | {t.removesuffix("/text_summary") for t in events.Tags()["tensors"]}
    logged = {tag for tag in logged if tag.startswith("xai")} | {
        t for t in events.Tags()["scalars"] if t.startswith("xai")
    }
    assert logged and all(tags.matches_pattern(tag) for tag in logged), sorted(
        t for t in logged if not tags.matches_pattern(t)
    )
    layout = [t for t in events.Tags()["tensors"] if "custom_scalars" in t]
    assert layout, events.Tags()["tensors"]


def test_one_filmstrip_per_method_with_probes_as_rows_and_runs_as_columns(logged_run):
    events = _accumulator(logged_run)
    strips = [tag for tag in events.Tags()["images"] if tag.startswith("xai/filmstrip/")]
    assert sorted(strips) == sorted(tags.filmstrip_image(name) for name in METHODS)
    first, last = (
        np.asarray(Image.open(io.BytesIO(e.encoded_image_string)))
        for e in events.Images(tags.filmstrip_image("grad_cam"))
    )
    # 4 probes of 96 px as rows of 48-px thumbnails under a 14-px label row; one column per run so far
    assert first.shape == (14 + 4 * 50, 1 * 50 + 2, 3) and last.shape == (14 + 4 * 50, 2 * 50 + 2, 3)
    label_row = last[2:12].astype(float)
    assert (label_row < 100).any(axis=2).sum() > 20  # the "ep 0" / "ep 1" labels are drawn


def test_prediction_table_is_logged_as_text(logged_run):
    events = _accumulator(logged_run)
    assert "xai/predictions/text_summary" in events.Tags()["tensors"]
    table = events.Tensors("xai/predictions/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| probe | label | predicted | probability | target probability |" in table
    assert table.count("\n") == 1 + 1 + 4 - 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_tensorboard_server_serves_the_logged_images(logged_run):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logged_run),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/images"
    try:
        served = _wait_for_tags(base, deadline=time.monotonic() + 90)
        run = next(iter(served))
        assert set(METHOD_TAGS) <= set(served[run])
        entries = json.loads(_get(f"{base}/images?run={run}&tag={tags.maps_image('grad_cam')}"))
        assert [entry["step"] for entry in entries] == STEPS
        png = _get(f"{base}/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size == (4 * 98 + 2, 112)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_tags(base: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        try:
            served = json.loads(_get(f"{base}/tags"))
            if served and any(tags.maps_image("grad_cam") in run_tags for run_tags in served.values()):
                return served
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("TensorBoard did not serve the images within 90 s")


def test_without_tensorboard_pngs_are_written_and_the_user_is_told_once(tmp_path, digits16, caplog):
    monitor = cheap_monitor()
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=2, logger=CSVLogger(tmp_path, name="", version=0)).fit(
            tiny_model(), *loaders(digits16)
        )
    told = [r for r in caplog.records if "no TensorBoardLogger" in r.getMessage()]
    assert len(told) == 1
    images = tmp_path / "version_0" / "xai" / "images"
    assert sorted(p.name for p in (images / "xai_maps_grad_cam").iterdir()) == [
        "step-00000003.png",
        "step-00000007.png",
    ]
    assert (images / "xai_probes" / "step-00000003.png").exists()
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert len(summary["runs"]) == 2


def test_logger_false_falls_back_to_the_root_dir(tmp_path, digits16):
    monitor = cheap_monitor()
    make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(tiny_model(), *loaders(digits16))
    assert (tmp_path / "xai" / "images" / "xai_maps_occlusion" / "step-00000003.png").exists()
    assert (tmp_path / "xai" / "summary.json").exists()


def test_each_method_s_maps_are_drawn_over_the_probes_once_per_run_for_the_grid_and_the_filmstrip(
    tmp_path, digits16, monkeypatch
):
    calls: list[str] = []
    real = recorder.overlay
    monkeypatch.setattr(recorder, "overlay", lambda *a, **k: calls.append("recorder") or real(*a, **k))
    monkeypatch.setattr(images, "overlay", lambda *a, **k: calls.append("images") or real(*a, **k))
    monitor = cheap_monitor(display_mean=(0.0,), display_std=(1.0,), schedule="every_run")
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    events = _accumulator(tmp_path / "version_0")
    assert [e.step for e in events.Images(tags.filmstrip_image("grad_cam"))] == STEPS
    assert calls == ["recorder"] * (2 * len(METHODS))  # two runs of three methods, each drawn once
