"""`cxrviewer info`, `render` and `dicomize` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cxrviewer.cli import main
from cxrviewer.imaging.voi import to_display
from cxrviewer.io import load_image
from tests.conftest import REPO, dicom_testfile


def test_info_json_reports_the_facts(capsys):
    path = dicom_testfile("RG1_J2KR.dcm")
    assert main(["info", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["rows"] == 1955 and facts["columns"] == 1841 and facts["bits_stored"] == 15
    assert facts["photometric"] == "MONOCHROME1" and facts["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert facts["pixel_spacing_mm"] is None and facts["windows"][0] == {
        "center": 15000.0, "width": 30000.0, "function": "LINEAR", "explanation": ""}
    assert facts["patient_id"] == "9RG1" and facts["modality"] == "CR"


def test_info_on_many_files_reports_bad_ones_and_exits_non_zero(capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    status = main(["info", str(dicom_testfile("CT_small.dcm")), str(bad), "--json"])
    captured = capsys.readouterr()
    assert status == 1
    results = json.loads(captured.out)
    assert results[0]["modality"] == "CT" and results[1]["error"].startswith("notes.txt: ")
    assert captured.err.strip() == "cxrviewer: notes.txt: this is not a DICOM file or an image format cxrviewer reads."


def test_info_on_a_non_image_object(capsys):
    assert main(["info", str(dicom_testfile("rtplan.dcm"))]) == 1
    assert "rtplan.dcm: this is a radiotherapy object (RT), not an image." in capsys.readouterr().err


def test_render_defaults_to_the_files_voi(tmp_path):
    path = dicom_testfile("RG1_UNCR.dcm")
    out = tmp_path / "rg1.png"
    assert main(["render", str(path), str(out)]) == 0
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), to_display(load_image(path)))


def test_render_with_window_size_and_no_invert(tmp_path):
    path = dicom_testfile("RG1_UNCR.dcm")
    out = tmp_path / "small.png"
    assert main(["render", str(path), str(out), "--window", "12000", "8000", "--size", "256", "--no-invert"]) == 0
    picture = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert picture.shape == (256, 241)
    # Not inverted: dense bone (high CR values) is bright in this picture.
    image = load_image(path)
    small = cv2.resize(image.pixels, (241, 256), interpolation=cv2.INTER_AREA)
    assert picture[small > np.percentile(small, 95)].mean() > picture.mean()


def test_render_errors_are_one_sentence(tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing.dcm"), str(tmp_path / "o.png")]) == 1
    assert capsys.readouterr().err.strip() == "cxrviewer: missing.dcm: the file does not exist."
    assert main(["render", str(dicom_testfile("CT_small.dcm")), str(tmp_path / "no" / "dir" / "o.png")]) == 1
    assert "cannot write the PNG" in capsys.readouterr().err


def test_dicomize_command(tmp_path, nih_sample, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("00000001_000.png", "00000001_001.png"):
        (images / name).write_bytes((nih_sample / "images" / name).read_bytes())
    status = main(["dicomize", "--labels", str(nih_sample / "Data_Entry_2017_v2020.csv"), str(images),
                   str(tmp_path / "out")])
    assert status == 0 and "wrote 2 DICOM file(s)" in capsys.readouterr().out
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 2 and load_image(written[0]).meta.patient_id == "1"


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "cxrviewer", "--version"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("cxrviewer ")


@pytest.mark.parametrize("argv", [["info"], ["render", "only-one-arg"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
