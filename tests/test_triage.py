"""Batch triage: batched inference equal to the per-image analysis, errors last, cancel, CSV."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cxrviewer import analysis
from cxrviewer.analysis import Analyzer
from cxrviewer.io import load_image
from cxrviewer.models import create_model
from cxrviewer.triage import CSV_FIXED, TriageRow, WorklistError, sort_rows, triage, write_csv
from tests.conftest import REPO, dicom_testfile

SAMPLES_DIR = REPO / "resources" / "samples"
SAMPLES = sorted(SAMPLES_DIR.rglob("*.dcm"))


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    # One intra-op thread: on a shared 2-core machine two OpenMP threads spin against each other
    # (a 64-px resnet18 batch takes 1.3 s instead of 0.05 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, spec = create_model("resnet18", input_size=(64, 64))
    yield Analyzer(model, spec, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def counted(analyzer, monkeypatch):
    """Count forward passes and batch sizes; the full per-image analysis must not run."""
    calls: list[int] = []
    handle = analyzer.model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))

    def forbidden(*args, **kwargs):
        raise AssertionError("triage must not run the full analysis")

    monkeypatch.setattr(analysis, "analyze_image", forbidden)
    yield calls
    handle.remove()


def _broken(tmp_path: Path) -> list[Path]:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(SAMPLES[0].read_bytes()[:-5000])
    return [cut, dicom_testfile("rtplan.dcm"), tmp_path / "missing.dcm"]


def test_folder_scores_equal_the_per_image_analysis_and_are_sorted(analyzer, counted, tmp_path):
    rows = triage(SAMPLES_DIR, analyzer, batch_size=4)
    assert counted == [4, 3]  # two batched forward passes, no per-image ones
    assert sorted(r.path for r in rows) == SAMPLES
    tops = [r.top_probability for r in rows]
    assert tops == sorted(tops, reverse=True) and all(r.ok for r in rows)
    spec = analyzer.spec
    reference = {}
    with torch.inference_mode():  # the per-image reference: one image, one forward pass
        for path in SAMPLES:
            reference[path] = torch.sigmoid(analyzer.model(spec.preprocess(load_image(path)))).numpy()[0]
    for row in rows:
        assert list(row.probabilities) == list(spec.targets)
        assert row.probabilities == pytest.approx(dict(zip(spec.targets, reference[row.path].tolist())), abs=1e-5)
        assert row.top_probability == max(row.probabilities.values())
        assert row.probabilities[row.top_finding] == row.top_probability
        assert row.positives == tuple(sorted((n for n, p in row.probabilities.items() if p >= 0.5),
                                             key=lambda n: -row.probabilities[n]))
    by_name = {r.path.name: r for r in rows}
    assert by_name["00000574_000.dcm"].patient_id == "574" and by_name["00000001_002.dcm"].study_date == "20000103"


def test_threshold_overrides_decide_the_positives(analyzer, counted):
    spec = analyzer.spec
    rows = triage(SAMPLES[:3], analyzer)
    median = sorted(r.probabilities["Mass"] for r in rows)[1]
    over = triage(SAMPLES[:3], analyzer, thresholds={"Mass": median, **{t: 1.0 for t in spec.targets if t != "Mass"}})
    assert [("Mass" in r.positives) for r in over] == [r.probabilities["Mass"] >= median for r in over]
    assert sum("Mass" in r.positives for r in over) == 2
    assert all(set(r.positives) <= {"Mass"} for r in over)
    everything = triage(SAMPLES[:1], analyzer, thresholds={t: 0.0 for t in spec.targets})
    assert set(everything[0].positives) == set(spec.targets)


def test_unreadable_files_become_error_rows_at_the_end(analyzer, counted, tmp_path):
    bad = _broken(tmp_path)
    rows = triage([bad[0], SAMPLES[0], bad[1], SAMPLES[1], bad[2]], analyzer, batch_size=2)
    assert [r.ok for r in rows] == [True, True, False, False, False]
    errors = {r.path.name: r.error for r in rows if not r.ok}
    assert errors["missing.dcm"] == "missing.dcm: the file does not exist."
    assert errors["rtplan.dcm"].startswith("rtplan.dcm: ") and "not an image" in errors["rtplan.dcm"]
    assert errors["cut.dcm"].startswith("cut.dcm: ")
    assert [r.path.name for r in rows[2:]] == sorted(errors, key=lambda n: str(next(p for p in bad if p.name == n)))
    assert all(r.top_probability is None and r.probabilities == {} for r in rows[2:])
    assert sum(counted) == 2  # only the readable images reached the model


def test_a_folder_with_bad_files_lists_the_catalog_errors(analyzer, tmp_path):
    folder = tmp_path / "studies"
    shutil.copytree(SAMPLES_DIR / "1", folder / "1")
    shutil.copyfile(dicom_testfile("rtplan.dcm"), folder / "plan.dcm")
    (folder / "junk.dcm").write_bytes(b"DICM? no." * 20)
    rows = triage(folder, analyzer)
    assert [r.ok for r in rows] == [True, True, True, False, False]
    assert {r.path.name for r in rows if not r.ok} == {"plan.dcm", "junk.dcm"}
    assert all(r.error.startswith(f"{r.path.name}: ") for r in rows if not r.ok)


def test_progress_and_cancel(analyzer, counted):
    seen: list[tuple[int, int]] = []
    rows = triage(SAMPLES, analyzer, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 7), (2, 7), (4, 7), (6, 7), (7, 7)] and len(rows) == 7
    counted.clear()
    stop = {"now": False}

    def progress(done: int, total: int) -> None:
        stop["now"] = done >= 2

    rows = triage(SAMPLES, analyzer, batch_size=2, progress=progress, cancel=lambda: stop["now"])
    assert len(rows) == 2 and counted == [2]
    assert triage(SAMPLES, analyzer, cancel=lambda: True) == []
    assert triage([], analyzer) == []


def test_write_csv_round_trip(analyzer, tmp_path):
    rows = triage([*SAMPLES[:2], tmp_path / "missing.dcm"], analyzer)
    out = write_csv(rows, tmp_path / "out" / "worklist.csv")
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [*CSV_FIXED, *(f"p_{t}" for t in analyzer.spec.targets)]
    assert [t["path"] for t in table] == [str(r.path) for r in rows]
    first = table[0]
    assert float(first["top_probability"]) == pytest.approx(rows[0].top_probability, abs=1e-6)
    assert first["patient_id"] == "1" and first["error"] == ""
    assert first["positive_findings"].split("|") == list(rows[0].positives) or not rows[0].positives
    assert float(first["p_Mass"]) == pytest.approx(rows[0].probabilities["Mass"], abs=1e-6)
    last = table[-1]
    assert last["error"] == "missing.dcm: the file does not exist." and last["top_probability"] == ""
    assert last["p_Mass"] == ""
    with pytest.raises(WorklistError, match=r"^out: the worklist cannot be written"):
        write_csv(rows, tmp_path / "out")  # a folder


def test_sort_rows_puts_errors_last():
    rows = [TriageRow(Path("e"), error="e: bad."), TriageRow(Path("b"), top_probability=0.2),
            TriageRow(Path("a"), top_probability=0.9), TriageRow(Path("c"), top_probability=0.2)]
    assert [r.path.name for r in sort_rows(rows)] == ["a", "b", "c", "e"]


def test_import_is_light():
    code = "import sys, cxrviewer.triage; print(sorted(m for m in ('torch', 'PySide6') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
