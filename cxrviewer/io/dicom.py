"""Decode a DICOM radiograph into modality units (PS3.3 C.11.1) plus its VOI and geometry.

Order of the grey-scale pipeline (PS3.4 N.2): stored values -> Modality LUT or Rescale
Slope/Intercept (here) -> VOI window or VOI LUT -> Presentation LUT, i.e. MONOCHROME1 inverted
(both in `cxrviewer.imaging`). Only the first frame of a multi-frame object is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cxrviewer.errors import CorruptImage, CxrError, NotAnImage, UnsupportedDicom, first_line
from cxrviewer.io.dicom_meta import (
    describe_sop_class,
    header_summary,
    meta_from_dataset,
    read_dataset,
    transfer_syntax_of,
)
from cxrviewer.io.codestream import declared_size
from cxrviewer.io.image import ImageData, VoiLut, VoiWindow
from cxrviewer.io.lut import lut_values, apply_lut

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")
# Rec. 601 luma weights: the conversion DICOM's YBR_FULL uses, so RGB -> Y matches a YBR file's Y.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Refuse before decoding anything larger: the biggest detectors are ~4k x 5k (20 Mpx); a corrupt
# header claiming 65535 x 65535 must not make a decoder allocate gigabytes.
MAX_PIXELS = 100_000_000


def load_dicom(path: Path) -> ImageData:
    """Read and decode one DICOM file; typed errors (`cxrviewer.errors`) for anything we cannot show.

    pydicom converts elements lazily, so a malformed element (an unknown VR, a bad number) can
    raise on any attribute access; whatever escapes the specific checks below becomes a
    `CorruptImage` naming the file, never a bare third-party exception.
    """
    try:
        return _load_dicom(path)
    except CxrError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001
        raise CorruptImage(path, f"the DICOM data is malformed ({first_line(exc)})") from exc


def _load_dicom(path: Path) -> ImageData:
    ds = read_dataset(path, stop_before_pixels=False)
    summary = header_summary(ds)
    rows, cols = summary["rows"], summary["columns"]
    if not summary["has_pixels"]:
        if not rows:
            # pydicom returns an empty data set when encapsulated pixel data is cut off before
            # its delimiter; the header alone still tells what the file was meant to be.
            ds = read_dataset(path, stop_before_pixels=True)
            rows, cols = header_summary(ds)["rows"], header_summary(ds)["columns"]
        if rows and cols:
            raise CorruptImage(path, "the header describes an image but the pixel data is missing or truncated")
        raise NotAnImage(path, f"this is {describe_sop_class(str(ds.get('SOPClassUID', '')))}, not an image")
    if not rows or not cols:
        raise CorruptImage(path, "the header gives no image size (Rows/Columns missing or zero)")
    if rows * cols > MAX_PIXELS:
        raise CorruptImage(path, f"the header states an image of {cols}x{rows} pixels, beyond the "
                                 f"{MAX_PIXELS // 1_000_000}-megapixel limit for a radiograph")
    photometric = summary["photometric"].upper()
    if photometric not in GREY + COLOUR:
        raise UnsupportedDicom(path, f"the photometric interpretation '{photometric or 'none'}' is not supported")
    ts_uid, ts_name = transfer_syntax_of(ds)
    notes: list[str] = []

    stored = _decode_first_frame(path, ds, ts_name)
    frames = summary["number_of_frames"]
    if frames > 1:
        notes.append(f"{path.name}: multi-frame object ({frames} frames); showing the first frame only.")

    if photometric in COLOUR or stored.ndim == 3:
        stored = _to_luminance(path, ds, stored, photometric)
        notes.append(f"{path.name}: {photometric} colour image converted to luminance.")
        photometric = "MONOCHROME2"
        modality = stored
    else:
        modality = apply_modality(ds, stored)

    if modality.shape != (rows, cols):
        raise CorruptImage(path, f"the decoded pixels are {modality.shape[1]}x{modality.shape[0]}, not the "
                                 f"{cols}x{rows} the header states")
    spacing, spacing_source = pixel_spacing(ds)
    return ImageData(
        path=path,
        pixels=modality,
        photometric=photometric,
        bits_stored=summary["bits_stored"] or 8,
        signed=summary["pixel_representation"] == 1,
        windows=voi_windows(ds),
        voi_luts=voi_luts(ds),
        pixel_spacing=spacing,
        spacing_source=spacing_source,
        transfer_syntax=ts_uid,
        transfer_syntax_name=ts_name,
        source_format="dicom",
        number_of_frames=frames,
        meta=meta_from_dataset(ds),
        warnings=notes,
    )


def _decode_first_frame(path: Path, ds: Dataset, ts_name: str) -> np.ndarray:
    """Stored values of frame 0, colour converted to RGB by pydicom where the data is YBR."""
    _ensure_transfer_syntax(path, ds)
    ts_uid = ds.file_meta.TransferSyntaxUID
    try:
        decoder = pydicom.pixels.get_decoder(ts_uid)
    except NotImplementedError as exc:
        raise UnsupportedDicom(path, f"the transfer syntax {ts_name} is not supported") from exc
    if not decoder.is_available:
        raise UnsupportedDicom(path, f"the transfer syntax {ts_name} needs a decoder that is not installed "
                                     "(pylibjpeg with its libjpeg/openjpeg/rle plugins)")
    _check_declared_size(path, ds, ts_uid, ts_name)
    try:
        ds.pixel_array_options(index=0, as_rgb=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders raise anything on bad input; pylibjpeg-rle's
        # Rust panics arrive as pyo3's PanicException, which derives from BaseException.
        text = str(exc).lower()
        if any(k in text for k in ("less than expected", "truncat", "too short", "end of")):
            raise CorruptImage(path, "the pixel data is truncated (fewer bytes than the header's image size needs)") \
                from exc
        raise CorruptImage(path, f"the {ts_name} pixel data cannot be decoded ({_decoder_reason(exc)})") from exc
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise CorruptImage(path, f"the decoded pixel data has an unexpected shape {arr.shape}")
    return arr


def _check_declared_size(path: Path, ds: Dataset, ts_uid: pydicom.uid.UID, ts_name: str) -> None:
    """Refuse a compressed frame whose own header disagrees with Rows/Columns before decoding it:
    a corrupt stream can claim a huge image and make the decoder allocate and work for seconds."""
    size = declared_size(ds, ts_uid)
    if size is None:
        return
    width, height = size
    rows, cols = int(ds.Rows), int(ds.Columns)
    if (width, height) != (cols, rows):
        raise CorruptImage(path, f"the {ts_name} stream declares a {width}x{height} image but the header "
                                 f"says {cols}x{rows}")


def _ensure_transfer_syntax(path: Path, ds: Dataset) -> None:
    """A data set without a Transfer Syntax UID (no Part 10 header) is decoded with the encoding
    pydicom detected while reading it; encapsulated data cannot be guessed."""
    meta = ds.file_meta
    if "TransferSyntaxUID" in meta:
        return
    if ds["PixelData"].is_undefined_length if "PixelData" in ds else False:
        raise UnsupportedDicom(path, "the file does not state the transfer syntax of its compressed pixel data")
    implicit, little = ds.original_encoding
    uid = pydicom.uid.ImplicitVRLittleEndian if implicit else (
        pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
    meta.TransferSyntaxUID = uid


def _decoder_reason(exc: BaseException) -> str:
    """The first plugin's reason from pydicom's "all available plugins failed" message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines[1:]:
        if ":" in line:
            return line.split(":", 1)[1].strip()[:160]
    return first_line(exc)



def _to_luminance(path: Path, ds: Dataset, arr: np.ndarray, photometric: str) -> np.ndarray:
    """Grey values from a colour (or palette) image, Rec. 601 weights."""
    if photometric == "PALETTE COLOR":
        try:
            arr = pydicom.pixels.apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001
            raise CorruptImage(path, f"the palette colour lookup table is unusable ({first_line(exc)})") from exc
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise CorruptImage(path, f"a {photometric} image should have 3 samples per pixel, found shape {arr.shape}")
    return (arr.astype(np.float32) @ LUMA).astype(np.float32)


def apply_modality(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """Modality LUT Sequence if present, else Rescale Slope/Intercept (PS3.3 C.11.1.1.2)."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        item = seq[0]
        lut = lut_values(item, signed_input=int(ds.get("PixelRepresentation", 0)) == 1)
        return apply_lut(stored, lut.first_mapped, lut.data).astype(np.float32)
    slope = _float_or(ds.get("RescaleSlope"), 1.0)
    intercept = _float_or(ds.get("RescaleIntercept"), 0.0)
    out = stored.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def _float_or(value: object, default: float) -> float:
    try:
        return default if value in (None, "") else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _multi(value: object) -> list[float]:
    if value in (None, ""):
        return []
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return []
    return out


def voi_windows(ds: Dataset) -> tuple[VoiWindow, ...]:
    """All windows the file offers, in order; pairs with width < 1 are invalid (C.11.2.1.2) and dropped."""
    centers, widths = _multi(ds.get("WindowCenter")), _multi(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    explanations = ds.get("WindowCenterWidthExplanation", [])
    if isinstance(explanations, str):
        explanations = [explanations]
    windows = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        min_width = 0.0 if function == "LINEAR_EXACT" else 1.0
        if w < min_width or (function == "LINEAR_EXACT" and w <= 0):
            continue
        explanation = str(explanations[i]) if i < len(explanations) else ""
        windows.append(VoiWindow(center=c, width=w, function=function, explanation=explanation))
    return tuple(windows)


def voi_luts(ds: Dataset) -> tuple[VoiLut, ...]:
    """The VOI LUT Sequence items, decoded; malformed items are skipped."""
    out = []
    for item in ds.get("VOILUTSequence", []) or []:
        try:
            lut = lut_values(item, signed_input=int(ds.get("PixelRepresentation", 0)) == 1)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        out.append(VoiLut(first_mapped=lut.first_mapped, bits=lut.bits, data=lut.data,
                          explanation=str(item.get("LUTExplanation", "") or "")))
    return tuple(out)


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing; zero or absent is none."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _multi(ds.get(keyword))
        if len(values) == 2 and all(v > 0 and np.isfinite(v) for v in values):
            return (values[0], values[1]), keyword
    return None, ""
