"""`cxrviewer.io.dicomize` and the shipped `resources/samples/`.

Real-data tests use ../shared/data/nih-sample and skip when it is absent; the dciodvfy checks
skip when dicom3tools is not installed. Bad-input tests use synthetic PNGs and a synthetic table.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from cxrviewer.errors import MissingFile
from cxrviewer.io import dicomize as dz
from cxrviewer.io.dicomize import DicomizeReport, dicomize
from cxrviewer.io.labels import LabelRow

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
NIH = DATA / "nih-sample"
TABLE = NIH / "Data_Entry_2017_v2020.csv"
SAMPLES_DIR = REPO / "resources" / "samples"
# Patient 1: follow-ups 0 and 1 (PA, 57 and 58, M); patient 1511: AP, 26, M, follow-up 2.
REAL = ["00000001_000.png", "00000001_001.png", "00001511_000.png"]

needs_data = pytest.mark.skipif(not TABLE.is_file(), reason=f"NIH sample data not found at {NIH}")
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (dicom3tools) is not installed")
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) dciodvfy prints for `path`."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [ln for ln in lines if "Error" in ln], [ln for ln in lines if "Warning" in ln]


def by_name(report: DicomizeReport) -> dict[str, pydicom.Dataset]:
    return {p.stem: pydicom.dcmread(p) for p in report.written}


@pytest.fixture(scope="module")
def real_dx(tmp_path_factory: pytest.TempPathFactory) -> DicomizeReport:
    if not TABLE.is_file():
        pytest.skip(f"NIH sample data not found at {NIH}")
    return dicomize(NIH / "images", tmp_path_factory.mktemp("dx"), TABLE, names=REAL)


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of small PNGs and an NIH-format table describing some of them."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    cv2.imwrite(str(images / "00000010_000.png"), grey)
    cv2.imwrite(str(images / "00000010_001.png"), cv2.merge([grey, grey, grey]))  # RGB-stored grey
    cv2.imwrite(str(images / "00000011_000.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "00000099_000.png"), grey)  # not in the table
    good = (images / "00000010_000.png").read_bytes()
    (images / "00000012_000.png").write_bytes(good[: len(good) // 2])  # truncated
    table = tmp_path / "Data_Entry_2017_v2020.csv"
    table.write_text(HEADER + "".join(
        f"{name}.png,{labels},{fu},{pid},{age},{sex},{view},640,480,0.2,0.1\n"
        for name, labels, fu, pid, age, sex, view in [
            ("00000010_000", "Mass", 0, 10, 7, "F", "AP"),
            ("00000010_001", "No Finding", 1, 10, 8, "F", "PA"),
            ("00000011_000", "Nodule", 0, 11, 40, "M", "PA"),
            ("00000012_000", "Effusion", 0, 12, 50, "M", "PA"),
            ("00000013_000", "Effusion", 0, 13, 50, "M", "PA"),  # no PNG
        ]), encoding="utf-8")
    return images, table


# --- validity -----------------------------------------------------------------------------------

@needs_data
@needs_dciodvfy
@pytest.mark.parametrize("modality", ["DX", "SC"])
def test_real_pngs_pass_dciodvfy(tmp_path: Path, modality: str) -> None:
    report = dicomize(NIH / "images", tmp_path, TABLE, modality=modality, names=REAL)
    assert len(report.written) == len(REAL) and not report.skipped
    for path in report.written:
        errors, _ = dciodvfy_errors(path)
        assert not errors, f"{path.name}: {errors}"
        assert pydicom.dcmread(path).SOPClassUID == dz.SOP_CLASSES[modality]


@needs_data
def test_file_format(real_dx: DicomizeReport) -> None:
    ds = pydicom.dcmread(real_dx.written[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.preamble == b"\0" * 128
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored) == ("MONOCHROME2", 8, 8)
    assert ds.StudyInstanceUID.startswith("2.25.") and ds.SOPInstanceUID.startswith("2.25.")


# --- content ------------------------------------------------------------------------------------

@needs_data
def test_pixels_round_trip(real_dx: DicomizeReport) -> None:
    for path in real_dx.written:
        png = cv2.imread(str(NIH / "images" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, png)


@needs_data
def test_patient_attributes(real_dx: DicomizeReport) -> None:
    ds = by_name(real_dx)
    first, ap = ds["00000001_000"], ds["00001511_000"]
    assert (first.PatientID, str(first.PatientName), first.PatientSex, first.PatientAge) == ("1", "NIH^1", "M", "057Y")
    assert (first.ViewPosition, first.BodyPartExamined) == ("PA", "CHEST")
    assert (ap.PatientAge, ap.ViewPosition, ap.StudyID) == ("026Y", "AP", "2")
    assert first.ImageComments == "NIH labels: Cardiomegaly"
    assert ds["00000001_001"].ImageComments == "NIH labels: Cardiomegaly|Emphysema"
    assert "00000001_000.png" in first.DerivationDescription


@needs_data
def test_imager_pixel_spacing_is_row_column(real_dx: DicomizeReport) -> None:
    ap = by_name(real_dx)["00001511_000"]  # 3056 wide x 2544 high at 0.139 mm, now 512x512
    assert [float(v) for v in ap.ImagerPixelSpacing] == pytest.approx([0.139 * 2544 / 512, 0.139 * 3056 / 512], rel=1e-5)


@needs_data
def test_one_study_per_follow_up(real_dx: DicomizeReport) -> None:
    ds = by_name(real_dx)
    a, b = ds["00000001_000"], ds["00000001_001"]
    assert a.PatientID == b.PatientID
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    assert (a.StudyID, b.StudyID) == ("0", "1") and a.StudyDate < b.StudyDate
    studies = {d.StudyInstanceUID for d in ds.values() if d.PatientID == "1"}
    assert len(studies) == 2
    assert {p.relative_to(p.parents[2]).as_posix() for p in real_dx.written} == {
        "1/0/00000001_000.dcm", "1/1/00000001_001.dcm", "1511/2/00001511_000.dcm"}


@needs_data
def test_uids_and_bytes_are_deterministic(tmp_path: Path, real_dx: DicomizeReport) -> None:
    again = dicomize(NIH / "images", tmp_path, TABLE, names=REAL)
    for old, new in zip(real_dx.written, again.written):
        assert old.read_bytes() == new.read_bytes()
    # Pinned: the same identifiers give the same UIDs on every machine and pydicom version.
    assert by_name(real_dx)["00000001_000"].StudyInstanceUID == dz.uid_for("study", "1", 0) \
        == "2.25.269874855993762203182551952602772602333"
    sc = by_name(dicomize(NIH / "images", tmp_path / "sc", TABLE, modality="SC", names=REAL[:1]))
    dx = by_name(real_dx)["00000001_000"]
    assert sc["00000001_000"].StudyInstanceUID == dx.StudyInstanceUID
    assert sc["00000001_000"].SOPInstanceUID != dx.SOPInstanceUID


# --- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_are_skipped_not_raised(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    images, table = synthetic
    calls: list[tuple[int, int]] = []
    report = dicomize(images, tmp_path / "out", table, progress=lambda d, n: calls.append((d, n)))
    assert sorted(p.name for p in report.written) == ["00000010_000.dcm", "00000010_001.dcm"]
    reasons = {p.name: r for p, r in report.skipped}
    assert set(reasons) == {"00000011_000.png", "00000012_000.png", "00000099_000.png"}
    assert "not in the labels table" in reasons["00000099_000.png"]
    assert "colour" in reasons["00000011_000.png"]
    assert "not a readable PNG" in reasons["00000012_000.png"]
    for name, reason in reasons.items():
        assert reason.startswith(name + ":") and reason.endswith(".")
    assert calls[-1] == (5, 5) and len(calls) == 5


def test_named_missing_file_is_skipped(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    images, table = synthetic
    report = dicomize(images, tmp_path, table, names=["00000013_000.png", "00000010_000.png"])
    assert [p.name for p in report.written] == ["00000010_000.dcm"]
    assert report.skipped == [(images / "00000013_000.png", "00000013_000.png: the file does not exist.")]


def test_rgb_grey_and_spacing(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    images, table = synthetic
    report = dicomize(images, tmp_path, table, names=["00000010_000.png", "00000010_001.png"])
    a, b = (pydicom.dcmread(p) for p in report.written)
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    assert [float(v) for v in a.ImagerPixelSpacing] == pytest.approx([0.1 * 480 / 48, 0.2 * 640 / 64])
    assert b.ImageComments == "NIH labels: No Finding"
    assert a.PatientAge == "007Y" and a.PatientSex == "F"


@pytest.mark.parametrize("modality", ["DX", "SC"])
@pytest.mark.parametrize("shape, view, size", [((48, 64), "AP", (640, 480)), ((47, 63), "", None)])
def test_cached_encoder_matches_dcmwrite(modality: str, shape: tuple[int, int], view: str,
                                         size: tuple[int, int] | None) -> None:
    row = LabelRow("00000020_003.png", ("Mass",), 3, "20", 61, "M", view, size, (0.2, 0.1) if size else None)
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dz.build_dataset(Path("x.png"), row, pixels, modality=modality), enforce_file_format=True)
    assert dz.encode_file(Path("x.png"), row, pixels, modality=modality) == buffer.getvalue()


def test_worker_processes_give_the_same_files(synthetic: tuple[Path, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    images, table = synthetic
    threaded = dicomize(images, tmp_path / "threads", table)
    monkeypatch.setattr(dz, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(dz, "_worker_count", lambda: 2)
    pooled = dicomize(images, tmp_path / "pooled", table)
    assert [p.name for p in pooled.written] == [p.name for p in threaded.written]
    assert [r for _, r in pooled.skipped] == [r for _, r in threaded.skipped]
    for a, b in zip(threaded.written, pooled.written):
        assert a.read_bytes() == b.read_bytes()


def test_missing_folder_or_table_raises(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    images, table = synthetic
    with pytest.raises(MissingFile, match="images folder"):
        dicomize(tmp_path / "nope", tmp_path / "out", table)
    with pytest.raises(MissingFile, match="labels table"):
        dicomize(images, tmp_path / "out", tmp_path / "nope.csv")


@needs_dciodvfy
@pytest.mark.parametrize("modality", ["DX", "SC"])
def test_synthetic_pass_dciodvfy(synthetic: tuple[Path, Path], tmp_path: Path, modality: str) -> None:
    images, table = synthetic
    for path in dicomize(images, tmp_path, table, modality=modality).written:
        errors, _ = dciodvfy_errors(path)
        assert not errors, f"{path.name}: {errors}"


# --- shipped samples ----------------------------------------------------------------------------

def _load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "scripts" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_are_shipped_and_small() -> None:
    files = sorted(SAMPLES_DIR.rglob("*.dcm"))
    assert len(files) == len(_load_make_samples().SAMPLES)
    assert sum(p.stat().st_size for p in files) < 3_000_000
    datasets = [pydicom.dcmread(p) for p in files]
    findings = {f for d in datasets for f in d.ImageComments.removeprefix("NIH labels: ").split("|")}
    assert {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "No Finding"} <= findings
    assert {d.ViewPosition for d in datasets} == {"AP", "PA"}
    assert len({d.StudyInstanceUID for d in datasets if d.PatientID == "1"}) == 3
    assert (SAMPLES_DIR / "README.md").is_file()


@needs_dciodvfy
def test_samples_pass_dciodvfy() -> None:
    for path in sorted(SAMPLES_DIR.rglob("*.dcm")):
        errors, _ = dciodvfy_errors(path)
        assert not errors, f"{path.name}: {errors}"


@needs_data
def test_samples_regenerate_byte_identical(tmp_path: Path) -> None:
    _load_make_samples().make_samples(DATA, tmp_path)
    shipped = sorted(p.relative_to(SAMPLES_DIR) for p in SAMPLES_DIR.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh == shipped
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (SAMPLES_DIR / rel).read_bytes(), rel
