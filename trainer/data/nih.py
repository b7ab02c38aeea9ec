"""`nih:ROOT` — NIH ChestX-ray14 in the layout it is distributed in.

- `ROOT/Data_Entry_2017*.csv` (or `.csv.gz`): one row per image; `Finding Labels` `|`-separated.
- `ROOT/BBox_List_2017.csv(.gz)` (optional): 984 boxes `x, y, w, h` in the 1024x1024 PNG space;
  the table says `Infiltrate` where the labels say `Infiltration` (mapped here). Boxes are scaled to
  each image file's actual size, read from the PNG's IHDR header (no decode), so resized copies
  work. With no image files (metadata-only) they stay in the 1024 space.
- Images in `ROOT/images/`, `ROOT/images_0NN/images/` (the archives as unpacked) or `ROOT/images_0NN/`,
  listed once per folder. Rows whose image is absent are dropped (counted in `notes`) unless the
  folder holds no images at all: then every row is kept with `path=None` (metadata-only use).
- Split: the official `train_val_list.txt` / `test_list.txt` when `test_list.txt` is present (test =
  its images, train+val = the rest; val = a seeded patient-disjoint `val_fraction` = 1/8 of the
  train+val patients); otherwise a seeded patient-disjoint 70/10/20 split of the patients.
- `study_id` is `"<patient>_<follow-up>"` (NIH has no study UID; a follow-up number is one visit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrviewer.errors import MissingFile
from cxrviewer.io.codestream import png_size
from cxrviewer.annotations.records import FINDING_ALIASES
from cxrviewer.io.labels import NIH_FINDINGS, NO_FINDING, read_label_columns
from cxrviewer.trainer.data.sources import Box, DataSource, Record, register_source
from cxrviewer.trainer.data.splits import holdout_patients, split_patients

NIH_BOX_SIZE = 1024.0  # the BBox_List coordinates are in the 1024x1024 PNG space
# Label-space names from other vocabularies that mean the same NIH finding.
NIH_EQUIVALENT = {"Pleural Effusion": "Effusion", "Pleural Thickening": "Pleural_Thickening"}


def find_table(root: Path, stem: str) -> Path | None:
    """`ROOT/<stem>*.csv` or `.csv.gz` (plain first), or None."""
    found = sorted(root.glob(f"{stem}*.csv")) + sorted(root.glob(f"{stem}*.csv.gz"))
    return found[0] if found else None


def read_bbox_list(path: Path) -> dict[str, list[Box]]:
    """`BBox_List_2017` -> {image: [(class, x0, y0, x1, y1), ...]} in the 1024 space, names fixed
    (the table is read by the annotation store's reader, `cxrviewer.annotations.bbox_io`)."""
    from cxrviewer.annotations.bbox_io import read_bbox_csv

    boxes: dict[str, list[Box]] = {}
    for image, name, x, y, w, h in read_bbox_csv(path):
        boxes.setdefault(image, []).append((FINDING_ALIASES.get(name, name), x, y, x + w, y + h))
    return boxes


def list_images(root: Path) -> dict[str, Path]:
    """PNG files under `images/`, `images_*/images/` and `images_*/`, by file name (one listing per folder)."""
    folders = [root / "images"]
    with os.scandir(root) as it:
        subs = sorted(e.path for e in it if e.is_dir() and e.name.startswith("images_"))
    for sub in subs:
        folders += [Path(sub) / "images", Path(sub)]
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        base = str(folder)
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(".png") and entry.name not in found:
                    found[entry.name] = Path(base, entry.name)
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image: from the PNG IHDR header bytes, else by decoding."""
    with open(path, "rb") as f:
        head = f.read(24)
    size = png_size(head)
    if size is not None:
        return size
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise MissingFile(path, "the image cannot be read to size its boxes")
    return int(arr.shape[1]), int(arr.shape[0])


def _label_vectors(findings: list[str], label_names: Sequence[str], notes: list[str]) -> np.ndarray:
    """Labels [N, K]: decode each distinct `Finding Labels` string once, then gather."""
    codes: dict[str, int] = {}
    inverse = np.fromiter((codes.setdefault(s, len(codes)) for s in findings), dtype=np.int64, count=len(findings))
    columns = [n if n in NIH_FINDINGS else NIH_EQUIVALENT.get(n) for n in label_names]
    table = np.zeros((len(codes), len(label_names)), np.float32)
    strange: set[str] = set()
    for text, i in codes.items():
        present = {t.strip() for t in text.split("|") if t.strip()} - {NO_FINDING}
        strange |= present - set(NIH_FINDINGS)
        table[i] = [np.nan if c is None else float(c in present) for c in columns]
    if strange:
        notes.append(f"findings outside the NIH fourteen ignored: {', '.join(sorted(strange))}")
    labels = table[inverse]
    labels.setflags(write=False)
    return labels


def _official_split(root: Path, images: list[str], patients: np.ndarray, val_fraction: float, seed: int,
                    notes: list[str]) -> np.ndarray | None:
    test_file = root / "test_list.txt"
    if not test_file.is_file():
        return None
    test = set(test_file.read_text().split())
    train_val_file = root / "train_val_list.txt"
    is_test = np.fromiter((name in test for name in images), dtype=bool, count=len(images))
    if train_val_file.is_file():
        train_val = set(train_val_file.read_text().split())
        unlisted = sum(1 for name, t in zip(images, is_test) if not t and name not in train_val)
        if unlisted:
            notes.append(f"{unlisted} images in neither official list were put in train/val")
    split = np.empty(len(images), dtype=object)
    split[is_test] = "test"
    rest = ~is_test
    split[rest] = holdout_patients(patients[rest], val_fraction, seed)
    notes.append(f"official split (test_list.txt); val = seeded {val_fraction:.3g} of the train_val patients")
    return split


def _int_or_none(text: str) -> int | None:
    text = text.rstrip("Yy")
    return int(text) if text.isdigit() else None


@register_source("nih")
def open_nih(root: Path, *, labels: Sequence[str], seed: int = 0, val_fraction: float = 1 / 8,
             fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> DataSource:
    """Build the NIH source (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFile(root, "the NIH data folder does not exist")
    table = find_table(root, "Data_Entry_2017")
    if table is None:
        raise MissingFile(root, "the folder has no Data_Entry_2017*.csv(.gz) labels table")
    notes: list[str] = []
    cols = read_label_columns(table)  # the one NIH table reader, shared with load_image and the catalog
    files = list_images(root)
    images = cols.image
    if files:
        keep = [i for i, name in enumerate(images) if name in files]
        if len(keep) < len(images):
            notes.append(f"{len(images) - len(keep)} table rows dropped: their image files are absent")
            cols = cols.take(keep)
            images = cols.image
        extra = len(files) - len(images)
        if extra > 0:
            notes.append(f"{extra} image files not in the labels table ignored")
    else:
        notes.append("no image files: metadata-only source (path=None, boxes in the 1024 space)")
    label_matrix = _label_vectors(cols.findings, labels, notes)
    patients = np.asarray(cols.patient, dtype=str)
    split = _official_split(root, images, patients, val_fraction, seed, notes)
    if split is None:
        split = split_patients(patients, fractions, seed=seed)
        notes.append(f"seeded patient-disjoint split {'/'.join(f'{f:g}' for f in fractions)} (seed {seed})")

    boxes: dict[str, list[Box]] = {}
    box_table = find_table(root, "BBox_List_2017")
    if box_table is not None:
        boxes = read_bbox_list(box_table)
        present = set(images)
        orphans = [name for name in boxes if name not in present]
        for name in orphans:
            del boxes[name]
        if orphans:
            notes.append(f"boxes of {len(orphans)} images not in this source ignored")
        for name, items in boxes.items():
            path = files.get(name)
            if path is None:
                continue
            width, height = image_size(path)
            sx, sy = width / NIH_BOX_SIZE, height / NIH_BOX_SIZE
            boxes[name] = [(c, x0 * sx, y0 * sy, x1 * sx, y1 * sy) for c, x0, y0, x1, y1 in items]

    ages = {text: _int_or_none(text) for text in set(cols.age)}
    # Positional arguments (image_id, path, patient_id, study_id, view, laterality, labels, boxes, sex,
    # age, split): three times faster than keywords over 112,120 rows.
    records = [
        Record(name, files.get(name), pid, f"{pid}_{fu}", view, "", lab, list(boxes.get(name, ())), sex,
               ages[age], sp)
        for name, pid, fu, view, lab, sex, age, sp in zip(
            images, cols.patient, cols.follow_up, cols.view, list(label_matrix), cols.sex, cols.age,
            split.tolist())
    ]
    return DataSource("nih", root, records, labels, seed=seed, notes=notes)
