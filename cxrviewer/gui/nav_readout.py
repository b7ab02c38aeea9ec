"""Pure helpers behind the reading canvas: window/level by dragging, the cursor readout, value units.

No Qt here, so each rule can be tested on plain numbers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrviewer.imaging.voi import VoiChoice, lut_output_bits, window_from_levels
from cxrviewer.io.image import ImageData, VoiLut, VoiWindow

# Rescale Type / Modality LUT Type values (PS3.3 C.11.1.1.2) that are not a unit worth showing.
_NO_UNIT = {"", "US", "UNSPECIFIED"}


def value_range(image: ImageData) -> tuple[float, float]:
    """Robust (0.1 %, 99.9 %) range of the modality values, for scaling mouse gestures."""
    step = max(1, max(image.shape) // 512)
    lo, hi = np.percentile(image.pixels[::step, ::step], [0.1, 99.9])
    if hi <= lo:
        lo, hi = float(np.min(image.pixels)), float(np.max(image.pixels))
    return float(lo), float(max(hi, lo + 1.0))


def as_window(image: ImageData, voi: VoiChoice) -> VoiWindow:
    """The window a drag starts from: a window itself, else the linear window over what `voi` shows.

    FullRange becomes the window over min..max; a VOI LUT the window over the input values where its
    output is not at either end (the part of the LUT that shows contrast).
    """
    if isinstance(voi, VoiWindow):
        return voi
    if isinstance(voi, VoiLut) and voi.data.size > 1:
        data = voi.data.astype(np.int64)
        top = (1 << lut_output_bits(voi)) - 1
        inside = np.flatnonzero((data > data.min()) & (data < max(data.max(), top)))
        if inside.size < 2:
            inside = np.arange(data.size)
        return window_from_levels(voi.first_mapped + float(inside[0]), voi.first_mapped + float(inside[-1]))
    lo, hi = float(np.min(image.pixels)), float(np.max(image.pixels))
    return window_from_levels(lo, max(hi, lo + 1.0))


def drag_window(start: VoiWindow, dx: float, dy: float, span: float, size: float) -> VoiWindow:
    """The window after a right-drag of (dx, dy) screen pixels from `start`.

    Dragging right widens the window (less contrast), left narrows it; dragging down raises the
    centre, up lowers it. Moving the mouse across `size` pixels (the canvas's larger side) changes
    the width or the centre by `span` modality units (the image's value range), so the gesture
    feels the same on 8-bit and 16-bit data. The width never drops below 1.
    """
    per_pixel = span / max(size, 1.0)
    width = max(1.0, float(start.width) + dx * per_pixel)
    center = float(start.center) + dy * per_pixel
    return replace(start, center=center, width=width, explanation="")


def value_unit(image: ImageData, rescale_type: str = "") -> str:
    """The unit of the modality values: the file's Rescale Type when it names one, HU for CT, else ""."""
    kind = rescale_type.strip().upper()
    if kind not in _NO_UNIT:
        return "HU" if kind == "HOUNSFIELD" else rescale_type.strip()
    return "HU" if image.meta.modality.upper() == "CT" else ""


def read_rescale_type(path: Path) -> str:
    """Rescale Type (or the Modality LUT Type) from the file's header; "" when absent or unreadable."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["RescaleType", "ModalityLUTSequence"])
        kind = str(ds.get("RescaleType", "") or "")
        if not kind and ds.get("ModalityLUTSequence"):
            kind = str(ds.ModalityLUTSequence[0].get("ModalityLUTType", "") or "")
        return kind
    except Exception:  # noqa: BLE001 - a unit is a nicety; the image already loaded
        return ""


def readout_text(image: ImageData, x: float, y: float, unit: str = "") -> str:
    """"x 12, y 34: 1234 HU  (9.0 mm, 25.5 mm)" for the pixel under view point (x, y); "" outside.

    x is the column and y the row; the millimetre position uses PixelSpacing's column spacing
    (`pixel_spacing[1]`) for x and its row spacing (`pixel_spacing[0]`) for y, measured to the
    pixel's centre from the image's outer corner.
    """
    col, row = int(np.floor(x)), int(np.floor(y))
    rows, cols = image.shape
    if not (0 <= row < rows and 0 <= col < cols):
        return ""
    value = float(image.pixels[row, col])
    text = f"x {col}, y {row}: {value:g}" + (f" {unit}" if unit else "")
    if image.pixel_spacing:
        row_mm, col_mm = image.pixel_spacing
        text += f"  ({(col + 0.5) * col_mm:.1f} mm, {(row + 0.5) * row_mm:.1f} mm)"
    return text

