"""The robustness checks through the monitor: on demand after fit, and at the end of fit."""

from __future__ import annotations

import json

import pytest

from lightning_xai import IntegratedGradients, RobustnessCheck, Saliency
from lightning_xai.monitor import tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def test_robustness_at_the_end_of_fit_is_warned_recorded_and_logged(tmp_path, digits16):
    methods = [Saliency(), IntegratedGradients(baseline="zero", n_steps=4)]
    monitor = cheap_monitor(methods=methods, shortcuts=None, robustness=RobustnessCheck(steps=2, min_rank_correlation=0.99))
    with pytest.warns(UserWarning, match=r"AttributionMonitor robustness check: these methods' maps are not robust"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    report = summary["robustness"]
    assert report["saliency"]["input_invariant"] and "input_invariance" in report["integrated_gradients"]["fails"]
    assert set(monitor.history[0]["metrics"]) & {tags.robustness("saliency", "fragility_spearman")} == set()  # not a per-run metric


def test_robustness_on_demand_returns_the_report(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], shortcuts=None)
    model = tiny_model()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model, *loaders(digits16))
    report = monitor.robustness_check(trainer, model, RobustnessCheck(steps=2))
    assert set(report) == {"saliency"} and report["saliency"]["input_invariant"]
