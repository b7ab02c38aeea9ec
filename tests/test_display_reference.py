"""Display conversion checked against two independent references on real files.

References: pydicom's `apply_modality_lut` + `apply_voi_lut`, and DCMTK's `dcmj2pnm`. Where the
references agree with each other (within 1 grey level), ours must be within 1 of both on every
pixel. DCMTK as packaged by Debian has no JPEG 2000 decoder, so RG1_J2KR is checked by decoding to
exactly the pixels of RG1_UNCR (it is the same radiograph, losslessly compressed).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxrviewer.imaging.voi import to_display
from cxrviewer.io import load_image
from tests.conftest import require_tool, dicom_testfile

FILES = ["RG1_UNCR.dcm", "vlut_04.dcm", "mlut_18.dcm", "CT_small.dcm", "MR_small.dcm", "JPEG-LL.dcm",
         "693_UNCR.dcm", "emri_small.dcm", "liver.dcm", "MR_small_RLE.dcm"]


def pydicom_reference(ds: pydicom.Dataset, window_index: int = 0) -> np.ndarray:
    """8-bit display values through pydicom, scaled from its output range the way DCMTK does."""
    stored = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        stored = stored[0]
    modality = apply_modality_lut(stored, ds)
    if "VOILUTSequence" in ds:
        y = apply_voi_lut(modality, ds, index=0, prefer_lut=True)
        y = y / (2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1) * 255
    elif "WindowCenter" in ds:
        y = apply_voi_lut(modality, ds, index=window_index, prefer_lut=False)
        lo, hi = pydicom_window_output_range(ds)
        y = (y - lo) / (hi - lo) * 255
    else:
        y = (modality - modality.min()) / max(float(modality.max() - modality.min()), 1e-9) * 255
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def pydicom_window_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The output range pydicom's `apply_windowing` maps a window onto (its own rules)."""
    if "ModalityLUTSequence" in ds:
        return 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    bits = int(ds.BitsStored)
    lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation == 1 else (0.0, 2.0**bits - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def dcmtk_reference(path: Path, tmp_path: Path, voi_flag: str) -> np.ndarray:
    out = tmp_path / (path.stem + ".png")
    result = subprocess.run([require_tool("dcmj2pnm"), *voi_flag.split(), "+on", str(path), str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return cv2.imread(str(out), cv2.IMREAD_UNCHANGED)


def voi_flag_for(ds: pydicom.Dataset, window_index: int = 0) -> str:
    if "VOILUTSequence" in ds:
        return "+Wl 1"
    if "WindowCenter" in ds:
        return f"+Wi {window_index + 1}"
    return "+Wm"


def assert_close_where_references_agree(ours: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray) -> None:
    assert ours.shape == ref_a.shape == ref_b.shape
    agree = np.abs(ref_a.astype(int) - ref_b.astype(int)) <= 1
    assert agree.mean() > 0.99, "the two references disagree on more than 1% of pixels"
    for ref in (ref_a, ref_b):
        diff = np.abs(ours.astype(int) - ref.astype(int))[agree]
        assert diff.max() <= 1, f"{(diff > 1).sum()} pixels differ by more than 1 grey level"


@pytest.mark.parametrize("name", FILES)
def test_default_display_matches_pydicom_and_dcmtk(name, tmp_path):
    path = dicom_testfile(name)
    ds = pydicom.dcmread(path)
    if ds.get("SamplesPerPixel", 1) != 1 or not str(ds.PhotometricInterpretation).startswith("MONOCHROME"):
        pytest.skip("colour file: the references render colour, we render luminance")
    ours = to_display(load_image(path))  # the first frame of a multi-frame object
    dcmtk = dcmtk_reference(path, tmp_path, voi_flag_for(ds) + " +F 1")
    assert_close_where_references_agree(ours, pydicom_reference(ds), dcmtk)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("window_index", [0, 1])
def test_every_voi_function_and_second_window_match_dcmtk(function, window_index, tmp_path):
    """RG1_UNCR (MONOCHROME1, 15 bits) rewritten with two windows and each VOI LUT Function."""
    ds = pydicom.dcmread(dicom_testfile("RG1_UNCR.dcm"))
    ds.VOILUTFunction = function
    ds.WindowCenter, ds.WindowWidth = [12000, 9000], [20000, 4001]
    path = tmp_path / f"rg1_{function}.dcm"
    ds.save_as(path)
    image = load_image(path)
    assert [w.function for w in image.windows] == [function, function]
    ours = to_display(image, image.windows[window_index])
    ref = dcmtk_reference(path, tmp_path, f"+Wi {window_index + 1}")
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    if function != "SIGMOID":  # pydicom applies the same formulas; SIGMOID checked against DCMTK only
        assert np.abs(ours.astype(int) - pydicom_reference(ds, window_index)).max() <= 1


def test_jpeg2000_lossless_decodes_to_the_uncompressed_pixels():
    uncompressed = load_image(dicom_testfile("RG1_UNCR.dcm"))
    j2k = load_image(dicom_testfile("RG1_J2KR.dcm"))
    assert j2k.transfer_syntax == "1.2.840.10008.1.2.4.90"
    np.testing.assert_array_equal(j2k.pixels, uncompressed.pixels)
    np.testing.assert_array_equal(to_display(j2k), to_display(uncompressed))


def test_rg1_facts():
    """The real CR: MONOCHROME1, 15 bits stored, PixelSpacing 0\\0 means no spacing."""
    image = load_image(dicom_testfile("RG1_UNCR.dcm"))
    assert image.shape == (1955, 1841)
    assert image.photometric == "MONOCHROME1" and image.inverted
    assert image.bits_stored == 15
    assert image.pixel_spacing is None and image.spacing_source == ""
    assert image.windows[0].center == 15000 and image.windows[0].width == 30000
    assert image.meta.modality == "CR" and image.meta.view_position == "PA"
    # Dense regions (high values in MONOCHROME1) must show dark on screen after inversion.
    shown = to_display(image)
    bright_value = image.pixels > np.percentile(image.pixels, 99)
    assert shown[bright_value].mean() < shown.mean()
