"""Faithfulness in the monitor: curves and AUCs each run, completeness warnings, the sanity check."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_xai import ExpectedGradients, GradCAM, IntegratedGradients, Saliency, SanityCheck
from lightning_xai.faithfulness import Faithfulness
from lightning_xai.methods import AttributionMethod
from lightning_xai.monitor import tags
from tests.callback.conftest import cheap_monitor, loaders, make_trainer, tiny_model


@dataclass(frozen=True)
class ImageEdges(AttributionMethod):
    """An 'explanation' computed from the image alone: the model does not matter to it."""

    name = "image_edges"

    def attribute(self, model, images, targets, context):
        return (images - images.roll(1, dims=-1)).abs() + (images - images.roll(1, dims=-2)).abs()


def test_curves_aucs_and_completeness_are_logged_each_run(tmp_path, digits16):
    monitor = cheap_monitor(
        methods=[GradCAM(), IntegratedGradients(n_steps=16), ExpectedGradients(n_samples=8, reference_count=8)],
        faithfulness=Faithfulness(fractions=(0.0, 0.1, 0.3, 1.0)),
    )
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(tiny_model(), *loaders(digits16))
    metrics = monitor.history[-1]["metrics"]
    for name in ("grad_cam", "integrated_gradients", "expected_gradients"):
        for key in (
            "deletion_auc_mean",
            "insertion_auc_mean",
            "deletion_auc_blur",
            "insertion_auc_blur",
            "mass_center_drop",
            "mass_center_random_drop",
        ):
            assert tags.faithfulness(name, key) in metrics, (name, key)
    for key in ("deletion_auc_mean", "insertion_auc_mean", "deletion_auc_blur", "insertion_auc_blur"):
        assert tags.faithfulness("random", key) in metrics
    assert tags.completeness("integrated_gradients", "relative_gap_mean") in metrics
    assert tags.completeness("expected_gradients", "gap_mean") in metrics
    assert tags.completeness("grad_cam", "gap_mean") not in metrics
    events = EventAccumulator(str(tmp_path / "version_0"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Images(tags.faithfulness_image("grad_cam"))] == [3, 7]
    assert len(events.Scalars(tags.faithfulness("integrated_gradients", "deletion_auc_mean"))) == 2


def test_too_few_steps_are_warned_about_once(tmp_path, digits16):
    monitor = cheap_monitor(
        methods=[IntegratedGradients(n_steps=2, method="riemann_left")], faithfulness=Faithfulness(fills=("mean",))
    )
    with pytest.warns(UserWarning, match=r"the integrated_gradients maps are incomplete") as caught:
        make_trainer(tmp_path, [monitor], max_epochs=3).fit(tiny_model(), *loaders(digits16))
    assert len([w for w in caught if "incomplete" in str(w.message)]) == 1


def test_sanity_check_flags_a_method_that_ignores_the_model(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency(), ImageEdges()], sanity=SanityCheck())
    model = tiny_model()
    with pytest.warns(
        UserWarning, match=r"sanity check: the image_edges maps barely change when the model's weights are randomized"
    ):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(model, *loaders(digits16))
    summary = json.loads((tmp_path / "version_0" / "xai" / "summary.json").read_text())
    report = summary["sanity_check"]
    assert report["image_edges"]["insensitive"] and report["image_edges"]["spearman"] == pytest.approx(1.0)
    assert not report["saliency"]["insensitive"] and report["saliency"]["spearman"] < 0.5
    layers = [entry["layer"] for entry in report["saliency"]["layers"]]
    assert layers[0] == "net.classifier.2" and len(layers) == len(set(layers))  # cascading from the top layer


def test_sanity_check_on_demand_leaves_the_model_untouched(tmp_path, digits16):
    monitor = cheap_monitor(methods=[Saliency()])
    model = tiny_model()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model, *loaders(digits16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    report = monitor.sanity_check(trainer, model, cascade=False)
    assert set(report) == {"saliency"} and len(report["saliency"]["layers"]) > 1
    assert (
        report["saliency"]["layers"][-1]["layer"] == "all"
        and report["saliency"]["spearman"] == report["saliency"]["layers"][-1]["spearman"]
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(state, torch.get_rng_state())
