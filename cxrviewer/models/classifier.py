"""`CXRClassifier`: a convolutional backbone, global average pooling and a classifier head.

The forward pass returns logits [B, K]. Training-only parts (projection heads, the radiomic
encoder) live in `aux` and are saved with the model but never used by `forward`.
"""

from __future__ import annotations

import torch
from torch import nn


class CXRClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, head: nn.Module,
                 aux: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.aux = nn.ModuleDict(aux or {})

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled representation y = GAP(f(x)), [B, feature_dim]."""
        return torch.flatten(self.pool(self.backbone(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class ResNetTrunk(nn.Module):
    """torchvision's ResNet without its pooling and fc: stem, layer1..layer4."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
