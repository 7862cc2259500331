"""The method settings added for issue 16: delegation, checks, and a real Trainer run each."""

from __future__ import annotations

import re

import pytest
import torch

from lightning_xai import ExpectedGradients, IntegratedGradients
from lightning_xai import functional as F
from lightning_xai.methods import MethodContext
from tests.conftest import build_model


def _context(seed: int = 0, references: torch.Tensor | None = None) -> MethodContext:
    return MethodContext(generator=torch.Generator().manual_seed(seed), references=references)


def test_path_methods_without_multiplying_by_inputs_delegate_and_report_no_gap():
    model, images, targets = build_model("tiny"), torch.randn(2, 3, 12, 10), torch.tensor([1, 3])
    method = IntegratedGradients(n_steps=4, multiply_by_inputs=False)
    maps, gap = method.attribute_with_gap(model, images, targets, _context())
    expected = F.integrated_gradients(model, images, targets, baseline="zero", n_steps=4, multiply_by_inputs=False)
    torch.testing.assert_close(maps, expected)
    assert gap is None
    references = torch.randn(3, 3, 12, 10)
    maps, gap = ExpectedGradients(n_samples=4, multiply_by_inputs=False).attribute_with_gap(model, images, targets, _context(0, references))
    expected = F.expected_gradients(model, images, targets, baselines=references, n_samples=4, generator=torch.Generator().manual_seed(0), multiply_by_inputs=False)
    torch.testing.assert_close(maps, expected)
    assert gap is None


def test_multiply_by_inputs_setting_is_checked():
    with pytest.raises(TypeError, match=re.escape("`multiply_by_inputs` must be a bool, got int.")):
        IntegratedGradients(multiply_by_inputs=0)
