"""CIA-Net's stored pictures: the canonical chest (Sec. 3, "Canonical Chest"), the negative bank used
at inference, the synthetic chest that stands in for both in a randomly initialised model, and the
8-bit storage they share inside the model file.

Storage: a picture set lives in the state dict as uint8 codes [N, C, R, R] plus a per-channel
float32 scale and offset, value = code * scale + offset, in the model's INPUT space (after the spec's
mean/std normalisation, exactly what `forward` receives). The quantisation step is (max - min) / 255
per channel; for pictures that came from 8-bit display pictures (the preprocessing path) and span
the full grey range this reproduces them exactly, otherwise within half a step. Keeping the
pictures in input space means the model never needs the spec's mean/std.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SYNTHETIC_MEAN, SYNTHETIC_STD = 0.5, 0.25  # create_model's default normalisation


def quantise(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, C, H, W], scale [C], offset [C]) for float images [N, C, H, W]."""
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    images = images.detach().float()
    if not torch.isfinite(images).all():
        raise ValueError("the images contain NaN or infinite values")
    lo = images.amin(dim=(0, 2, 3))
    hi = images.amax(dim=(0, 2, 3))
    scale = ((hi - lo) / 255.0).clamp_min(1e-8)
    codes = ((images - lo.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)).round().clamp(0, 255).to(torch.uint8)
    return codes, scale, lo


def dequantise(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return codes.float() * scale.float().view(1, -1, 1, 1) + offset.float().view(1, -1, 1, 1)


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to (height, width), antialiased when shrinking; no-op if equal."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def _soft_inside(r: np.ndarray, edge: float = 0.04) -> np.ndarray:
    """~1 inside the unit level set r < 1, ~0 outside, smooth edge."""
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / edge, -60, 60)))


def synthetic_chest(size: tuple[int, int] = (512, 512), variant: int = 0) -> np.ndarray:
    """A deterministic, analytic chest-like picture, float32 [H, W] in [0, 1]: body outline, two dark
    lung fields with rib stripes, bright mediastinum, heart and diaphragm. `variant` shifts, scales
    and rotates it by small amounts given by closed-form sines (no random generator), so a bank of
    variants has distinct hashes. Stands in for real "No Finding" images in a randomly initialised
    model; it is NOT a radiograph."""
    height, width = size
    k = float(variant)
    dx, dy = 0.07 * np.sin(1.3 * k + 0.5), 0.06 * np.sin(2.1 * k + 1.1)
    scale, rot = 1.0 + 0.09 * np.sin(0.7 * k + 2.0), 0.09 * np.sin(1.9 * k + 0.2)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (x + 0.5) / width * 2 - 1
    y = (y + 0.5) / height * 2 - 1
    u = (np.cos(rot) * (x - dx) + np.sin(rot) * (y - dy)) / scale
    v = (-np.sin(rot) * (x - dx) + np.cos(rot) * (y - dy)) / scale

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return _soft_inside(np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2))

    body = ellipse(0.0, 0.05, 0.88, 1.05)
    lungs = ellipse(-0.38, -0.08, 0.27, 0.56) + ellipse(0.38, -0.08, 0.27, 0.56)
    ribs = 0.5 + 0.5 * np.sin(22.0 * v + 4.0 * u * u)
    heart = ellipse(0.1, 0.32, 0.3, 0.22)
    mediastinum = _soft_inside(np.abs(u) / 0.11) * _soft_inside(np.abs(v + 0.2) / 0.75)
    diaphragm = body * _soft_inside(np.maximum(0.0, 0.62 - v) / 0.05 + 0.5)
    picture = 0.06 + 0.5 * body - 0.32 * lungs + 0.07 * lungs * ribs + 0.2 * heart + 0.18 * mediastinum \
        + 0.15 * diaphragm
    return np.clip(picture, 0.0, 1.0).astype(np.float32)


def _picture01(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D picture, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    a = a.astype(np.float32)
    if a.min() >= 0.0 and a.max() <= 1.0:
        return a
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)


def build_canonical_chest(images: Iterable[np.ndarray], size: tuple[int, int] = (512, 512),
                          crop: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """CIA-Net's canonical chest (Sec. 3): the pixel-wise mean of (the paper: 500 random) "No Finding"
    pictures, each resized to `size` (height, width). Pictures: 2-D uint8 (0..255), float in [0, 1],
    or anything else (min-max scaled). The paper then crops "the central view tightly bounding the two
    lungs" by hand; `crop` = (top, bottom, left, right) as fractions of the mean picture does that
    crop, and the result is resized back to `size`. Returns a uint8 picture [H, W], ready for
    `spec.preprocess` and then `CIANet.set_canonical_chest`. Streams: holds one running sum."""
    height, width = size
    total = np.zeros((height, width), dtype=np.float64)
    count = 0
    for image in images:
        picture = _picture01(image)
        interp = cv2.INTER_AREA if picture.shape[0] >= height and picture.shape[1] >= width else cv2.INTER_LINEAR
        total += cv2.resize(picture, (width, height), interpolation=interp)
        count += 1
    if count == 0:
        raise ValueError("no pictures given for the canonical chest")
    mean = (total / count).astype(np.float32)
    if crop is not None:
        top, bottom, left, right = crop
        if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
            raise ValueError(f"crop {crop} is not (top, bottom, left, right) fractions with top < bottom, "
                             "left < right")
        r0, r1 = int(round(top * height)), max(int(round(bottom * height)), int(round(top * height)) + 1)
        c0, c1 = int(round(left * width)), max(int(round(right * width)), int(round(left * width)) + 1)
        mean = cv2.resize(mean[r0:r1, c0:c1], (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.round(mean * 255.0), 0, 255).astype(np.uint8)


def synthetic_bank(count: int, resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bank [count, C, R, R], canonical [1, C, R, R]) in input space: synthetic chest variants
    normalised with create_model's defaults, and their pixel-wise mean as the canonical chest."""
    pictures = [synthetic_chest((resolution, resolution), i) for i in range(count)]
    canonical = build_canonical_chest(pictures, (resolution, resolution)).astype(np.float32) / 255.0

    def to_input(p: np.ndarray) -> torch.Tensor:
        t = (torch.from_numpy(np.ascontiguousarray(p)) - SYNTHETIC_MEAN) / SYNTHETIC_STD
        return t.view(1, 1, resolution, resolution).expand(1, channels, resolution, resolution)

    bank = torch.cat([to_input(p) for p in pictures]).contiguous()
    return bank, to_input(canonical).contiguous()
