"""`CXRClassifier`: a convolutional backbone, global average pooling and a classifier head.

The forward pass returns logits [B, K]. Training-only parts (projection heads, the radiomic
encoder) live in `aux` and are saved with the model but never used by `forward`.

A model with metadata inputs (`attach_metadata`, `cxrviewer.models.metadata`) adds a linear term of
the metadata vector to the image logits: logits = head(GAP(f(x))) + W·m + b. Additive on purpose:
the term has no gradient with respect to the feature map, so Grad-CAMs show what the image adds,
never the patient's age. `forward(x)` with no vector uses the one set by `metadata_context` (how
`analyze` feeds the CAM code, which only calls `model(x)`), else all inputs missing (zeros).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
        self.metadata: nn.Linear | None = None
        self._context: torch.Tensor | None = None

    def attach_metadata(self, size: int, num_classes: int) -> None:
        """Add the metadata term over a vector of `size` values; it starts at zero (image only)."""
        self.metadata = nn.Linear(size, num_classes)
        nn.init.zeros_(self.metadata.weight)
        nn.init.zeros_(self.metadata.bias)

    @contextlib.contextmanager
    def metadata_context(self, vector: torch.Tensor | None) -> Iterator[None]:
        """Within the block, `forward(x)` uses `vector` ([size] or [B, size]) as the metadata input."""
        previous, self._context = self._context, vector
        try:
            yield
        finally:
            self._context = previous

    def metadata_logits(self, batch: int, metadata: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if self.metadata is None:
            return None
        vector = metadata if metadata is not None else self._context
        if vector is None:
            vector = torch.zeros(batch, self.metadata.in_features)
        vector = vector.to(device=like.device, dtype=self.metadata.weight.dtype)
        if vector.dim() == 1:
            vector = vector.expand(batch, -1)
        return self.metadata(vector).to(like.dtype)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled representation y = GAP(f(x)), [B, feature_dim]."""
        return torch.flatten(self.pool(self.backbone(x)), 1)

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.head(self.embed(x))
        extra = self.metadata_logits(len(x), metadata, logits)
        return logits if extra is None else logits + extra


class ResNetTrunk(nn.Module):
    """torchvision's ResNet without its pooling and fc: stem, layer1..layer4."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_c5(self.forward_c4(x))

    def forward_c4(self, x: torch.Tensor) -> torch.Tensor:
        """Stem to layer3: the stride-16 features (CIA-Net's C4)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_c5(self, c4: torch.Tensor) -> torch.Tensor:
        return self.layer4(c4)
