"""`dicom:FOLDER` — a folder of DICOM files (as the catalog sees it) plus a labels table.

The table (option `table=`, default `FOLDER/labels.csv`; a relative path is looked up in FOLDER
too) has one row per image, keyed by a `SOPInstanceUID` column or a `path` column (POSIX, relative
to FOLDER), and either a `Finding Labels` column (`|`-separated NIH style, "No Finding"; a
label-space finding not listed is absent) or one column per finding holding 1, 0 or blank (blank
unknown; -1, CheXpert's uncertain, also unknown). Label-space findings without a column stay NaN.
Identifier columns (`PatientID`, `StudyInstanceUID`, ...) are allowed and ignored; any other column
that names no known finding is refused with `BadLabels`. Records take the patient, study UID,
view, laterality ('U' read as unknown) and sex from the catalog, the age from the birth and study
dates when both are given (the catalog keeps no PatientAge); catalogued images without a table row
and rows without an image are counted in `notes`.
Split: seeded, patient-disjoint 70/10/20 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cxrviewer.errors import BadLabels, MissingFile
from cxrviewer.io.catalog import Catalog
from cxrviewer.io.labels import NO_FINDING, read_csv_rows
from cxrviewer.trainer.data.nih import NIH_EQUIVALENT
from cxrviewer.trainer.data.sources import LABEL_SPACES, DataSource, Record, register_source
from cxrviewer.trainer.data.splits import assign_splits

KEY_COLUMNS = ("SOPInstanceUID", "path")
FINDINGS_COLUMN = "Finding Labels"
IGNORED_COLUMNS = frozenset({
    "PatientID", "Patient ID", "StudyInstanceUID", "SeriesInstanceUID", "Image Index", "Follow-up #",
    "Patient Age", "Patient Gender", "Patient Sex", "View Position", "note", "notes",
})
_VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": np.nan, "-1": np.nan, "-1.0": np.nan}


@dataclass
class LabelTable:
    """A parsed labels table: label rows [N, K] keyed by SOP Instance UID or by relative path."""

    path: Path
    key_column: str
    keys: list[str]
    labels: np.ndarray


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = read_csv_rows(path, "labels table of the DICOM folder")
    if not rows:
        raise BadLabels(path, "the labels table is empty")
    return [h.strip() for h in rows[0]], [r for r in rows[1:] if any(c.strip() for c in r)]


def _aliases(name: str) -> set[str]:
    """The names a table may use for a label-space finding (NIH's and the common one)."""
    names = {name, NIH_EQUIVALENT.get(name, name)}
    names |= {k for k, v in NIH_EQUIVALENT.items() if v == name}
    return names


def read_label_table(path: Path, label_names: Sequence[str]) -> LabelTable:
    """Parse the table over `label_names` (see the module docstring); `BadLabels` when malformed."""
    header, rows = _read_rows(path)
    key_column = next((c for c in KEY_COLUMNS if c in header), None)
    if key_column is None:
        raise BadLabels(path, "the labels table lacks a key column (SOPInstanceUID or path)")
    known = {n for space in LABEL_SPACES.values() for n in space} | set(label_names) | set(NIH_EQUIVALENT)
    columns = [c for c in header if c not in KEY_COLUMNS and c not in IGNORED_COLUMNS and c]
    unknown = [c for c in columns if c != FINDINGS_COLUMN and c not in known]
    if unknown:
        raise BadLabels(path, f"the labels table has the column(s) {', '.join(unknown)}, which name no known finding")
    if FINDINGS_COLUMN in columns and len(columns) > 1:
        raise BadLabels(path, f"the labels table has both a '{FINDINGS_COLUMN}' column and one column per finding")
    if not columns:
        raise BadLabels(path, f"the labels table has no '{FINDINGS_COLUMN}' column and no finding columns")
    width = len(header)
    short = next((i for i, r in enumerate(rows) if len(r) < width), None)
    if short is not None:
        raise BadLabels(path, f"row {short + 2} of the labels table has too few fields")
    k_key = header.index(key_column)
    keys = [r[k_key].strip() for r in rows]
    if key_column == "path":
        keys = [PurePosixPath(k.replace("\\", "/")).as_posix() if k else k for k in keys]
    if "" in keys:
        raise BadLabels(path, f"row {keys.index('') + 2} of the labels table has an empty {key_column}")
    if len(set(keys)) < len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise BadLabels(path, f"the labels table lists {key_column} {dup} twice")
    out = np.full((len(rows), len(label_names)), np.nan, np.float32)
    if FINDINGS_COLUMN in columns:
        j = header.index(FINDINGS_COLUMN)
        for i, r in enumerate(rows):
            present = {t.strip() for t in r[j].split("|") if t.strip()} - {NO_FINDING}
            out[i] = [float(bool(_aliases(n) & present)) for n in label_names]
    else:
        for k, name in enumerate(label_names):
            column = next((c for c in columns if c in _aliases(name)), None)
            if column is None:
                continue
            j = header.index(column)
            try:
                out[:, k] = [_VALUES[r[j].strip()] for r in rows]
            except KeyError as exc:
                raise BadLabels(path, f"column {column} holds {exc.args[0]!r}, not 1, 0 or blank") from exc
    out.setflags(write=False)
    return LabelTable(path, key_column, keys, out)


def _age(birth_date: str, study_date: str) -> int | None:
    """Whole years between two DICOM dates (YYYYMMDD), or None when either is missing or odd."""
    b, s = birth_date.strip()[:8], study_date.strip()[:8]
    if len(b) != 8 or len(s) != 8 or not (b.isdigit() and s.isdigit()):
        return None
    years = int(s[:4]) - int(b[:4]) - (s[4:] < b[4:])
    return years if 0 <= years < 150 else None


def _table_path(folder: Path, table: str | Path | None) -> Path:
    if table is None:
        return folder / "labels.csv"
    path = Path(table).expanduser()
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return folder / path
    return path


@register_source("dicom")
def open_dicom(root: Path, *, labels: Sequence[str], seed: int = 0, table: str | Path | None = None,
               fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> DataSource:
    """Build the DICOM-folder source (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFile(root, "the DICOM folder does not exist or is not a folder")
    parsed = read_label_table(_table_path(root, table), labels)
    row_of = {key: i for i, key in enumerate(parsed.keys)}
    notes: list[str] = []
    with Catalog.open(root) as catalog:
        patients, errors, folder = catalog.patients(), list(catalog.errors), catalog.folder
    records: list[Record] = []
    unlabelled = 0
    used: set[int] = set()
    for patient in patients:
        sex = patient.sex.strip().upper()[:1]
        for study in patient.studies:
            for series in study.series:
                for image in series.images:
                    rel = image.path.relative_to(folder).as_posix()
                    key = image.sop_instance_uid if parsed.key_column == "SOPInstanceUID" else rel
                    i = row_of.get(key)
                    if i is None:
                        unlabelled += 1
                        continue
                    used.add(i)
                    records.append(Record(
                        image.sop_instance_uid or rel, image.path, patient.patient_id, study.study_uid,
                        image.view_position, "" if image.laterality == "U" else image.laterality,
                        parsed.labels[i], [], sex if sex in ("M", "F") else "",
                        _age(patient.birth_date, study.date)))
    if unlabelled:
        notes.append(f"{unlabelled} catalogued images skipped: the labels table has no row for them")
    if len(used) < len(parsed.keys):
        notes.append(f"{len(parsed.keys) - len(used)} rows of {parsed.path.name} match no catalogued image")
    if errors:
        notes.append(f"{len(errors)} files in the folder could not be catalogued (see the catalog's errors)")
    notes.append(assign_splits(records, fractions, seed))
    return DataSource("dicom", root, records, labels, seed=seed, notes=notes)
