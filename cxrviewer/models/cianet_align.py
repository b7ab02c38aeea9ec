"""CIA-Net's alignment module (Sec. 3.1) and the losses that train it.

phi_A regresses (t_x, t_y, s_x, s_y, theta) and warps the image with

    phi_A(I) = B( [[s_x cos(theta), -s_y sin(theta), t_x],
                   [s_x sin(theta),  s_y cos(theta), t_y]] G(I), I )          (Eq. 1)

(B: bilinear sampling, G: the regular grid; PyTorch's `affine_grid` / `grid_sample` in normalised
[-1, 1] coordinates with align_corners=False). The last layer starts at zero weight and bias
(0, 0, 1, 1, 0), so the initial transform is exactly the identity.

Deviations and choices, all because the paper does not say or cannot be followed here:
- Five parameters as in Eq. 1 (no shear), not a general 6-parameter affine.
- "A light-weighted ResNet-18": the ResNet-18 topology (BasicBlocks [2, 2, 2, 2]) with base width
  `width` (16; 64 is the full ResNet-18), on the input resized to `resolution`^2 (128). The paper
  gives neither number; random initialisation (no ImageNet weights are downloaded).
- Outside the input, the warp samples the image's own minimum (black), not zero (mid-grey in the
  normalised input space).
- N_feat of the perceptual loss (Eq. 2): the paper uses a pretrained network's features (Johnson
  et al. use VGG-16 relu2_2); no pretrained VGG can be downloaded, so `RandomConvFeatures` is a
  small FIXED random conv net (seeded, stored as buffers in the model file, never trained). Random
  conv features keep local structure (edges, blobs) well enough for a structural loss; any callable
  (e.g. the backbone's early layers, detached) can be passed instead.
- Eq. 2 prints ||.||_2 unsquared; we follow the loss it cites (Johnson et al.'s feature
  reconstruction loss): squared Euclidean distance / (C H W), i.e. a mean squared error.
- The "consistency loss" (pixel-wise Euclidean distance to the template) has no weight in the paper;
  `consistency_weight` defaults to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

IDENTITY_PARAMS = (0.0, 0.0, 1.0, 1.0, 0.0)  # t_x, t_y, s_x, s_y, theta


def affine_matrix(params: torch.Tensor) -> torch.Tensor:
    """Eq. 1: [B, 5] (t_x, t_y, s_x, s_y, theta) -> [B, 2, 3] for `F.affine_grid`."""
    tx, ty, sx, sy, angle = params.unbind(-1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    row0 = torch.stack([sx * cos, -sy * sin, tx], dim=-1)
    row1 = torch.stack([sx * sin, sy * cos, ty], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """phi_A(I): bilinear sampling of x [B, C, H, W] at theta [B, 2, 3] applied to the output grid;
    outside the image, each image's own minimum."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + lo


def inverse_affine(theta: torch.Tensor) -> torch.Tensor:
    """The [B, 2, 3] map from input-frame to aligned-frame normalised coordinates."""
    a, t = theta[..., :2].float(), theta[..., 2:].float()
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -a_inv @ t], dim=-1)


def to_input_frame(maps: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resample maps [B, K, h, w] defined over the ALIGNED image into the input image's frame (zero
    where the input lies outside the aligned view), at `size` (default: the maps' own size)."""
    size = tuple(size or maps.shape[-2:])
    inv = inverse_affine(theta).to(maps.dtype)
    grid = F.affine_grid(inv, [maps.shape[0], maps.shape[1], *size], align_corners=False)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AlignmentNet(nn.Module):
    """phi_A: a light-weighted ResNet-18 regressing Eq. 1's five parameters (identity at init)."""

    def __init__(self, in_channels: int = 1, width: int = 16, resolution: int = 128) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.resolution = int(resolution)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, inplanes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, 5)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor(IDENTITY_PARAMS))

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 5]: (t_x, t_y, s_x, s_y, theta)."""
        r = self.resolution
        small = F.interpolate(x, size=(r, r), mode="area") if min(x.shape[-2:]) >= r else \
            F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(small))), 1)).float()

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return affine_matrix(self.params(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi_A(x), theta [B, 2, 3])."""
        theta = self.theta(x)
        return warp(x, theta), theta


class RandomConvFeatures(nn.Module):
    """N_feat for the perceptual loss: a fixed, seeded random conv net (3x3 convs + ReLU, widths
    16/32/64, the last two with stride 2, like VGG's first blocks). Weights are buffers: saved in the
    model file, never returned by `parameters()`, never trained."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64), seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.strides = (1,) + (2,) * (len(widths) - 1)
        cin = in_channels
        for i, cout in enumerate(widths):
            weight = torch.randn(cout, cin, 3, 3, generator=generator) * (2.0 / (cin * 9)) ** 0.5
            self.register_buffer(f"weight{i}", weight)
            cin = cout
        self.depth = len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            x = F.relu(F.conv2d(x, getattr(self, f"weight{i}").to(x.dtype), stride=self.strides[i], padding=1))
        return x


def _match(template: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    template = template.to(device=like.device, dtype=like.dtype)
    if tuple(template.shape[-2:]) != tuple(like.shape[-2:]):
        template = F.interpolate(template, size=like.shape[-2:], mode="bilinear", align_corners=False,
                                 antialias=template.shape[-1] > like.shape[-1])
    return template.expand(like.shape[0], -1, -1, -1)


def perceptual_loss(aligned: torch.Tensor, template: torch.Tensor,
                    features: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Eq. 2 (feature reconstruction loss): ||N(phi_A(I)) - N(T)||^2 / (C H W), averaged over the batch.
    `template` [1 or B, C, H', W'] is resized to the aligned images' size."""
    target = _match(template, aligned)
    with torch.no_grad():
        target_features = features(target)
    return F.mse_loss(features(aligned), target_features)


def consistency_loss(aligned: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """The paper's pixel "consistency loss": mean squared pixel difference to the template."""
    return F.mse_loss(aligned, _match(template, aligned))


def alignment_loss(aligned: torch.Tensor, template: torch.Tensor,
                   features: Callable[[torch.Tensor], torch.Tensor],
                   consistency_weight: float = 1.0) -> torch.Tensor:
    """L_s = L_feat + consistency_weight * L_consistency (Sec. 3.1)."""
    loss = perceptual_loss(aligned, template, features)
    if consistency_weight:
        loss = loss + consistency_weight * consistency_loss(aligned, template)
    return loss
