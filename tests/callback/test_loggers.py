"""Images, scalars and the predictions table reach every logger of the Trainer: TensorBoard, Weights & Biases
(offline) and MLflow (a local file store), each read back from what the logger itself wrote.

The packages are in the ``test`` extra; each test skips cleanly when its package is absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import Saliency
from lightning_xai.monitor import tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model

EXPECTED_SCALARS = (tags.TARGET_PROBABILITY, tags.PROBE_ACCURACY, tags.seconds("saliency"))


def _fit(tmp_path, digits16, logger, **kwargs):
    monitor = cheap_monitor(methods=[Saliency()], shortcuts=None)
    trainer = make_trainer(tmp_path, [monitor], logger=logger, max_epochs=1, **kwargs)
    trainer.fit(tiny_model(), *loaders(digits16))
    return monitor


def test_weights_and_biases_offline(tmp_path, digits16, monkeypatch):
    pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="xai-test")
    _fit(tmp_path, digits16, logger)
    run = logger.experiment
    summary = dict(run.summary)
    files = Path(run.dir)
    run.finish()
    for scalar in EXPECTED_SCALARS:
        assert isinstance(summary[scalar], float), scalar
    assert tags.maps_image("saliency") in summary and tags.PREDICTIONS in summary
    assert list((files / "media" / "images" / "xai" / "maps").glob("saliency_*.png"))
    table = json.loads(next((files / "media" / "table" / "xai").glob("predictions_*.table.json")).read_text())
    assert table["columns"] == ["probe", "label", "predicted", "probability", "target probability"]
    assert len(table["data"]) == 4


def test_mlflow_local_file_store(tmp_path, digits16, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x keeps the file store behind this switch
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    uri = f"file:{tmp_path}/mlruns"
    logger = MLFlowLogger(experiment_name="xai-test", tracking_uri=uri, save_dir=None)
    _fit(tmp_path, digits16, logger)
    client = MlflowClient(uri)
    metrics = client.get_run(logger.run_id).data.metrics
    for scalar in EXPECTED_SCALARS:
        assert scalar in metrics, (scalar, sorted(metrics))
    artifacts = {entry.path for entry in client.list_artifacts(logger.run_id, tags.maps_image("saliency"))}
    assert artifacts and all(path.endswith(".png") for path in artifacts), artifacts
    tables = client.list_artifacts(logger.run_id, tags.PREDICTIONS)
    text = (tmp_path / "mlruns").rglob("*.md")
    assert tables and any("| probe | label | predicted |" in path.read_text() for path in text)


def test_tensorboard_beside_csv_and_no_file_fallback(tmp_path, digits16, caplog):
    tensorboard = TensorBoardLogger(tmp_path, name="", version=0)
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, digits16, [CSVLogger(tmp_path / "csv"), tensorboard])
    assert "no TensorBoard" not in caplog.text
    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert tags.maps_image("saliency") in events.Tags()["images"]
    assert set(EXPECTED_SCALARS) <= set(events.Tags()["scalars"])
    assert not (tmp_path / "csv" / "lightning_logs" / "version_0" / "xai" / "images").exists()
