"""PNG/JPEG radiographs (NIH ChestX-ray14 style): 8/16-bit grey, or grey stored as RGB(A)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxrviewer.errors import CorruptImage, reading
from cxrviewer.io.codestream import PNG_MAGIC
from cxrviewer.io.image import ImageData, ImageMeta
from cxrviewer.io.labels import LabelRow

JPEG_MAGIC = b"\xff\xd8\xff"
LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # OpenCV keeps channels as BGR


def sniff_raster(head: bytes) -> str | None:
    """'png', 'jpeg' or None from a file's first bytes."""
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


def load_raster(path: Path, kind: str, label_row: LabelRow | None = None) -> ImageData:
    """Decode a PNG/JPEG; pixel values are the stored grey levels (no modality transform exists)."""
    with reading(path):
        buffer = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if arr is None or arr.size == 0:
        raise CorruptImage(path, f"the {kind.upper()} data is truncated or corrupt")
    notes: list[str] = []
    if arr.ndim == 3:
        colour = arr[..., :3]
        if arr.shape[2] == 4:
            notes.append(f"{path.name}: alpha channel ignored.")
        if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]):
            arr = colour[..., 0]
        else:
            notes.append(f"{path.name}: colour image converted to luminance.")
            arr = colour.astype(np.float32) @ LUMA_BGR
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        arr = arr.astype(np.float32)
    bits = 16 if arr.dtype == np.uint16 else 8
    meta = meta_from_label_row(label_row) if label_row else ImageMeta()
    return ImageData(
        path=path,
        pixels=np.ascontiguousarray(arr, dtype=np.float32),
        photometric="MONOCHROME2",
        bits_stored=bits,
        source_format=kind,
        meta=meta,
        warnings=notes,
    )


def meta_from_label_row(row: LabelRow) -> ImageMeta:
    """Identifiers for an NIH image from its row in the labels table."""
    return ImageMeta(
        patient_id=row.patient_id,
        patient_sex=row.sex,
        patient_age=f"{row.age:03d}Y" if row.age is not None else "",
        view_position=row.view_position,
        follow_up=row.follow_up,
        labels=row.labels,
        modality="DX",
        body_part="CHEST",
    )
