"""What `load_image` returns: pixels in modality units plus what display and analysis need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VoiWindow:
    """One VOI window (PS3.3 C.11.2.1.2). `function` is LINEAR, LINEAR_EXACT or SIGMOID."""

    center: float
    width: float
    function: str = "LINEAR"
    explanation: str = ""


@dataclass(frozen=True)
class VoiLut:
    """One item of the VOI LUT Sequence (PS3.3 C.11.2.1.1).

    `first_mapped` is the input value mapped to `data[0]`; inputs below it map to `data[0]`,
    above the last entry to `data[-1]`. `bits` is the output depth the LUT Descriptor declares.
    """

    first_mapped: int
    bits: int
    data: np.ndarray
    explanation: str = ""


@dataclass
class ImageMeta:
    """Identifiers and acquisition facts; everything the catalog and the tag dialog need.

    Strings are "" when the file does not say; numbers are None.
    """

    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    patient_birth_date: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    instance_number: int | None = None
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""
    patient_orientation: str = ""
    # NIH-style tables
    follow_up: int | None = None
    labels: tuple[str, ...] = ()


@dataclass
class ImageData:
    """A decoded 2-D radiograph.

    `pixels` holds modality values (Modality LUT or Rescale Slope/Intercept applied), float32,
    shape (rows, columns). Display conversion happens later (`cxrviewer.imaging`), never here:
    MONOCHROME1 pixels are *not* inverted in `pixels`; the display path inverts after VOI.
    """

    path: Path
    pixels: np.ndarray
    photometric: str = "MONOCHROME2"
    bits_stored: int = 8
    signed: bool = False
    windows: tuple[VoiWindow, ...] = ()
    voi_luts: tuple[VoiLut, ...] = ()
    pixel_spacing: tuple[float, float] | None = None  # (row, column) in mm
    spacing_source: str = ""  # "PixelSpacing", "ImagerPixelSpacing" or ""
    transfer_syntax: str = ""  # UID, "" for raster images
    transfer_syntax_name: str = ""
    source_format: str = "dicom"  # "dicom" | "png" | "jpeg" | ...
    number_of_frames: int = 1
    meta: ImageMeta = field(default_factory=ImageMeta)
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def inverted(self) -> bool:
        """True when the display path must invert after VOI (MONOCHROME1)."""
        return self.photometric == "MONOCHROME1"
