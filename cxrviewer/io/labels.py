"""NIH ChestX-ray14 labels tables (`Data_Entry_2017*.csv`, plain or gzipped): the one reader.

The header of the NIH file contains commas inside brackets (`OriginalImage[Width,Height]`), so a
plain CSV reader sees 11 fields under 9 names; the columns are therefore taken by position after
the seven named ones. `Finding Labels` is `|`-separated; "No Finding" means none of the fourteen.

Two views of one parse:
- `read_label_columns(path)` -> `LabelColumns`: the table column-wise (stripped strings, one entry
  per non-blank row, in file order). The trainer's `nih:` source builds its records from it.
- `read_labels_table(path)` -> {image: `LabelRow`}: typed rows keyed by `Image Index`, for
  `load_image` and the catalog.

Speed: the file is read and decoded in one go, split into records (by `str.split` when it holds no
quote, CR or NUL, which is then exactly what `csv.reader` returns; else by `csv.reader`), transposed
with `zip`, and every value that repeats (finding strings, ages, sizes, spacings) is parsed once per
distinct text. The cyclic garbage collector is paused while the objects are made (they form no
cycles; otherwise it rescans them over and over). On the full 112,120-row gzipped table the columns
take about 0.4 s of CPU, the typed rows about 1.3 s (mostly making 112,120 frozen `LabelRow`s).
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from cxrviewer.errors import BadLabels, MissingFile, reading

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
_REQUIRED = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID")
_OPTIONAL = ("Patient Age", "Patient Gender", "View Position")
_EXTRA = "OriginalImage[Width"  # then Height], OriginalImagePixelSpacing[x, y] by position
T = TypeVar("T")


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


@dataclass(frozen=True)
class LabelColumns:
    """The NIH table column-wise: stripped strings, one per non-blank row, in file order.

    Absent optional columns are all "". `width`..`spacing_y` (the scanner's size and pixel spacing,
    by position after `OriginalImage[Width`) are "" on rows that do not carry all four."""

    path: Path
    image: Sequence[str]
    findings: Sequence[str]
    follow_up: Sequence[str]
    patient: Sequence[str]
    age: Sequence[str]
    sex: Sequence[str]
    view: Sequence[str]
    width: Sequence[str]
    height: Sequence[str]
    spacing_x: Sequence[str]
    spacing_y: Sequence[str]
    row_numbers: Sequence[int]  # each row's CSV record number (header = 1), for messages

    def __len__(self) -> int:
        return len(self.image)

    def take(self, indices: Sequence[int]) -> "LabelColumns":
        """The rows at `indices`, in that order."""
        picked = {f.name: [getattr(self, f.name)[i] for i in indices] for f in fields(self) if f.name != "path"}
        return LabelColumns(self.path, **picked)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_csv_rows(path: str | Path, what: str = "labels table") -> list[list[str]]:
    """All records of a CSV file (plain or `.gz`, UTF-8 with or without BOM) as lists of strings."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(path, f"the {what} does not exist")
    with reading(path):
        data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise BadLabels(path, f"the {what} is not a readable gzip file ({exc})") from exc
    try:
        text = data.decode("utf-8-sig")
        with paused_gc():
            if '"' in text or "\r" in text or "\x00" in text:
                return list(csv.reader(io.StringIO(text, newline="")))
            # No quoting, CR or NUL: what csv.reader returns is a split on newlines and commas.
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()
            return [line.split(",") if line else [] for line in lines]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadLabels(path, f"the {what} is not a readable UTF-8 CSV file ({exc})") from exc


def read_label_columns(path: str | Path) -> LabelColumns:
    """Parse a `Data_Entry_2017*.csv[.gz]` column-wise; `BadLabels` when columns or fields are missing."""
    path = Path(path)
    with paused_gc():
        return _columns(path, read_csv_rows(path))


def _columns(path: Path, rows: list[list[str]]) -> LabelColumns:
    if not rows:
        raise BadLabels(path, "the labels table is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise BadLabels(path, f"the labels table lacks the column(s) {', '.join(missing)}")
    col = {name: header.index(name) for name in header}
    need = max(col[c] for c in (*_REQUIRED, *_OPTIONAL) if c in col) + 1
    i_extra = col.get(_EXTRA)
    body, numbers = rows[1:], range(2, len(rows) + 1)
    if [] in body or any(not r[0].strip() for r in body):  # rows with a blank first field: skipped
        numbers = [n for n, r in zip(numbers, body) if r and r[0].strip()]
        body = [rows[n - 1] for n in numbers]
    lengths = list(map(len, body))
    shortest = min(lengths, default=0)
    if shortest < need:
        short = next(k for k, length in enumerate(lengths) if length < need)
        raise BadLabels(path, f"row {numbers[short]} of the labels table has too few fields")
    transposed = list(zip(*body))  # as many columns as the shortest row has fields (>= need)

    def get(name: str) -> list[str]:
        return list(map(str.strip, transposed[col[name]])) if name in col else [""] * len(body)

    def extra(k: int) -> list[str]:  # a row that lacks any of the four positional extras has none
        if i_extra is None:
            return [""] * len(body)
        if shortest >= i_extra + 4:
            return list(map(str.strip, transposed[i_extra + k]))
        return [r[i_extra + k].strip() if len(r) >= i_extra + 4 else "" for r in body]

    return LabelColumns(path, get("Image Index"), get("Finding Labels"), get("Follow-up #"), get("Patient ID"),
                        get("Patient Age"), get("Patient Gender"), get("View Position"), extra(0), extra(1),
                        extra(2), extra(3), numbers)


def parse_finding_labels(text: str) -> tuple[str, ...]:
    """`"Cardiomegaly|Effusion"` -> ("Cardiomegaly", "Effusion"); "No Finding" -> ()."""
    names = tuple(t.strip() for t in text.split("|") if t.strip())
    return tuple(n for n in names if n != NO_FINDING)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _age(text: str) -> int | None:
    return int(text.rstrip("Yy")) if text else None


def _size(pair: tuple[str, str]) -> tuple[int, int] | None:
    w, h = _float(pair[0]), _float(pair[1])
    return (int(w), int(h)) if w and h else None


def _spacing(pair: tuple[str, str]) -> tuple[float, float] | None:
    sx, sy = _float(pair[0]), _float(pair[1])
    return (sx, sy) if sx and sy else None


def _parse_each(values: Sequence[T], parse: Callable[[T], object], cols: LabelColumns) -> list:
    """`parse` of every value, computed once per distinct value; a ValueError names the first bad row."""
    parsed = {}
    for value in set(values):
        try:
            parsed[value] = parse(value)
        except (ValueError, OverflowError) as exc:
            row = cols.row_numbers[values.index(value)]
            raise BadLabels(cols.path, f"row {row} of the labels table is malformed ({exc})") from exc
    return [parsed[v] for v in values]


def read_labels_table(path: str | Path) -> dict[str, LabelRow]:
    """Rows keyed by `Image Index` (the PNG file name); a later duplicate replaces an earlier row."""
    with paused_gc():
        cols = read_label_columns(path)
        labels = _parse_each(cols.findings, parse_finding_labels, cols)
        follow_up = _parse_each(cols.follow_up, int, cols)
        ages = _parse_each(cols.age, _age, cols)
        sizes = _parse_each(list(zip(cols.width, cols.height)), _size, cols)
        spacings = _parse_each(list(zip(cols.spacing_x, cols.spacing_y)), _spacing, cols)
        rows = map(LabelRow, cols.image, labels, follow_up, cols.patient, ages, cols.sex, cols.view, sizes,
                   spacings)
        return dict(zip(cols.image, rows))


def find_labels_table(folder: str | Path, levels_up: int = 2) -> Path | None:
    """The `Data_Entry_2017*.csv[.gz]` in `folder` or up to `levels_up` parents, if any."""
    folder = Path(folder).resolve()
    for candidate_dir in [folder, *list(folder.parents)[:levels_up]]:
        found = sorted(candidate_dir.glob("Data_Entry_2017*.csv")) + sorted(candidate_dir.glob("Data_Entry_2017*.csv.gz"))
        if found:
            return found[0]
    return None
