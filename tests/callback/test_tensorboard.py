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

from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

METHOD_TAGS = ["xai/expected_gradients", "xai/grad_cam", "xai/occlusion"]


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


def test_images_are_logged_per_run_at_the_global_step(logged_run):
    events = _accumulator(logged_run)
    assert set(METHOD_TAGS + ["xai/probes"]) <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("xai/probes")] == [4]  # logged once
    for tag in METHOD_TAGS:
        steps = [e.step for e in events.Images(tag)]
        assert steps == [4, 8], tag
        picture = np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)))
        # 4 probes of 16 px enlarged to 96 px plus a 12-px prediction bar, in one row with 2-px padding
        assert picture.shape == (2 + 96 + 12 + 2, 4 * 98 + 2, 3), tag
        assert picture.std() > 10, f"{tag} looks blank"
    probes = np.asarray(Image.open(io.BytesIO(events.Images("xai/probes")[0].encoded_image_string)))
    assert probes.shape == (2 + 96 + 2, 4 * 98 + 2, 3)  # the images alone, no prediction bar


def test_scalars_are_logged_under_xai(logged_run):
    events = _accumulator(logged_run)
    scalars = set(events.Tags()["scalars"])
    expected = {f"xai/seconds/{name}" for name in ("grad_cam", "occlusion", "expected_gradients", "total")}
    assert expected | {"xai/probe_accuracy", "xai/target_probability"} <= scalars
    seconds = events.Scalars("xai/seconds/total")
    assert [s.step for s in seconds] == [4, 8] and all(s.value > 0 for s in seconds)
    accuracy = [s.value for s in events.Scalars("xai/probe_accuracy")]
    assert all(0.0 <= value <= 1.0 for value in accuracy)


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
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logged_run), "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/images"
    try:
        tags = _wait_for_tags(base, deadline=time.monotonic() + 90)
        run = next(iter(tags))
        assert set(METHOD_TAGS) <= set(tags[run])
        entries = json.loads(_get(f"{base}/images?run={run}&tag=xai/grad_cam"))
        assert [entry["step"] for entry in entries] == [4, 8]
        png = _get(f"{base}/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size == (4 * 98 + 2, 112)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_tags(base: str, deadline: float) -> dict:
    while time.monotonic() < deadline:
        try:
            tags = json.loads(_get(f"{base}/tags"))
            if tags and any("xai/grad_cam" in run_tags for run_tags in tags.values()):
                return tags
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("TensorBoard did not serve the images within 90 s")


def test_without_tensorboard_pngs_are_written_and_the_user_is_told_once(tmp_path, digits16, caplog):
    monitor = cheap_monitor()
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=2, logger=CSVLogger(tmp_path, name="", version=0)).fit(tiny_model(), *loaders(digits16))
    told = [r for r in caplog.records if "no TensorBoardLogger" in r.getMessage()]
    assert len(told) == 1
    images = tmp_path / "version_0" / "xai" / "images"
    assert sorted(p.name for p in (images / "xai_grad_cam").iterdir()) == ["step-00000004.png", "step-00000008.png"]
    assert (images / "xai_probes" / "step-00000004.png").exists()
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    assert len(summary["runs"]) == 2


def test_logger_false_falls_back_to_the_root_dir(tmp_path, digits16):
    monitor = cheap_monitor()
    make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(tiny_model(), *loaders(digits16))
    assert (tmp_path / "xai" / "images" / "xai_occlusion" / "step-00000004.png").exists()
    assert (tmp_path / "xai" / "summary.json").exists()
