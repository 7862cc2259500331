"""adaptive_occlusion: exact when everything is refined, close to exact with far fewer passes, no trace,
argument checks; and the reduced-precision (autocast) option of occlusion and adaptive_occlusion.

Thresholds of the quality tests were set from a sweep over 8 seeds x 8 images per case (seeded
demo networks, eval mode, window 8 / stride 4 at 32 x 32, defaults ``coarse_factor=2``,
``refine_fraction=0.25``):

* forward passes / exact: at most 0.72 (the subsampled grid alone is 16 of 49 placements);
* Spearman correlation with the exact map: mean over a batch at least 0.869, single images
  at least 0.60 (random-weight ResNet and SmallCNN maps hold fine structure, e.g. alternation
  between neighbouring placements, that no coarse pass sees);
* top-10% IoU with the exact map: batch mean at least 0.69, single images at least 0.19.

bfloat16 autocast is only checked on a network whose classifier was fitted to the digits: with
random weights the occlusion drops are about 1% of the logits, below bfloat16's resolution
(about 0.4% of a value), and the maps are mostly rounding noise. On the fitted network the sweep
gave Spearman >= 0.996 and max |error| <= 4.6% of the map's max.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import Tensor, nn

from lightning_xai.demos import ResNetStyle, SmallCNN, load_digits
from lightning_xai.functional import occlusion
from lightning_xai.functional.adaptive_occlusion import adaptive_occlusion, adaptive_occlusion_with_counts, coarse_grid
from lightning_xai.functional.occlusion import window_counts
from lightning_xai.functional.stability import rank_correlation, top_k_iou
from tests.conftest import MODEL_NAMES, build_model
from tests.functional.test_no_trace import GRAD_MODES, _assert_same, _model_with_state, _snapshot

MODES = ["subsample", "enlarge"]
CASES = [
    ((3, 3), (1, 1), 0.0),
    ((4, 4), (2, 2), 0.5),
    ((5, 3), (3, 2), -1.0),  # windows that do not tile the image evenly
    ((12, 10), (1, 1), 0.0),  # one window covering everything
    ((2, 2), (2, 2), "mean"),
]


class CountingModel(nn.Module):
    """Wraps a model and counts the images it evaluates."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images_seen = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.images_seen += x.shape[0]
        return self.model(x)


@pytest.fixture(scope="module")
def digits32() -> tuple[Tensor, Tensor]:
    return load_digits(32)


@pytest.fixture(scope="module")
def fitted_cnn(digits32: tuple[Tensor, Tensor]) -> nn.Module:
    """A SmallCNN with random convolutions and a ridge-regression classifier fitted to 1000 digits
    (about 84% accuracy on the rest): occlusion drops of a realistic size, in a second."""
    images, labels = digits32
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, width=8, pooled_size=2).eval()
    with torch.no_grad():
        features = model.pool(model.features(images[:1000])).flatten(1)
        features = torch.cat([features, torch.ones(len(features), 1)], dim=1)
        targets = nn.functional.one_hot(labels[:1000], 10).float() * 2 - 1
        solution = torch.linalg.solve(features.T @ features + 0.1 * torch.eye(features.shape[1]), features.T @ targets)
        model.classifier[-1].weight.copy_(solution[:-1].T)
        model.classifier[-1].bias.copy_(solution[-1])
    return model


def _quality_case(name: str, digits: Tensor, fitted: nn.Module) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    random_images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    digit_images = digits[1000:][torch.randperm(797, generator=torch.Generator().manual_seed(0))[:8]]
    cases = {
        "small_cnn_random": lambda: (SmallCNN(width=8), random_images),
        "small_cnn_digits": lambda: (SmallCNN(in_channels=1, width=8), digit_images),
        "resnet_random": lambda: (ResNetStyle(width=8, blocks_per_stage=1), random_images),
        "resnet_digits": lambda: (ResNetStyle(in_channels=1, width=8, blocks_per_stage=1), digit_images),
        "fitted_cnn_digits": lambda: (fitted, digit_images),
    }
    model, images = cases[name]()
    return model.eval(), images


# (a) everything refined: exact occlusion -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize(("window", "stride", "baseline"), CASES)
def test_refining_everything_equals_exact_occlusion(mode, model_name, window, stride, baseline, images):
    model = build_model(model_name)
    target = torch.tensor([0, 3, 1])
    kwargs = {"window": window, "stride": stride, "baseline": baseline, "batch_size": 7}
    exact = occlusion(model, images, target, **kwargs)
    result = adaptive_occlusion_with_counts(model, images, target, refine_fraction=1.0, coarse_mode=mode, **kwargs)
    torch.testing.assert_close(result.attribution, exact, rtol=1e-5, atol=1e-5)
    n_coarse = {"subsample": 0, "enlarge": _coarse_placements((12, 10), window, stride, 2)}[mode]
    assert result.exact_forward_passes == 3 * (1 + _placements((12, 10), window, stride))
    assert result.forward_passes == result.exact_forward_passes + 3 * n_coarse


def _placements(size, window, stride) -> int:
    rows, cols = window_counts(size, window, stride)
    return rows * cols


def _coarse_placements(size, window, stride, factor) -> int:
    return _placements(size, *coarse_grid(size, window, stride, factor))


def test_coarse_grid_is_clipped_to_the_image():
    assert coarse_grid((32, 32), (8, 8), (4, 4), 2) == ((16, 16), (8, 8))
    assert coarse_grid((12, 10), (5, 3), (3, 2), 3) == ((12, 9), (9, 6))


def test_drops_linear_in_the_position_are_interpolated_exactly():
    # f(x) = sum_ij (i + 2j) x_ij: on a constant image each window's drop is linear in its position,
    # so the subsampled, interpolated drops are exact even where nothing is refined.
    weights = torch.arange(16.0).view(16, 1) + 2 * torch.arange(16.0).view(1, 16)

    def linear(x: Tensor) -> Tensor:
        score = (x[:, 0] * weights).sum(dim=(1, 2))
        return torch.stack([score, -score], dim=1)

    images = torch.ones(2, 1, 16, 16)
    result = adaptive_occlusion_with_counts(
        linear, images, 0, window=2, stride=2, coarse_factor=3, refine_fraction=0.05
    )
    torch.testing.assert_close(result.attribution, occlusion(linear, images, 0, window=2, stride=2))
    assert result.forward_passes < result.exact_forward_passes // 2


# (b) far fewer passes, close to exact -----------------------------------------------------------


QUALITY_CASES = ["small_cnn_random", "small_cnn_digits", "resnet_random", "resnet_digits", "fitted_cnn_digits"]


@pytest.mark.parametrize("case", QUALITY_CASES)
def test_fewer_passes_and_close_to_exact(case, digits32, fitted_cnn):
    model, images = _quality_case(case, digits32[0], fitted_cnn)
    exact = occlusion(model, images, window=8, stride=4)
    counting = CountingModel(model).eval()
    result = adaptive_occlusion_with_counts(counting, images, window=8, stride=4)
    assert counting.images_seen == result.forward_passes
    assert result.exact_forward_passes == 8 * (1 + 7 * 7)
    assert result.forward_passes <= 0.75 * result.exact_forward_passes
    spearman, overlap = rank_correlation(result.attribution, exact), top_k_iou(result.attribution, exact, 0.1)
    assert spearman.mean() > 0.85 and spearman.min() > 0.55, spearman
    assert overlap.mean() > 0.6 and overlap.min() > 0.1, overlap


def test_fewer_refined_pixels_cost_fewer_passes(digits32, fitted_cnn):
    model, images = _quality_case("fitted_cnn_digits", digits32[0], fitted_cnn)
    counts = [
        adaptive_occlusion_with_counts(model, images, window=8, stride=4, refine_fraction=fraction).forward_passes
        for fraction in (0.05, 0.25, 0.5, 1.0)
    ]
    assert counts == sorted(counts) and counts[0] < counts[-1] == 8 * 50


def test_enlarged_coarse_pass_is_cheaper_still(digits32, fitted_cnn):
    model, images = _quality_case("fitted_cnn_digits", digits32[0], fitted_cnn)
    exact = occlusion(model, images, window=8, stride=4)
    result = adaptive_occlusion_with_counts(model, images, window=8, stride=4, coarse_mode="enlarge")
    assert result.forward_passes <= 0.65 * result.exact_forward_passes
    assert rank_correlation(result.attribution, exact).mean() > 0.5


def test_result_does_not_depend_on_batch_size(images):
    model = build_model("resnet")
    maps = [adaptive_occlusion(model, images, 1, window=3, stride=1, batch_size=size) for size in (1, 5, 1000)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[0], maps[2], rtol=1e-5, atol=1e-6)


def test_default_target_is_the_top_class(images):
    model = build_model("tiny")
    top = model(images).argmax(dim=1)
    torch.testing.assert_close(
        adaptive_occlusion(model, images, window=4), adaptive_occlusion(model, images, top, window=4)
    )


# (c) no trace ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("grad_mode", sorted(GRAD_MODES))
@pytest.mark.parametrize("partly_training", [False, True])
@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_leaves_no_trace(mode, grad_mode, partly_training, autocast_dtype):
    model = _model_with_state(partly_training)
    images = torch.randn(3, 3, 12, 10)
    before = _snapshot(model, images)
    with GRAD_MODES[grad_mode](), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = adaptive_occlusion(
            model, images, window=4, stride=2, batch_size=5, coarse_mode=mode, autocast_dtype=autocast_dtype
        )
    _assert_same(before, _snapshot(model, images))
    assert torch.isfinite(result).all() and not result.requires_grad and result.dtype == torch.float32


@pytest.mark.parametrize("call", ["adaptive", "occlusion_bf16"])
def test_leaves_no_trace_when_it_raises(call):
    model = _model_with_state(partly_training=True)
    images = torch.randn(3, 3, 12, 10)
    before = _snapshot(model, images)
    function = adaptive_occlusion if call == "adaptive" else occlusion
    with pytest.raises(ValueError, match="`target` must be class indices"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        function(model, images, 17, window=4, autocast_dtype=torch.bfloat16)
    _assert_same(before, _snapshot(model, images))


# (d) argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"coarse_factor": 1}, ValueError, "`coarse_factor` must be an int >= 2, got 1."),
        ({"coarse_factor": 2.0}, TypeError, "`coarse_factor` must be an int >= 2, got 2.0 (float)."),
        ({"refine_fraction": 0}, ValueError, "`refine_fraction` must be a number in (0, 1], got 0."),
        ({"refine_fraction": 1.5}, ValueError, "`refine_fraction` must be a number in (0, 1], got 1.5."),
        ({"refine_fraction": float("nan")}, ValueError, "`refine_fraction` must be a number in (0, 1], got nan."),
        ({"refine_fraction": "all"}, TypeError, "`refine_fraction` must be a number in (0, 1], got 'all' (str)."),
        ({"refine_fraction": True}, TypeError, "`refine_fraction` must be a number in (0, 1], got True (bool)."),
        ({"coarse_mode": "fine"}, ValueError, "`coarse_mode` must be one of ['subsample', 'enlarge'], got 'fine'."),
        (
            {"autocast_dtype": torch.float32},
            ValueError,
            "`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got torch.float32.",
        ),
        ({"window": 13}, ValueError, "`window` must fit in the image (12x10), got 13x13."),
        (
            {"stride": 3},
            ValueError,
            "`stride` must be at most the window along each axis it does not fill, or pixels are never occluded; got stride 3 > window 2 in height.",
        ),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1, got 0."),
        (
            {"baseline": "black"},
            ValueError,
            "`baseline` must be a number, a tensor or one of ['zero', 'mean', 'blur', 'max_distance'], got 'black'.",
        ),
        (
            {"target": 5},
            ValueError,
            "`target` must be class indices in [0, 4] for a model with 5 outputs, got [5, 5, 5].",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, message, images):
    kwargs = {"target": None, "window": 2, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        adaptive_occlusion(build_model("tiny"), images, **kwargs)


def test_non_finite_scores_are_reported(images):
    def explodes_when_occluded(x: Tensor) -> Tensor:
        scores = x.flatten(1)[:, :2]
        return torch.where(x.flatten(1)[:, :1] == 0, torch.nan, scores)

    for mode in MODES:
        with pytest.raises(
            ValueError,
            match=re.escape("`forward_fn` returned non-finite scores (NaN or inf) for some occluded images."),
        ):
            adaptive_occlusion(explodes_when_occluded, images, 0, window=2, coarse_mode=mode)


# (e) reduced precision -----------------------------------------------------------------------------


@pytest.mark.parametrize("function", [occlusion, adaptive_occlusion])
def test_bfloat16_autocast_is_close_to_float32(function, digits32, fitted_cnn):
    _, images = _quality_case("fitted_cnn_digits", digits32[0], fitted_cnn)
    full = function(fitted_cnn, images, window=8, stride=4)
    reduced = function(fitted_cnn, images, window=8, stride=4, autocast_dtype=torch.bfloat16)
    assert reduced.dtype == torch.float32
    relative_error = (reduced - full).flatten(1).abs().amax(1) / full.flatten(1).abs().amax(1)
    assert relative_error.max() < 0.1, relative_error
    assert rank_correlation(reduced, full).min() > 0.98


def test_autocast_really_runs_in_reduced_precision(images):
    seen: list[torch.dtype] = []
    model = build_model("tiny")

    def recording(x: Tensor) -> Tensor:
        scores = model(x)
        seen.append(scores.dtype)
        return scores

    occlusion(recording, images, 1, window=4, autocast_dtype=torch.bfloat16)
    assert set(seen) == {torch.bfloat16}
    seen.clear()
    occlusion(recording, images, window=4, autocast_dtype=torch.bfloat16)  # the top class comes from float32
    assert seen[1] == torch.float32 and set(seen[:1] + seen[2:]) == {torch.bfloat16}
    seen.clear()
    occlusion(recording, images, window=4)
    assert set(seen) == {torch.float32}


@pytest.mark.parametrize("function", [occlusion, adaptive_occlusion])
@pytest.mark.parametrize(
    ("dtype", "error", "message"),
    [
        (
            torch.float32,
            ValueError,
            "`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got torch.float32.",
        ),
        (
            torch.float64,
            ValueError,
            "`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got torch.float64.",
        ),
        (torch.int8, ValueError, "`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got torch.int8."),
        (
            "bfloat16",
            TypeError,
            "`autocast_dtype` must be None, torch.bfloat16 or torch.float16, got 'bfloat16' (str).",
        ),
    ],
)
def test_invalid_autocast_dtypes_raise(function, dtype, error, message, images):
    with pytest.raises(error, match=re.escape(message)):
        function(build_model("tiny"), images, window=2, autocast_dtype=dtype)


@pytest.mark.parametrize("function", [occlusion, adaptive_occlusion])
def test_autocast_explains_the_full_precision_top_class(function):
    # Class 1 = 2 * class 0's evidence, with biases that put it 0.05 above class 0 on this image:
    # tied in bfloat16 (which would pick class 0), class 1 in float32; their maps differ by 2x.
    weights = torch.rand(1, 64, generator=torch.Generator().manual_seed(0))
    images = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    evidence = float(weights @ images.flatten())
    near_tie = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        near_tie[1].weight.copy_(torch.cat([weights, 2 * weights]))
        near_tie[1].bias.copy_(torch.tensor([100.0, 100.05 - evidence]))
        assert near_tie(images).argmax(dim=1).tolist() == [1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert near_tie(images).argmax(dim=1).tolist() == [0]
    maps = [function(near_tie, images, target, window=2, autocast_dtype=torch.bfloat16) for target in (None, 0, 1)]
    torch.testing.assert_close(maps[0], maps[2])
    assert not torch.allclose(maps[0], maps[1])


def test_pass_count_includes_the_full_precision_pass(images):
    counting = CountingModel(build_model("tiny")).eval()
    result = adaptive_occlusion_with_counts(counting, images, window=4, autocast_dtype=torch.bfloat16)
    assert counting.images_seen == result.forward_passes
    counting.images_seen = 0
    occlusion(counting, images, window=4, autocast_dtype=torch.bfloat16)
    assert counting.images_seen == result.exact_forward_passes
