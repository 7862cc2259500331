"""Small image classifiers for examples, tests and benchmarks (no downloads).

Like ``lightning.pytorch.demos``: real architectures at toy sizes, so that everything in
this project can run on a laptop CPU in seconds.
"""

from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "BasicBlock",
    "CORNERS",
    "DecoyKind",
    "LitClassifier",
    "ResNetStyle",
    "SmallCNN",
    "TinyViT",
    "decoy_box",
    "digits_loaders",
    "load_digits",
    "plant_decoy",
    "scattered_digits",
]


class SmallCNN(nn.Module):
    """Three convolution blocks with batch norm, global average pooling and a linear classifier.

    Args:
        in_channels: image channels.
        num_classes: outputs.
        width: channels of the first block (the second has twice as many, the third four times).
        dropout: dropout before the classifier.
        pooled_size: side of the grid the features are pooled to before the classifier; 1 is
            global average pooling, larger keeps where things are (and makes shortcuts at a
            fixed place easy to learn).

    Example:
        >>> SmallCNN(in_channels=1, num_classes=10)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width: int = 16, dropout: float = 0.0, pooled_size: int = 1
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width * pooled_size**2, num_classes)
        )

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.pool(self.features(images)))


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``[N, in, H, W]`` → ``[N, out, H / stride, W / stride]``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A ResNet-18-like layout at toy width: stem, four stages of basic blocks, pooling, classifier.

    Args:
        in_channels: image channels.
        num_classes: outputs.
        width: channels of the first stage; each later stage doubles them.
        blocks_per_stage: basic blocks in each of the four stages (ResNet-18 has 2).

    Example:
        >>> ResNetStyle(num_classes=5, width=8, blocks_per_stage=1)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, blocks_per_stage: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        channels = width
        for index in range(4):
            out_channels = width * 2**index
            blocks = [BasicBlock(channels, out_channels, stride=1 if index == 0 else 2)]
            blocks += [BasicBlock(out_channels, out_channels) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        x = self.stem(images)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_digits(size: int = 32) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), scaled up.

    Args:
        size: output side in pixels (bilinear upscaling from 8x8).

    Returns:
        ``(images [1797, 1, size, size] in [0, 1], labels [1797] in 0..9)``.

    Raises:
        ImportError: when scikit-learn is not installed (``pip install scikit-learn``).

    Example:
        >>> images, labels = load_digits(16)
        >>> images.shape, labels[:3].tolist()
        (torch.Size([1797, 1, 16, 16]), [0, 1, 2])
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from error
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), torch.tensor(digits.target, dtype=torch.long)


class LitClassifier(LightningModule):
    """A LightningModule around an image classifier, trained with cross-entropy and Adam.

    Its hyper-parameters are saved in checkpoints (``save_hyperparameters``), so
    ``LitClassifier(**checkpoint["hyper_parameters"])`` rebuilds it (``lightning-xai replay`` does).

    Args:
        net: the classifier; ``None`` builds ``SmallCNN(in_channels, num_classes, width, dropout, pooled_size)``.
        in_channels, num_classes, width, dropout, pooled_size: for the default network.
        lr: Adam learning rate.

    Example:
        >>> LitClassifier(in_channels=1)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        dropout: float = 0.0,
        pooled_size: int = 1,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = (
            net
            if net is not None
            else SmallCNN(in_channels, num_classes, width=width, dropout=dropout, pooled_size=pooled_size)
        )
        self.lr = lr

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``[N, K]``."""
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        scores = self(images)
        self.log("val_loss", nn.functional.cross_entropy(scores, labels))
        self.log("val_acc", (scores.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def digits_loaders(size: int = 32, batch_size: int = 64, *, num_val: int = 297) -> tuple[DataLoader, DataLoader]:
    """Training (shuffled) and validation loaders over scikit-learn's digits at ``size`` pixels.

    Example:
        >>> train, val = digits_loaders(16)
        >>> len(train.dataset), len(val.dataset)
        (1500, 297)
    """
    images, labels = load_digits(size)
    split = len(images) - num_val
    train = TensorDataset(images[:split], labels[:split])
    val = TensorDataset(images[split:], labels[split:])
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=batch_size)


def scattered_digits(
    seed: int = 0,
    *,
    size: int = 32,
    digit_size: int = 20,
    centered: bool = False,
    noise: float = 0.25,
    channels: int = 1,
) -> tuple[Tensor, Tensor]:
    """The 1797 digits at ``digit_size`` pixels on a noisy ``size`` x ``size`` background, centred (the
    MNIST layout: 24 of 32 pixels) or each at a random place; shuffled with ``seed``.

    Returns:
        ``(images [1797, channels, size, size] in [0, 1], labels [1797])`` (grey, repeated over channels).

    Example:
        >>> images, labels = scattered_digits(0, centered=True, digit_size=24, channels=3)
        >>> images.shape, bool(images[:, :, :4, :4].max() <= 0.25)
        (torch.Size([1797, 3, 32, 32]), True)
    """
    generator = torch.Generator().manual_seed(seed)
    small, labels = load_digits(8)
    order = torch.randperm(len(labels), generator=generator)
    glyphs = nn.functional.interpolate(
        small[order], size=(digit_size, digit_size), mode="bilinear", align_corners=False
    ).clamp(0, 1)
    out = torch.rand(len(order), 1, size, size, generator=generator) * noise
    offsets = torch.randint(0, size - digit_size + 1, (len(order), 2), generator=generator)
    if centered:
        offsets.fill_((size - digit_size) // 2)
    for image, glyph, (top, left) in zip(out, glyphs, offsets.tolist()):
        window = image[:, top : top + digit_size, left : left + digit_size]
        window.copy_(torch.maximum(window, glyph))
    return out.expand(-1, channels, -1, -1).contiguous(), labels[order]


DecoyKind = Literal["shade", "pattern", "watermark"]
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def decoy_box(
    size: tuple[int, int], corner: str = "top_left", side: int = 4, margin: int = 1
) -> tuple[int, int, int, int]:
    """Where a decoy goes: ``(top, left, bottom, right)`` of a ``side`` x ``side`` square in a corner.

    Example:
        >>> decoy_box((32, 32), "bottom_right")
        (27, 27, 31, 31)
    """
    if corner not in CORNERS:
        raise ValueError(f"`corner` must be one of {list(CORNERS)}, got {corner!r}.")
    top = margin if corner.startswith("top") else size[0] - margin - side
    left = margin if corner.endswith("left") else size[1] - margin - side
    return top, left, top + side, left + side


def plant_decoy(
    images: Tensor,
    labels: Tensor,
    *,
    kind: DecoyKind = "shade",
    corner: str = "top_left",
    side: int = 4,
    num_classes: int = 10,
) -> Tensor:
    """Decoy-MNIST style shortcut (Ross et al., 2017): a swatch in a corner that encodes the label.

    ``"shade"``: a uniform square whose grey level is ``0.1 + 0.9 * label / (num_classes - 1)``;
    ``"pattern"``: a black-and-white checker code, a different one per class;
    ``"watermark"``: a white square on the images of class 0 only (one class gives itself away).

    Args:
        images: ``[N, C, H, W]`` in [0, 1].
        labels: ``[N]`` classes.
        kind, corner, side: what, where and how big.

    Returns:
        A copy of ``images`` with the decoy planted.

    Example:
        >>> out = plant_decoy(torch.zeros(2, 1, 8, 8), torch.tensor([0, 9]), side=2)
        >>> round(out[0, 0, 1, 1].item(), 2), round(out[1, 0, 1, 1].item(), 2)
        (0.1, 1.0)
    """
    top, left, bottom, right = decoy_box((images.shape[-2], images.shape[-1]), corner, side)
    out = images.clone()
    if kind == "shade":
        shade = 0.1 + 0.9 * labels.float() / (num_classes - 1)
        out[..., top:bottom, left:right] = shade.view(-1, 1, 1, 1)
    elif kind == "pattern":
        codes = torch.randint(0, 2, (num_classes, side, side), generator=torch.Generator().manual_seed(1234)).float()
        out[..., top:bottom, left:right] = codes[labels].unsqueeze(1)
    elif kind == "watermark":
        marked = labels == 0
        out[marked, :, top:bottom, left:right] = 1.0
    else:
        raise ValueError(f"`kind` must be one of ['shade', 'pattern', 'watermark'], got {kind!r}.")
    return out


class TinyViT(nn.Module):
    """A vision transformer at toy size: conv patch embedding, class token, pre-norm encoder, linear head.

    The layout of ViT-B/16 (Dosovitskiy et al.), with ``nn.TransformerEncoder``: the class token's
    final state (after a layer norm) gives the scores, so only the *last* block's class token feeds
    the head, the case Grad-CAM has to handle by explaining ``encoder.layers[-1].norm1``.

    Args:
        in_channels: image channels.
        num_classes: outputs.
        image_size: side of the (square) input images; must be a multiple of ``patch_size``.
        patch_size: side of the square patches (the embedding conv's kernel and stride).
        dim: token width.
        depth: encoder layers.
        heads: attention heads.
        batch_first: the encoder's token layout (``False``: ``[S, N, C]`` inside the encoder).

    Example:
        >>> vit = TinyViT(in_channels=1, num_classes=10, image_size=32, patch_size=4)
        >>> vit(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"`image_size` must be a multiple of `patch_size` ({patch_size}), got {image_size}.")
        self.batch_first = batch_first
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + (image_size // patch_size) ** 2, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=batch_first, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``[N, num_classes]`` for images ``[N, C, image_size, image_size]``."""
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)  # [N, h*w, dim]
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        if self.batch_first:
            return self.head(self.norm(self.encoder(tokens)[:, 0]))
        return self.head(self.norm(self.encoder(tokens.transpose(0, 1))[0]))
