"""Patient-disjoint, seeded splits.

Images are split by patient, never by image: every image of a patient lands in the same split, so
no patient's anatomy is seen in training and scored in evaluation. The draw depends only on the
set of patient ids and the seed (patients are sorted before the seeded permutation), not on the
order of the records, so a split is reproducible given the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _patient_codes(patient_ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique patient ids and, per record, the index of its patient among them."""
    ids = np.asarray(patient_ids, dtype=str)
    return np.unique(ids, return_inverse=True)


def split_patients(patient_ids: Sequence[str] | np.ndarray, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                   names: Sequence[str] = ("train", "val", "test"), seed: int = 0) -> np.ndarray:
    """Assign each record a split name by a seeded shuffle of its patients.

    `fractions` (normalised to sum 1) are fractions of *patients*; the first round(f * n) shuffled
    patients go to the first split and so on, the remainder to the last one. Returns an array of
    split names, one per record.
    """
    if len(fractions) != len(names) or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError("one non-negative fraction per split name is needed")
    out = np.empty(len(patient_ids), dtype=object)
    if len(patient_ids) == 0:
        return out
    unique, inverse = _patient_codes(patient_ids)
    n = len(unique)
    order = np.random.default_rng(seed).permutation(n)
    cum = np.cumsum(np.asarray(fractions, dtype=float) / float(sum(fractions)))
    bounds = np.concatenate([[0], np.round(cum * n).astype(int)])
    bounds[-1] = n
    patient_split = np.empty(n, dtype=np.int64)
    for k in range(len(names)):
        patient_split[order[bounds[k]:bounds[k + 1]]] = k
    out[:] = np.asarray(names, dtype=object)[patient_split[inverse]]
    return out


def holdout_patients(patient_ids: Sequence[str] | np.ndarray, fraction: float, seed: int = 0,
                     name: str = "val", rest: str = "train") -> np.ndarray:
    """Split names: a seeded `fraction` of the patients -> `name`, the other patients -> `rest`."""
    return split_patients(patient_ids, (1.0 - fraction, fraction), (rest, name), seed)


def assign_splits(records: Sequence, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0) -> str:
    """Set `record.split` by a seeded patient-disjoint draw (`split_patients`); returns the note
    that says so, for the source's `notes`."""
    names = split_patients([r.patient_id for r in records], fractions, seed=seed)
    for record, name in zip(records, names.tolist()):
        record.split = name
    return f"seeded patient-disjoint split {'/'.join(f'{f:g}' for f in fractions)} (seed {seed})"
