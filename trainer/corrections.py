"""`--corrections store:DB`: clinician-corrected boxes and labels as weak supervision.

The store's validated boxes (accepted, corrected, added, imported) and annotator labels are matched
to the training source's records by image key (SOPInstanceUID for DICOM, else the file name) — the
record's `image_id` or its file's name; failing those, by the file's stem when it is unique on both
sides (a DICOM made from a training PNG by `cxrviewer dicomize`, like the bundled samples, keeps the
PNG's stem: `00000001_000.dcm` for `00000001_000.png`). For a matched record in the training or
validation split:

- its boxes become the store's boxes (the image's ground-truth boxes, if any, are replaced: a
  clinician's correction wins), scaled from the store image's size to the record's file when the two
  differ (an annotator may have worked on the 1024-pixel original of a 512-pixel training copy);
- a finding with a validated box is labelled present; annotator labels set the others they name.

Records of the evaluation split (`test`) never take their corrections, so a corrected box can never
leak into a score. Methods with a box path in their paper (CIA-Net, BYOL-CAM, KACL) use the boxes
as their paper does; the others add a CAM loss on them (`Method.correction_term`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrviewer.errors import CxrError, MissingFile
from cxrviewer.trainer.data.sources import DataSource, Record


@dataclass
class CorrectionStats:
    store: str
    images_in_store: int = 0
    matched: int = 0
    applied: int = 0  # matched records in train/val that took their corrections
    held_out: int = 0  # matched records of the test split, left untouched
    boxes: int = 0
    labels: int = 0


def _file_size(record: Record) -> tuple[int, int] | None:
    """(rows, cols) of the record's file from its header, or None when it cannot be told cheaply."""
    if record.path is None or not Path(record.path).is_file():
        return None
    from cxrviewer.io.codestream import png_size

    with open(record.path, "rb") as f:
        head = f.read(24)
    size = png_size(head)
    if size is not None:
        return size[1], size[0]
    try:
        import pydicom

        ds = pydicom.dcmread(record.path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001 - not a DICOM header either: leave the boxes unscaled
        return None


def _unique_stems(pairs) -> dict:
    """{stem: value} for the stems that occur once (an ambiguous stem matches nothing)."""
    out: dict = {}
    seen: set[str] = set()
    for stem, value in pairs:
        if stem in seen:
            out.pop(stem, None)
        else:
            seen.add(stem)
            out[stem] = value
    return out


def apply_corrections(source: DataSource, spec: str) -> CorrectionStats:
    """Overwrite boxes and labels of the source's train/val records from the store `store:DB`."""
    from cxrviewer.annotations import AnnotationStore
    from cxrviewer.trainer.data.sources import parse_source

    kind, path = parse_source(spec)
    if kind != "store":
        raise CxrError(None, f"--corrections takes an annotation store as store:DB, not '{spec}'")
    if not path.is_file():
        raise MissingFile(path, "the annotation store given to --corrections does not exist")
    stats = CorrectionStats(str(path))
    with AnnotationStore.open(path) as store:
        corrections = store.corrections()
        images = {im.image_key: im for im in store.images()}
    stats.images_in_store = len(images)
    by_key: dict[str, Record] = {}
    for record in source.records:
        by_key.setdefault(record.image_id, record)
        if record.path is not None:
            by_key.setdefault(Path(record.path).name, record)
    by_stem = _unique_stems((Path(r.path).stem, r) for r in source.records if r.path is not None)
    store_stems = _unique_stems((Path(im.path).stem, k) for k, im in images.items() if im.path is not None)
    index = {n: k for k, n in enumerate(source.label_names)}
    for key, found in corrections.items():
        record = by_key.get(key)
        if record is None and images.get(key) is not None and images[key].path is not None:
            stem = Path(images[key].path).stem
            record = by_stem.get(stem) if store_stems.get(stem) == key else None
        if record is None:
            continue
        stats.matched += 1
        if record.split == "test":
            stats.held_out += 1
            continue
        stats.applied += 1
        image = images.get(key)
        sx = sy = 1.0
        size = _file_size(record) if image is not None and image.rows and image.cols else None
        if size is not None:
            sy, sx = size[0] / image.rows, size[1] / image.cols
        if found.boxes:
            record.boxes = [(name, x0 * sx, y0 * sy, x1 * sx, y1 * sy) for name, x0, y0, x1, y1 in found.boxes]
            stats.boxes += len(found.boxes)
        labels = record.labels.copy()
        for name, value in found.labels.items():
            if name in index:
                labels[index[name]] = value
                stats.labels += 1
        for name, *_ in found.boxes:
            if name in index:
                labels[index[name]] = 1.0
        record.labels = labels
    source.notes.append(f"corrections from {path}: {stats.applied} images applied, {stats.held_out} test images "
                        f"held out, {stats.boxes} boxes")
    return stats
