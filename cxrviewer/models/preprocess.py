"""The single preprocessing path from a decoded image to a model input, and its inverse geometry.

Intensity ("display", the default): the image goes through the same VOI and MONOCHROME1 handling
as the screen (`cxrviewer.imaging.voi.to_display` with the file's default VOI), then /255. NIH
PNGs, on which the models are trained, are already display pictures; a CR DICOM in modality units
becomes the same kind of picture, upright (not inverted). "minmax" maps min..max to 0..1.

Geometry: resize to the model's (height, width), either stretched (as NIH resized every scan to a
square) or letterboxed (aspect kept, zero padding). `Geometry` maps model-input pixel edges back to
original-image pixel edges exactly: x = u * sx + tx, y = v * sy + ty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

    from cxrviewer.models.spec import ModelSpec


@dataclass(frozen=True)
class Geometry:
    """Affine map from model-input pixel-edge coordinates (u, v) to original image (x, y)."""

    sx: float
    sy: float
    tx: float
    ty: float
    image_shape: tuple[int, int]  # original (rows, columns)
    input_shape: tuple[int, int]  # model input (height, width)

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return u * self.sx + self.tx, v * self.sy + self.ty

    def box_to_image(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in input coordinates -> original-image coordinates, clipped to the image."""
        x0, y0 = self.to_image(box[0], box[1])
        x1, y1 = self.to_image(box[2], box[3])
        rows, cols = self.image_shape
        return (min(max(x0, 0.0), cols), min(max(y0, 0.0), rows), min(max(x1, 0.0), cols), min(max(y1, 0.0), rows))


def intensity_01(image: Any, mode: str) -> np.ndarray:
    """Float32 picture in [0, 1] from ImageData or a 2-D array of modality values."""
    from cxrviewer.io.image import ImageData

    if isinstance(image, ImageData):
        if mode == "display":
            from cxrviewer.imaging.voi import to_display

            return to_display(image).astype(np.float32) / np.float32(255.0)
        values = image.pixels
    else:
        values = np.asarray(image, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"expected a 2-D image, got shape {values.shape}")
        if mode == "display" and values.dtype != np.uint8 and values.max() <= 255 and values.min() >= 0:
            return values.astype(np.float32) / np.float32(255.0)  # already an 8-bit picture
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def _letterbox(rows: int, cols: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left): the aspect-kept image size inside (height, width) and its offset."""
    scale = min(height / rows, width / cols)
    new_h, new_w = max(1, round(rows * scale)), max(1, round(cols * scale))
    return new_h, new_w, (height - new_h) // 2, (width - new_w) // 2


def input_geometry(shape: tuple[int, int], size: tuple[int, int], mode: str) -> Geometry:
    """The geometry `resize_to_input` gives an image of `shape` (rows, columns), without its pixels."""
    rows, cols = int(shape[0]), int(shape[1])
    height, width = size
    if mode == "stretch":
        return Geometry(cols / width, rows / height, 0.0, 0.0, (rows, cols), (height, width))
    new_h, new_w, top, left = _letterbox(rows, cols, height, width)
    sx, sy = cols / new_w, rows / new_h
    return Geometry(sx, sy, -left * sx, -top * sy, (rows, cols), (height, width))


def resize_to_input(picture: np.ndarray, size: tuple[int, int], mode: str) -> tuple[np.ndarray, Geometry]:
    rows, cols = picture.shape
    height, width = size
    geometry = input_geometry((rows, cols), size, mode)
    if mode == "stretch":
        interp = cv2.INTER_AREA if (rows > height or cols > width) else cv2.INTER_LINEAR
        return cv2.resize(picture, (width, height), interpolation=interp), geometry
    new_h, new_w, top, left = _letterbox(rows, cols, height, width)
    interp = cv2.INTER_AREA if min(height / rows, width / cols) < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(picture, (new_w, new_h), interpolation=interp)
    out = np.zeros((height, width), dtype=picture.dtype)
    out[top:top + new_h, left:left + new_w] = resized
    return out, geometry


def preprocess_image(image: Any, spec: "ModelSpec") -> tuple["torch.Tensor", Geometry]:
    import torch

    picture = intensity_01(image, spec.intensity)
    resized, geometry = resize_to_input(picture, spec.input_size, spec.resize)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    stacked = np.repeat(resized[None], spec.in_channels, axis=0)
    normalised = (stacked - mean) / std
    return torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32))[None], geometry
