"""`cxrviewer.io.load_image` on specific situations: spacing, colour, frames, PNGs and tables."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pydicom
import pytest

from cxrviewer.errors import CorruptImage, MissingFile, UnsupportedFormat
from cxrviewer.io import load_image
from tests.conftest import dicom_testfile


def _rewrite(tmp_path, name, **changes):
    ds = pydicom.dcmread(dicom_testfile(name))
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / f"edited_{name}"
    ds.save_as(path)
    return path


def test_spacing_prefers_pixel_spacing_then_imager_and_zero_is_none(tmp_path):
    both = _rewrite(tmp_path, "CT_small.dcm", PixelSpacing=[0.5, 0.6], ImagerPixelSpacing=[0.7, 0.8])
    assert load_image(both).pixel_spacing == (0.5, 0.6) and load_image(both).spacing_source == "PixelSpacing"
    imager = _rewrite(tmp_path, "CT_small.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.7, 0.8])
    assert load_image(imager).pixel_spacing == (0.7, 0.8)
    assert load_image(imager).spacing_source == "ImagerPixelSpacing"
    zero = _rewrite(tmp_path, "CT_small.dcm", PixelSpacing=[0, 0], ImagerPixelSpacing=[0.2, 0.2])
    assert load_image(zero).pixel_spacing == (0.2, 0.2)
    none = _rewrite(tmp_path, "CT_small.dcm", PixelSpacing=[0, 0])
    assert load_image(none).pixel_spacing is None


def test_rescale_slope_and_intercept_give_modality_units():
    image = load_image(dicom_testfile("CT_small.dcm"))
    ds = pydicom.dcmread(dicom_testfile("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(image.pixels, expected.astype(np.float32))


def test_multiple_windows_are_all_offered_in_order(tmp_path):
    path = _rewrite(tmp_path, "CT_small.dcm", WindowCenter=[40, -600, 300], WindowWidth=[400, 1500, 0],
                    WindowCenterWidthExplanation=["SOFT", "LUNG", "BAD"])
    windows = load_image(path).windows
    assert [(w.center, w.width, w.explanation) for w in windows] == [(40, 400, "SOFT"), (-600, 1500, "LUNG")]


def test_multiframe_shows_first_frame_with_a_warning():
    image = load_image(dicom_testfile("emri_small.dcm"))
    ds = pydicom.dcmread(dicom_testfile("emri_small.dcm"))
    np.testing.assert_array_equal(image.pixels, ds.pixel_array[0].astype(np.float32))
    assert image.number_of_frames == int(ds.NumberOfFrames) > 1
    assert any("first frame" in w for w in image.warnings)


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "SC_ybr_full_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_colour_is_converted_to_luminance_with_a_warning(name):
    image = load_image(dicom_testfile(name))
    assert image.pixels.ndim == 2 and image.photometric == "MONOCHROME2"
    assert any("luminance" in w for w in image.warnings)


def test_ybr_and_rgb_copies_give_the_same_luminance():
    rgb = load_image(dicom_testfile("SC_rgb.dcm")).pixels
    ybr = load_image(dicom_testfile("SC_ybr_full_uncompressed.dcm")).pixels
    assert np.abs(rgb - ybr).max() <= 2.0  # YBR_FULL is an 8-bit rounding of the same colours


def test_nih_png_takes_patient_and_labels_from_the_table(nih_sample):
    image = load_image(nih_sample / "images" / "00000001_001.png")
    assert image.shape == (512, 512) and image.source_format == "png"
    assert image.meta.patient_id == "1" and image.meta.follow_up == 1
    assert image.meta.labels == ("Cardiomegaly", "Emphysema")
    assert image.meta.view_position == "PA" and image.meta.patient_sex == "M" and image.meta.patient_age == "058Y"


def test_png_without_table_and_explicit_table(tmp_path, nih_sample):
    shutil.copy(nih_sample / "images" / "00000001_000.png", tmp_path / "00000001_000.png")
    alone = load_image(tmp_path / "00000001_000.png")
    assert alone.meta.patient_id == "" and alone.meta.labels == ()
    table = nih_sample / "Data_Entry_2017_v2020.csv"
    with_table = load_image(tmp_path / "00000001_000.png", labels=table)
    assert with_table.meta.labels == ("Cardiomegaly",)


def test_rgba_stored_grey_png_equals_grey(tmp_path):
    grey = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) % 251).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    a, b = load_image(tmp_path / "grey.png"), load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert not any("luminance" in w for w in b.warnings)


def test_colour_png_and_16_bit_png(tmp_path):
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 2] = 200  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), colour)
    red = load_image(tmp_path / "red.png")
    assert red.pixels[0, 0] == pytest.approx(0.299 * 200, abs=0.01)
    assert any("luminance" in w for w in red.warnings)
    deep = np.full((4, 4), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert load_image(tmp_path / "deep.png").bits_stored == 16
    assert load_image(tmp_path / "deep.png").pixels.max() == 40000


def test_jpeg_loads(tmp_path):
    cv2.imwrite(str(tmp_path / "x.jpg"), np.full((16, 16), 90, np.uint8))
    assert load_image(tmp_path / "x.jpg").source_format == "jpeg"


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (None, MissingFile, "does not exist"),
        (b"hello, this is text and not an image", UnsupportedFormat, "not a DICOM file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, CorruptImage, "PNG data is truncated"),
        (b"", UnsupportedFormat, "not a DICOM file"),
    ],
)
def test_bad_files_raise_one_sentence_naming_the_file(tmp_path, content, error, words):
    path = tmp_path / "bad.dcm"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error) as info:
        load_image(path)
    assert str(info.value).startswith("bad.dcm: ") and words in str(info.value)


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(MissingFile, match="folder"):
        load_image(tmp_path)


def test_compressed_stream_declaring_another_size_is_refused_before_decoding(tmp_path):
    """A corrupt JPEG 2000 SIZ claiming a huge image once took OpenJPEG ~7 s (found by the fuzzer)."""
    import time

    from cxrviewer.io.codestream import first_fragment, j2k_size

    source = dicom_testfile("693_J2KR.dcm")
    ds = pydicom.dcmread(source)
    assert j2k_size(first_fragment(ds)) == (ds.Columns, ds.Rows)
    raw = bytearray(source.read_bytes())
    at = raw.find(b"\xff\x4f\xff\x51")
    raw[at + 12:at + 16] = (1_114_624).to_bytes(4, "big")  # Ysiz
    bad = tmp_path / "tall.dcm"
    bad.write_bytes(bytes(raw))
    start = time.perf_counter()
    with pytest.raises(CorruptImage, match="declares a 512x1114624 image but the header says 512x512"):
        load_image(bad)
    assert time.perf_counter() - start < 2.0


def test_jpeg_sof_size_is_read():
    from cxrviewer.io.codestream import declared_size

    for name in ("JPGLosslessP14SV1_1s_1f_8b.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        ds = pydicom.dcmread(dicom_testfile(name))
        assert declared_size(ds, ds.file_meta.TransferSyntaxUID) == (ds.Columns, ds.Rows)


def test_jpeg_frame_header_walk_and_its_errors(tmp_path):
    import io

    from cxrviewer.io.codestream import jpeg_frame_header, png_size

    ok, data = cv2.imencode(".jpg", np.zeros((40, 50, 3), np.uint8))
    data = data.tobytes()
    stream = io.BytesIO(data)
    stream.seek(2)
    assert jpeg_frame_header(stream) == (50, 40, 3)
    sof = data.find(b"\xff\xc0")
    for cut, reason in ((sof + 3, "the JPEG header is truncated"), (sof + 6, "the JPEG frame header is truncated")):
        stream = io.BytesIO(data[:cut])
        stream.seek(2)
        with pytest.raises(ValueError, match=reason):
            jpeg_frame_header(stream)
    ok, png = cv2.imencode(".png", np.zeros((7, 9), np.uint8))
    assert png_size(png.tobytes()) == (9, 7) and png_size(data) is None
