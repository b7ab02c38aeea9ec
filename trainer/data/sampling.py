"""Patient-aware sampling for SCALP (Jaiswal et al., Sec. III-C and Eq. 3).

- Batches hold at most one image per patient ("no two images in a batch are from the same patient").
- Positive key for a query image: another image of the same patient, from another study where
  there is one, with the same diagnosis; fallback: the query image itself, whose second augmented
  view then serves as the positive (the paper's fallback when a patient has one image).
- Negative keys: images of other patients with the same diagnosis as the query (Eq. 3's indicator
  1[p ≠ P, d = D]).

"Same diagnosis" is read as the same set of positive findings over the label space (multi-label:
"Effusion + Mass" is one diagnosis, "No Finding" another); NaN (unknown) entries count as absent.
When no other patient has exactly that set, negatives fall back to other patients sharing at least
one positive finding with the query, then to any other patients — each fallback is counted in
`NegativeDraw.fallback` so a training run can report how often it happened.

Everything is indexed once with numpy (sort + group), so the full NIH table (112,120 images) indexes
in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cxrviewer.trainer.data.sources import Record


def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): `order` sorts the items by code; group g is order[starts[g]:starts[g+1]]."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    return order, starts


def _group_of(order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each item, the number of its group (the inverse of `_groups`)."""
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    return group


@dataclass(frozen=True)
class NegativeDraw:
    indices: np.ndarray  # record indices of the negative keys
    fallback: str  # "" (same diagnosis), "shared finding" or "any patient"


class PatientIndex:
    """Patients, studies and diagnoses of a list of records, for patient-aware sampling."""

    def __init__(self, records: Sequence[Record], labels: np.ndarray) -> None:
        if len(records) != len(labels):
            raise ValueError("one label row per record is needed")
        self.n = len(records)
        _, self.patient = np.unique(np.array([r.patient_id for r in records]), return_inverse=True)
        _, self.study = np.unique(np.array([r.study_id for r in records]), return_inverse=True)
        positive = np.nan_to_num(np.asarray(labels, dtype=np.float32), nan=0.0) > 0.5
        self.positive = positive
        # One integer per distinct diagnosis (the set of positive findings).
        _, self.diagnosis = np.unique(np.packbits(positive, axis=1), axis=0, return_inverse=True)
        self.diagnosis = self.diagnosis.reshape(-1)
        self._patient_order, self._patient_starts = _groups(self.patient)
        self._diag_order, self._diag_starts = _groups(self.diagnosis)
        self._diag_group = _group_of(self._diag_order, self._diag_starts)
        self._patient_group = _group_of(self._patient_order, self._patient_starts)

    @property
    def n_patients(self) -> int:
        return len(self._patient_starts) - 1

    def patient_images(self, i: int) -> np.ndarray:
        g = self._patient_group[i]
        return self._patient_order[self._patient_starts[g]:self._patient_starts[g + 1]]

    def same_diagnosis(self, i: int) -> np.ndarray:
        g = self._diag_group[i]
        return self._diag_order[self._diag_starts[g]:self._diag_starts[g + 1]]

    # --- batches ----------------------------------------------------------------------------
    def batches(self, batch_size: int, rng: np.random.Generator, drop_last: bool = True) -> Iterator[np.ndarray]:
        """One epoch: every patient once, one random image each, in batches of distinct patients."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        patients = rng.permutation(self.n_patients)
        starts, ends = self._patient_starts[patients], self._patient_starts[patients + 1]
        picks = self._patient_order[starts + (rng.random(len(patients)) * (ends - starts)).astype(np.int64)]
        stop = len(picks) - (len(picks) % batch_size if drop_last else 0)
        for at in range(0, stop, batch_size):
            yield picks[at:at + batch_size]

    # --- keys -------------------------------------------------------------------------------
    def positive_key(self, i: int, rng: np.random.Generator) -> int:
        """Same patient, same diagnosis, preferably another study; else `i` itself (second view)."""
        own = self.patient_images(i)
        candidates = own[(own != i) & (self.diagnosis[own] == self.diagnosis[i])]
        if candidates.size == 0:
            return int(i)
        other_study = candidates[self.study[candidates] != self.study[i]]
        pool = other_study if other_study.size else candidates
        return int(pool[rng.integers(pool.size)])

    def negative_keys(self, i: int, k: int, rng: np.random.Generator) -> NegativeDraw:
        """`k` images of other patients with the query's diagnosis (with replacement if few)."""
        pool = self.same_diagnosis(i)
        pool = pool[self.patient[pool] != self.patient[i]]
        fallback = ""
        if pool.size == 0 and self.positive[i].any():
            shared = np.flatnonzero((self.positive & self.positive[i]).any(axis=1))
            pool = shared[self.patient[shared] != self.patient[i]]
            fallback = "shared finding"
        if pool.size == 0:
            pool = np.flatnonzero(self.patient != self.patient[i])
            fallback = "any patient"
        if pool.size == 0:
            return NegativeDraw(np.empty(0, dtype=np.int64), "no other patient")
        picks = rng.choice(pool, size=k, replace=pool.size < k)
        return NegativeDraw(np.asarray(picks, dtype=np.int64), fallback)
