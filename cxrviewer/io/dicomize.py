"""Turn NIH ChestX-ray14 PNGs into valid DICOM (DX For Presentation or Secondary Capture).

Each PNG (8-bit grey, or RGB/RGBA that stores grey) becomes one Part 10 file, explicit VR little
endian, MONOCHROME2, 8 bits, written to ``out_dir/<PatientID>/<follow-up>/<image stem>.dcm``.

Identity and grouping come from the NIH labels table:

- PatientID is the table's `Patient ID` as written there ("1"), PatientName ``NIH^<id>``;
  PatientSex, PatientAge (``058Y``), ViewPosition (DX only) from their columns.
- One study per follow-up number (StudyID = follow-up), one series per study, one image per series.
- Every UID is a ``2.25.`` UID hashed from fixed inputs (patient id, follow-up, image index,
  SOP class), so the same PNG gives the same UIDs, and byte-identical files, on every run and
  machine. Study UIDs do not depend on the modality; series and instance UIDs do.
- NIH gives no dates. StudyDate is synthetic: 2000-01-01 plus `follow-up` days (time 12:00), so
  studies sort in follow-up order; StudyDescription says the date is synthetic.
- The NIH labels go to ImageComments ("NIH labels: Cardiomegaly|Effusion"), the source file name
  and the spacing derivation to DerivationDescription.
- Pixel spacing (DX only, ImagerPixelSpacing, row\\column = y\\x): NIH resized each scan
  (`OriginalImage[Width,Height]`, `OriginalImagePixelSpacing[x,y]`) to a square PNG without
  keeping the aspect ratio, so per axis ``spacing = original spacing * original size / PNG size``.
  SC has no suitable attribute (its Pixel Spacing means calibrated patient-plane spacing), so SC
  files carry the derived value only in DerivationDescription.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrviewer.errors import CorruptImage, CxrError, MissingFile, UnsupportedFormat
from cxrviewer.io.labels import LabelRow, read_labels_table

SOP_CLASSES: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "SC": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
_UID_NAMESPACE = "cxrviewer-dicomize-v1"  # changing this changes every generated UID
IMPLEMENTATION_CLASS_UID = generate_uid(prefix=None, entropy_srcs=[_UID_NAMESPACE, "implementation"])
IMPLEMENTATION_VERSION = "CXRVIEWER_1"
SYNTHETIC_BASE_DATE = _dt.date(2000, 1, 1)
_SOFTWARE = "cxrviewer dicomize 1"
PARALLEL_MIN_FILES = 64  # smaller batches run in this process
MAX_WORKERS = 8
# SNOMED CT codes (CID 4009 DX Anatomy Imaged, CID 4010 DX View).
_CHEST = ("43799004", "SCT", "Chest")
_VIEWS = {"PA": ("399348003", "SCT", "postero-anterior"), "AP": ("399182002", "SCT", "antero-posterior")}


@dataclass
class DicomizeReport:
    """What `dicomize` did: files written, and inputs skipped with a one-sentence reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def uid_for(*parts: object) -> str:
    """A deterministic ``2.25.`` UID hashed from `parts` (and this module's namespace)."""
    return generate_uid(prefix=None, entropy_srcs=[_UID_NAMESPACE, *(str(p) for p in parts)])


def read_grey_png(path: Path) -> np.ndarray:
    """8-bit 2-D pixels of a grey PNG (RGB/RGBA accepted when the colour channels are equal)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise MissingFile(path, "the file does not exist") from exc
    except IsADirectoryError as exc:
        raise MissingFile(path, "this is a folder, not a file") from exc
    except OSError as exc:
        raise MissingFile(path, f"the file cannot be read ({exc.strerror or exc})") from exc
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise CorruptImage(path, "the file is not a readable PNG (empty, truncated or malformed)")
    if img.dtype != np.uint8:
        raise UnsupportedFormat(path, f"the image is {img.dtype.itemsize * 8}-bit; only 8-bit PNGs are dicomized")
    if img.ndim == 3:
        if img.shape[2] == 4 and not np.all(img[..., 3] == 255):
            raise UnsupportedFormat(path, "the image has transparent pixels")
        colour = img[..., :3]
        if img.shape[2] < 3 or not (np.array_equal(colour[..., 0], colour[..., 1])
                                    and np.array_equal(colour[..., 0], colour[..., 2])):
            raise UnsupportedFormat(path, "the image is in colour, not greyscale")
        img = colour[..., 0]
    return np.ascontiguousarray(img)


def derived_spacing(row: LabelRow, shape: tuple[int, int]) -> tuple[float, float] | None:
    """(row, column) spacing in mm of a PNG of `shape` resized from the scan `row` describes."""
    if row.original_size is None or row.original_spacing is None:
        return None
    (width, height), (sx, sy) = row.original_size, row.original_spacing
    return sy * height / shape[0], sx * width / shape[1]


def _ds(value: float) -> str:
    return f"{value:.6g}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _derivation(png_path: Path, row: LabelRow, shape: tuple[int, int], spacing: tuple[float, float] | None,
                modality: str) -> str:
    text = f"Dicomized by cxrviewer from NIH ChestX-ray14 file {png_path.name} ({shape[1]}x{shape[0]} PNG"
    if row.original_size and row.original_spacing:
        (w, h), (sx, sy) = row.original_size, row.original_spacing
        text += f", resized by NIH from a {w}x{h} scan at {_ds(sx)}x{_ds(sy)} mm"
    text += ")."
    if spacing is not None:
        where = "ImagerPixelSpacing" if modality == "DX" else "Derived pixel spacing"
        text += (f" {where} {_ds(spacing[0])}\\{_ds(spacing[1])} mm (row\\column) is derived:"
                 " original spacing x original size / PNG size, per axis; not calibrated.")
    return text


def _base_dataset(png_path: Path, row: LabelRow, pixels: np.ndarray, modality: str) -> Dataset:
    """Patient, study, series, equipment, general image and image pixel attributes."""
    study_date = (SYNTHETIC_BASE_DATE + _dt.timedelta(days=row.follow_up)).strftime("%Y%m%d")
    stem = Path(row.image_index).stem
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = uid_for("image", row.image_index, modality)
    ds.ImageType = ["DERIVED", "PRIMARY"] if modality == "DX" else ["DERIVED", "SECONDARY"]
    ds.StudyDate = ds.ContentDate = study_date
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality if modality == "DX" else "OT"
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"NIH ChestX-ray14 follow-up {row.follow_up} (synthetic date)"
    ds.SeriesDescription = f"Chest {row.view_position}".strip()
    ds.PatientName = f"NIH^{row.patient_id}"
    ds.PatientID = row.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = row.sex if row.sex in ("M", "F", "O") else ""
    if row.age is not None and 0 <= row.age <= 999:
        ds.PatientAge = f"{row.age:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "De-identified by NIH for the ChestX-ray14 public release"
    ds.BodyPartExamined = "CHEST"
    if row.view_position in _VIEWS:
        ds.ViewPosition = row.view_position  # not in the SC IOD: dciodvfy warns, readers need it
    ds.SoftwareVersions = _SOFTWARE
    ds.StudyInstanceUID = uid_for("study", row.patient_id, row.follow_up)
    ds.SeriesInstanceUID = uid_for("series", row.patient_id, row.follow_up, modality)
    ds.StudyID = str(row.follow_up)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]  # NIH PNGs are in the conventional display orientation
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "NIH labels: " + ("|".join(row.labels) if row.labels else "No Finding")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    data = pixels.tobytes()
    ds.PixelData = data + b"\0" if len(data) % 2 else data
    ds["PixelData"].VR = "OB"
    if modality == "SC":
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "cxrviewer"
        ds.SecondaryCaptureDeviceSoftwareVersions = _SOFTWARE
    return ds


def _add_dx_modules(ds: Dataset, row: LabelRow, spacing: tuple[float, float] | None) -> None:
    """DX Series, DX Anatomy Imaged, DX Image, DX Detector, DX Positioning, VOI LUT, Acquisition Context."""
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = "U"  # the chest is an unpaired body part
    ds.AnatomicRegionSequence = Sequence([_code(*_CHEST)])
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1  # bright = less X-ray beam intensity
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = "128", "256"  # LINEAR: identity over 0..255
    ds.WindowCenterWidthExplanation = "FULL RANGE"
    ds.DetectorType = ""
    if spacing is not None:
        ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    if row.view_position in _VIEWS:
        ds.ViewCodeSequence = Sequence([_code(*_VIEWS[row.view_position])])
    ds.PositionerType = ""  # unknown
    ds.AcquisitionContextSequence = Sequence()


def build_dataset(png_path: Path, row: LabelRow, pixels: np.ndarray, *, modality: str = "DX") -> Dataset:
    """The full dataset (with file meta) for one PNG's pixels and its labels-table row."""
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, not {modality!r}")
    spacing = derived_spacing(row, pixels.shape)
    ds = _base_dataset(png_path, row, pixels, modality)
    if modality == "DX":
        _add_dx_modules(ds, row, spacing)
    ds.DerivationDescription = _derivation(png_path, row, pixels.shape, spacing, modality)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    return ds


def output_path(out_dir: Path, row: LabelRow, png_path: Path) -> Path:
    """``out_dir/<PatientID>/<follow-up>/<image stem>.dcm``."""
    return Path(out_dir) / row.patient_id / str(row.follow_up) / f"{Path(png_path).stem}.dcm"


def dicomize_one(png_path: Path, row: LabelRow, out_dir: Path, *, modality: str = "DX") -> Path:
    """Write one PNG as DICOM and return the file's path; raises a `CxrError` for bad input."""
    png_path = Path(png_path)
    ds = build_dataset(png_path, row, read_grey_png(png_path), modality=modality)
    target = output_path(Path(out_dir), row, png_path)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise MissingFile(target, f"the DICOM file cannot be written ({exc.strerror or exc})") from exc
    return target


def _inputs(images_dir: Path, names: Iterable[str] | None) -> list[Path]:
    if names is None:
        return sorted(p for p in images_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    return [images_dir / n for n in dict.fromkeys(names)]


def _convert(png: Path, row: LabelRow | None, out_dir: Path, modality: str) -> Path | str:
    """`dicomize_one`, or the one-sentence reason it could not be done; never raises."""
    if row is None:
        return f"{png.name}: the image is not in the labels table."
    try:
        return dicomize_one(png, row, out_dir, modality=modality)
    except CxrError as err:
        return err.sentence
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch
        return f"{png.name}: the file could not be converted ({type(exc).__name__}: {exc})."


def _worker_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def dicomize(images_dir: str | Path, out_dir: str | Path, labels_table: str | Path, *,
             modality: str = "DX", names: Iterable[str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> DicomizeReport:
    """Dicomize the PNGs of `images_dir` (or only `names` in it) into `out_dir`.

    Files that cannot be converted are reported in `DicomizeReport.skipped`, never raised;
    a missing folder or labels table raises `MissingFile` / `BadLabels`.
    `progress(done, total)` is called in the calling thread as files complete.
    Batches of at least `PARALLEL_MIN_FILES` run in a process pool (the work is mostly
    pydicom's pure-Python encoding, which threads would serialise).
    """
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, not {modality!r}")
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise MissingFile(images_dir, "the images folder does not exist")
    table = read_labels_table(labels_table)
    pngs = _inputs(images_dir, names)
    rows = [table.get(p.name) for p in pngs]
    n = len(pngs)
    workers = _worker_count()
    args = (pngs, rows, [out_dir] * n, [modality] * n)
    report = DicomizeReport()
    with contextlib.ExitStack() as stack:
        if workers > 1 and n >= PARALLEL_MIN_FILES:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results = pool.map(_convert, *args, chunksize=max(1, min(16, n // (4 * workers))))
        else:
            results = map(_convert, *args)
        for done, (png, result) in enumerate(zip(pngs, results), start=1):
            if isinstance(result, Path):
                report.written.append(result)
            else:
                report.skipped.append((png, result))
            if progress is not None:
                progress(done, n)
    return report
