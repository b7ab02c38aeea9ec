"""CIA-Net (Liu et al., "Align, Attend and Locate", ICCV 2019) as the architecture "cianet".

    input x [B, C, H, W] --alignment phi_A (Sec. 3.1)--> aligned positive
    negative: the bank image nearest to x by perceptual hash (Sec. 4.3.2), aligned the same way
    backbone(aligned positive) -> F+ = C5 [c5, h, w]                           (upper branch)
    encoder(positive), encoder(negative) -> C4 -> 2x2 max pool -> 1x1 conv -> M+, M- [1, h, w]
    Delta M = |M+ - M-|, normalised so sum_k Delta m_k = h w;  F_bar = Delta M * F+  (Eq. 3)
    attended (nn.Identity, the CAM layer) -> 1x1 conv -> sigmoid: cell probabilities [K, P, P]
    image logit = logit(1 - prod_j (1 - p_j)) with [14]'s [0.98, 1] floor  (Eq. 5, cianet_losses)

`forward(x)` returns image-level logits [B, K] (the viewer's contract) and needs nothing but x: the
negative bank, its hashes and the canonical chest are buffers in the state dict. `native_cams(x)` gives
the cell probabilities [B, K, P, P] (in the input frame by default). `forward_train(x, negatives=None)`
gives everything the trainer needs (cell logits, aligned images, theta, attention). Losses and
helpers live in `cianet_losses` (cianet_mil_loss, cianet_box_loss, cianet_loss, box_grid_targets),
`cianet_align` (alignment_loss, perceptual_loss) and `cianet_bank` (build_canonical_chest); all are
re-exported here.

Choices where the paper is silent or cannot be followed, and deviations:
- Backbone (Sec. 3.2): ResNet-50 by default as in the paper (depth is an arch kwarg), random init
  (the paper starts from ImageNet weights; nothing is downloaded here, but a torchvision state dict
  can be given with `fit --init PATH`). depth "efficientnet-lite0/1/2" puts CIA-Net on the
  ImageNet-initialised EfficientNet-Lite trunk (`--init imagenet`, the default for it): C4 is then
  the 112-channel stride-16 output before its last downsampling stage, C5 its 1280-channel head at
  stride 32, so the attention's 1x1 conv and the classifier change only in their input channels.
  Grid: C5 of a 512x512 input is 16x16 = the paper's grid. `grid_size` resamples C5 and Delta M to P x P when they differ (max
  pooling when larger, bilinear when smaller, as in [14]'s patch slicing).
- "ResNet-50 ... as the backbone for both branches" and "the shared encoder": read as ONE trunk
  whose C4 is the attention encoder (shared_encoder=True, the default); shared_encoder=False gives
  the attention branch its own trunk (stem..layer3).
- M+ and M- have one channel (Sec. 3.2: "attention maps ... of sizes h x w"; Eq. 3 weights each grid
  by one scalar) although Sec. 3 also says the branch "generates attention for every class". Eq. 3's
  sum over k is read as the element-wise product the text describes. The normalisation adds a small
  epsilon so that Delta M = 0 (the input equals its negative) gives uniform weights, not 0/0.
- The negative is aligned by the same phi_A as the positive ("adjust all the input images").
- Negative matching: the brief's 16x16 DCT pHash (256 bits, Hamming distance, `phash.py`) by default;
  the paper actually describes 16x16 thumbnails with cosine distance (Sec. 4.3.2), available as
  negative_match="cosine16". The paper matches against all 63,000 negatives; the model carries a bank
  of `bank_size` (16) images at `bank_resolution` (512) as 8-bit codes (4 MiB at the defaults; see
  `cianet_bank`), resized to the input's size at use. A random-init model's bank and canonical chest
  are deterministic synthetic chest-like pictures (`cianet_bank.synthetic_chest`); the trainer replaces
  them (`set_negative_bank`, `set_canonical_chest`).
- The classifier bias starts at a cell prior of 0.01 (image prior about 0.05 on a 16x16 grid); the
  paper does not say how the new 1x1 conv is initialised.
- Test time (Sec. 3.3) upsamples the 16x16 map to 128x128 before the last convolutions:
  `native_cams(x, size=128)`. The classifier is a 1x1 conv, which commutes exactly with bilinear
  upsampling, so the cell LOGITS are upsampled (same result, far cheaper). The image logit always
  uses the P x P grid the model was trained on.
- Frames: cells live on the ALIGNED image. `native_cams` maps them back into the input frame
  (frame="input", default; identical at the identity initial alignment); Grad-CAM maps taken at
  `spec.cam_layer` are in the aligned frame, `model.to_input_frame(maps, x)` maps them back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrviewer.models.architectures import resnet_trunk
from cxrviewer.models.cianet_align import (
    AlignmentNet, RandomConvFeatures, alignment_loss, consistency_loss, perceptual_loss, to_input_frame, warp,
)
from cxrviewer.models.cianet_bank import (
    build_canonical_chest, dequantise, quantise, resize_images, synthetic_bank, synthetic_chest,
)
from cxrviewer.models.cianet_losses import (
    BETA_B, LOGIT_CLAMP, MIL_FLOOR, box_grid_targets, cianet_box_loss, cianet_loss, cianet_mil_loss, mil_logits,
    mil_probabilities,
)
from cxrviewer.models.phash import nearest, phash_batch, thumbnail_code
from cxrviewer.models.registry import register_architecture

__all__ = ["BETA_B", "CIANet", "MIL_FLOOR", "alignment_loss", "box_grid_targets", "build_canonical_chest",
           "build_cianet", "cianet_box_loss", "cianet_loss", "cianet_mil_loss", "consistency_loss", "mil_logits",
           "mil_probabilities", "perceptual_loss", "synthetic_chest", "warp"]

STAGE_DIMS = {"resnet18": (256, 512), "resnet34": (256, 512), "resnet50": (1024, 2048)}  # (C4, C5)
THUMB_SIZE = 16
NORM_EPS = 1e-6
MATCHES = ("phash", "cosine16")


def to_grid(t: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, size, size]: max pooling when larger, bilinear when smaller."""
    h, w = t.shape[-2:]
    if (h, w) == (size, size):
        return t
    if h >= size and w >= size:
        return F.adaptive_max_pool2d(t, size)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


def cianet_trunk(depth: str, in_channels: int) -> tuple[nn.Module, int, int]:
    """(trunk, C4 channels, C5 channels): a ResNet (STAGE_DIMS) or an EfficientNet-Lite trunk at
    output stride 32, whose C4 is the stride-16 output before its last downsampling stage (112
    channels for lite0) and C5 the 1280-channel head: the paper's C4/C5 levels on the pretrained trunk."""
    from cxrviewer.models.efficientnet_lite import VARIANTS, EfficientNetLite

    if depth in VARIANTS:
        trunk = EfficientNetLite(depth, in_channels=in_channels, output_stride=32, imagenet_head=False)
        return trunk, trunk.c4_channels, trunk.c5_channels
    if depth not in STAGE_DIMS:
        raise ValueError(f"unknown CIA-Net depth '{depth}' (one of {', '.join([*STAGE_DIMS, *VARIANTS])})")
    return resnet_trunk(depth, in_channels, triplet_attention=False), *STAGE_DIMS[depth]


class CIANet(nn.Module):
    def __init__(self, num_classes: int, depth: str = "resnet50", in_channels: int = 1, grid_size: int = 16,
                 bank_size: int = 16, bank_resolution: int = 512, align_width: int = 16,
                 align_resolution: int = 128, shared_encoder: bool = True, mil_floor: float = MIL_FLOOR,
                 negative_match: str = "phash", hash_size: int = 16, cell_prior: float = 0.01) -> None:
        super().__init__()
        if negative_match not in MATCHES:
            raise ValueError(f"unknown negative_match '{negative_match}' (one of {', '.join(MATCHES)})")
        if bank_size < 1 or bank_resolution < 16 or grid_size < 1:
            raise ValueError("bank_size and grid_size must be >= 1 and bank_resolution >= 16")
        self.backbone, c4, c5 = cianet_trunk(depth, in_channels)
        self.num_classes, self.in_channels, self.grid_size = num_classes, in_channels, int(grid_size)
        self.bank_size, self.bank_resolution = int(bank_size), int(bank_resolution)
        self.mil_floor, self.negative_match, self.hash_size = float(mil_floor), negative_match, int(hash_size)
        self.logit_clamp = LOGIT_CLAMP

        self.align = AlignmentNet(in_channels, align_width, align_resolution)
        self.attention_encoder: nn.Module | None = None
        if not shared_encoder:  # its own trunk, used up to C4 only
            self.attention_encoder = cianet_trunk(depth, in_channels)[0]
            if hasattr(self.attention_encoder, "layer4"):  # a ResNet's C5 stage would be unused weights
                self.attention_encoder.layer4 = nn.Identity()
        self.attention = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c4, 1, kernel_size=1))
        self.attended = nn.Identity()  # spec.cam_layer: F_bar, the attended C5 features
        self.classifier = nn.Conv2d(c5, num_classes, kernel_size=1)
        nn.init.constant_(self.classifier.bias, math.log(cell_prior / (1.0 - cell_prior)))
        self.perceptual = RandomConvFeatures(in_channels)

        r, n = self.bank_resolution, self.bank_size
        self.register_buffer("bank", torch.zeros(n, in_channels, r, r, dtype=torch.uint8))
        self.register_buffer("bank_scale", torch.ones(in_channels))
        self.register_buffer("bank_offset", torch.zeros(in_channels))
        self.register_buffer("bank_hash", torch.zeros(n, self.hash_size ** 2, dtype=torch.bool))
        self.register_buffer("bank_thumb", torch.zeros(n, THUMB_SIZE ** 2))
        self.register_buffer("canonical", torch.zeros(1, in_channels, r, r, dtype=torch.uint8))
        self.register_buffer("canonical_scale", torch.ones(in_channels))
        self.register_buffer("canonical_offset", torch.zeros(in_channels))
        bank, canonical = synthetic_bank(n, r, in_channels)
        self.set_negative_bank(bank)
        self.set_canonical_chest(canonical)

    # --- stored pictures ----------------------------------------------------------------------
    def _check_pictures(self, images: Any, count: int | None, what: str) -> torch.Tensor:
        images = torch.as_tensor(images).detach().float().cpu()
        if images.ndim != 4 or images.shape[1] != self.in_channels or (count is not None and images.shape[0] != count):
            want = f"[{count if count is not None else 'N'}, {self.in_channels}, H, W]"
            raise ValueError(f"the {what} must be model inputs {want} (bank_size={self.bank_size}, "
                             f"in_channels={self.in_channels}), got {tuple(images.shape)}")
        return resize_images(images, (self.bank_resolution, self.bank_resolution))

    def set_negative_bank(self, images: torch.Tensor) -> None:
        """Replace the bank with `bank_size` "No Finding" images given as model inputs [N, C, H, W]
        (normalised exactly like `forward`'s input; resized to bank_resolution); recomputes the hashes."""
        codes, scale, offset = quantise(self._check_pictures(images, self.bank_size, "negative bank"))
        stored = dequantise(codes, scale, offset).numpy()
        self.bank.copy_(codes)
        self.bank_scale.copy_(scale)
        self.bank_offset.copy_(offset)
        self.bank_hash.copy_(torch.from_numpy(phash_batch(stored, self.hash_size)))
        self.bank_thumb.copy_(torch.from_numpy(np.stack([thumbnail_code(a, THUMB_SIZE) for a in stored])))

    def bank_images(self, index: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The stored negatives (all, or `index`) as model inputs, optionally resized to `size`."""
        codes = self.bank if index is None else self.bank.index_select(0, index.to(self.bank.device))
        images = dequantise(codes, self.bank_scale, self.bank_offset)
        return resize_images(images, tuple(size)) if size is not None else images

    def set_canonical_chest(self, image: torch.Tensor) -> None:
        """The alignment target T as a model input [1, C, H, W] (e.g. `spec.preprocess` of
        `build_canonical_chest(...)`)."""
        codes, scale, offset = quantise(self._check_pictures(image, 1, "canonical chest"))
        self.canonical.copy_(codes)
        self.canonical_scale.copy_(scale)
        self.canonical_offset.copy_(offset)

    def canonical_chest(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        image = dequantise(self.canonical, self.canonical_scale, self.canonical_offset)
        return resize_images(image, tuple(size)) if size is not None else image

    # --- negative matching -------------------------------------------------------------------
    def match_negatives(self, x: torch.Tensor) -> torch.Tensor:
        """Index [B] (on x's device) of the nearest bank image to each input, by the input's own pHash
        (Hamming distance) or thumbnail (cosine distance); ties go to the lowest index."""
        pictures = x.detach().float().cpu().numpy()
        if self.negative_match == "phash":
            index = nearest(phash_batch(pictures, self.hash_size), self.bank_hash.cpu().numpy(), "hamming")
        else:
            codes = np.stack([thumbnail_code(a, THUMB_SIZE) for a in pictures])
            index = nearest(codes, self.bank_thumb.cpu().numpy(), "cosine")
        return torch.from_numpy(index).to(x.device)

    # --- the network --------------------------------------------------------------------------
    def forward_train(self, x: torch.Tensor, negatives: torch.Tensor | None = None,
                      align_grad: bool = False) -> dict[str, torch.Tensor | None]:
        """Everything for training: logits [B, K], cell_logits [B, K, P, P], aligned [B, C, H, W],
        aligned_negative, theta [B, 2, 3], attention (normalised Delta M) [B, 1, P, P], negative_index
        [B] (None when `negatives` [B, C, H, W], model inputs, were given by the caller).

        `align_grad=False` (default): the classification path uses a detached theta, so phi_A learns
        from L_s alone (`structure_loss(out["aligned"])`, Sec. 3.1 frames its learning that way);
        with classification gradients too, theta drifts off the chest within a few steps from random
        init (seen in testing). `aligned` always carries the gradient to phi_A."""
        b = x.shape[0]
        index = None
        if negatives is None:
            index = self.match_negatives(x)
            negatives = self.bank_images(index, tuple(x.shape[-2:])).to(x.dtype)
        elif negatives.shape != x.shape:
            raise ValueError(f"negatives {tuple(negatives.shape)} must match the inputs {tuple(x.shape)}")
        pair = torch.cat([x, negatives])
        theta = self.align.theta(pair)
        aligned = warp(pair, theta)
        if not align_grad and theta.requires_grad:
            pair = warp(pair, theta.detach())
        else:
            pair = aligned
        if self.attention_encoder is None:
            c4 = self.backbone.forward_c4(pair)
            c5 = self.backbone.forward_c5(c4[:b])
        else:
            c5 = self.backbone(pair[:b])
            c4 = self.attention_encoder.forward_c4(pair)
        m = self.attention(c4)
        delta = to_grid((m[:b] - m[b:]).abs(), self.grid_size)
        cells = self.grid_size * self.grid_size
        delta = cells * (delta + NORM_EPS) / (delta.sum(dim=(2, 3), keepdim=True) + cells * NORM_EPS)
        attended = self.attended(delta * to_grid(c5, self.grid_size))
        cell_logits = self.classifier(attended)
        return {"logits": mil_logits(cell_logits, self.mil_floor, self.logit_clamp), "cell_logits": cell_logits,
                "aligned": aligned[:b], "aligned_negative": aligned[b:], "theta": theta[:b], "attention": delta,
                "negative_index": index}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits [B, K]."""
        return self.forward_train(x)["logits"]

    def native_cams(self, x: torch.Tensor, frame: str = "input", size: int | None = None) -> torch.Tensor:
        """Cell probabilities [B, K, P, P] in [0, 1] (or size x size, Sec. 3.3's test-time upsampling),
        in the input frame (default) or the aligned frame."""
        if frame not in ("input", "aligned"):
            raise ValueError(f"frame must be 'input' or 'aligned', not '{frame}'")
        out = self.forward_train(x)
        z = out["cell_logits"].float()
        if size is not None:
            z = F.interpolate(z, size=(int(size), int(size)), mode="bilinear", align_corners=False)
        probs = torch.sigmoid(z)
        if frame == "input":
            probs = to_input_frame(probs, out["theta"]).clamp(0.0, 1.0)
        return probs

    def to_input_frame(self, maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Maps [B, K, h, w] over the aligned image (e.g. Grad-CAM at spec.cam_layer) -> input frame."""
        with torch.no_grad():
            theta = self.align.theta(x)
        return to_input_frame(maps, theta)

    def structure_loss(self, aligned: torch.Tensor, consistency_weight: float = 1.0) -> torch.Tensor:
        """L_s (Sec. 3.1) of aligned images against the stored canonical chest, with the stored
        fixed random-conv features."""
        return alignment_loss(aligned, self.canonical_chest(), self.perceptual, consistency_weight)


def build_cianet(num_classes: int, depth: str = "resnet50", in_channels: int = 1, grid_size: int = 16,
                 bank_size: int = 16, bank_resolution: int = 512, align_width: int = 16,
                 align_resolution: int = 128, shared_encoder: bool = True, mil_floor: float = MIL_FLOOR,
                 negative_match: str = "phash", hash_size: int = 16, cell_prior: float = 0.01,
                 **unused: Any) -> CIANet:
    if unused:
        raise ValueError(f"unknown architecture option(s): {', '.join(sorted(unused))}")
    return CIANet(num_classes, depth, in_channels, grid_size, bank_size, bank_resolution, align_width,
                  align_resolution, shared_encoder, mil_floor, negative_match, hash_size, cell_prior)


DEFAULTS: dict[str, Any] = {"depth": "resnet50", "grid_size": 16, "bank_size": 16, "bank_resolution": 512,
                            "align_width": 16, "align_resolution": 128, "shared_encoder": True,
                            "mil_floor": MIL_FLOOR, "negative_match": "phash", "hash_size": 16, "cell_prior": 0.01}

register_architecture(
    "cianet", build_cianet,
    doc="CIA-Net (ICCV 2019): alignment STN, ResNet-50, contrast-induced attention against a pHash-matched "
        "negative from a bank carried in the model, 16x16 grid classifier with MIL image probability",
    defaults=DEFAULTS, spec_defaults={"cam_layer": "attended", "input_size": (512, 512)})
