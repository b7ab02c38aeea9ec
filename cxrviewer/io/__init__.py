"""Image input/output: `load_image` for DICOM and PNG/JPEG, the catalog, dicomize."""

from __future__ import annotations

from pathlib import Path

from cxrviewer.errors import reading
from cxrviewer.io.image import ImageData, ImageMeta, VoiLut, VoiWindow
from cxrviewer.io.labels import LabelRow, find_labels_table, read_labels_table

__all__ = ["ImageData", "ImageMeta", "VoiLut", "VoiWindow", "load_image", "LabelRow", "read_labels_table",
           "find_labels_table"]

_TABLE_CACHE: dict[Path, tuple[float, dict[str, LabelRow]]] = {}


def load_image(path: str | Path, labels: str | Path | dict[str, LabelRow] | None = None) -> ImageData:
    """Decode a radiograph (DICOM, PNG or JPEG) into modality units with what display needs.

    `labels`: for NIH-style PNGs, a `Data_Entry_2017*.csv` path or an already-read table; when
    omitted, a table beside the image (or one or two folders up) is used if there is one.
    Raises a `cxrviewer.errors.CxrError` subclass with a one-sentence message on bad input.
    """
    from cxrviewer.io.dicom import load_dicom
    from cxrviewer.io.raster import load_raster, sniff_raster

    path = Path(path)
    with reading(path), open(path, "rb") as f:
        head = f.read(16)
    kind = sniff_raster(head)
    if kind is None:
        return load_dicom(path)
    table = _labels_for(path, labels)
    return load_raster(path, kind, table.get(path.name) if table else None)


def _labels_for(path: Path, labels: str | Path | dict[str, LabelRow] | None) -> dict[str, LabelRow] | None:
    if isinstance(labels, dict):
        return labels
    table_path = Path(labels) if labels is not None else find_labels_table(path.parent)
    if table_path is None:
        return None
    table_path = table_path.resolve()
    mtime = table_path.stat().st_mtime if table_path.exists() else -1.0
    cached = _TABLE_CACHE.get(table_path)
    if cached is None or cached[0] != mtime:
        cached = (mtime, read_labels_table(table_path))
        _TABLE_CACHE[table_path] = cached
    return cached[1]
