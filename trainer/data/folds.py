"""Patient-disjoint folds for k-fold cross-validation.

    folds = patient_folds(source.records, k=5, seed=0)     # fold id per record, 0..k-1
    names = fold_split(source.records, folds, fold=2)      # "train" / "val" / "test" per record
    source_2 = with_splits(source, names)                  # a copy of the source split that way

Every image of a patient lands in one fold. Patients are dealt to folds greedily, largest patient
first, each to the fold with the fewest images so far (ties: the lower fold id), so the folds hold
nearly equal image counts (they differ by at most the largest patient's image count). The order
among patients of equal size is a seeded permutation of the sorted patient ids, so the result
depends only on the patients, their image counts and the seed, never on the order of the records.

For run `fold`: the records of that fold are the test split; the other k-1 folds are the training
data, from which a seeded `val_fraction` of their *patients* (never of their images) is carved out
as the validation split (which the trainer uses for the best checkpoint and for calibrating the
operating thresholds). `with_splits` returns a new source whose records carry those names, leaving
the original records untouched, so every fold can be trained from one opened source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cxrviewer.errors import CxrError
from cxrviewer.trainer.data.sources import DataSource, Record
from cxrviewer.trainer.data.splits import holdout_patients


class FoldError(CxrError, ValueError):
    """Folds that cannot be made (too few patients) or a fold id out of range."""


def patient_folds(records: Sequence[Record], k: int, seed: int = 0) -> np.ndarray:
    """Fold id (int64, 0..k-1) of every record: patient-disjoint, balanced by image count, seeded."""
    k = int(k)
    if k < 2:
        raise FoldError(None, f"cross-validation needs at least 2 folds, not {k}")
    patient_ids = np.asarray([r.patient_id for r in records], dtype=str)
    patients, inverse, counts = np.unique(patient_ids, return_inverse=True, return_counts=True)
    if len(patients) < k:
        raise FoldError(None, f"{k} patient-disjoint folds need at least {k} patients; the data has {len(patients)}")
    shuffled = np.random.default_rng(seed).permutation(len(patients))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]  # largest first, seeded among equals
    sizes = np.zeros(k, dtype=np.int64)
    patient_fold = np.empty(len(patients), dtype=np.int64)
    for p in order:
        target = int(np.argmin(sizes))  # the first of the emptiest folds
        patient_fold[p] = target
        sizes[target] += counts[p]
    return patient_fold[inverse.ravel()]


def fold_split(records: Sequence[Record], folds: np.ndarray, fold: int, *, val_fraction: float = 0.1,
               seed: int = 0) -> np.ndarray:
    """Split names (object array of "train" / "val" / "test") for cross-validation run `fold`.

    Records of fold `fold` -> "test"; of the others, a seeded `val_fraction` of their patients ->
    "val" (none when 0), the rest -> "train". See the module docstring."""
    folds = np.asarray(folds)
    if folds.shape != (len(records),):
        raise FoldError(None, f"need one fold id per record ({len(records)}), got an array of shape {folds.shape}")
    if fold not in set(folds.tolist()):
        raise FoldError(None, f"fold {fold} holds no records (the folds are {sorted(set(folds.tolist()))})")
    if not 0.0 <= val_fraction < 1.0:
        raise FoldError(None, f"the validation fraction must be in [0, 1), not {val_fraction}")
    names = np.full(len(records), "test", dtype=object)
    rest = np.flatnonzero(folds != fold)
    if val_fraction > 0:
        names[rest] = holdout_patients([records[i].patient_id for i in rest], val_fraction, seed=seed + int(fold))
    else:
        names[rest] = "train"
    return names


def with_splits(source: DataSource, names: Sequence[str]) -> DataSource:
    """A copy of `source` whose records are copies carrying the split `names` (one per record)."""
    if len(names) != len(source.records):
        raise FoldError(source.root, f"need one split name per record ({len(source.records)}), got {len(names)}")
    other = source.subset(("train", "val", "test"))  # a shallow copy of the source with its own list
    other.records = [dataclasses.replace(r, split=str(n)) for r, n in zip(source.records, names)]
    return other
