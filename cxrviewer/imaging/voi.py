"""VOI transformation to 8-bit display values, exact to DICOM PS3.3 C.11.2.1.2.

The input is modality values (what `load_image` returns). The output range is [0, 255]; the
Presentation LUT step (MONOCHROME1 inversion) is applied after VOI, never before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrviewer.io.image import ImageData, VoiLut, VoiWindow
from cxrviewer.io.lut import apply_lut

Y_MAX = 255.0


@dataclass(frozen=True)
class FullRange:
    """Map the image's minimum..maximum modality value linearly onto 0..255 (no VOI in the file)."""


VoiChoice = VoiWindow | VoiLut | FullRange


def window_to_float(values: np.ndarray, window: VoiWindow, y_max: float = Y_MAX) -> np.ndarray:
    """Apply one window; returns float32 in [0, y_max].

    LINEAR (C.11.2.1.2.1):
        x <= c - 0.5 - (w-1)/2  -> 0;   x > c - 0.5 + (w-1)/2 -> y_max;
        else ((x - (c - 0.5)) / (w - 1) + 0.5) * y_max
    LINEAR_EXACT (C.11.2.1.3.2): x <= c - w/2 -> 0; x > c + w/2 -> y_max; else ((x - c)/w + 0.5) * y_max
    SIGMOID (C.11.2.1.3.1): y_max / (1 + exp(-4 (x - c) / w))
    """
    c, w = float(window.center), float(window.width)
    x = values.astype(np.float32, copy=False)
    if window.function == "SIGMOID":
        return (y_max / (1.0 + np.exp(-4.0 * (x - np.float32(c)) / np.float32(w)))).astype(np.float32)
    if window.function == "LINEAR_EXACT":
        lo, hi = c - w / 2.0, c + w / 2.0
        scale, offset = y_max / w, (0.5 - c / w) * y_max
    else:
        if w <= 1.0:  # w == 1: a step at c - 0.5 (the standard requires w >= 1)
            return np.where(x > c - 0.5, np.float32(y_max), np.float32(0.0)).astype(np.float32)
        lo, hi = c - 0.5 - (w - 1.0) / 2.0, c - 0.5 + (w - 1.0) / 2.0
        scale, offset = y_max / (w - 1.0), (0.5 - (c - 0.5) / (w - 1.0)) * y_max
    y = x * np.float32(scale) + np.float32(offset)
    # The piecewise ends are decided on x, as the standard writes them, not on the clipped line.
    y = np.where(x <= lo, np.float32(0.0), y)
    y = np.where(x > hi, np.float32(y_max), y)
    return np.clip(y, 0.0, y_max, out=y).astype(np.float32, copy=False)


def voi_lut_to_float(values: np.ndarray, lut: VoiLut, y_max: float = Y_MAX) -> np.ndarray:
    """Apply a VOI LUT; its output range 0..2^bits-1 is scaled to 0..y_max."""
    out = apply_lut(values, lut.first_mapped, lut.data).astype(np.float32)
    return out * np.float32(y_max / float((1 << lut_output_bits(lut)) - 1))


def lut_output_bits(lut: VoiLut) -> int:
    """The LUT's real output depth.

    Many files declare 16 bits in the LUT Descriptor while their entries never exceed 12 or 8
    bits (PS3.3 allows 8 or 16 only, so a 12-bit LUT must say 16). Like DCMTK, trust the
    declared depth unless the largest entry shows it is too large, then use the entries' depth.
    """
    declared = int(lut.bits)
    used = max(int(np.max(lut.data)).bit_length(), 1) if lut.data.size else declared
    return min(declared, max(used, 8)) if used < declared else declared


def default_voi(image: ImageData) -> VoiChoice:
    """The file's first VOI LUT, else its first window, else the full modality range."""
    if image.voi_luts:
        return image.voi_luts[0]
    if image.windows:
        return image.windows[0]
    return FullRange()


def voi_to_float(image: ImageData, voi: VoiChoice | None = None) -> np.ndarray:
    """Float display values in [0, 255] before inversion."""
    voi = default_voi(image) if voi is None else voi
    if isinstance(voi, VoiLut):
        return voi_lut_to_float(image.pixels, voi)
    if isinstance(voi, VoiWindow):
        return window_to_float(image.pixels, voi)
    return full_range_to_float(image.pixels)


def full_range_to_float(values: np.ndarray) -> np.ndarray:
    """min..max -> 0..255 linearly; a constant image shows black."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float32) - np.float32(lo)) * np.float32(Y_MAX / (hi - lo))
    return out


def to_display(image: ImageData, voi: VoiChoice | None = None, invert: bool | None = None) -> np.ndarray:
    """8-bit display image: VOI (default: the file's own), then MONOCHROME1 inversion.

    `invert=None` follows the photometric interpretation; True/False override it (the viewer's
    invert toggle flips the file's own choice).
    """
    y = voi_to_float(image, voi)
    if image.inverted if invert is None else invert:
        y = np.float32(Y_MAX) - y
    return quantize(y)


def quantize(y: np.ndarray) -> np.ndarray:
    """Round half up to 0..255 uint8."""
    out = np.floor(y + np.float32(0.5))
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def window_from_levels(lo: float, hi: float) -> VoiWindow:
    """The LINEAR window whose ramp runs from `lo` to `hi` (for window/level by mouse)."""
    width = max(hi - lo + 1.0, 1.0)
    return VoiWindow(center=(lo + hi) / 2.0 + 0.5, width=width, function="LINEAR")
