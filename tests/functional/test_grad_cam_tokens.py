"""grad_cam on token layers: ViT (class token, batch or sequence first), Swin-style maps, reshape and layer choice.

The reference is pytorch-grad-cam's definition, reimplemented here (the package pulls a CUDA torch):
hook the layer, reshape activations and gradients with ``reshape_transform``, weights = mean of the
reshaped gradients over the grid, map = ReLU(sum over channels of weights * activations).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lightning_xai.demos import TinyViT
from lightning_xai.functional import find_grad_cam_layer, grad_cam
from lightning_xai.functional.grad_cam_layers import TokenGrid, auto_layout, channels_last, find_token_grid
from tests.conftest import DEVICES


def vit_reshape_transform(tensor: Tensor, height: int = 8, width: int = 8) -> Tensor:
    """pytorch-grad-cam's ``vit_reshape_transform`` (utils/reshape_transforms.py), verbatim."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape_transform(tensor: Tensor, height: int = 8, width: int = 12) -> Tensor:
    """pytorch-grad-cam's ``swinT_reshape_transform`` for tokens ``[N, h*w, C]``, verbatim."""
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def permute_reshape_transform(tensor: Tensor) -> Tensor:
    """What pytorch-grad-cam users pass for timm's newer Swin, whose blocks give ``[N, h, w, C]``."""
    return tensor.permute(0, 3, 1, 2)


def reference_grad_cam(
    model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor, reshape_transform: Callable[[Tensor], Tensor]
) -> Tensor:
    """pytorch-grad-cam's GradCAM before its min-max scaling and resizing: ``[N, h, w]``."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        scores = model(images)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(scores[torch.arange(len(targets)), targets].sum(), captured[0])
    activations, gradients = reshape_transform(captured[0].detach()), reshape_transform(gradient)
    weights = gradients.mean(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * activations).sum(dim=1))


def _vit(**kwargs: object) -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(in_channels=3, num_classes=5, image_size=32, patch_size=4, **kwargs).eval()


@pytest.fixture
def vit_images() -> Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("device", DEVICES)
def test_vit_default_explains_the_last_blocks_first_norm_like_pytorch_grad_cam(vit_images, device):
    model, vit_images = _vit().to(device), vit_images.to(device)
    assert find_grad_cam_layer(model, vit_images[:1]) == "encoder.layers.1.norm1"
    targets = torch.tensor([4, 0, 2], device=device)
    ours = grad_cam(model, vit_images, targets, upsample=False)
    reference = reference_grad_cam(model, model.encoder.layers[1].norm1, vit_images, targets, vit_reshape_transform)
    torch.testing.assert_close(ours[:, 0], reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert ours.shape == (3, 1, 8, 8)
    assert all(float(cam.max()) > 0 for cam in ours)  # non-empty for every image
    assert float((ours > 0).float().mean()) > 0.1  # and not a single cell
    assert grad_cam(model, vit_images, targets).shape == (3, 1, 32, 32)


def test_the_last_blocks_output_has_no_gradient_on_patch_tokens(vit_images):
    # Why the default is not the last block's output (DESIGN trap 16): only its class token feeds the head.
    model = _vit()
    cam = grad_cam(model, vit_images, 1, layer="encoder.layers.1", relu=False, upsample=False)
    assert torch.count_nonzero(cam) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_first_layers_give_the_same_maps(vit_images, device):
    batch_first, sequence_first = _vit().to(device), _vit(batch_first=False).to(device)
    sequence_first.load_state_dict(batch_first.state_dict())
    vit_images = vit_images.to(device)
    assert find_grad_cam_layer(sequence_first, vit_images[:1]) == "encoder.layers.1.norm1"
    expected = grad_cam(batch_first, vit_images, [1, 2, 3], relu=False)
    torch.testing.assert_close(grad_cam(sequence_first, vit_images, [1, 2, 3], relu=False), expected)
    assert expected.abs().max() > 0
    # a batch as large as the token count is ambiguous by shape; the encoder's batch_first decides
    many = torch.rand(65, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    torch.testing.assert_close(
        grad_cam(sequence_first, many, 0, relu=False), grad_cam(batch_first, many, 0, relu=False)
    )


def test_post_norm_blocks_are_explained_at_the_previous_blocks_output(vit_images):
    model = _vit()
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, norm_first=False)
    model.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    assert find_grad_cam_layer(model, vit_images[:1]) == "encoder.layers.0"  # the input of layers.1's attention
    assert grad_cam(model, vit_images, 0, upsample=False).amax(dim=(1, 2, 3)).min() > 0


def test_a_single_post_norm_block_has_no_token_layer_with_patch_gradient(vit_images):
    model = _vit()
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, norm_first=False)
    model.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    message = (
        "Grad-CAM found transformer blocks in TinyViT (the last is 'encoder.layers.0') but no token layer after the patch "
        "embedding whose gradient is non-zero on the patch tokens; pass `layer=`"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        grad_cam(model, vit_images)


class _MeanPooledViT(nn.Module):
    """No class token: tokens [N, h*w, C], scores from their mean."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 4, stride=4)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True),
            2,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(16, 5)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.encoder(self.patch_embed(images).flatten(2).transpose(1, 2)).mean(dim=1))


def test_tokens_without_a_class_token_on_a_non_square_grid():
    torch.manual_seed(0)
    model = _MeanPooledViT().eval()
    images = torch.rand(2, 3, 32, 48)
    assert find_grad_cam_layer(model, images) == "encoder.layers.1.norm1"
    targets = torch.tensor([1, 3])
    ours = grad_cam(model, images, targets, upsample=False)
    reference = reference_grad_cam(model, model.encoder.layers[1].norm1, images, targets, swin_reshape_transform)
    torch.testing.assert_close(ours[:, 0], reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


class WindowAttention(nn.Module):
    """Attention over the tokens of a channels-last map [N, h, w, C] (one window: the whole map)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, c = x.shape
        tokens = x.reshape(n, h * w, c)
        return self.mha(tokens, tokens, tokens, need_weights=False)[0].reshape(n, h, w, c)


class _SwinBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim)
        self.norm2, self.mlp = (
            nn.LayerNorm(dim),
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _SwinStyle(nn.Module):
    """Patch embedding to channels-last maps [N, h, w, C], two blocks, mean pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 4, stride=4)
        self.blocks = nn.Sequential(_SwinBlock(16), _SwinBlock(16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def forward(self, images: Tensor) -> Tensor:
        x = self.norm(self.blocks(self.patch_embed(images).permute(0, 2, 3, 1)))
        return self.head(x.mean(dim=(1, 2)))


@pytest.mark.parametrize("device", DEVICES)
def test_swin_style_channels_last_maps(device):
    torch.manual_seed(0)
    model = _SwinStyle().eval().to(device)
    images = torch.rand(2, 3, 32, 48).to(device)
    assert find_grad_cam_layer(model, images) == "blocks.1.norm1"
    targets = torch.tensor([0, 4], device=device)
    reference = reference_grad_cam(model, model.blocks[1].norm1, images, targets, permute_reshape_transform)
    for reshape in ("auto", channels_last, TokenGrid(8, 12)):
        ours = grad_cam(model, images, targets, upsample=False, reshape=reshape)
        torch.testing.assert_close(ours[:, 0], reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert reference.amax(dim=(1, 2)).min() > 0


class _WindowedBlock(_SwinBlock):
    """Attention inside 2x2 windows: the attention's input is a window partition [N * 4, h*w / 4, C]."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.windows = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, c = x.shape
        windows = self.norm1(x).reshape(n, 2, h // 2, 2, w // 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n * 4, -1, c)
        windows = self.windows(windows)
        mixed = self.attn(windows, windows, windows, need_weights=False)[0]
        x = x + mixed.reshape(n, 2, 2, h // 2, w // 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        return x + self.mlp(self.norm2(x))


def test_windowed_attention_is_explained_at_the_blocks_first_norm():
    torch.manual_seed(0)
    model = _SwinStyle()
    model.blocks = nn.Sequential(_WindowedBlock(16), _WindowedBlock(16))
    model.eval()
    images = torch.rand(2, 3, 32, 48)
    # the attention's input ("blocks.1.windows") has no batch dimension: the block's first norm, as for Swin
    assert find_grad_cam_layer(model, images[:1]) == "blocks.1.norm1"
    cam = grad_cam(model, images, 1, upsample=False, relu=False)
    assert all(torch.count_nonzero(one) == one.numel() for one in cam)
    message = "`layer` (MultiheadAttention) must produce a tensor for Grad-CAM, got tuple; choose another `layer=`."
    with pytest.raises(TypeError, match=re.escape(message)):
        grad_cam(model, images, layer="blocks.1.attn")
    message = (
        "`layer` (Identity) gives an output of shape [8, 24, 16] without one entry per image (N = 2) in its first "
        "dimension (e.g. attention over windows); choose another `layer=` or pass `reshape=` a callable that returns [N, C, h, w]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        grad_cam(model, images, layer="blocks.1.windows")


class _NonLocalBlock(nn.Module):
    """Attention-like mixing over a CNN's [N, C, h, w] map, with a GroupNorm: a token block by its children."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, channels)
        self.attn = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm(x))


def test_cnns_with_attention_like_blocks_keep_the_convolutional_rule(images):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        _NonLocalBlock(8),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    assert find_grad_cam_layer(model, images) == "2"


def test_callable_reshape_equals_auto(vit_images):
    model = _vit()
    auto = grad_cam(model, vit_images, 2, layer="encoder.layers.0.norm1")
    for reshape in (TokenGrid(8, 8, prefix_tokens=1), vit_reshape_transform):
        torch.testing.assert_close(
            grad_cam(model, vit_images, 2, layer="encoder.layers.0.norm1", reshape=reshape), auto
        )


def test_convolutional_layers_are_unchanged_by_reshape(images):
    from tests.conftest import build_model

    model = build_model("resnet")
    auto = grad_cam(model, images, 1)
    torch.testing.assert_close(grad_cam(model, images, 1, reshape=None), auto)
    torch.testing.assert_close(grad_cam(model, images, 1, reshape=lambda a: a), auto)


class _SevenTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 32 * 32, 7 * 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.mix(self.embed(images.flatten(1)).view(-1, 7, 8)).mean(dim=1))


def test_unresolvable_tokens_and_bad_reshapes_raise_clear_errors(vit_images):
    model = _SevenTokens().eval()
    message = (
        "`layer` (Linear) gives tokens [3, 7, 8] that Grad-CAM cannot lay out on a patch grid of the 32x32 images "
        "(0, 1 or 2 prefix tokens plus h*w patches); pass `reshape=` a callable that returns [N, C, h, w] "
        "(e.g. TokenGrid(h, w, prefix_tokens=1)) or choose another `layer=`."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        grad_cam(model, vit_images, layer="mix")
    vit = _vit()
    message = (
        "`layer` (LayerNorm) must produce a 4-D output [N, C, h, w] for Grad-CAM with `reshape=None`, got [3, 65, 64]; "
        "pass `reshape='auto'` or a callable that returns [N, C, h, w]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        grad_cam(vit, vit_images, layer="encoder.layers.1.norm1", reshape=None)
    with pytest.raises(
        ValueError, match=re.escape("`reshape` must return [N, C, h, w] with N = 3 images, got [3, 64, 64].")
    ):
        grad_cam(vit, vit_images, layer="encoder.layers.1.norm1", reshape=lambda t: t[:, 1:])
    with pytest.raises(
        TypeError, match=re.escape("`reshape` must be 'auto', None or a callable that turns the layer's output")
    ):
        grad_cam(vit, vit_images, reshape="tokens")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TokenGrid(7, 7, prefix_tokens=1) needs tokens [N, 50, C] or a map [N, 7, 7, C], got [3, 65, 64]."
        ),
    ):
        grad_cam(vit, vit_images, layer="encoder.layers.1.norm1", reshape=TokenGrid(7, 7))


@pytest.mark.parametrize(
    ("tokens", "size", "expected"),
    [
        (64, (32, 32), (0, 8, 8)),
        (65, (32, 32), (1, 8, 8)),
        (66, (32, 32), (2, 8, 8)),
        (97, (32, 48), (1, 8, 12)),
        (197, (224, 224), (1, 14, 14)),
        (49, (30, 30), (0, 7, 7)),
        (7, (32, 32), None),
        (1, (32, 32), None),
    ],
)
def test_token_grids(tokens, size, expected):
    assert find_token_grid(tokens, size) == expected


def test_channels_first_maps_stay_channels_first():
    assert auto_layout((2, 8, 8, 8), (32, 32)) is not channels_last  # ambiguous: channels first, as before
    assert auto_layout((2, 64, 8, 8), (32, 32)) is not channels_last
    assert auto_layout((2, 8, 12, 64), (32, 48)) is channels_last
    assert auto_layout((2, 5), (32, 32)) is None
