"""Lightning's switches: ``fast_dev_run`` turns the monitor off, no validation leaves it idle, "not settled" only when it could have."""

from __future__ import annotations

import logging
import warnings

import pytest

from lightning_xai import Occlusion, Stability
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def _fit(trainer, *data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_model(), *data)
    assert trainer.state.finished
    return [str(w.message) for w in caught if "AttributionMonitor" in str(w.message)]


def test_fast_dev_run_turns_the_monitor_off_and_writes_nothing(tmp_path, digits16, caplog):
    monitor = cheap_monitor()
    trainer = make_trainer(tmp_path, [monitor], fast_dev_run=True)
    with caplog.at_level(logging.INFO):
        said = _fit(trainer, *loaders(digits16))
    lines = [record.getMessage() for record in caplog.records if "AttributionMonitor" in record.getMessage()]
    assert lines == [
        "AttributionMonitor is off for this fast_dev_run (Lightning suppresses logging and checkpoints in it): nothing is explained or written."
    ]
    assert said == [] and monitor.history == [] and monitor.cost["runs"] == 0
    assert [path for path in tmp_path.rglob("*") if "xai" in path.name] == []


@pytest.mark.parametrize("how", ["no_loader", "limit_val_batches=0"])
def test_without_validation_one_warning_and_the_monitor_stays_idle(tmp_path, digits16, how):
    monitor = cheap_monitor()
    train, val = loaders(digits16)
    if how == "no_loader":
        said = _fit(make_trainer(tmp_path, [monitor], limit_train_batches=2), train)
    else:
        said = _fit(make_trainer(tmp_path, [monitor], limit_train_batches=2, limit_val_batches=0), train, val)
    assert len(said) == 1 and said[0].startswith("AttributionMonitor stays idle for stage 'fit'")
    assert monitor.history == [] and not list(tmp_path.rglob("xai"))


def test_not_settled_warning_only_when_settling_was_possible(tmp_path, digits16):
    short = cheap_monitor(methods=[Occlusion(window=4, stride=4)], stability=Stability(patience=3), shortcuts=None)
    said = _fit(make_trainer(tmp_path / "short", [short], limit_train_batches=2), *loaders(digits16))
    assert len(short.history) == 2 and not [text for text in said if "had not settled" in text]
    # the same never-settling maps over enough runs: now the warning is due
    long = cheap_monitor(
        methods=[Occlusion(window=4, stride=4)], stability=Stability(patience=1, threshold=1.0), shortcuts=None
    )
    said = _fit(make_trainer(tmp_path / "long", [long], limit_train_batches=2), *loaders(digits16))
    assert [text for text in said if "had not settled" in text] == [
        "AttributionMonitor: the occlusion maps had not settled by the end of training (rank correlation with the previous "
        "run below 1.0 within the last 1 runs): the explanations were still changing. See the xai_stability/* curves in TensorBoard."
    ]
