"""The `store:DB` and `dicom:FOLDER` training data sources: records, labels, boxes, notes, splits
and their errors, on an annotation store over small PNGs and on the repo's dicomized NIH samples."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from cxrviewer.annotations import AnnotationStore, BadStore
from cxrviewer.errors import BadLabels, MissingFile
from cxrviewer.io.labels import NIH_FINDINGS, parse_finding_labels
from cxrviewer.trainer.data import DataSource, open_source
from tests.conftest import REPO

SAMPLES = REPO / "resources" / "samples"
NAN = np.nan


def _png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(size, 128, np.uint8))
    return path


def _patient_disjoint(source: DataSource) -> None:
    owners: dict[str, set[str]] = {}
    for r in source.records:
        owners.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in owners.values()), "a patient appears in two splits"


def _one_sentence(exc: Exception, name: str) -> None:
    text = str(exc)
    assert text.startswith(f"{name}: ") and text.endswith(".") and "\n" not in text, text


# --- store:DB ------------------------------------------------------------------------------------
@pytest.fixture
def store_db(tmp_path) -> Path:
    db = tmp_path / "reads.cxra"
    with AnnotationStore.open(db) as s:
        s.add_image("a.png", path=_png(tmp_path / "png" / "a.png"), patient_id="p1", study_uid="1.2.1",
                    rows=64, cols=48)
        s.add_image("b.png", path="png/b.png", patient_id="p1", rows=64, cols=48)  # relative to the store
        _png(tmp_path / "png" / "b.png")
        s.add_image("gone.png", path=tmp_path / "png" / "gone.png", patient_id="p2")
        s.add_image("nopath.png", patient_id="p3")
        s.add_image("bare.png", path=_png(tmp_path / "png" / "bare.png"))
        box = s.propose_box("a.png", "Effusion", (5, 10, 40, 60), model_name="m")
        s.correct_box(box, (6, 10, 40, 58), "dr.a")
        s.set_label("a.png", "Effusion", 0, "dr.b")  # the validated box says present: it wins
        s.set_label("a.png", "Mass", 0, "dr.a")
        s.set_label("a.png", "Fracture", 1, "dr.a")  # outside NIH's findings
        s.propose_box("a.png", "Nodule", (1, 1, 4, 4))  # a pure proposal says nothing
        gone = s.add_box("a.png", "Pneumothorax", (1, 1, 9, 9), "dr.a")
        s.delete_box(gone, "dr.a")
        s.add_box("b.png", "Infiltrate", (0, 0, 48, 64), "dr.a")
        s.set_label("b.png", "Cardiomegaly", 1, "dr.a")
        s.set_label("b.png", "Mass", 1, "dr.a")
        s.set_label("b.png", "Mass", None, "dr.b")  # cleared: unknown again
    return db


def test_store_source_records_labels_and_boxes(store_db):
    source = open_source(f"store:{store_db}", labels="nih14")
    assert source.kind == "store" and source.label_names == NIH_FINDINGS
    recs = {r.image_id: r for r in source.records}
    assert set(recs) == {"a.png", "b.png", "bare.png"}
    col = {n: k for k, n in enumerate(NIH_FINDINGS)}
    a, b, bare = recs["a.png"], recs["b.png"], recs["bare.png"]
    want_a = np.full(14, NAN, np.float32)
    want_a[col["Effusion"]], want_a[col["Mass"]] = 1, 0
    np.testing.assert_array_equal(a.labels, want_a)
    want_b = np.full(14, NAN, np.float32)
    want_b[col["Infiltration"]], want_b[col["Cardiomegaly"]] = 1, 1
    np.testing.assert_array_equal(b.labels, want_b)
    assert np.isnan(bare.labels).all() and bare.labels.dtype == np.float32
    assert a.boxes == [("Effusion", 6, 10, 40, 58)] and b.boxes == [("Infiltration", 0, 0, 48, 64)]
    assert (a.patient_id, a.study_id, b.study_id) == ("p1", "1.2.1", "b.png")
    assert b.path == store_db.parent / "png" / "b.png"
    assert bare.patient_id == "bare.png"  # no patient id: its own patient
    notes = " | ".join(source.notes)
    for part in ("1 store images skipped: their files are missing", "1 store images skipped: the store has no path",
                 "1 images have no validated box or label", "Fracture", "1 images without a patient id"):
        assert part in notes
    pixels = source.load(b)
    assert pixels.shape == (64, 48) and float(pixels.mean()) == 128.0


def test_store_source_maps_equivalent_names(store_db):
    source = open_source(f"store:{store_db}", labels=["Pleural Effusion", "Fracture", "Mass"])
    a = next(r for r in source.records if r.image_id == "a.png")
    np.testing.assert_array_equal(a.labels, [1, 1, 0])


def test_store_source_split_is_patient_disjoint_and_seeded(tmp_path):
    db = tmp_path / "many.cxra"
    with AnnotationStore.open(db) as s:
        for i in range(60):
            key = f"{i:03d}.png"
            s.add_image(key, path=_png(tmp_path / key, (8, 8)), patient_id=f"p{i % 20}")
            s.set_label(key, "Mass", i % 2, "dr.a")
    one, two = open_source(f"store:{db}", seed=3), open_source(f"store:{db}", seed=3)
    other = open_source(f"store:{db}", seed=4)
    _patient_disjoint(one)
    assert [r.split for r in one.records] == [r.split for r in two.records]
    assert [r.split for r in one.records] != [r.split for r in other.records]
    assert {r.split for r in one.records} == {"train", "val", "test"}
    assert len(one.subset("test").patients()) == 4  # 20% of 20 patients


def test_store_source_refuses_a_file_that_is_not_a_store(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("not a store\n")
    with pytest.raises(BadStore) as err:
        open_source(f"store:{bogus}")
    _one_sentence(err.value, "notes.db")
    assert bogus.read_text() == "not a store\n"
    with pytest.raises(MissingFile):
        open_source(f"store:{tmp_path / 'absent.cxra'}")


# --- dicom:FOLDER --------------------------------------------------------------------------------
@pytest.fixture
def dicom_folder(tmp_path) -> tuple[Path, list[dict]]:
    """The dicomized NIH samples copied into tmp_path, with their UIDs and NIH labels."""
    folder = tmp_path / "dicom"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.md"))
    facts = []
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        labels = parse_finding_labels(str(ds.ImageComments).removeprefix("NIH labels:").strip())
        facts.append({"uid": ds.SOPInstanceUID, "rel": path.relative_to(folder).as_posix(), "patient": ds.PatientID,
                      "study": ds.StudyInstanceUID, "view": ds.ViewPosition, "sex": ds.PatientSex, "labels": labels})
    assert len(facts) == 7
    return folder, facts


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_dicom_source_by_uid_with_finding_labels(dicom_folder):
    folder, facts = dicom_folder
    rows = [[f["uid"], "|".join(f["labels"]) or "No Finding"] for f in facts[1:]]  # the first has no row
    _write(folder / "labels.csv", ["SOPInstanceUID", "Finding Labels"], rows)
    source = open_source(f"dicom:{folder}", labels="nih14")
    assert source.kind == "dicom" and len(source) == 6
    recs = {r.image_id: r for r in source.records}
    assert facts[0]["uid"] not in recs
    for f in facts[1:]:
        r = recs[f["uid"]]
        np.testing.assert_array_equal(r.labels, [float(n in f["labels"]) for n in NIH_FINDINGS])
        assert (r.patient_id, r.study_id, r.view, r.sex) == (f["patient"], f["study"], f["view"], f["sex"])
        assert r.path == folder / f["rel"] and r.laterality == "" and r.boxes == []
    assert any("1 catalogued images skipped" in n for n in source.notes)
    _patient_disjoint(source)
    image = source.load_image(recs[facts[1]["uid"]])
    assert image.pixels.shape == (512, 512)


def test_dicom_source_by_path_with_finding_columns(dicom_folder, tmp_path):
    folder, facts = dicom_folder
    header = ["path", "PatientID", "Cardiomegaly", "Pleural Effusion", "Mass"]
    rows = [[f["rel"], f["patient"], "1" if "Cardiomegaly" in f["labels"] else "0",
             "1" if "Effusion" in f["labels"] else "", "-1" if f["patient"] == "574" else "0"] for f in facts]
    rows.append(["nowhere/x.dcm", "9", "1", "1", "1"])
    table = _write(tmp_path / "elsewhere.csv", header, rows)
    source = open_source(f"dicom:{folder}", labels="default8", table=table)
    assert len(source) == 7 and any("1 rows of elsewhere.csv match no catalogued image" in n for n in source.notes)
    col = {n: k for k, n in enumerate(source.label_names)}
    for f in facts:
        r = next(r for r in source.records if r.image_id == f["uid"])
        assert r.labels[col["Cardiomegaly"]] == float("Cardiomegaly" in f["labels"])
        effusion = r.labels[col["Effusion"]]  # the table's "Pleural Effusion" column
        assert effusion == 1.0 if "Effusion" in f["labels"] else np.isnan(effusion)
        assert np.isnan(r.labels[col["Mass"]]) if f["patient"] == "574" else r.labels[col["Mass"]] == 0.0
        assert np.isnan(r.labels[col["Nodule"]])  # no column: unknown
    shutil.copy(table, folder / "mine.csv")
    relative = open_source(f"dicom:{folder}", labels="default8", table="mine.csv")  # looked up in the folder
    np.testing.assert_array_equal(relative.label_matrix(), source.label_matrix())


def test_dicom_source_split_is_patient_disjoint(dicom_folder):
    folder, facts = dicom_folder
    _write(folder / "labels.csv", ["SOPInstanceUID", "Finding Labels"], [[f["uid"], ""] for f in facts])
    for seed in range(5):
        source = open_source(f"dicom:{folder}", seed=seed)
        _patient_disjoint(source)
        assert len({r.split for r in source.records if r.patient_id == "1"}) == 1


@pytest.mark.parametrize("header, row, problem", [
    (["Image", "Finding Labels"], ["x", "Mass"], "lacks a key column"),
    (["SOPInstanceUID", "Mass", "Kidney Stone"], ["1.2", "1", "0"], "Kidney Stone, which name no known finding"),
    (["SOPInstanceUID", "Finding Labels", "Mass"], ["1.2", "Mass", "1"], "both"),
    (["SOPInstanceUID", "Mass"], ["1.2", "maybe"], "holds 'maybe'"),
    (["SOPInstanceUID", "PatientID"], ["1.2", "7"], "no finding columns"),
    (["path", "Mass"], ["", "1"], "empty path"),
])
def test_malformed_dicom_tables_are_refused(dicom_folder, header, row, problem):
    folder, _ = dicom_folder
    _write(folder / "labels.csv", header, [row, row] if problem != "holds 'maybe'" else [row])
    with pytest.raises(BadLabels, match=problem) as err:
        open_source(f"dicom:{folder}")
    _one_sentence(err.value, "labels.csv")


def test_dicom_table_duplicates_and_absence(dicom_folder):
    folder, facts = dicom_folder
    _write(folder / "labels.csv", ["SOPInstanceUID", "Mass"], [[facts[0]["uid"], "1"], [facts[0]["uid"], "0"]])
    with pytest.raises(BadLabels, match="twice"):
        open_source(f"dicom:{folder}")
    (folder / "labels.csv").unlink()
    with pytest.raises(MissingFile, match="labels table") as err:
        open_source(f"dicom:{folder}")
    _one_sentence(err.value, "labels.csv")
