"""`chexpert:ROOT` — CheXpert (Irvin et al. 2019) as distributed (`CheXpert-v1.0` or `-small`).

- `ROOT/train.csv`, `ROOT/valid.csv`: columns Path, Sex, Age, Frontal/Lateral, AP/PA and the 14
  observations with values 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned).
- `Path` is `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`, relative to the
  folder *above* the dataset folder; ROOT itself (the dataset folder) and ROOT-relative paths
  without the first component are accepted too. The patient, the study (`patient00001/study1`) and,
  for frontal films without an AP/PA value, the view are parsed from it.
- Uncertain labels follow `uncertain`: "zeros" (U-Zeros), "ones" (U-Ones) or "ignore" (NaN, masked
  out of the loss). Blank means the report did not mention the observation; CheXpert's labeler
  convention (and its papers' training setups) read that as negative, so blank -> 0.
- Label space: a CheXpert observation maps onto a finding only where they mean the same thing:
  Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia, Pneumothorax by name, and
  Pleural Effusion -> Effusion. The rest are NaN (unknown), never 0: NIH's Mass and Nodule are not
  CheXpert's Lung Lesion (which lumps both with other focal lesions, so a Lung Lesion positive says
  neither which one nor that one is present), Infiltration is not Lung Opacity (broader),
  Pleural_Thickening is not Pleural Other (broader), and Emphysema, Fibrosis, Hernia have no column.
  With the `chexpert14` label space the observations are taken as they are.
- Split: `valid.csv` is the test split (radiologist-labelled); `train.csv` patients are split
  into train/val by a seeded patient-disjoint `val_fraction` (1/8). Without `valid.csv`, a seeded
  70/10/20 patient split of `train.csv`.
- Rows whose image file is absent are dropped (counted in `notes`), unless no image at all is
  found (metadata-only: `path=None`). Existence is checked with one `os.path.isfile` per row: the
  patient/study/view tree has as many folders as images, so listing folders would not be cheaper.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrviewer.errors import BadLabels, MissingFile
from cxrviewer.io.labels import read_csv_rows
from cxrviewer.trainer.data.sources import CHEXPERT_OBSERVATIONS, DataSource, Record, register_source
from cxrviewer.trainer.data.splits import holdout_patients, split_patients

# Label-space names (NIH vocabulary) whose meaning a CheXpert column carries under another name.
CHEXPERT_EQUIVALENT = {"Effusion": "Pleural Effusion"}
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
_SEX = {"Male": "M", "Female": "F"}


def chexpert_column(name: str) -> str | None:
    """The CheXpert column that means the finding `name`, or None (unknown for CheXpert)."""
    if name in CHEXPERT_OBSERVATIONS:
        return name
    return CHEXPERT_EQUIVALENT.get(name)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = read_csv_rows(path, "CheXpert table")
    if not rows:
        raise BadLabels(path, "the CheXpert table is empty")
    header = [h.strip() for h in rows[0]]
    if "Path" not in header:
        raise BadLabels(path, "the CheXpert table lacks the column Path")
    return header, [r for r in rows[1:] if r and r[0].strip()]


def _labels(path: Path, header: list[str], rows: list[list[str]], label_names: Sequence[str],
            uncertain: str) -> np.ndarray:
    value = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": 0.0,
             "-1": {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}[uncertain]}
    value["-1.0"] = value["-1"]
    out = np.full((len(rows), len(label_names)), np.nan, np.float32)
    for k, name in enumerate(label_names):
        column = chexpert_column(name)
        if column is None or column not in header:
            continue
        j = header.index(column)
        try:
            out[:, k] = [value[r[j].strip()] if j < len(r) else 0.0 for r in rows]
        except KeyError as exc:
            raise BadLabels(path, f"column {column} holds {exc.args[0]!r}, not 1, 0, -1 or blank") from exc
    out.setflags(write=False)
    return out


def _parse_path(rel: str) -> tuple[str, str, str]:
    """(patient, study, view hint) from `.../patient00001/study1/view1_frontal.jpg`."""
    parts = rel.replace("\\", "/").split("/")
    i = next((k for k, p in enumerate(parts) if p.startswith("patient")), None)
    if i is None or i + 2 >= len(parts):
        return "", "", ""
    stem = parts[-1].rsplit(".", 1)[0].lower()
    hint = "LAT" if "lateral" in stem else ("FRONTAL" if "frontal" in stem else "")
    return parts[i], f"{parts[i]}/{parts[i + 1]}", hint


def _locate(root: Path, rels: Sequence[str]) -> tuple[Path, int] | None:
    """(base folder, leading components to strip) under which the table's paths exist, if any."""
    for rel in rels[:50]:
        tail = Path(*Path(rel).parts[1:]) if len(Path(rel).parts) > 1 else Path(rel)
        options = ((root.parent, 0, root.parent / rel), (root, 0, root / rel), (root, 1, root / tail))
        for base, strip, candidate in options:
            if candidate.is_file():
                return base, strip
    return None


def _view(frontal_lateral: str, ap_pa: str, hint: str) -> str:
    if frontal_lateral == "Lateral" or hint == "LAT":
        return ap_pa if ap_pa in ("LL", "RL") else "LAT"
    return ap_pa or ("FRONTAL" if hint == "FRONTAL" else "")


def _table_records(path: Path, label_names: Sequence[str], uncertain: str,
                   split_name: str) -> list[Record]:
    header, rows = _read_rows(path)
    labels = _labels(path, header, rows, label_names, uncertain)
    col = {name: header.index(name) for name in header}

    def get(row: list[str], name: str) -> str:
        j = col.get(name)
        return row[j].strip() if j is not None and j < len(row) else ""

    records = []
    for row, lab in zip(rows, labels):
        rel = row[col["Path"]].strip()
        patient, study, hint = _parse_path(rel)
        if not patient:
            raise BadLabels(path, f"the path {rel} does not name a patientNNNNN/studyN folder")
        age = get(row, "Age")
        records.append(Record(rel, None, patient, study, _view(get(row, "Frontal/Lateral"), get(row, "AP/PA"), hint),
                              "", lab, [], _SEX.get(get(row, "Sex"), ""), int(float(age)) if age else None, split_name))
    return records


@register_source("chexpert")
def open_chexpert(root: Path, *, labels: Sequence[str], seed: int = 0, uncertain: str = "zeros",
                  val_fraction: float = 1 / 8, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> DataSource:
    """Build the CheXpert source (see the module docstring)."""
    root = Path(root)
    if uncertain not in UNCERTAIN_POLICIES:
        raise BadLabels(None, f"unknown uncertain-label policy '{uncertain}' (use {', '.join(UNCERTAIN_POLICIES)})")
    train_csv, valid_csv = root / "train.csv", root / "valid.csv"
    if not root.is_dir() or not (train_csv.is_file() or valid_csv.is_file()):
        raise MissingFile(root, "the CheXpert folder has neither train.csv nor valid.csv")
    notes = [f"uncertain labels: {uncertain}; blank (not mentioned) = 0; findings without a CheXpert equivalent = NaN"]
    train = _table_records(train_csv, labels, uncertain, "train") if train_csv.is_file() else []
    test = _table_records(valid_csv, labels, uncertain, "test") if valid_csv.is_file() else []
    if train:
        patients = np.asarray([r.patient_id for r in train], dtype=str)
        if test:
            names = holdout_patients(patients, val_fraction, seed)
            notes.append(f"valid.csv = test; val = seeded {val_fraction:.3g} of the train.csv patients")
        else:
            names = split_patients(patients, fractions, seed=seed)
            notes.append("no valid.csv: seeded patient-disjoint split of train.csv")
        for record, name in zip(train, names.tolist()):
            record.split = name
    records = train + test

    located = _locate(root, [r.image_id for r in records])
    if located is None:
        notes.append("no image files found: metadata-only source (path=None)")
    else:
        base, strip = located
        kept = []
        for record in records:
            parts = Path(record.image_id).parts[strip:]
            path = base.joinpath(*parts)
            if os.path.isfile(path):
                record.path = path
                kept.append(record)
        if len(kept) < len(records):
            notes.append(f"{len(records) - len(kept)} table rows dropped: their image files are absent")
        records = kept
    return DataSource("chexpert", root, records, labels, seed=seed, notes=notes)
