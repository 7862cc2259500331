"""The robustness checks through the monitor: on demand after fit, and at the end of fit."""

from __future__ import annotations

import json

import pytest

from lightning_xai import IntegratedGradients, RobustnessCheck, Saliency
from lightning_xai.monitor import tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


def test_robustness_at_the_end_of_fit_is_warned_recorded_and_logged(tmp_path, digits16):
    methods = [Saliency(), IntegratedGradients(baseline="zero", n_steps=4)]
    monitor = cheap_monitor(
        methods=methods, shortcuts=None, robustness=RobustnessCheck(steps=2, min_rank_correlation=0.99)
    )
    with pytest.warns(UserWarning, match=r"AttributionMonitor robustness check: these methods' maps are not robust"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    report = summary["robustness"]
    assert report["saliency"]["input_invariant"] and "input_invariance" in report["integrated_gradients"]["fails"]
    assert (
        set(monitor.history[0]["metrics"]) & {tags.robustness("saliency", "fragility_spearman")} == set()
    )  # not a per-run metric


def test_robustness_on_demand_returns_the_report(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()], shortcuts=None)
    model = tiny_model()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model, *loaders(digits16))
    report = monitor.robustness_check(trainer, model, RobustnessCheck(steps=2))
    assert set(report) == {"saliency"} and report["saliency"]["input_invariant"]


def test_masks_report_the_smallest_sufficient_area_per_probe_and_outline_it(tmp_path, digits16):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_xai import Mask

    monitor = cheap_monitor(methods=[Mask(areas=(0.1, 0.3), steps=10)], shortcuts=None, stability=None)
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(tiny_model(), *loaders(digits16))
    run = monitor.history[0]
    areas = run["details"]["mask"]["smallest_area"]
    assert len(areas) == 4 and all(min(abs(a - 0.1), abs(a - 0.3)) < 1e-6 for a in areas)
    assert run["metrics"][tags.mask("mask", "smallest_area_mean")] == pytest.approx(sum(areas) / 4)
    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert tags.mask_image("mask") in events.Tags()["images"]
