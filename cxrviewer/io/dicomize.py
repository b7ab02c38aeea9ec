"""Turn NIH ChestX-ray14 PNGs into valid DICOM (DX For Presentation or Secondary Capture).

Each PNG (8-bit grey, or RGB/RGBA that stores grey) becomes one Part 10 file, explicit VR little
endian, MONOCHROME2, 8 bits, written to ``out_dir/<PatientID>/<follow-up>/<image stem>.dcm``.

Identity and grouping come from the NIH labels table:

- PatientID is the table's `Patient ID` as written there ("1"), PatientName ``NIH^<id>``;
  PatientSex, PatientAge (``058Y``) and ViewPosition from their columns (ViewPosition is not
  part of the SC IOD, so dciodvfy warns about it in SC files; readers need it).
- One study per follow-up number (StudyID = follow-up), one series per study, one image per series.
- Every UID is a ``2.25.`` UID from a name-based UUID of fixed inputs (patient id, follow-up,
  image index, SOP class), so the same PNG gives the same UIDs, and byte-identical files, on
  every run and machine. Study UIDs do not depend on the modality; series and instance UIDs do.
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

import datetime as _dt
import functools
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from cxrviewer.parallel import cpu_count, fork_context
from cxrviewer.errors import CorruptImage, CxrError, MissingFile, UnsupportedFormat, reading
from cxrviewer.io.labels import LabelRow, read_labels_table

SOP_CLASSES: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "SC": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
# Changing this namespace changes every generated UID.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "cxrviewer:io:dicomize:v1")
IMPLEMENTATION_VERSION = "CXRVIEWER_1"
SYNTHETIC_BASE_DATE = _dt.date(2000, 1, 1)
_SOFTWARE = "cxrviewer dicomize 1"
PARALLEL_MIN_FILES = 32  # smaller batches run in threads of this process
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
    """A deterministic ``2.25.`` UID (PS3.5 B.2) from a name-based (version 5) UUID of `parts`.

    Not `pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`: with ``prefix=None`` pydicom
    3.0 ignores the entropy sources and returns a random UUID.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(0).join(str(p) for p in parts)).int}"


IMPLEMENTATION_CLASS_UID = uid_for("implementation")


def read_grey_png(path: Path) -> np.ndarray:
    """8-bit 2-D pixels of a grey PNG (RGB/RGBA accepted when the colour channels are equal)."""
    with reading(path):
        raw = np.fromfile(path, dtype=np.uint8)
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


def _constant_dataset(modality: str) -> Dataset:
    """The attributes that are the same in every file of `modality`."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.ImageType = ["DERIVED", "PRIMARY"] if modality == "DX" else ["DERIVED", "SECONDARY"]
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ds.Manufacturer = ds.ReferringPhysicianName = ds.PatientBirthDate = ""
    ds.Modality = "DX" if modality == "DX" else "OT"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "De-identified by NIH for the ChestX-ray14 public release"
    ds.BodyPartExamined = "CHEST"
    ds.SoftwareVersions = _SOFTWARE
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]  # NIH PNGs are in the conventional display orientation
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    if modality == "SC":
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "cxrviewer"
        ds.SecondaryCaptureDeviceSoftwareVersions = _SOFTWARE
        return ds
    # DX Series, DX Anatomy Imaged, DX Image, DX Detector, DX Positioning, VOI LUT, Acquisition Context
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = "U"  # the chest is an unpaired body part
    ds.AnatomicRegionSequence = Sequence([_code(*_CHEST)])
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1  # bright = less X-ray beam intensity
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = "128", "256"  # LINEAR: identity over 0..255
    ds.WindowCenterWidthExplanation = "FULL RANGE"
    ds.DetectorType = ds.PositionerType = ""  # unknown
    ds.AcquisitionContextSequence = Sequence()
    return ds


def _image_dataset(png_path: Path, row: LabelRow, pixels: np.ndarray, modality: str) -> Dataset:
    """The attributes that depend on the image and its labels-table row."""
    ds = Dataset()
    ds.SOPInstanceUID = uid_for("image", row.image_index, modality)
    ds.StudyDate = ds.ContentDate = (SYNTHETIC_BASE_DATE + _dt.timedelta(days=row.follow_up)).strftime("%Y%m%d")
    ds.StudyDescription = f"NIH ChestX-ray14 follow-up {row.follow_up} (synthetic date)"
    ds.SeriesDescription = f"Chest {row.view_position}".strip()
    ds.PatientName = f"NIH^{row.patient_id}"
    ds.PatientID = row.patient_id
    ds.PatientSex = row.sex if row.sex in ("M", "F", "O") else ""
    if row.age is not None and 0 <= row.age <= 999:
        ds.PatientAge = f"{row.age:03d}Y"
    ds.StudyInstanceUID = uid_for("study", row.patient_id, row.follow_up)
    ds.SeriesInstanceUID = uid_for("series", row.patient_id, row.follow_up, modality)
    ds.StudyID = str(row.follow_up)
    ds.ImageComments = "NIH labels: " + ("|".join(row.labels) if row.labels else "No Finding")
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    data = pixels.tobytes()
    ds.add_new("PixelData", "OB", data + b"\0" if len(data) % 2 else data)
    spacing = derived_spacing(row, pixels.shape)
    ds.DerivationDescription = _derivation(png_path, row, pixels.shape, spacing, modality)
    if row.view_position in _VIEWS:
        ds.ViewPosition = row.view_position  # not in the SC IOD (dciodvfy warns), but readers need it
    if modality == "DX":
        if spacing is not None:
            ds.ImagerPixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
        if row.view_position in _VIEWS:
            ds.ViewCodeSequence = Sequence([_code(*_VIEWS[row.view_position])])
    return ds


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def build_dataset(png_path: Path, row: LabelRow, pixels: np.ndarray, *, modality: str = "DX") -> Dataset:
    """The full dataset (with file meta) for one PNG's pixels and its labels-table row."""
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, not {modality!r}")
    ds = _constant_dataset(modality)
    ds.update(_image_dataset(png_path, row, pixels, modality))
    ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    return ds


def _new_buffer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    return fp


def _encode_elements(ds: Dataset) -> dict[int, bytes]:
    """Each top-level element of `ds` encoded on its own (explicit VR little endian)."""
    encoded = {}
    for elem in ds:
        fp = _new_buffer()
        write_data_element(fp, elem)
        encoded[int(elem.tag)] = fp.getvalue()
    return encoded


@functools.cache
def _constant_elements(modality: str) -> dict[int, bytes]:
    return _encode_elements(_constant_dataset(modality))


def encode_file(png_path: Path, row: LabelRow, pixels: np.ndarray, *, modality: str = "DX") -> bytes:
    """The Part 10 file `build_dataset` describes, byte for byte what `pydicom.dcmwrite` writes.

    The attributes common to all files are encoded once per modality and cached; only the
    per-image ones go through pydicom each time (pydicom's pure-Python encoder dominates the
    cost otherwise).
    """
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, not {modality!r}")
    image = _image_dataset(png_path, row, pixels, modality)
    elements = {**_constant_elements(modality), **_encode_elements(image)}
    fp = _new_buffer()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, _file_meta(SOP_CLASSES[modality], image.SOPInstanceUID), enforce_standard=True)
    return fp.getvalue() + b"".join(elements[tag] for tag in sorted(elements))


def output_path(out_dir: Path, row: LabelRow, png_path: Path) -> Path:
    """``out_dir/<PatientID>/<follow-up>/<image stem>.dcm``."""
    return Path(out_dir) / row.patient_id / str(row.follow_up) / f"{Path(png_path).stem}.dcm"


def dicomize_one(png_path: Path, row: LabelRow, out_dir: Path, *, modality: str = "DX") -> Path:
    """Write one PNG as DICOM and return the file's path; raises a `CxrError` for bad input."""
    png_path = Path(png_path)
    data = encode_file(png_path, row, read_grey_png(png_path), modality=modality)
    target = output_path(Path(out_dir), row, png_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
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
    return max(1, min(cpu_count(), MAX_WORKERS))


def _executor(n: int) -> Executor:
    """Forked worker processes for batches when that is safe (`cxrviewer.parallel`), else threads."""
    workers = _worker_count()
    context = fork_context(n, PARALLEL_MIN_FILES)
    if context is not None:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context)
    return ThreadPoolExecutor(max_workers=workers)


def dicomize(images_dir: str | Path, out_dir: str | Path, labels_table: str | Path, *,
             modality: str = "DX", names: Iterable[str] | None = None,
             progress: Callable[[int, int], None] | None = None) -> DicomizeReport:
    """Dicomize the PNGs of `images_dir` (or only `names` in it) into `out_dir`.

    Files that cannot be converted are reported in `DicomizeReport.skipped`, never raised;
    a missing folder or labels table raises `MissingFile` / `BadLabels`.
    `progress(done, total)` is called in the calling thread after each file, in input order.
    See `_executor` for how the work is spread over the CPUs.
    """
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, not {modality!r}")
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise MissingFile(images_dir, "the images folder does not exist")
    table = read_labels_table(labels_table)
    pngs = _inputs(images_dir, names)
    n = len(pngs)
    report = DicomizeReport()
    with _executor(n) as pool:
        results = pool.map(_convert, pngs, [table.get(p.name) for p in pngs], [out_dir] * n, [modality] * n,
                           chunksize=8)
        for done, (png, result) in enumerate(zip(pngs, results), start=1):
            if isinstance(result, Path):
                report.written.append(result)
            else:
                report.skipped.append((png, result))
            if progress is not None:
                progress(done, n)
    return report
