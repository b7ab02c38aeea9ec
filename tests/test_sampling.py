"""SCALP's patient-aware sampling: batches of distinct patients, same-patient positives, other-patient
same-diagnosis negatives; indexing the full NIH table takes seconds."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.data.sampling import PatientIndex
from cxrviewer.trainer.data.sources import Record
from tests.conftest import SHARED_DATA


def _records(rows):
    """rows: (patient, study, labels over 3 findings)."""
    records = [Record(image_id=f"i{n}", path=None, patient_id=p, study_id=s, view="PA", laterality="",
                      labels=np.asarray(lab, np.float32), boxes=[], sex="", age=None, split="train")
               for n, (p, s, lab) in enumerate(rows)]
    return records, np.stack([r.labels for r in records])


@pytest.fixture
def toy():
    return _records([
        ("A", "A1", [1, 0, 0]), ("A", "A2", [1, 0, 0]), ("A", "A2", [0, 1, 0]),  # 0, 1, 2
        ("B", "B1", [1, 0, 0]), ("B", "B1", [0, 0, 0]),                          # 3, 4
        ("C", "C1", [0, 1, np.nan]),                                             # 5
        ("D", "D1", [1, 1, 0]),                                                  # 6
    ])


def test_batches_never_repeat_a_patient(toy):
    index = PatientIndex(*toy)
    rng = np.random.default_rng(0)
    for _ in range(20):
        batches = list(index.batches(2, rng))
        assert len(batches) == 2  # 4 patients, drop_last
        for batch in batches:
            assert len(set(index.patient[batch])) == len(batch)
        seen = np.concatenate(batches)
        assert len(set(index.patient[seen])) == 4


def test_positive_is_same_patient_same_diagnosis_other_study_first(toy):
    index = PatientIndex(*toy)
    rng = np.random.default_rng(1)
    assert {index.positive_key(0, rng) for _ in range(20)} == {1}  # A2, another study, same diagnosis
    assert {index.positive_key(1, rng) for _ in range(20)} == {0}
    assert index.positive_key(2, rng) == 2  # no other image of A with that diagnosis: itself
    assert index.positive_key(5, rng) == 5  # one image: itself (the second view)


def test_negatives_are_other_patients_with_the_same_diagnosis(toy):
    index = PatientIndex(*toy)
    rng = np.random.default_rng(2)
    draw = index.negative_keys(0, 5, rng)
    assert draw.fallback == "" and set(draw.indices) == {3}  # B's Atelectasis-only image
    draw = index.negative_keys(2, 4, rng)  # A's [0,1,0]: C has [0,1,NaN] -> same diagnosis
    assert draw.fallback == "" and set(draw.indices) == {5}
    draw = index.negative_keys(6, 4, rng)  # [1,1,0] exists nowhere else: shared-finding fallback
    assert draw.fallback == "shared finding" and not set(draw.indices) & {6}
    assert all(index.patient[j] != index.patient[6] for j in draw.indices)
    draw = index.negative_keys(4, 3, rng)  # "No Finding" of B: nobody else -> any other patient
    assert draw.fallback == "any patient" and all(index.patient[j] != index.patient[4] for j in draw.indices)


@pytest.mark.slow
def test_full_nih_table_indexes_in_seconds():
    table = SHARED_DATA / "nih-metadata"
    if not table.is_dir():
        pytest.skip(f"the full NIH tables are not present at {table}")
    source = open_source(f"nih:{table}")
    start = time.perf_counter()
    index = PatientIndex(source.records, source.label_matrix())
    elapsed = time.perf_counter() - start
    print(f"\nindexed {index.n} images of {index.n_patients} patients in {elapsed:.2f} s")
    assert index.n == 112_120 and index.n_patients == 30_805
    assert elapsed < 10.0
    rng = np.random.default_rng(0)
    batch = next(index.batches(256, rng))
    assert len(set(index.patient[batch])) == 256
    for i in batch[:50]:
        j = index.positive_key(int(i), rng)
        assert index.patient[j] == index.patient[i] and index.diagnosis[j] == index.diagnosis[i]
        draw = index.negative_keys(int(i), 8, rng)
        assert all(index.patient[n] != index.patient[i] for n in draw.indices)
        if draw.fallback == "":
            assert all(index.diagnosis[n] == index.diagnosis[i] for n in draw.indices)
