"""Shared fixtures: small models and images, and the devices to run on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_xai.demos import ResNetStyle, SmallCNN, load_digits

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


@pytest.fixture(autouse=True)
def lightning_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``rank_zero_info`` lines reach ``caplog``.

    ``pytorch_lightning`` stops its logger from propagating when it is imported while the root
    logger has no handler, which depends on the pytest version and on when the conftest is
    loaded; without this, ``caplog`` sees the callback's info lines on one machine and not on
    another.
    """
    monkeypatch.setattr(logging.getLogger("pytorch_lightning"), "propagate", True)


@pytest.fixture(autouse=True)
def float32_on_cuda() -> Iterator[None]:
    """Compute in float32 on CUDA while a test runs: the references (Captum) run in float32 on the CPU,
    and cuDNN's TF32 convolutions (on by default) differ from them by about 1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TinyConvNet(nn.Module):
    """Conv, in-place ReLU, conv, pooling to 2x2, linear: odd sizes exercise edge handling."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = nn.Tanh()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def build_model(name: str) -> nn.Module:
    """A small eval-mode model by name, with fixed weights."""
    torch.manual_seed(0)
    models = {
        "tiny": lambda: TinyConvNet(),
        "small_cnn": lambda: SmallCNN(in_channels=3, num_classes=5, width=4),
        "resnet": lambda: ResNetStyle(in_channels=3, num_classes=5, width=4, blocks_per_stage=1),
    }
    model = models[name]()
    _randomise_batch_norm(model)
    return model.eval()


def _randomise_batch_norm(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)


MODEL_NAMES = ["tiny", "small_cnn", "resnet"]


@pytest.fixture(params=MODEL_NAMES)
def model(request: pytest.FixtureRequest) -> nn.Module:
    return build_model(request.param)


@pytest.fixture
def images() -> torch.Tensor:
    """Three images, 3 x 12 x 10 (not square, not a power of two)."""
    return torch.randn(3, 3, 12, 10, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def linear_model() -> nn.Module:
    """``f(x) = W x + b`` on 1 x 3 x 4 images with 2 classes: every attribution is known by hand."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()


@pytest.fixture(scope="session")
def _initial_deterministic_algorithms() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.fixture(autouse=True)
def _deterministic_algorithms_restored(_initial_deterministic_algorithms: tuple[bool, bool]):
    """``Trainer(deterministic=True)`` switches torch's deterministic algorithms on for the whole
    process and leaves them on (also from module-scoped fixtures); a later test (Captum's DeepLift
    uses max-unpooling, which has no deterministic kernel) must not depend on which tests ran before."""
    enabled, warn_only = _initial_deterministic_algorithms
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global seed, whatever ran before it."""
    pl.seed_everything(0, verbose=False)


@pytest.fixture(scope="session")
def digits16() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits at 16 x 16."""
    return load_digits(16)


class _FailingBackward(torch.autograd.Function):
    """The identity, whose backward pass raises (an op without one)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this op has no backward pass")


def without_backward(x: torch.Tensor) -> torch.Tensor:
    """``x`` behind an op whose backward pass raises ``RuntimeError``."""
    return _FailingBackward.apply(x)
