"""Patient-aware sampling for MedAug (metadata positive pairs, queue negatives), KACL (disease-hierarchy
negatives) and CIA-Net (the "No Finding" bank and canonical chest), and the one NIH table reader.

Properties are checked against brute-force definitions written here, on toy records and on random
ones; the full NIH table (metadata only) checks build times, skipped when ../shared is absent."""

from __future__ import annotations

import gzip
import time
from collections import Counter

import numpy as np
import pytest

from cxrviewer.errors import BadLabels, CxrError
from cxrviewer.io.labels import NIH_FINDINGS, read_label_columns, read_labels_table
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.data.hierarchy import HierarchyError, HierarchyIndex, load_hierarchy
from cxrviewer.trainer.data.medaug_pairs import (
    FRONTAL, LATERAL, LATERALITIES, STUDIES, UNKNOWN, MedAugPairs, SamplingError, laterality_codes,
)
from cxrviewer.trainer.data.sources import CHEXPERT_OBSERVATIONS, DataSource, Record
from tests.conftest import NIH_SAMPLE, SHARED_DATA

FULL_TABLE = SHARED_DATA / "nih-metadata"


def _record(n: int, patient: str, study: str, view: str = "PA", labels=(), split: str = "train") -> Record:
    return Record(f"i{n}", None, patient, study, view, "", np.asarray(labels, np.float32), [], "", None, split)


@pytest.fixture(scope="module")
def full_nih():
    if not (FULL_TABLE / "Data_Entry_2017_v2020.csv.gz").is_file():
        pytest.skip(f"the full NIH tables are not present at {FULL_TABLE}")
    return open_source(f"nih:{FULL_TABLE}", labels="nih14")


# --- MedAug: positives ----------------------------------------------------------------------------
def _random_records(seed: int, n: int = 120) -> list[Record]:
    rng = np.random.default_rng(seed)
    views = ["PA", "AP", "LL", "LATERAL", "", "OBLIQUE"]
    records = []
    for k in range(n):
        p = int(rng.integers(15))
        # study ids repeat across patients ("study1"), as in CheXpert: a study is (patient, study_id)
        records.append(_record(k, f"p{p}", f"study{rng.integers(3)}", views[rng.integers(len(views))],
                               split="train" if rng.random() < 0.8 else "val"))
    return records


def _brute_force(records: list[Record], train: set[int], i: int, studies: str, laterality: str) -> set[int]:
    lat = laterality_codes(records)
    out = set()
    for j in train - {i}:
        a, b = records[i], records[j]
        if a.patient_id != b.patient_id:
            continue
        same_study = a.study_id == b.study_id
        if (studies == "same" and not same_study) or (studies == "distinct" and same_study):
            continue
        if laterality == "same" and not (lat[i] != UNKNOWN and lat[j] == lat[i]):
            continue
        if laterality == "distinct" and not (UNKNOWN not in (lat[i], lat[j]) and lat[j] != lat[i]):
            continue
        out.add(j)
    return out


def test_laterality_is_frontal_or_lateral_from_the_view():
    records = [_record(k, "p", "s", v) for k, v in enumerate(["PA", "AP", "ap", "LL", "RL", "LAT", "LATERAL",
                                                               "", "OBLIQUE", "FRONTAL"])]
    np.testing.assert_array_equal(laterality_codes(records), [FRONTAL] * 3 + [LATERAL] * 4 + [UNKNOWN] * 2
                                  + [FRONTAL])


@pytest.mark.parametrize("seed", [0, 1])
def test_positives_share_the_patient_and_meet_the_criterion_or_are_the_image_itself(seed):
    records = _random_records(seed)
    train = [k for k, r in enumerate(records) if r.split == "train"]
    rng = np.random.default_rng(seed)
    for studies in STUDIES:
        for laterality in LATERALITIES:
            pairs = MedAugPairs(records, train, studies=studies, laterality=laterality)
            counts = pairs.positive_counts()
            real = 0
            for i in range(len(records)):
                want = _brute_force(records, set(train), i, studies, laterality)
                assert counts[i] == len(want), (studies, laterality, i)
                assert set(pairs.candidates(i)) == want
                drawn = {pairs.positive_key(i, rng) for _ in range(40)}
                if want:
                    real += i in train
                    assert drawn <= want and i not in drawn
                    assert all(records[j].patient_id == records[i].patient_id for j in drawn)
                else:
                    assert drawn == {i}  # the fallback: a second augmented view of x itself
            assert pairs.n_with_positive() == real


def test_positive_draws_cover_the_whole_set():
    records = [_record(0, "A", "s1"), _record(1, "A", "s1", "LL"), _record(2, "A", "s1", "AP"), _record(3, "A", "s2"),
               _record(4, "B", "s1")]
    pairs = MedAugPairs(records, studies="same", laterality="all")
    rng = np.random.default_rng(3)
    assert Counter(pairs.positive_key(0, rng) for _ in range(300)).keys() == {1, 2}
    assert pairs.positive_key(4, rng) == 4  # B has one image; and A's "s1" is not B's "s1"
    assert MedAugPairs(records, studies="same", laterality="same").positive_key(0, rng) == 2
    assert MedAugPairs(records, studies="same", laterality="distinct").positive_key(0, rng) == 1
    assert MedAugPairs(records, studies="distinct", laterality="all").positive_key(0, rng) == 3
    only_val = MedAugPairs(records, train=[0, 4], studies="all")  # positives come from the training images
    assert only_val.positive_key(0, rng) == 0 and only_val.positive_key(1, rng) == 0


def test_medaug_bad_options_are_one_sentence_errors():
    records = [_record(0, "A", "s1")]
    with pytest.raises(SamplingError, match="studies must be one of"):
        MedAugPairs(records, studies="some")
    with pytest.raises(CxrError, match="laterality must be one of"):
        MedAugPairs(records, laterality="left")
    with pytest.raises(SamplingError, match="outside"):
        MedAugPairs(records).positive_key(5, np.random.default_rng(0))
    empty = MedAugPairs(records + [_record(1, "A", "s1")], train=[])  # no training images: no positives
    assert empty.positive_key(0, np.random.default_rng(0)) == 0 and empty.n_with_positive([0, 1]) == 0
    with pytest.raises(SamplingError, match="negative strategy"):
        MedAugPairs(records).queue_masks([0], [0], "hardest")


# --- MedAug: negatives over a MoCo queue -----------------------------------------------------------
def test_queue_masks_follow_the_papers_strategies():
    records = [_record(0, "A", "s", "PA"), _record(1, "A", "s", "LL"), _record(2, "B", "s", "AP"),
               _record(3, "C", "s", "LAT"), _record(4, "D", "s", "")]
    pairs = MedAugPairs(records)
    queue = np.array([0, 1, 2, 3, 4, -1, 0, 2])
    default = pairs.queue_masks([0, 4], queue, "default")
    np.testing.assert_array_equal(default.negatives[0], [0, 1, 1, 1, 1, 0, 0, 1])  # not x's own keys, not empty
    np.testing.assert_array_equal(default.hard[0], [0, 0, 1, 0, 0, 0, 0, 1])  # S(x): frontal keys
    assert not default.hard[1].any()  # unknown laterality: no hard keys
    same = pairs.queue_masks([0, 1, 4], queue, "same_laterality")
    np.testing.assert_array_equal(same.negatives[0], default.hard[0])
    np.testing.assert_array_equal(same.negatives[1], [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(same.negatives[2], default.negatives[1])  # unknown: default, flagged
    np.testing.assert_array_equal(same.fallback, [False, False, True])
    for strategy in ("reweighted", "appended", "synthetic"):  # all keys enter; S(x) marks the hard ones
        masks = pairs.queue_masks([0, 4], queue, strategy)
        np.testing.assert_array_equal(masks.negatives, default.negatives)
        np.testing.assert_array_equal(masks.hard, default.hard)
    np.testing.assert_array_equal(pairs.negative_mask(0, queue, "same_laterality"), same.negatives[0])


# --- KACL: the disease hierarchy ---------------------------------------------------------------------
def test_hierarchy_places_every_nih_and_chexpert_finding():
    tree = load_hierarchy()
    assert load_hierarchy() is tree  # loaded once
    for name in NIH_FINDINGS + CHEXPERT_OBSERVATIONS:
        if name == "No Finding":
            assert tree.is_normal(name)
        else:
            assert tree.part_of(name) in tree.parts
    assert len(tree.findings) + 1 == 21  # the paper's 21 nodes: 20 findings and "normal"
    assert {tree.part_of(n) for n in ("Pneumonia", "Atelectasis", "Edema")} == {"lung"}  # the paper's example
    assert tree.part_of("Fracture") != "lung"
    assert tree.part_of("Pleural Effusion") == tree.part_of("Effusion")
    with pytest.raises(HierarchyError, match="does not place"):
        tree.part_of("Dextrocardia")


def test_a_bad_hierarchy_file_is_refused(tmp_path):
    bad = tmp_path / "tree.yaml"
    bad.write_text("normal: No Finding\nbody_parts:\n  lung: [Mass]\n  pleura: [Mass, Effusion]\n")
    with pytest.raises(HierarchyError, match="more than one body part"):
        load_hierarchy(bad)
    stray = tmp_path / "stray.yaml"
    stray.write_text("normal: No Finding\nbody_parts:\n  lung: [Mass]\naliases: {Tumour: Growth}\n")
    with pytest.raises(HierarchyError, match="point to no finding"):
        load_hierarchy(stray)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a list\n")
    with pytest.raises(HierarchyError, match="needs 'normal'"):
        load_hierarchy(listed)
    with pytest.raises(HierarchyError, match="does not exist"):
        load_hierarchy(tmp_path / "absent.yaml")


def _hierarchy_rule(tree, names, labels, patients, q, c) -> bool:
    """KACL's rule written out: other patient; query diseased; candidate normal, or sharing a body part
    and no finding with the query, with none of the query's findings unknown in the candidate."""
    if patients[q] == patients[c]:
        return False
    row_q, row_c = labels[q], labels[c]
    pos_q = {n for n, v in zip(names, row_q) if v == 1}
    pos_c = {n for n, v in zip(names, row_c) if v == 1}
    unknown_c = {n for n, v in zip(names, row_c) if np.isnan(v)}
    normal = lambda row: not np.isnan(row).any() and not (row == 1).any()  # noqa: E731
    if normal(row_q):
        return False
    if normal(row_c):
        return True
    parts_q, parts_c = {tree.part_of(n) for n in pos_q}, {tree.part_of(n) for n in pos_c}
    return bool(parts_q & parts_c) and not (pos_q & pos_c) and not (pos_q & unknown_c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hierarchy_negatives_match_the_rule_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    names = ("Atelectasis", "Pneumonia", "Effusion", "Pneumothorax", "Cardiomegaly", "Hernia")
    n = 80
    labels = (rng.random((n, len(names))) < 0.2).astype(np.float32)
    labels[rng.random((n, len(names))) < 0.05] = np.nan
    labels[: n // 4] = 0  # some normal images
    patients = [f"p{rng.integers(30)}" for _ in range(n)]
    records = [_record(k, patients[k], "s", labels=labels[k]) for k in range(n)]
    index = HierarchyIndex(records, names)
    tree = load_hierarchy()
    want = np.array([[_hierarchy_rule(tree, names, labels, patients, q, c) for c in range(n)] for q in range(n)])
    np.testing.assert_array_equal(index.is_negative(np.arange(n), np.arange(n)), want)
    for q in range(n):
        np.testing.assert_array_equal(index.pool(q), np.flatnonzero(want[q]))
        draw = index.negative_keys(q, 5, rng)
        if not want[q].any():
            assert draw.fallback != "" and (draw.fallback == "normal query") == bool(index.normal[q])
        else:
            assert draw.fallback == "" and len(draw.indices) == 5 and want[q, draw.indices].all()
            if want[q].sum() >= 5:
                assert len(set(draw.indices)) == 5  # without replacement when the pool is large enough


def test_hierarchy_example_and_fallbacks():
    names = ("Pneumonia", "Atelectasis", "Cardiomegaly")
    rows = [("A", [1, 0, 0]), ("B", [0, 0, 0]), ("C", [0, 1, 0]), ("A", [0, 1, 0]), ("D", [1, 1, 0]),
            ("E", [0, 0, 1]), ("F", [np.nan, 1, 0]), ("G", [0, 0, 1])]
    records = [_record(k, p, "s", labels=lab) for k, (p, lab) in enumerate(rows)]
    index = HierarchyIndex(records, names)
    assert set(index.pool(0)) == {1, 2}  # normal B, Atelectasis C; not A's own, not D (shares), E, F (unknown)
    draw = index.negative_keys(0, 6, np.random.default_rng(0))
    assert draw.fallback == "" and set(draw.indices) == {1, 2}
    assert index.negative_keys(1, 3, np.random.default_rng(0)).fallback == "normal query"
    no_normal = HierarchyIndex([records[k] for k in (0, 5, 7)], names)  # Pneumonia vs two Cardiomegaly
    draw = no_normal.negative_keys(0, 2, np.random.default_rng(0))
    assert draw.fallback == "no shared finding" and set(draw.indices) <= {1, 2}
    with pytest.raises(HierarchyError, match="one row of 3"):
        HierarchyIndex(records, names, labels=np.zeros((2, 3)))
    with pytest.raises(HierarchyError, match="does not place"):
        HierarchyIndex(records, ("Pneumonia", "Atelectasis", "Dextrocardia"))


def test_chexpert_no_finding_column_marks_normal():
    names = ("No Finding", "Pleural Effusion", "Pneumothorax", "Support Devices")
    rows = [("A", [0, 1, 0, 0]), ("B", [1, 0, np.nan, 1]), ("C", [0, 0, 1, 0]), ("D", [0, 0, 0, 1])]
    index = HierarchyIndex([_record(k, p, "s", labels=lab) for k, (p, lab) in enumerate(rows)], names)
    np.testing.assert_array_equal(index.normal, [False, True, False, False])
    assert set(index.pool(0)) == {1, 2}  # normal B; Pneumothorax shares the pleura with Pleural Effusion


# --- CIA-Net: the "No Finding" bank and the canonical chest -------------------------------------------
@pytest.fixture(scope="module")
def nih_small():
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE}")
    return open_source(f"nih:{NIH_SAMPLE}", labels="nih14")


def test_negative_bank_is_distinct_no_finding_images_deterministic_in_the_seed(nih_small):
    import torch

    from cxrviewer.models.spec import ModelSpec
    from cxrviewer.trainer.data.negative_bank import no_finding_indices, select_negative_bank

    train = np.flatnonzero([r.split == "train" for r in nih_small.records])
    pool = no_finding_indices(nih_small, train)
    assert 0 < len(pool) < len(train)
    assert all(not nih_small.records[i].labels.any() for i in pool)
    indices, bank = select_negative_bank(nih_small, train, 4, 64, seed=5, candidates=12)
    assert len(set(indices.tolist())) == 4 and set(indices) <= set(pool)
    assert bank.shape == (4, 1, 64, 64) and bank.dtype == torch.float32
    spec = ModelSpec("cianet", input_size=(64, 64))  # model inputs, as CIANet.set_negative_bank takes them
    for i, image in zip(indices, bank):
        assert torch.equal(image[None], spec.preprocess(nih_small.load_image(nih_small.records[i])))
    again, bank_again = select_negative_bank(nih_small, train, 4, 64, seed=5, candidates=12)
    assert np.array_equal(again, indices) and torch.equal(bank, bank_again)
    other, _ = select_negative_bank(nih_small, train, 4, 64, seed=6, candidates=12)
    assert not np.array_equal(np.sort(other), np.sort(indices))


def test_farthest_points_spread_over_the_hashes():
    from cxrviewer.models.phash import hamming_matrix
    from cxrviewer.trainer.data.negative_bank import BankError, farthest_points

    rng = np.random.default_rng(0)
    hashes = rng.random((30, 64)) < 0.5
    hashes[5] = hashes[4]  # a duplicate
    chosen = farthest_points(hashes, 30, first=3)
    assert sorted(chosen.tolist()) == list(range(30))  # distinct, even past the duplicate
    picked = farthest_points(hashes, 4, first=3)
    dist = hamming_matrix(hashes, hashes)
    assert picked[1] == int(np.argmax(np.where(np.arange(30) == 3, -1, dist[3])))
    with pytest.raises(BankError):
        farthest_points(hashes, 31, first=0)


def test_canonical_chest_is_the_mean_of_seeded_no_finding_images(nih_small):
    from cxrviewer.models.cianet_bank import build_canonical_chest
    from cxrviewer.models.preprocess import intensity_01
    from cxrviewer.trainer.data.negative_bank import canonical_chest_from, no_finding_indices

    train = np.flatnonzero([r.split == "train" for r in nih_small.records])
    chest = canonical_chest_from(nih_small, train, 48, limit=3, seed=2)
    assert chest.shape == (48, 48) and chest.dtype == np.uint8
    np.testing.assert_array_equal(chest, canonical_chest_from(nih_small, train, 48, limit=3, seed=2))
    pool = no_finding_indices(nih_small, train)
    chosen = np.sort(np.random.default_rng(2).choice(pool, size=3, replace=False))
    want = build_canonical_chest([intensity_01(nih_small.load_image(nih_small.records[i]), "display")
                                  for i in chosen], (48, 48))
    np.testing.assert_array_equal(chest, want)


def test_bank_without_no_finding_images_is_refused(tmp_path):
    from cxrviewer.trainer.data.negative_bank import BankError, canonical_chest_from, select_negative_bank

    records = [_record(k, f"p{k}", "s", labels=[1, 0]) for k in range(3)]
    source = DataSource("toy", tmp_path, records, ("Mass", "Nodule"))
    with pytest.raises(BankError, match="needs at least 2 'No Finding'"):
        select_negative_bank(source, None, 2, 32, seed=0)
    with pytest.raises(CxrError, match="canonical chest needs at least 1"):
        canonical_chest_from(source, [0, 1], 32)
    with pytest.raises(BankError, match="lie in"):
        select_negative_bank(source, [7], 1, 32, seed=0)


# --- the one NIH table reader ----------------------------------------------------------------------
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")


def test_table_reader_columns_and_rows_agree(tmp_path):
    text = (HEADER + "a.png,Mass|Nodule,0,7,58,M,PA,2500,2048,0.143,0.143,\n\n"
            "b.png,No Finding,2, 8 ,061Y,F,AP\n"
            ",,,,,,,\n"
            '"c.png","Effusion",1,9,,M,PA,10,20,0.1,0.2\n')
    path = tmp_path / "Data_Entry_2017.csv.gz"
    path.write_bytes(gzip.compress(("\ufeff" + text).encode()))
    cols = read_label_columns(path)
    assert list(cols.image) == ["a.png", "b.png", "c.png"] and list(cols.patient) == ["7", "8", "9"]
    assert list(cols.row_numbers) == [2, 4, 6] and list(cols.width) == ["2500", "", "10"]
    rows = read_labels_table(path)
    assert rows["a.png"].labels == ("Mass", "Nodule") and rows["a.png"].original_size == (2500, 2048)
    assert rows["b.png"].labels == () and rows["b.png"].age == 61 and rows["b.png"].original_spacing is None
    assert rows["c.png"].age is None and rows["c.png"].original_spacing == (0.1, 0.2)
    path.write_bytes(gzip.compress((HEADER + "a.png,Mass,0,7\n").encode()))
    with pytest.raises(BadLabels, match="row 2 of the labels table has too few fields"):
        read_labels_table(path)
    path.write_bytes(gzip.compress((HEADER + "a.png,Mass,0,7,58,M,PA\nb.png,Mass,x,8,1,M,PA\n").encode()))
    with pytest.raises(BadLabels, match="row 3 of the labels table is malformed"):
        read_labels_table(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(BadLabels, match="not a readable gzip file"):
        read_label_columns(path)


@pytest.mark.slow
def test_full_table_reader_is_fast(full_nih):
    table = FULL_TABLE / "Data_Entry_2017_v2020.csv.gz"
    start = time.perf_counter()
    rows = read_labels_table(table)
    elapsed = time.perf_counter() - start
    print(f"\nread_labels_table: {len(rows)} rows in {elapsed:.2f} s")
    assert len(rows) == 112_120 and elapsed < 10.0
    assert [n for n, r in zip(rows, full_nih.records) if n != r.image_id] == []


# --- the full NIH table ----------------------------------------------------------------------------
@pytest.mark.slow
def test_full_table_builds_in_seconds(full_nih):
    records = full_nih.records
    train = np.flatnonzero([r.split == "train" for r in records])
    start = time.perf_counter()
    pairs = MedAugPairs(records, train, studies="all", laterality="all")
    with_positive = pairs.n_with_positive()
    medaug_s = time.perf_counter() - start
    start = time.perf_counter()
    index = HierarchyIndex(records, full_nih.label_names)
    hierarchy_s = time.perf_counter() - start
    print(f"\nMedAugPairs + counts {medaug_s:.2f} s; HierarchyIndex {hierarchy_s:.2f} s")
    assert medaug_s < 10.0 and hierarchy_s < 10.0
    assert 0 < with_positive < len(train)
    # NIH: one image per follow-up (study), and every view frontal
    assert MedAugPairs(records, train, studies="same").n_with_positive() == 0
    assert MedAugPairs(records, train, studies="all", laterality="distinct").n_with_positive() == 0
    rng = np.random.default_rng(0)
    queries = rng.choice(train, 200, replace=False)
    for i in queries:
        j = pairs.positive_key(int(i), rng)
        assert pairs.patient[j] == pairs.patient[i] and (j != i) == (pairs.positive_counts()[i] > 0)
    start = time.perf_counter()
    draws = [index.negative_keys(int(i), 16, rng) for i in queries]
    assert time.perf_counter() - start < 5.0
    for i, draw in zip(queries, draws):
        if draw.fallback == "":
            assert index.is_negative([i], draw.indices).all()
        else:
            assert draw.fallback == "normal query" and index.normal[i]
