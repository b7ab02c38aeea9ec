"""Triplet attention (Misra et al., "Rotate to Attend", WACV 2021), as SCALP inserts it in ResNet-50.

Three branches capture channel–height, channel–width and height–width interactions: rotate the
tensor, Z-pool (max and mean over the leading dimension, concatenated), 7×7 conv + batch norm,
sigmoid, reweight, rotate back; the three outputs are averaged.
"""

from __future__ import annotations

import torch
from torch import nn


class ZPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class AttentionGate(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.pool = ZPool()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(self.conv(self.pool(x))))


class TripletAttention(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_height = AttentionGate(kernel_size)
        self.channel_width = AttentionGate(kernel_size)
        self.height_width = AttentionGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, C, W): pool over H, attend over (C, W)
        ch = self.channel_height(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        # (B, C, H, W) -> (B, W, H, C): pool over W, attend over (H, C)
        cw = self.channel_width(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        hw = self.height_width(x)
        return (ch + cw + hw) / 3.0


def add_triplet_attention(net: nn.Module) -> nn.Module:
    """Insert triplet attention into every residual block, after its last batch norm and before
    the residual addition (where the reference implementation places it): torchvision ResNet
    blocks, and EfficientNet-Lite's MBConv blocks (their attention slot, after the projection's
    batch norm). The paper (SCALP) uses a ResNet-50; on EfficientNet-Lite this is our deviation:
    the same module at the same place in each inverted-residual block, randomly initialised over
    an ImageNet-initialised trunk."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from cxrviewer.models.efficientnet_lite import MBConvBlock

    for module in net.modules():
        if isinstance(module, Bottleneck):
            module.bn3 = nn.Sequential(module.bn3, TripletAttention())
        elif isinstance(module, BasicBlock):
            module.bn2 = nn.Sequential(module.bn2, TripletAttention())
        elif isinstance(module, MBConvBlock):
            module._attention = TripletAttention()
    return net
