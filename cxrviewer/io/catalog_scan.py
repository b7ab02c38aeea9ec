"""Finding catalog candidates in a folder and reading one file's record (headers only).

Detection is by content, not by name: the first 132 bytes tell a Part 10 DICOM file (``DICM`` at
128), a PNG or JPEG signature, or a raw DICOM data set without preamble. Names only serve to skip
obvious non-candidates cheaply (hidden files, text and table files, the catalog's own index).
Pixel data is never read: DICOM headers stop before it, PNG/JPEG sizes come from IHDR / SOF.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import pydicom

from cxrviewer.errors import CorruptImage, CxrError, MissingFile, NotAnImage, UnsupportedFormat, first_line
from cxrviewer.io.codestream import jpeg_frame_header, png_size
from cxrviewer.io.dicom_meta import (
    NON_IMAGE_SOP_CLASSES, describe_sop_class, header_summary, meta_from_dataset, transfer_syntax_of,
)
from cxrviewer.io.labels import LabelRow

SKIP_SUFFIXES = frozenset({
    ".txt", ".csv", ".tsv", ".json", ".md", ".rst", ".xml", ".html", ".htm", ".pdf", ".yaml",
    ".yml", ".ini", ".log", ".py", ".gz", ".zip", ".tar", ".7z", ".sqlite", ".sqlite-wal",
    ".sqlite-shm", ".sqlite-journal", ".db", ".db-wal", ".db-shm", ".pt", ".pth", ".npy", ".npz",
})
SKIP_NAMES = frozenset({"DICOMDIR", "Thumbs.db", "desktop.ini"})
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_EXPLICIT_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
_EOF_WARNING = re.compile(r"end of file|unexpected end|bytes of \d+ expected", re.IGNORECASE)


@dataclass
class FileRecord:
    """One scanned file as the index stores it. `error` is "" for a catalogued image.

    Identifiers stay as the file states them ("" when absent); the tree adds the synthetic keys.
    """

    rel: str  # POSIX path relative to the catalogued folder
    size: int
    mtime_ns: int
    fmt: str = ""  # "dicom" | "png" | "jpeg" | "" (error)
    error: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    patient_birth_date: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    accession: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    modality: str = ""
    sop_instance_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    view_position: str = ""
    laterality: str = ""
    instance_number: int | None = None
    labels: str = ""  # "|"-joined finding labels (NIH tables)
    photometric: str = ""
    transfer_syntax: str = ""
    follow_up: int | None = None


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FileRecord))


def walk(folder: Path, exclude: set[Path] = frozenset()) -> dict[str, tuple[int, int]]:
    """Candidate files under `folder` (recursive): {relative POSIX path: (size, mtime_ns)}.

    Hidden entries, obvious non-image suffixes, the names in `exclude` and directory symlinks
    (loops) are skipped. Only `stat` is called; no file is opened.
    """
    found: dict[str, tuple[int, int]] = {}
    excluded = {str(p) for p in exclude}
    stack = [(str(folder), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in SKIP_NAMES:
                continue
            rel = f"{rel_dir}{name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + "/"))
                    continue
                if not entry.is_file() or os.path.splitext(name)[1].lower() in SKIP_SUFFIXES:
                    continue
                if entry.path in excluded:
                    continue
                st = entry.stat()
            except OSError:
                continue
            found[rel] = (st.st_size, st.st_mtime_ns)
    return found


def read_record(folder: Path, rel: str, size: int, mtime_ns: int,
                labels: dict[str, LabelRow] | None = None) -> FileRecord:
    """The record of one file; a bad file gives a record whose `error` is the one-sentence reason."""
    rec = FileRecord(rel=rel, size=size, mtime_ns=mtime_ns)
    path = folder / rel
    try:
        with open(path, "rb") as f:
            head = f.read(132)
            if head[128:132] == b"DICM" or _looks_like_raw_dicom(head):
                _read_dicom(f, path, size, head[128:132] == b"DICM", rec)
            elif head[:8] == b"\x89PNG\r\n\x1a\n":
                _read_png(head, path, rec, labels)
            elif head[:3] == b"\xff\xd8\xff":
                _read_jpeg(f, path, rec, labels)
            else:
                raise UnsupportedFormat(path, "this is not a DICOM file or an image format cxrviewer reads")
    except CxrError as exc:
        return FileRecord(rel=rel, size=size, mtime_ns=mtime_ns, error=str(exc))
    except FileNotFoundError:
        return FileRecord(rel=rel, size=size, mtime_ns=mtime_ns, error=str(MissingFile(path, "the file disappeared during the scan")))
    except OSError as exc:
        return FileRecord(rel=rel, size=size, mtime_ns=mtime_ns,
                          error=str(MissingFile(path, f"the file cannot be read ({exc.strerror or exc})")))
    return rec


def read_records(folder: Path, items: list[tuple[str, int, int]],
                 labels: dict[str, LabelRow] | None = None) -> list[FileRecord]:
    """`read_record` over a batch (a process pool's unit of work)."""
    return [read_record(folder, rel, size, mtime, labels) for rel, size, mtime in items]


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A data set without the Part 10 header starts with a group 0x0008 (or 0002) element."""
    if len(head) < 8:
        return False
    return int.from_bytes(head[0:2], "little") in (2, 8) or int.from_bytes(head[0:2], "big") in (2, 8)



def _is_non_image_class(uid: str) -> bool:
    return any(uid == p or uid.startswith(p + ".") for p in NON_IMAGE_SOP_CLASSES)


def _read_dicom(f: BinaryIO, path: Path, size: int, part10: bool, rec: FileRecord) -> None:
    f.seek(0)
    with warnings.catch_warnings(record=True) as caught:  # pydicom's warnings would flood a scan
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=not part10)
            pos = f.tell()
            header_end = _header_end(ds)  # before any value is converted
            meta = meta_from_dataset(ds)
            head = header_summary(ds)
            ts_uid, _ = transfer_syntax_of(ds)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
            raise CorruptImage(path, f"the DICOM header is malformed ({first_line(exc)})") from exc
    sop = meta.sop_class_uid
    if sop and _is_non_image_class(sop):
        raise NotAnImage(path, f"this is {describe_sop_class(sop)}, not an image")
    deflated = ts_uid == pydicom.uid.DeflatedExplicitVRLittleEndian  # positions are in the inflated stream
    f.seek(pos)
    has_pixels = deflated or _check_pixel_element(f.read(12), pos, size, path)
    if not has_pixels and header_end is not None and header_end != size:
        raise CorruptImage(path, "the file is truncated (the header ends early)")
    if any(_EOF_WARNING.search(str(w.message)) for w in caught):
        raise CorruptImage(path, "the file is truncated (the header ends early)")
    if not (head["rows"] and head["columns"]):
        if has_pixels and not deflated:
            raise CorruptImage(path, "the header has pixel data but no Rows/Columns")
        raise NotAnImage(path, f"this is {describe_sop_class(sop)} without pixel data, not an image")
    if not has_pixels:
        raise CorruptImage(path, "the file is truncated (it ends before the pixel data)")
    rec.fmt = "dicom"
    rec.patient_id, rec.patient_name = meta.patient_id, meta.patient_name
    rec.patient_sex, rec.patient_age = meta.patient_sex, meta.patient_age
    rec.patient_birth_date = meta.patient_birth_date
    rec.study_uid, rec.study_date = meta.study_uid, meta.study_date
    rec.study_description, rec.accession = meta.study_description, meta.accession_number
    rec.series_uid, rec.series_number = meta.series_uid, meta.series_number
    rec.series_description, rec.modality = meta.series_description, meta.modality
    rec.sop_instance_uid, rec.instance_number = meta.sop_instance_uid, meta.instance_number
    rec.view_position, rec.laterality = meta.view_position, meta.laterality
    rec.rows, rec.columns = head["rows"], head["columns"]
    rec.photometric, rec.transfer_syntax = head["photometric"], ts_uid


def _header_end(ds: pydicom.Dataset) -> int | None:
    """Where the last top-level element's value ends, as its header states; None when unknown.

    pydicom reads a value cut short by the end of the file without complaint; comparing this with
    the file size is how a truncated header is told from a complete non-image object.
    """
    tags = list(ds.keys())
    if not tags:
        return -1  # a file meta group and nothing after it: cut short
    elem = ds.get_item(max(tags))
    tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return None
    return int(tell) + int(length)


def _check_pixel_element(elem: bytes, pos: int, size: int, path: Path) -> bool:
    """True when a pixel data element starts at `pos`; raise when its stated length overruns the file."""
    if len(elem) < 8:
        return False
    le = struct.unpack("<HH", elem[:4])
    be = struct.unpack(">HH", elem[:4])
    if le in _PIXEL_TAGS:
        endian = "<"
    elif be in _PIXEL_TAGS:
        endian = ">"
    else:
        return False
    if elem[4:6] in _EXPLICIT_LONG_VRS and len(elem) == 12:
        header, length = 12, struct.unpack(endian + "I", elem[8:12])[0]
    else:
        header, length = 8, struct.unpack(endian + "I", elem[4:8])[0]
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames: not checked without reading them
        return True
    if pos + header + length > size:
        raise CorruptImage(path, "the file is truncated (pixel data ends early)")
    return True


def _apply_labels(rec: FileRecord, labels: dict[str, LabelRow] | None) -> None:
    row = labels.get(Path(rec.rel).name) if labels else None
    if row is None:
        return
    rec.patient_id, rec.patient_sex = row.patient_id, row.sex
    rec.patient_age = f"{row.age:03d}Y" if row.age is not None else ""
    rec.view_position, rec.follow_up = row.view_position, row.follow_up
    rec.labels = "|".join(row.labels)
    rec.study_description = f"Follow-up #{row.follow_up}"


_PNG_PHOTOMETRIC = {0: "MONOCHROME2", 2: "RGB", 3: "PALETTE COLOR", 4: "MONOCHROME2", 6: "RGB"}


def _read_png(head: bytes, path: Path, rec: FileRecord, labels: dict[str, LabelRow] | None) -> None:
    size = png_size(head) if len(head) >= 26 else None
    if size is None:
        raise CorruptImage(path, "the PNG header is malformed (no IHDR chunk)")
    width, height = size
    if not width or not height:
        raise CorruptImage(path, "the PNG header states a zero size")
    rec.fmt, rec.rows, rec.columns = "png", height, width
    rec.photometric = _PNG_PHOTOMETRIC.get(head[25], "")
    _apply_labels(rec, labels)


def _read_jpeg(f: BinaryIO, path: Path, rec: FileRecord, labels: dict[str, LabelRow] | None) -> None:
    """The frame header, found by walking the JPEG markers without decoding anything."""
    f.seek(2)
    try:
        width, height, components = jpeg_frame_header(f)
    except ValueError as exc:
        raise CorruptImage(path, str(exc)) from exc
    rec.fmt, rec.rows, rec.columns = "jpeg", height, width
    rec.photometric = "MONOCHROME2" if components == 1 else "RGB"
    _apply_labels(rec, labels)
