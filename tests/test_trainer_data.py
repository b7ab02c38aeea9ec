"""The trainer's data sources: NIH (sample images and the full metadata table), CheXpert (a fake
tree), synthetic lesions on real films, the registry and its errors."""

from __future__ import annotations

import csv
import gzip
import shutil
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxrviewer.errors import BadLabels, MissingFile
from cxrviewer.io import load_image
from cxrviewer.io.labels import NIH_FINDINGS
from cxrviewer.models.spec import DEFAULT_TARGETS
from cxrviewer.trainer.data import (
    SOURCES, DataSource, Record, SyntheticSource, UnknownSource, open_source, register_source,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIH_SAMPLE = SHARED_DATA / "nih-sample"
NIH_METADATA = SHARED_DATA / "nih-metadata"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (only beside the CI checkout)")
    return path


def _by_id(source: DataSource) -> dict[str, Record]:
    return {r.image_id: r for r in source.records}


def _assert_patient_disjoint(source: DataSource) -> None:
    owners: dict[str, set[str]] = {}
    for r in source.records:
        owners.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in owners.values()), "a patient appears in two splits"


def _patient_fractions(source: DataSource) -> dict[str, float]:
    split_of = {r.patient_id: r.split for r in source.records}
    counts = Counter(split_of.values())
    return {k: counts[k] / len(split_of) for k in ("train", "val", "test")}


# --- NIH: the 474-image sample -------------------------------------------------------------------
def test_nih_sample_records_and_labels():
    source = open_source(f"nih:{_need(NIH_SAMPLE)}")
    assert source.kind == "nih" and source.label_names == DEFAULT_TARGETS
    assert len(source.records) == 474 and len({r.image_id for r in source.records}) == 474
    rec = _by_id(source)["00000001_001.png"]  # Cardiomegaly|Emphysema
    assert rec.labels.dtype == np.float32
    np.testing.assert_array_equal(rec.labels, [1.0 if n == "Cardiomegaly" else 0.0 for n in DEFAULT_TARGETS])
    assert (rec.patient_id, rec.study_id, rec.view, rec.sex, rec.age) == ("1", "1_1", "PA", "M", 58)
    assert rec.path == NIH_SAMPLE / "images" / "00000001_001.png" and rec.boxes == []

    wide = _by_id(open_source(f"nih:{NIH_SAMPLE}", labels="nih14"))["00000001_001.png"]
    assert {n for n, v in zip(NIH_FINDINGS, wide.labels) if v == 1} == {"Cardiomegaly", "Emphysema"}
    assert not np.isnan(wide.labels).any()
    assert all(not r.labels.any() for r in source.records if r.image_id == "00000002_000.png")  # No Finding


def test_nih_sample_split_is_patient_disjoint_and_seeded():
    a, b, c = (open_source(f"nih:{_need(NIH_SAMPLE)}", seed=s) for s in (0, 0, 1))
    _assert_patient_disjoint(a)
    assert [r.split for r in a.records] == [r.split for r in b.records]
    assert [r.split for r in a.records] != [r.split for r in c.records]
    fractions = _patient_fractions(a)
    assert fractions["train"] == pytest.approx(0.7, abs=0.02)
    assert fractions["val"] == pytest.approx(0.1, abs=0.02)
    assert fractions["test"] == pytest.approx(0.2, abs=0.02)
    train = a.subset("train")
    assert isinstance(train, DataSource) and {r.split for r in train.records} == {"train"}
    assert len(a.subset(["val", "test"]).records) == len(a.records) - len(train.records)


def test_nih_load_image_is_the_io_loader():
    source = open_source(f"nih:{_need(NIH_SAMPLE)}")
    rec = _by_id(source)["00000001_001.png"]
    image = source.load_image(rec)
    assert image.shape == (512, 512) and image.meta.patient_id == "1" and image.meta.view_position == "PA"
    np.testing.assert_array_equal(image.pixels, load_image(rec.path).pixels)


# --- NIH: the full 112,120-row metadata table (no images) ------------------------------------------
@pytest.fixture(scope="module")
def nih_full() -> tuple[DataSource, float]:
    root = _need(NIH_METADATA)
    start = time.perf_counter()
    source = open_source(f"nih:{root}", labels="default8", seed=0)
    return source, time.perf_counter() - start


def test_nih_full_table_is_fast_and_complete(nih_full):
    source, seconds = nih_full
    print(f"\nnih full metadata table: {len(source.records)} records built in {seconds:.2f} s")
    assert seconds < 10.0
    assert len(source.records) == 112_120
    assert len(source.patients()) == 30_805
    assert all(r.path is None for r in source.records)
    assert any("metadata-only" in n for n in source.notes)
    _assert_patient_disjoint(source)
    fractions = _patient_fractions(source)
    assert fractions["train"] == pytest.approx(0.7, abs=0.005) and fractions["test"] == pytest.approx(0.2, abs=0.005)


def test_nih_full_table_boxes(nih_full):
    source, _ = nih_full
    boxed = [r for r in source.records if r.boxes]
    assert len(boxed) == 880 and sum(len(r.boxes) for r in boxed) == 984
    names = Counter(b[0] for r in boxed for b in r.boxes)
    assert "Infiltrate" not in names and names["Infiltration"] == 123
    assert set(names) <= set(DEFAULT_TARGETS)
    with gzip.open(NIH_METADATA / "BBox_List_2017.csv.gz", "rt") as f:
        first = next(row for row in csv.reader(f) if row[0].endswith(".png"))
    x, y, w, h = (float(v) for v in first[2:6])
    rec = _by_id(source)[first[0]]
    assert (first[1], x, y, x + w, y + h) in rec.boxes  # the 1024 space, untouched


def _write_nih_folder(root: Path, names: list[str], boxes: list[tuple[str, str, float, float, float, float]],
                      image_dirs: dict[str, str], table_only: list[str] = ()) -> None:
    """A small NIH-layout folder: table rows for `names` + `table_only`, images copied into the
    sub-folder `image_dirs[name]`, and a BBox_List_2017.csv."""
    with open(NIH_SAMPLE / "Data_Entry_2017_v2020.csv", newline="") as f:
        rows = list(csv.reader(f))
    wanted = set(names) | set(table_only)
    with open(root / "Data_Entry_2017_v2020.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[0] in wanted])
    for name in names:
        folder = root / image_dirs[name]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(NIH_SAMPLE / "images" / name, folder / name)
    with open(root / "BBox_List_2017.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""])
        writer.writerows([[*b, "", "", ""] for b in boxes])


def test_nih_boxes_are_scaled_to_a_resized_copy(tmp_path):
    _need(NIH_SAMPLE)
    names = ["00000001_000.png", "00000001_001.png", "00000003_000.png"]
    dirs = {names[0]: "images", names[1]: "images", names[2]: "images_002/images"}
    boxes = [("00000001_000.png", "Cardiomegaly", 300.0, 500.0, 400.0, 200.0),
             ("00000003_000.png", "Infiltrate", 100.5, 200.25, 50.0, 60.0),
             ("00000003_000.png", "Nodule", 10.0, 20.0, 30.0, 40.0),
             ("00000047_005.png", "Mass", 1.0, 2.0, 3.0, 4.0)]  # not in this folder: ignored
    _write_nih_folder(tmp_path, names, boxes, dirs, table_only=["00000002_000.png"])
    source = open_source(f"nih:{tmp_path}", labels="nih14")
    recs = _by_id(source)
    assert sorted(recs) == sorted(names)  # the row without an image is dropped ...
    assert any("1 table rows dropped" in n for n in source.notes)  # ... and counted
    assert recs[names[2]].path == tmp_path / "images_002" / "images" / names[2]
    assert recs[names[0]].boxes == [("Cardiomegaly", 150.0, 250.0, 350.0, 350.0)]  # 512 px: x 0.5
    assert recs[names[2]].boxes == [("Infiltration", 50.25, 100.125, 75.25, 130.125), ("Nodule", 5.0, 10.0, 20.0, 30.0)]
    assert recs[names[1]].boxes == []


def test_nih_official_split_files_are_honoured(tmp_path):
    _need(NIH_SAMPLE)
    shutil.copy(NIH_SAMPLE / "Data_Entry_2017_v2020.csv", tmp_path)  # metadata-only copy
    names = sorted(r.image_id for r in open_source(f"nih:{tmp_path}").records)
    patients = sorted({n[:8] for n in names})
    test_patients = set(patients[::5])
    test = [n for n in names if n[:8] in test_patients]
    (tmp_path / "test_list.txt").write_text("\n".join(test) + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(n for n in names if n not in set(test)) + "\n")
    source = open_source(f"nih:{tmp_path}", seed=3)
    assert sorted(r.image_id for r in source.records if r.split == "test") == sorted(test)
    _assert_patient_disjoint(source)
    train_val = {r.patient_id for r in source.records if r.split != "test"}
    val = {r.patient_id for r in source.records if r.split == "val"}
    assert len(val) == round(len(train_val) / 8)
    assert any("official split" in n for n in source.notes)
    again = open_source(f"nih:{tmp_path}", seed=3)
    assert [r.split for r in again.records] == [r.split for r in source.records]


# --- CheXpert: a fake tree ------------------------------------------------------------------------
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def _chexpert_row(rel: str, sex: str, age: int, fl: str, ap: str, **values: str) -> list[str]:
    obs = {name: values.get(name.replace(" ", "_").replace("/", "_"), "") for name in CHEXPERT_HEADER[5:]}
    return [rel, sex, str(age), fl, ap, *obs.values()]


@pytest.fixture
def chexpert_tree(tmp_path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    train = [
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP",
                      Cardiomegaly="1.0", Pleural_Effusion="-1.0", Lung_Lesion="1.0", Atelectasis="0.0"),
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Female", 68, "Lateral", "",
                      Cardiomegaly="1.0", Pleural_Effusion="-1.0", Lung_Lesion="1.0", Atelectasis="0.0"),
        _chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Male", 41, "Frontal", "PA",
                      No_Finding="1.0"),
    ] + [_chexpert_row(f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.jpg", "Male", 50, "Frontal",
                       "PA", Edema="-1.0") for p in range(3, 19)]
    valid = [_chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal",
                           "AP", Pneumothorax="1.0", Edema="0.0")]
    missing = _chexpert_row("CheXpert-v1.0-small/train/patient00099/study1/view1_frontal.jpg", "Male", 30,
                            "Frontal", "PA")
    root.mkdir()
    for name, rows in (("train.csv", train + [missing]), ("valid.csv", valid)):
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows([CHEXPERT_HEADER, *rows])
        for row in rows:
            if row is missing:
                continue
            path = tmp_path / row[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((32, 28), 100, np.uint8))
    return root


def test_chexpert_uncertainty_policies_and_mapping(chexpert_tree):
    space = ("Cardiomegaly", "Effusion", "Mass", "Nodule", "Infiltration", "Atelectasis", "Edema")
    expected_u = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}
    for policy, u in expected_u.items():
        source = open_source(f"chexpert:{chexpert_tree}", labels=space, uncertain=policy)
        rec = _by_id(source)["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"]
        np.testing.assert_array_equal(rec.labels, [1.0, u, np.nan, np.nan, np.nan, 0.0, 0.0])
    normal = _by_id(source)["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"]
    np.testing.assert_array_equal(normal.labels, [0, 0, np.nan, np.nan, np.nan, 0, 0])  # blank -> 0
    default8 = open_source(f"chexpert:{chexpert_tree}")  # Infiltration, Mass, Nodule: unknown
    nan_names = {n for n, v in zip(DEFAULT_TARGETS, default8.records[0].labels) if np.isnan(v)}
    assert nan_names == {"Infiltration", "Mass", "Nodule"}
    with pytest.raises(BadLabels, match="uncertain"):
        open_source(f"chexpert:{chexpert_tree}", uncertain="maybe")


def test_chexpert_paths_views_and_splits(chexpert_tree):
    source = open_source(f"chexpert:{chexpert_tree}", seed=0)
    recs = _by_id(source)
    assert len(recs) == 20 and any("1 table rows dropped" in n for n in source.notes)  # patient00099 has no file
    lateral = recs["CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg"]
    assert (lateral.patient_id, lateral.study_id, lateral.view, lateral.sex, lateral.age) == (
        "patient00001", "patient00001/study1", "LAT", "F", 68)
    assert recs["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"].view == "PA"
    valid = recs["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"]
    assert valid.split == "test" and valid.view == "AP"
    assert {r.split for r in source.records if r is not valid} <= {"train", "val"}
    _assert_patient_disjoint(source)
    assert len({r.patient_id for r in source.records if r.split == "val"}) == round(18 / 8)
    image = source.load_image(lateral)
    assert image.shape == (32, 28) and lateral.path == chexpert_tree.parent / lateral.image_id
    # The dataset folder alone, without its images: metadata-only.
    bare = chexpert_tree.parent / "elsewhere" / "bare"
    bare.mkdir(parents=True)
    shutil.copy(chexpert_tree / "train.csv", bare)
    meta_only = open_source(f"chexpert:{bare}")
    assert len(meta_only.records) == 20 and all(r.path is None for r in meta_only.records)  # none dropped
    assert {r.split for r in meta_only.records} == {"train", "val", "test"}  # no valid.csv: 70/10/20 by patient


# --- synthetic lesions ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic() -> SyntheticSource:
    return open_source(f"synthetic:{_need(NIH_SAMPLE)}", labels="nih14", n_images=48, seed=7)


def test_synthetic_is_deterministic(synthetic):
    again = open_source(f"synthetic:{NIH_SAMPLE}", labels="nih14", n_images=48, seed=7)
    def plan(source):
        return [(r.image_id, r.boxes, r.split) for r in source.records]

    assert plan(again) == plan(synthetic)
    for r1, r2 in list(zip(synthetic.records, again.records))[:6]:
        np.testing.assert_array_equal(synthetic.load_image(r1).pixels, again.load_image(r2).pixels)
    other = open_source(f"synthetic:{NIH_SAMPLE}", labels="nih14", n_images=48, seed=8)
    assert [r.boxes for r in other.records] != [r.boxes for r in synthetic.records]


def test_synthetic_lesions_are_there_with_their_boxes(synthetic):
    negatives = [r for r in synthetic.records if not r.boxes]
    assert 0.3 <= len(negatives) / len(synthetic.records) <= 0.7
    kinds = set()
    for rec in synthetic.records:
        image = synthetic.load_image(rec)
        base = load_image(synthetic.base_path(rec)).pixels
        assert image.pixels.shape == base.shape and image.pixels.min() >= 0 and image.pixels.max() <= 255
        np.testing.assert_array_equal(image.pixels, np.rint(image.pixels))
        positives = {n for n, v in zip(synthetic.label_names, rec.labels) if v == 1}
        assert positives == {b[0] for b in rec.boxes} and not np.isnan(rec.labels).any()
        if not rec.boxes:
            np.testing.assert_array_equal(image.pixels, base)  # negatives: the real film, untouched
            continue
        h, w = base.shape
        for name, x0, y0, x1, y1 in rec.boxes:
            kinds.add(name)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            inside = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
            diff = image.pixels[inside] - base[inside]
            if name == "Pneumothorax":  # air: darker, lung markings gone
                assert diff.mean() < -2.0 and np.abs(diff).mean() > 4.0, (rec.image_id, name)
            else:  # opacities: brighter
                assert diff.mean() > 8.0, (rec.image_id, name, diff.mean())
    assert len(kinds) >= 4
    _assert_patient_disjoint(synthetic)


def test_synthetic_cache_dir_and_plain_folder(tmp_path):
    _need(NIH_SAMPLE)
    films = tmp_path / "films"
    films.mkdir()
    for name in ("00000002_000.png", "00000047_005.png"):
        shutil.copy(NIH_SAMPLE / "images" / name, films / name)
    kwargs = dict(labels="default8", n_images=6, seed=1, negative_fraction=0.0, cache_dir=tmp_path / "cache")
    source = open_source(f"synthetic:{films}", **kwargs)
    assert all(r.boxes and r.path is not None for r in source.records)
    assert {b[0] for r in source.records for b in r.boxes} <= set(DEFAULT_TARGETS)  # no Consolidation in default8
    first = source.load_image(source.records[0]).pixels
    assert source.records[0].path.is_file()
    reopened = open_source(f"synthetic:{films}", **kwargs)
    np.testing.assert_array_equal(reopened.load_image(reopened.records[0]).pixels, first)


# --- registry and errors --------------------------------------------------------------------------
def test_registry_has_the_kinds_and_takes_new_ones(tmp_path):
    assert {"nih", "chexpert", "synthetic"} <= set(SOURCES)

    @register_source("dummy-test")
    def _dummy(root, *, labels, seed=0):
        record = Record("a", None, "p", "s", labels=np.zeros(len(labels), np.float32))
        return DataSource("dummy-test", root, [record], labels)

    try:
        source = open_source(f"dummy-test:{tmp_path}", labels=["Mass"])
        assert source.label_names == ("Mass",) and len(source.records) == 1
    finally:
        SOURCES.pop("dummy-test")


def test_open_source_errors_are_one_sentence(tmp_path):
    with pytest.raises(UnknownSource) as err:
        open_source(f"pacs:{tmp_path}")
    assert "unknown data source kind 'pacs'" in str(err.value) and "nih" in str(err.value)
    with pytest.raises(UnknownSource, match="KIND:PATH"):
        open_source(str(tmp_path / "no-kind"))
    with pytest.raises(MissingFile) as err:
        open_source(f"nih:{tmp_path / 'absent'}")
    assert str(err.value) == "absent: the folder for the nih data source does not exist."
    with pytest.raises(MissingFile, match="no Data_Entry_2017"):
        open_source(f"nih:{tmp_path}")
    with pytest.raises(MissingFile, match="neither train.csv nor valid.csv"):
        open_source(f"chexpert:{tmp_path}")
    with pytest.raises(UnknownSource, match="has no option uncertain"):
        open_source(f"nih:{tmp_path}", uncertain="ones")
    with pytest.raises(BadLabels, match="unknown label space 'nih15'"):
        open_source(f"nih:{tmp_path}", labels="nih15")
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\nx.png,Mass\n")
    with pytest.raises(BadLabels, match="lacks the column"):
        open_source(f"nih:{tmp_path}")
