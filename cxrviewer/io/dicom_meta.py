"""DICOM header reading shared by `load_image` and the catalog (headers only, no pixels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import warnings

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cxrviewer.errors import CorruptImage, UnsupportedFormat, first_line, reading
from cxrviewer.io.image import ImageMeta

# Storage SOP classes that hold no image we can show, by UID prefix or exact UID, with the
# name used in the error sentence. Anything else without Pixel Data is reported generically.
NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88": "a structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.11": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.481": "a radiotherapy object (RT)",
    "1.2.840.10008.5.1.4.1.1.9": "a waveform",
    "1.2.840.10008.5.1.4.1.1.104": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66": "a raw data, registration or segmentation object",
    "1.2.840.10008.5.1.4.1.1.67": "a real world value mapping",
    "1.2.840.10008.5.1.4.1.1.88.59": "a key object selection (KO)",
}


def describe_sop_class(uid: str) -> str:
    """Human name for a non-image SOP class, the longest matching prefix winning."""
    best = ""
    for prefix in NON_IMAGE_SOP_CLASSES:
        if (uid == prefix or uid.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    if best:
        return NON_IMAGE_SOP_CLASSES[best]
    return f"a DICOM object of SOP class {uid}" if uid else "a DICOM object"


def read_dataset(path: Path, *, stop_before_pixels: bool) -> Dataset:
    """Read a DICOM file (with or without the Part 10 preamble) or raise a typed error.

    pydicom's warnings about repairable deviations (wrong VR explicitness, missing delimiters)
    are silenced: what matters is whether the pixels decode, which `load_dicom` checks.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dataset(path, stop_before_pixels)


def _read_dataset(path: Path, stop_before_pixels: bool) -> Dataset:
    with reading(path):  # the OS's errors (missing, a folder, no permission) as MissingFile
        fileobj = open(path, "rb")
    with fileobj:
        try:
            return pydicom.dcmread(fileobj, stop_before_pixels=stop_before_pixels, force=False)
        except InvalidDicomError:
            pass
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
            raise CorruptImage(path, f"the DICOM header is malformed ({first_line(exc)})") from exc
        # No preamble: accept only when the first element looks like a plausible DICOM group.
        if not _looks_like_raw_dicom(path):
            raise UnsupportedFormat(path, "this is not a DICOM file or an image format cxrviewer reads")
        fileobj.seek(0)
        try:
            return pydicom.dcmread(fileobj, stop_before_pixels=stop_before_pixels, force=True)
        except Exception as exc:  # noqa: BLE001
            raise CorruptImage(path, f"the DICOM header is malformed ({first_line(exc)})") from exc


def _looks_like_raw_dicom(path: Path) -> bool:
    """A DICOM data set without the Part 10 header starts with a group 0x0008 element (or 0002)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)



def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # noqa: BLE001 - a malformed element must not stop the header read
        return ""
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword, None)
        return None if value in (None, "") else int(value)
    except Exception:  # noqa: BLE001
        return None


def meta_from_dataset(ds: Dataset) -> ImageMeta:
    """Identifiers, dates and acquisition facts from a data set (missing values stay empty)."""
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    return ImageMeta(
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_sex=_text(ds, "PatientSex"),
        patient_age=_text(ds, "PatientAge"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        instance_number=_int(ds, "InstanceNumber"),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        laterality=laterality,
        patient_orientation=_text(ds, "PatientOrientation"),
    )


def transfer_syntax_of(ds: Dataset) -> tuple[str, str]:
    """(UID, name) of the data set's transfer syntax; implicit little endian when unstated."""
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        uid = pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR in (True, None) else (
            pydicom.uid.ExplicitVRLittleEndian if ds.is_little_endian else pydicom.uid.ExplicitVRBigEndian
        )
    uid = pydicom.uid.UID(str(uid))
    return str(uid), (uid.name if uid.is_valid else str(uid))


def header_summary(ds: Dataset) -> dict[str, Any]:
    """Rows, columns, bits, photometric interpretation and frame count as the header states them."""
    return {
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "bits_allocated": _int(ds, "BitsAllocated"),
        "bits_stored": _int(ds, "BitsStored"),
        "pixel_representation": _int(ds, "PixelRepresentation"),
        "samples_per_pixel": _int(ds, "SamplesPerPixel") or 1,
        "photometric": _text(ds, "PhotometricInterpretation"),
        "number_of_frames": _int(ds, "NumberOfFrames") or 1,
        "has_pixels": "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds,
    }
