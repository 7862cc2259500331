"""Small image classifiers for examples, tests and benchmarks (no downloads).

Like ``lightning.pytorch.demos``: real architectures at toy sizes, so that everything in
this project can run on a laptop CPU in seconds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Two convolution blocks, global average pooling and a linear classifier.

    Args:
        in_channels: image channels.
        num_classes: outputs.
        width: channels of the first block (the second has twice as many).
        dropout: dropout before the classifier.

    Example:
        >>> SmallCNN(in_channels=1, num_classes=10)(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.classifier(self.pool(self.features(images)))


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
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
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
