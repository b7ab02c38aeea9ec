"""The patient/study catalog: tree, errors, duplicates, incremental rescans, persistence, search."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import dicom_testfile
from cxrviewer.io import catalog as catalog_mod
from cxrviewer.io import catalog_scan
from cxrviewer.io.catalog import UNKNOWN_PATIENT, Catalog, default_index_path, is_synthetic
from cxrviewer.io.catalog_db import SCHEMA_VERSION

NIH_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih-sample"


def write_dicom(path: Path, patient: str | None, study: str | None, series: str | None, *,
                sop: str | None = None, name: str = "", date: str = "20240101", instance: int = 1,
                preamble: bool = True) -> str:
    """A copy of MR_small with new identifiers (None deletes the element); returns its SOP UID."""
    ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
    sop = sop or generate_uid()
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    for keyword, value in (("PatientID", patient), ("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    ds.PatientName = name or f"Test^{patient}"
    ds.StudyDate, ds.InstanceNumber = date, instance
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare data set: no preamble, no "DICM", no file meta (implicit VR little endian)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return sop


def copy_testfile(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dicom_testfile(name), dest)
    return dest


def find_series(cat: Catalog, patient_id: str):
    (patient,) = [p for p in cat.patients() if p.patient_id == patient_id]
    return patient


@pytest.fixture
def mixed(tmp_path: Path) -> dict[str, object]:
    """A folder with every kind of file the catalog meets."""
    root = tmp_path / "archive"
    s1, s2, s3 = generate_uid(), generate_uid(), generate_uid()
    se1, se2, se3 = generate_uid(), generate_uid(), generate_uid()
    kept_uid = write_dicom(root / "p1/study1/a.dcm", "PAT1", s1, se1, name="Doe^Jane", date="20200105", instance=2)
    write_dicom(root / "p1/study1/b", "PAT1", s1, se1, date="20200105", instance=1)  # no suffix
    write_dicom(root / "p1/study2/c.dcm", "PAT1", s2, se2, date="20210310")
    write_dicom(root / "p2/d.dcm", "PAT2", s3, se3, name="Roe^Richard", date="20190101")
    write_dicom(root / "raw/bare_dataset", "PAT3", generate_uid(), generate_uid(), preamble=False)
    write_dicom(root / "anon/x.dcm", None, None, None)  # no patient, study or series
    write_dicom(root / "anon/y.dcm", None, None, None)
    write_dicom(root / "zz/dup.dcm", "PAT1", s1, se1, sop=kept_uid)  # duplicate SOP Instance UID
    copy_testfile("CT_small.dcm", root / "ct/CT_small.dcm")
    copy_testfile("test-SR.dcm", root / "other/test-SR.dcm")
    copy_testfile("rtplan.dcm", root / "other/rtplan.dcm")
    copy_testfile("no_meta.dcm", root / "other/no_meta.dcm")
    ct = dicom_testfile("CT_small.dcm").read_bytes()
    (root / "bad").mkdir()
    (root / "bad/truncated_pixels.dcm").write_bytes(ct[:-5000])
    (root / "bad/truncated_header.dcm").write_bytes(ct[:1000])
    rng = np.random.default_rng(7)
    noise = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    noise[0:2] = b"\x41\x41"  # never a plausible DICOM group
    (root / "bad/noise.dcm").write_bytes(bytes(noise))
    (root / "bad/noise").write_bytes(bytes(noise))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.dcm").write_bytes(b"skipped")
    return {"root": root, "kept_uid": kept_uid}


def test_tree_errors_duplicates(mixed, tmp_path):
    root = mixed["root"]
    cat = Catalog.open(root, tmp_path / "index.sqlite")
    ids = [p.patient_id for p in cat.patients()]
    assert ids == ["1CT1", "PAT1", "PAT2", "PAT3", UNKNOWN_PATIENT]

    pat1 = find_series(cat, "PAT1")
    assert pat1.name == "Doe^Jane"
    assert [s.date for s in pat1.studies] == ["20200105", "20210310"]
    (series,) = pat1.studies[0].series
    assert [i.path.name for i in series.images] == ["b", "a.dcm"]  # by InstanceNumber
    assert series.modality == "MR" and series.images[0].rows == 64 and series.images[0].columns == 64
    assert series.images[0].transfer_syntax == pydicom.uid.ExplicitVRLittleEndian

    bare = find_series(cat, "PAT3").studies[0].series[0].images[0]
    assert bare.path.name == "bare_dataset" and bare.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian

    unknown = cat.patients()[-1]
    assert unknown.unknown
    (study,) = unknown.studies
    assert is_synthetic(study.study_uid) and "anon" in study.study_uid
    assert is_synthetic(study.series[0].series_uid)
    assert sorted(i.path.name for i in study.series[0].images) == ["x.dcm", "y.dcm"]

    assert cat.duplicates == [(root / "zz/dup.dcm", mixed["kept_uid"], root / "p1/study1/a.dcm")]
    paths = [i.path for i in cat.images()]
    assert len(paths) == len(set(paths)) == 8
    assert root / "zz/dup.dcm" not in paths

    errors = dict(cat.errors)
    assert set(errors) == {root / f for f in (
        "other/test-SR.dcm", "other/rtplan.dcm", "other/no_meta.dcm", "bad/truncated_pixels.dcm",
        "bad/truncated_header.dcm", "bad/noise.dcm", "bad/noise")}
    assert "structured report" in errors[root / "other/test-SR.dcm"]
    assert "radiotherapy" in errors[root / "other/rtplan.dcm"]
    assert "truncated" in errors[root / "bad/truncated_pixels.dcm"]
    assert "truncated" in errors[root / "bad/truncated_header.dcm"]
    assert "not a DICOM file" in errors[root / "bad/noise"]
    for path, sentence in cat.errors:  # one sentence naming the file
        assert sentence.startswith(f"{path.name}: ") and sentence.endswith(".") and "\n" not in sentence
    cat.close()


def test_real_radiograph_rg1(tmp_path):
    copy_testfile("RG1_UNCR.dcm", tmp_path / "cr/RG1_UNCR.dcm")
    with Catalog.open(tmp_path / "cr", tmp_path / "i.sqlite") as cat:
        (img,) = cat.images()
        assert (img.rows, img.columns, img.photometric) == (1955, 1841, "MONOCHROME1")
        assert cat.patients()[0].patient_id == "9RG1" and not cat.errors


def test_incremental_rescan(mixed, tmp_path):
    root = mixed["root"]
    cat = Catalog.open(root, tmp_path / "index.sqlite")
    n_files = len(cat.images()) + len(cat.errors) + len(cat.duplicates)
    write_dicom(root / "p2/new.dcm", "PAT2", generate_uid(), generate_uid(), date="20220202")
    write_dicom(root / "p1/study2/c.dcm", "PAT9", generate_uid(), generate_uid(), name="Moved^Patient")
    (root / "p2/d.dcm").unlink()
    report = cat.scan()
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, n_files - 2)
    assert [s.date for s in find_series(cat, "PAT2").studies] == ["20220202"]
    assert [s.date for s in find_series(cat, "PAT1").studies] == ["20200105"]
    assert find_series(cat, "PAT9").name == "Moved^Patient"
    report = cat.scan()
    assert (report.added, report.changed, report.removed, report.unchanged) == (0, 0, 0, n_files)
    cat.close()


def test_reopen_reads_no_headers(mixed, tmp_path, monkeypatch):
    root, index = mixed["root"], tmp_path / "index.sqlite"
    with Catalog.open(root, index) as cat:
        before = (cat.patients(), cat.errors, cat.duplicates)

    def fail(*args, **kwargs):
        raise AssertionError("a header was read on reopen")

    monkeypatch.setattr(catalog_scan, "read_record", fail)
    for rescan in (True, False):
        with Catalog.open(root, index, rescan=rescan) as cat:
            assert (cat.patients(), cat.errors, cat.duplicates) == before


def test_rescan_false_trusts_the_index(mixed, tmp_path):
    root, index = mixed["root"], tmp_path / "index.sqlite"
    Catalog.open(root, index).close()
    (root / "p2/d.dcm").unlink()
    with Catalog.open(root, index, rescan=False) as cat:
        assert "PAT2" in [p.patient_id for p in cat.patients()]
        assert cat.scan().removed == 1
        assert "PAT2" not in [p.patient_id for p in cat.patients()]


@pytest.mark.parametrize("damage", ["garbage", "pages", "schema", "empty"])
def test_bad_index_is_rebuilt(mixed, tmp_path, damage):
    root, index = mixed["root"], tmp_path / "index.sqlite"
    with Catalog.open(root, index) as cat:
        expected = cat.patients()
    if damage == "garbage":
        index.write_bytes(os.urandom(8192))
        for suffix in ("-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
    elif damage == "pages":  # a valid header, damaged pages behind it
        data = bytearray(index.read_bytes())
        data[4096:] = os.urandom(len(data) - 4096)
        index.write_bytes(bytes(data))
    elif damage == "schema":
        with sqlite3.connect(index) as conn:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    else:
        index.write_bytes(b"")
    with Catalog.open(root, index) as cat:
        assert cat.patients() == expected
    with sqlite3.connect(index) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_index_location(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "data"
    write_dicom(folder / "a.dcm", "P", generate_uid(), generate_uid())
    with Catalog.open(folder) as cat:
        assert cat.index_path == default_index_path(folder)
        assert cat.index_path.parent == tmp_path / "cache" / "catalogs"
        assert cat.index_path.is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["a.dcm"]  # nothing written beside the data


def test_unwritable_index_location_falls_back_to_memory(tmp_path):
    write_dicom(tmp_path / "data/a.dcm", "P", generate_uid(), generate_uid())
    (tmp_path / "blocker").write_text("a file where the index folder should be")
    with Catalog.open(tmp_path / "data", tmp_path / "blocker" / "index.sqlite") as cat:
        assert cat.index_path is None and len(cat.images()) == 1 and not cat.errors


def test_index_inside_folder_is_not_scanned(tmp_path):
    write_dicom(tmp_path / "a.dcm", "P", generate_uid(), generate_uid())
    with Catalog.open(tmp_path, tmp_path / "catalog.idx") as cat:
        cat.scan()
        assert not cat.errors and len(cat.images()) == 1


def test_search(mixed, tmp_path):
    with Catalog.open(mixed["root"], tmp_path / "i.sqlite") as cat:
        assert [p.patient_id for p in cat.search("pat1")] == ["PAT1"]
        assert [p.patient_id for p in cat.search("roe^")] == ["PAT2"]
        (hit,) = cat.search("202103")
        assert hit.patient_id == "PAT1" and [s.date for s in hit.studies] == ["20210310"]
        assert cat.search("no such thing") == []
        assert len(cat.search("")) == len(cat.patients())


def test_progress_and_cancel(mixed, tmp_path):
    calls: list[tuple[int, int]] = []
    with Catalog.open(mixed["root"], tmp_path / "i.sqlite", progress=lambda d, t: calls.append((d, t))) as cat:
        total = calls[-1][1]
        assert calls[0] == (0, total) and calls[-1] == (total, total) and total == 16  # 8 images, 1 duplicate, 7 errors

    def cancel(done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Catalog.open(mixed["root"], tmp_path / "j.sqlite", progress=cancel)
    with Catalog.open(mixed["root"], tmp_path / "j.sqlite") as cat:
        assert len(cat.images()) == 8


def test_process_pool_gives_the_same_catalog(mixed, tmp_path, monkeypatch):
    with Catalog.open(mixed["root"], tmp_path / "seq.sqlite", workers=1) as cat:
        expected = (cat.patients(), cat.errors, cat.duplicates)
    monkeypatch.setattr(catalog_mod, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(catalog_mod, "_CHUNK", 3)
    monkeypatch.setattr("cxrviewer.parallel.QT_MODULES", ())  # pytest-qt imports PySide6; no Qt threads run here
    if catalog_mod._pool_context(100) is None:
        pytest.skip("forking is not possible or not safe in this test process")
    pids = tmp_path / "pids"
    pids.mkdir()
    real = catalog_scan.read_record

    def traced(*args, **kwargs):
        (pids / str(os.getpid())).touch()
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog_scan, "read_record", traced)  # forked workers inherit the patch
    with Catalog.open(mixed["root"], tmp_path / "pool.sqlite", workers=2) as cat:
        assert (cat.patients(), cat.errors, cat.duplicates) == expected
    assert str(os.getpid()) not in {p.name for p in pids.iterdir()}  # read in worker processes


def test_raster_without_table(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    cv2.imwrite(str(folder / "wide.png"), np.zeros((20, 30), np.uint8))
    cv2.imwrite(str(folder / "colour.jpg"), np.zeros((40, 50, 3), np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4)
    with Catalog.open(folder, tmp_path / "i.sqlite") as cat:
        (patient,) = cat.patients()
        assert patient.patient_id == UNKNOWN_PATIENT
        (study,) = patient.studies
        images = {i.path.name: i for i in study.series[0].images}
        assert (images["wide.png"].rows, images["wide.png"].columns) == (20, 30)
        assert images["wide.png"].photometric == "MONOCHROME2" and images["wide.png"].source_format == "png"
        assert (images["colour.jpg"].rows, images["colour.jpg"].columns) == (40, 50)
        assert images["colour.jpg"].photometric == "RGB"
        assert [p.name for p, _ in cat.errors] == ["broken.png"]


@pytest.fixture
def nih_folder(tmp_path: Path) -> Path:
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE}")
    folder = tmp_path / "nih"
    (folder / "images").mkdir(parents=True)
    names = ["00000001_000.png", "00000001_001.png", "00000001_002.png", "00000002_000.png"]
    for name in names:
        shutil.copyfile(NIH_SAMPLE / "images" / name, folder / "images" / name)
    shutil.copyfile(NIH_SAMPLE / "Data_Entry_2017_v2020.csv", folder / "Data_Entry_2017_v2020.csv")
    return folder


def test_nih_pngs_with_labels(nih_folder, tmp_path):
    with Catalog.open(nih_folder, tmp_path / "i.sqlite") as cat:
        assert not cat.errors
        assert [p.patient_id for p in cat.patients()] == ["1", "2"]
        p1 = cat.patients()[0]
        assert p1.sex == "M" and len(p1.studies) == 3
        assert [s.description for s in p1.studies] == ["Follow-up #0", "Follow-up #1", "Follow-up #2"]
        assert all(is_synthetic(s.study_uid) for s in p1.studies)
        img = p1.studies[1].series[0].images[0]
        assert img.labels == ("Cardiomegaly", "Emphysema") and img.view_position == "PA"
        assert (img.rows, img.columns) == (512, 512) and img.source_format == "png"
        assert [p.patient_id for p in cat.search("emphysema")] == ["1"]
        assert sum(len(se.images) for s in cat.search("EMPHYSEMA")[0].studies for se in s.series) == 1


def test_labels_table_change_relabels(nih_folder, tmp_path):
    index = tmp_path / "i.sqlite"
    Catalog.open(nih_folder, index).close()
    table = nih_folder / "Data_Entry_2017_v2020.csv"
    text = table.read_text().replace("00000002_000.png,No Finding", "00000002_000.png,Hernia")
    assert "00000002_000.png,Hernia" in text
    table.write_text(text)
    with Catalog.open(nih_folder, index) as cat:
        assert [p.patient_id for p in cat.search("hernia")] == ["2"]
        assert cat.scan().changed == 0


def test_missing_folder_is_a_typed_error(tmp_path):
    from cxrviewer.errors import MissingFile

    with pytest.raises(MissingFile, match="does not exist"):
        Catalog.open(tmp_path / "nope")
