"""Import and export of boxes: the NIH `BBox_List_2017.csv` table and a JSON file with provenance.

NIH table: header `Image Index,Finding Label,Bbox [x,y,w,h],,,`, one box per row as x, y, w, h in
the 1024x1024 PNG space, findings named as NIH's box table names them (`Infiltrate` for the labels'
`Infiltration`). On import each box is scaled to its image's own size where the store knows it
(or `image_dir` holds the file, e.g. the 512-px copies), else kept in the 1024 space (the image is
taken to be NIH's 1024-px PNG), and stored as `imported` under the given annotator; a box the
image already holds is not added twice. Export writes the current validated boxes back in the
1024 space. JSON: every current box with its provenance plus the labels; importing it restores
them (idempotent: a box already in that state gets no new version).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cxrviewer.annotations.records import FINDING_ALIASES, BoxRecord, LabelRecord, utc_now
from cxrviewer.annotations.store import AnnotationStore
from cxrviewer.errors import BadLabels, CxrError, MissingFile, reading
from cxrviewer.io.labels import read_csv_rows

NIH_BOX_SIZE = 1024.0
BBOX_HEADER = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
JSON_FORMAT = "cxrviewer-annotations"
JSON_VERSION = 1
_NIH_NAMES = {v: k for k, v in FINDING_ALIASES.items()}  # Infiltration -> Infiltrate on export


@dataclass
class ImportReport:
    """What one import did."""

    images_added: int = 0
    boxes_added: int = 0
    boxes_skipped: int = 0  # already present in that state
    labels_set: int = 0


def _image_size(path: Path) -> tuple[int, int]:
    """(rows, cols) of an image file: from the PNG header bytes, else by decoding."""
    from cxrviewer.io.codestream import png_size

    with reading(path), open(path, "rb") as f:
        size = png_size(f.read(24))
    if size is not None:
        return size[1], size[0]
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise MissingFile(path, "the image cannot be read to size its boxes")
    return int(arr.shape[0]), int(arr.shape[1])


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MissingFile(path, f"the file cannot be written ({exc.strerror or exc})") from exc


def read_bbox_csv(path: str | Path) -> list[tuple[str, str, float, float, float, float]]:
    """Rows of an NIH box table (plain or .gz) as (image, finding, x, y, w, h); names as written."""
    path = Path(path)
    rows = read_csv_rows(path, "box table")
    if not rows or [h.strip() for h in rows[0][:2]] != BBOX_HEADER[:2]:
        raise BadLabels(path, "the box table lacks the header 'Image Index,Finding Label,Bbox [x,y,w,h]'")
    out = []
    for line_no, rec in enumerate(rows[1:], start=2):
        if not rec or not rec[0].strip():
            continue
        try:
            x, y, w, h = (float(v) for v in rec[2:6])
        except ValueError as exc:
            raise BadLabels(path, f"row {line_no} of the box table does not hold four numbers x, y, w, h") from exc
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise BadLabels(path, f"row {line_no} of the box table has an empty or non-finite box")
        out.append((rec[0].strip(), rec[1].strip(), x, y, w, h))
    return out


def _ensure_image(store: AnnotationStore, key: str, files: dict[str, Path],
                  report: ImportReport) -> tuple[float, float]:
    """Add the image if new (sized from `files` when there); return its (sx, sy) from the 1024 space."""
    image = store.image(key)
    if image is None or (image.rows is None and key in files):
        path = files.get(key)
        rows, cols = _image_size(path) if path is not None else (None, None)
        report.images_added += image is None
        image = store.add_image(key, path=path, rows=rows, cols=cols)
    if image.rows is None:
        return 1.0, 1.0
    return image.cols / NIH_BOX_SIZE, image.rows / NIH_BOX_SIZE


def import_bbox_csv(store: AnnotationStore, path: str | Path, annotator: str,
                    image_dir: str | Path | None = None) -> ImportReport:
    """Import an NIH box table into `store` as `imported` boxes by `annotator` (see the module docstring)."""
    path = Path(path)
    rows = read_bbox_csv(path)
    files: dict[str, Path] = {}
    if image_dir is not None:
        folder = Path(image_dir)
        if not folder.is_dir():
            raise MissingFile(folder, "the image folder for the box table does not exist")
        files = {p.name: p for p in folder.iterdir() if p.is_file()}
    report = ImportReport()
    scales: dict[str, tuple[float, float]] = {}
    for key, finding, x, y, w, h in rows:
        if key not in scales:
            scales[key] = _ensure_image(store, key, files, report)
        sx, sy = scales[key]
        box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        name = FINDING_ALIASES.get(finding, finding)
        if any(b.finding == name and all(math.isclose(a, c, abs_tol=1e-6) for a, c in zip(b.box, box))
               for b in store.current_boxes(key)):
            report.boxes_skipped += 1
            continue
        try:
            store.import_box(key, name, box, annotator, note=f"from {path.name}")
        except CxrError as exc:
            raise BadLabels(path, f"a box of {key} cannot be imported ({exc.problem})") from exc
        report.boxes_added += 1
    return report


def export_bbox_csv(store: AnnotationStore, path: str | Path) -> int:
    """Write the current validated boxes as an NIH box table in the 1024 space; returns the box count."""
    sizes = {im.image_key: (im.rows, im.cols) for im in store.images()}
    lines: list[list[str]] = []
    for rec in store.current_boxes():
        if not rec.validated:
            continue
        rows, cols = sizes.get(rec.image_key, (None, None))
        sx, sy = (1.0, 1.0) if rows is None else (NIH_BOX_SIZE / cols, NIH_BOX_SIZE / rows)
        x0, y0, x1, y1 = rec.box
        values = (x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)
        lines.append([rec.image_key, _NIH_NAMES.get(rec.finding, rec.finding), *(repr(v) for v in values)])
    buf = io.StringIO()
    buf.write(",".join(BBOX_HEADER[:2]) + ",Bbox [x,y,w,h],,,\n")  # NIH's header, trailing commas and all
    csv.writer(buf, lineterminator="\n").writerows(lines)
    _write_text(Path(path), buf.getvalue())
    return len(lines)


def export_json(store: AnnotationStore, path: str | Path, include_deleted: bool = False) -> int:
    """Write every image with its current boxes (provenance included) and labels; returns the box count."""
    boxes: dict[str, list[dict]] = {}
    for rec in store.current_boxes(include_deleted=include_deleted):
        boxes.setdefault(rec.image_key, []).append({
            "box_id": rec.box_id, "version": rec.version, "finding": rec.finding, "box": list(rec.box),
            "orig": None if rec.orig is None else list(rec.orig), "status": rec.status,
            "annotator": rec.annotator, "created_at": rec.created_at, "model_name": rec.model_name,
            "model_sha256": rec.model_sha256, "note": rec.note})
    labels: dict[str, list[dict]] = {}
    for lab in store.current_labels():
        labels.setdefault(lab.image_key, []).append({
            "finding": lab.finding, "value": lab.value, "annotator": lab.annotator,
            "created_at": lab.created_at, "note": lab.note})
    images = [{"image_key": im.image_key, "path": None if im.path is None else str(im.path),
               "patient_id": im.patient_id, "study_uid": im.study_uid, "rows": im.rows, "cols": im.cols,
               "boxes": boxes.get(im.image_key, []), "labels": labels.get(im.image_key, [])}
              for im in store.images()]
    doc = {"format": JSON_FORMAT, "format_version": JSON_VERSION, "exported_at": utc_now(), "images": images}
    _write_text(Path(path), json.dumps(doc, indent=1))
    return sum(len(v) for v in boxes.values())


def import_json(store: AnnotationStore, path: str | Path) -> ImportReport:
    """Restore an `export_json` file into `store` (see the module docstring)."""
    path = Path(path)
    with reading(path):
        text = path.read_bytes()
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadLabels(path, "the annotation file is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT or not isinstance(doc.get("images"), list):
        raise BadLabels(path, f"this JSON file is not a {JSON_FORMAT} export")
    if not isinstance(doc.get("format_version"), int) or doc["format_version"] > JSON_VERSION:
        raise BadLabels(path, f"the annotation file has format version {doc.get('format_version')!r}, "
                              f"newer than the {JSON_VERSION} this cxrviewer reads")
    report = ImportReport()
    try:
        for im in doc["images"]:
            key = im["image_key"]
            report.images_added += store.image(key) is None
            store.add_image(key, im.get("path"), im.get("patient_id", ""), im.get("study_uid", ""),
                            im.get("rows"), im.get("cols"))
            for b in im.get("boxes", []):
                rec = BoxRecord(b["box_id"], 0, key, b["finding"], tuple(b["box"]), b["status"],
                                None if b.get("orig") is None else tuple(b["orig"]), b.get("annotator", ""),
                                b.get("created_at", ""), b.get("model_name", ""), b.get("model_sha256", ""),
                                b.get("note", ""))
                added = store.restore_box(rec)
                report.boxes_added += added
                report.boxes_skipped += not added
            for lab in im.get("labels", []):
                report.labels_set += store.restore_label(LabelRecord(
                    key, lab["finding"], lab.get("value"), 0, lab.get("annotator", ""), lab.get("created_at", ""),
                    lab.get("note", "")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CxrError):
            raise BadLabels(path, f"an entry cannot be restored ({exc.problem})") from exc
        raise BadLabels(path, f"an entry of the annotation file is malformed ({type(exc).__name__}: {exc})") from exc
    return report
