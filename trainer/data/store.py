"""`store:DB` — the images of an annotation store (`cxrviewer.annotations`) with their corrections.

One record per store image whose file exists (a relative path is relative to the store's folder;
missing files are skipped and counted in `notes`). `image_id` is the store's image key, `study_id`
the study UID (or the key when there is none). Labels over the label space: NaN (unknown) unless
an annotator set the finding's label (1/0), and 1 wherever a validated box of the finding exists,
even against a label of 0 (a clinician drew or confirmed it). Boxes are the validated ones
(accepted, corrected, added, imported), in the image's own pixels. Split: seeded,
patient-disjoint 70/10/20 by default; an image without a patient id counts as its own patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrviewer.annotations import AnnotationStore
from cxrviewer.trainer.data.nih import NIH_EQUIVALENT
from cxrviewer.trainer.data.sources import DataSource, Record, register_source
from cxrviewer.trainer.data.splits import assign_splits


def _column_of(label_names: Sequence[str]) -> dict[str, int]:
    """Store finding name -> label-space column, accepting NIH's name for an equivalent finding."""
    column = {name: k for k, name in enumerate(label_names)}
    for k, name in enumerate(label_names):
        alias = NIH_EQUIVALENT.get(name)
        if alias is not None:
            column.setdefault(alias, k)
    return column


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else base / path


@register_source("store")
def open_store(root: Path, *, labels: Sequence[str], seed: int = 0,
               fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> DataSource:
    """Build the store source (see the module docstring); `root` is the store file."""
    root = Path(root)
    notes: list[str] = []
    with AnnotationStore.open(root) as store:
        images = store.images()
        corrections = store.corrections()
    column = _column_of(labels)
    base = root.resolve().parent
    records: list[Record] = []
    missing = no_path = unannotated = anonymous = 0
    outside: set[str] = set()
    for image in images:
        path = _resolve(image.path, base)
        if path is None:
            no_path += 1
            continue
        if not path.is_file():
            missing += 1
            continue
        vector = np.full(len(labels), np.nan, np.float32)
        found = corrections.get(image.image_key)
        boxes = []
        if found is None:
            unannotated += 1
        else:
            for finding, value in found.labels.items():
                if finding in column:
                    vector[column[finding]] = value
                else:
                    outside.add(finding)
            for box in found.boxes:
                if box[0] in column:
                    vector[column[box[0]]] = 1.0
                else:
                    outside.add(box[0])
            boxes = list(found.boxes)
        vector.setflags(write=False)
        patient = image.patient_id or image.image_key
        anonymous += not image.patient_id
        records.append(Record(image.image_key, path, patient, image.study_uid or image.image_key,
                              labels=vector, boxes=boxes))
    if missing:
        notes.append(f"{missing} store images skipped: their files are missing")
    if no_path:
        notes.append(f"{no_path} store images skipped: the store has no path for them")
    if unannotated:
        notes.append(f"{unannotated} images have no validated box or label yet (all labels unknown)")
    if anonymous:
        notes.append(f"{anonymous} images without a patient id each count as their own patient in the split")
    if outside:
        notes.append(f"findings outside the label space ignored for labels: {', '.join(sorted(outside))}")
    notes.append(assign_splits(records, fractions, seed))
    return DataSource("store", root, records, labels, seed=seed, notes=notes)
