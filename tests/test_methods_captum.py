"""CaptumMethod: Captum attributions run on the probes, equal to Captum run directly."""

from __future__ import annotations

import pickle
import random
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import DeepLift, LayerConductance, Lime

from lightning_xai import CaptumMethod
from lightning_xai.methods import MethodContext
from tests.conftest import build_model

TARGETS = torch.tensor([2, 0, 4])


def _context(seed: int = 0, **batch_sizes: int) -> MethodContext:
    return MethodContext(
        generator=torch.Generator().manual_seed(seed), batch_sizes={k == "backward": v for k, v in batch_sizes.items()}
    )


def test_deep_lift_equals_captum(images):
    model = build_model("small_cnn")
    ours = CaptumMethod(DeepLift).attribute(model, images, TARGETS, _context())
    reference = DeepLift(model).attribute(images, target=TARGETS)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_layer_conductance_by_layer_name_equals_captum_upsampled(images):
    model = build_model("small_cnn")
    method = CaptumMethod("LayerConductance", init_kwargs={"layer": "features.3"}, attribute_kwargs={"n_steps": 8})
    ours = method.attribute(model, images, TARGETS, _context(backward=5))
    layer_map = LayerConductance(model, model.features[3]).attribute(images, target=TARGETS, n_steps=8)
    assert layer_map.shape[-2:] != images.shape[-2:]  # the layer is smaller: the map is upsampled
    torch.testing.assert_close(
        ours, F.interpolate(layer_map, size=images.shape[-2:], mode="bilinear"), rtol=1e-4, atol=1e-6
    )


def test_lime_equals_captum_given_the_same_seed_and_leaves_the_global_rngs_alone(images):
    model = build_model("tiny")
    superpixels = (torch.arange(12).view(-1, 1) // 4 * 3 + torch.arange(10).view(1, -1) // 4).expand(3, 3, 12, 10)
    regression = SkLearnLinearRegression()  # the default Lasso zeroes the small scores of this tiny model
    method = CaptumMethod(
        Lime,
        init_kwargs={"interpretable_model": regression},
        attribute_kwargs={"n_samples": 40, "feature_mask": superpixels},
    )
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    ours = method.attribute(model, images, TARGETS, _context(7, forward=6))
    again = method.attribute(model, images, TARGETS, _context(7))
    assert (
        torch.equal(states[0], torch.get_rng_state())
        and np.array_equal(states[1], np.random.get_state()[1])
        and states[2] == random.getstate()
    )
    torch.testing.assert_close(ours, again)  # the batch size does not change the draws
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(seed)
    reference = Lime(model, interpretable_model=regression).attribute(
        images, target=TARGETS, n_samples=40, feature_mask=superpixels, perturbations_per_eval=1
    )
    assert ours.shape == images.shape and torch.isfinite(ours).all() and ours.abs().max() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)
    assert all(
        len(torch.unique(ours[i, 0][superpixels[i, 0] == s])) == 1 for i in range(3) for s in range(9)
    )  # one weight per superpixel


def test_captum_methods_pickle_and_are_checked():
    method = CaptumMethod(DeepLift, init_kwargs={"multiply_by_inputs": False})
    assert pickle.loads(pickle.dumps(method)) == method and method.init_kwargs == (("multiply_by_inputs", False),)
    with pytest.raises(
        ValueError,
        match=re.escape("`attribute_kwargs` must not set 'target': the monitor passes the probes and their classes."),
    ):
        CaptumMethod(DeepLift, attribute_kwargs={"target": 1})
    with pytest.raises(TypeError, match=re.escape("`init_kwargs` must be a dict of keyword arguments, got list.")):
        CaptumMethod(DeepLift, init_kwargs=[1])
    model, images = build_model("tiny"), torch.randn(1, 3, 12, 10)
    with pytest.raises(
        TypeError,
        match=re.escape("`attribution_class` must be a captum.attr attribution class or its name, got Module."),
    ):
        CaptumMethod(torch.nn.Module).validate(model, images)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`attribution_class` must name an attribution class of captum.attr (e.g. 'DeepLift'), got 'DeepLiftt'."
        ),
    ):
        CaptumMethod("DeepLiftt").validate(model, images)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`init_kwargs['layer']` must name a submodule of the model (conv1, act1, conv2, act2, pool, fc), got 'conv9'."
        ),
    ):
        CaptumMethod("LayerConductance", init_kwargs={"layer": "conv9"}).validate(model, images)


def test_captum_methods_are_described_briefly():
    from lightning_xai.monitor.settings import describe

    method = CaptumMethod(
        "Lime", attribute_kwargs={"n_samples": 40, "feature_mask": torch.zeros(3, 12, 10, dtype=torch.long)}
    )
    assert (
        describe(method)
        == "captum_Lime(attribution_class='Lime', attribute_kwargs={'feature_mask': tensor[3, 12, 10], 'n_samples': 40})"
    )
    assert pickle.loads(pickle.dumps(CaptumMethod("Lime", attribute_kwargs={"n_samples": 4}))) == CaptumMethod(
        "Lime", attribute_kwargs={"n_samples": 4}
    )


def test_missing_captum_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(
        ImportError, match=re.escape('CaptumMethod needs Captum; install it with pip install "lightning-xai[captum]".')
    ):
        CaptumMethod("DeepLift").validate(build_model("tiny"), torch.randn(1, 3, 12, 10))


def test_captum_method_runs_in_the_monitor(tmp_path, digits16):
    from tests.test_methods_new import _assert_ran, _fit_with

    method = CaptumMethod("LayerConductance", init_kwargs={"layer": "net.features.3"}, attribute_kwargs={"n_steps": 4})
    _assert_ran(_fit_with(method, tmp_path, digits16), "captum_LayerConductance")
