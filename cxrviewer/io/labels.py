"""NIH ChestX-ray14 labels tables (`Data_Entry_2017*.csv`, plain or gzipped).

The header of the NIH file contains commas inside brackets (`OriginalImage[Width,Height]`), so a
plain CSV reader sees 11 fields under 9 names; the columns are therefore taken by position after
the seven named ones. `Finding Labels` is `|`-separated; "No Finding" means none of the fourteen.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from cxrviewer.errors import BadLabels, MissingFile

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
_REQUIRED = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID")


@dataclass(frozen=True)
class LabelRow:
    """One row of the NIH table."""

    image_index: str
    labels: tuple[str, ...]  # empty for "No Finding"
    follow_up: int
    patient_id: str
    age: int | None = None
    sex: str = ""
    view_position: str = ""
    original_size: tuple[int, int] | None = None  # scanner's (width, height), not the PNG's
    original_spacing: tuple[float, float] | None = None  # (x, y) mm in the scanner image


def parse_finding_labels(text: str) -> tuple[str, ...]:
    """`"Cardiomegaly|Effusion"` -> ("Cardiomegaly", "Effusion"); "No Finding" -> ()."""
    names = tuple(t.strip() for t in text.split("|") if t.strip())
    return tuple(n for n in names if n != NO_FINDING)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_labels_table(path: str | Path) -> dict[str, LabelRow]:
    """Rows keyed by `Image Index` (the PNG file name)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(path, "the labels table does not exist")
    rows: dict[str, LabelRow] = {}
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise BadLabels(path, "the labels table is empty")
        header = [h.strip() for h in header]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise BadLabels(path, f"the labels table lacks the column(s) {', '.join(missing)}")
        col = {name: header.index(name) for name in header}
        i_img, i_lab, i_fu, i_pid = (col[c] for c in _REQUIRED)
        i_age, i_sex, i_view = col.get("Patient Age"), col.get("Patient Gender"), col.get("View Position")
        # Positional extras after the bracketed header names: width, height, spacing x, spacing y.
        i_extra = col.get("OriginalImage[Width")
        for line_no, rec in enumerate(reader, start=2):
            if not rec or not rec[0].strip():
                continue
            try:
                age_text = rec[i_age].strip() if i_age is not None else ""
                age = int(age_text.rstrip("Yy")) if age_text else None
                size = spacing = None
                if i_extra is not None and len(rec) >= i_extra + 4:
                    w, h, sx, sy = (_float(v) for v in rec[i_extra:i_extra + 4])
                    size = (int(w), int(h)) if w and h else None
                    spacing = (sx, sy) if sx and sy else None
                row = LabelRow(
                    image_index=rec[i_img].strip(),
                    labels=parse_finding_labels(rec[i_lab]),
                    follow_up=int(rec[i_fu]),
                    patient_id=rec[i_pid].strip(),
                    age=age,
                    sex=rec[i_sex].strip() if i_sex is not None else "",
                    view_position=rec[i_view].strip() if i_view is not None else "",
                    original_size=size,
                    original_spacing=spacing,
                )
            except (IndexError, ValueError) as exc:
                raise BadLabels(path, f"row {line_no} of the labels table is malformed ({exc})") from exc
            rows[row.image_index] = row
    return rows


def find_labels_table(folder: str | Path, levels_up: int = 2) -> Path | None:
    """The `Data_Entry_2017*.csv[.gz]` in `folder` or up to `levels_up` parents, if any."""
    folder = Path(folder).resolve()
    for candidate_dir in [folder, *list(folder.parents)[:levels_up]]:
        found = sorted(candidate_dir.glob("Data_Entry_2017*.csv")) + sorted(candidate_dir.glob("Data_Entry_2017*.csv.gz"))
        if found:
            return found[0]
    return None
