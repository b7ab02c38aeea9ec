"""Every file in pydicom's test set and pydicom-data: it loads, or raises the expected typed error.

Files not named in EXPECTED_ERRORS must load as a 2-D image. Anything else a file raises is a
failure: the loader must never let a third-party exception through.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cxrviewer.errors import CorruptImage, CxrError, NotAnImage, UnsupportedDicom, UnsupportedFormat
from cxrviewer.io import load_image
from tests.corpus import corpus_files

EXPECTED_ERRORS: dict[str, type[CxrError]] = {
    # non-image objects
    "test-SR.dcm": NotAnImage, "reportsi.dcm": NotAnImage, "reportsi_with_empty_number_tags.dcm": NotAnImage,
    "rtplan.dcm": NotAnImage, "rtplan_truncated.dcm": NotAnImage, "rtstruct.dcm": NotAnImage,
    "waveform_ecg.dcm": NotAnImage, "ExplVR_BigEndNoMeta.dcm": NotAnImage, "ExplVR_LitEndNoMeta.dcm": NotAnImage,
    "UN_sequence.dcm": NotAnImage, "empty_charset_LEI.dcm": NotAnImage, "no_meta_group_length.dcm": NotAnImage,
    "priv_SQ.dcm": NotAnImage,
    # broken on purpose
    "MR_truncated.dcm": CorruptImage, "emri_small_jpeg_2k_lossless_too_short.dcm": CorruptImage,
    "meta_missing_tsyntax.dcm": CorruptImage, "nested_priv_SQ.dcm": CorruptImage, "badVR.dcm": CorruptImage,
    "JPEG-lossy.dcm": CorruptImage,  # non-conformant stream: libjpeg reports a misplaced marker
    "JPEG2000-embedded-sequence-delimiter.dcm": CorruptImage,
    # not DICOM at all
    "README.txt": UnsupportedFormat, "crayons.icc": UnsupportedFormat, "rtplan.dump": UnsupportedFormat,
    "rtstruct.dump": UnsupportedFormat, "test1.json": UnsupportedFormat, "test_PN.json": UnsupportedFormat,
    "zipMR.gz": UnsupportedFormat,
    "no_meta.dcm": UnsupportedFormat,  # starts with a stray byte; pydicom cannot parse it either
}

FILES = corpus_files()


def test_the_corpus_is_installed():
    names = {p.name for p in FILES}
    if "RG1_UNCR.dcm" not in names:
        pytest.skip("pydicom-data is not installed")
    assert len(FILES) > 150


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_file_loads_or_raises_its_typed_error(path):
    expected = EXPECTED_ERRORS.get(path.name)
    start = time.perf_counter()
    if expected is None:
        image = load_image(path)
        assert image.pixels.ndim == 2 and image.pixels.dtype == np.float32
        assert image.pixels.shape == image.shape and min(image.shape) > 0
        assert np.isfinite(image.pixels).all()
        assert image.photometric in ("MONOCHROME1", "MONOCHROME2")
    else:
        with pytest.raises(CxrError) as info:
            load_image(path)
        assert type(info.value) is expected or isinstance(info.value, expected), str(info.value)
        sentence = str(info.value)
        assert sentence.startswith(path.name + ": ") and sentence.endswith(".") and "\n" not in sentence
    assert time.perf_counter() - start < 5.0


def test_unsupported_transfer_syntax_is_named(tmp_path):
    import pydicom
    from tests.conftest import dicom_testfile

    ds = pydicom.dcmread(dicom_testfile("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no image decoder exists
    ds["PixelData"].is_undefined_length = True
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    path = tmp_path / "mpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedDicom, match="MPEG2 Main Profile / Main Level is not supported"):
        load_image(path)
