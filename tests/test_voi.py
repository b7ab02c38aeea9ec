"""The VOI transformation against the formulas of PS3.3 C.11.2.1.2, value by value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxrviewer.imaging.voi import FullRange, to_display, window_from_levels, window_to_float
from cxrviewer.io.image import ImageData, VoiLut, VoiWindow


def _image(values, photometric="MONOCHROME2", **kw) -> ImageData:
    return ImageData(path=Path("x.dcm"), pixels=np.asarray(values, dtype=np.float32), photometric=photometric, **kw)


def test_linear_window_follows_the_standard_piecewise_definition():
    c, w = 100.0, 51.0
    x = np.arange(40, 161, dtype=np.float32)
    got = window_to_float(x, VoiWindow(c, w, "LINEAR"))
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    want = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, ((x - (c - 0.5)) / (w - 1) + 0.5) * 255))
    np.testing.assert_allclose(got, want, atol=1e-3)
    # lo = 74.5, hi = 124.5: 74 -> 0; 75 -> ((75 - 99.5) / 50 + 0.5) * 255 = 2.55; 125 -> 255
    assert got[x == 74][0] == 0.0 and got[x == 75][0] == pytest.approx(2.55, abs=1e-3)
    assert got[x == 124][0] < 255.0 and got[x == 125][0] == 255.0


def test_linear_exact_and_sigmoid():
    x = np.linspace(-500, 500, 1001, dtype=np.float32)
    exact = window_to_float(x, VoiWindow(10.0, 300.0, "LINEAR_EXACT"))
    want = np.clip(((x - 10) / 300 + 0.5) * 255, 0, 255)
    np.testing.assert_allclose(exact, want, atol=1e-3)
    sig = window_to_float(x, VoiWindow(10.0, 300.0, "SIGMOID"))
    np.testing.assert_allclose(sig, 255 / (1 + np.exp(-4 * (x - 10) / 300)), atol=1e-3)
    assert sig[x == 10][0] == pytest.approx(127.5)


def test_width_one_is_a_step_at_center_minus_half():
    got = window_to_float(np.array([9.0, 9.5, 9.6, 10.0], dtype=np.float32), VoiWindow(10.0, 1.0))
    assert got.tolist() == [0.0, 0.0, 255.0, 255.0]


def test_monochrome1_is_inverted_after_voi_not_before():
    # A window that is asymmetric about the data: inverting before VOI would give other values.
    img = _image([[0, 100, 200, 300]], photometric="MONOCHROME1", windows=(VoiWindow(100.0, 101.0),))
    shown = to_display(img)
    upright = to_display(img, invert=False)
    assert (shown.astype(int) + upright.astype(int) == 255).all()
    # c=100, w=101: 100 -> ((100 - 99.5) / 100 + 0.5) * 255 = 128.775 -> 129
    assert upright.tolist() == [[0, 129, 255, 255]]
    assert shown.tolist() == [[255, 126, 0, 0]]


def test_defaults_voi_lut_then_window_then_full_range():
    lut = VoiLut(first_mapped=10, bits=8, data=np.arange(0, 256, 8, dtype=np.int64))  # 32 entries
    img = _image([[0, 10, 20, 41, 100]], voi_luts=(lut,), windows=(VoiWindow(0.0, 2.0),))
    assert to_display(img).tolist() == [[0, 0, 80, 248, 248]]  # clamped below first/above last entry
    img = _image([[0, 10, 20]], windows=(VoiWindow(10.0, 11.0),))
    assert to_display(img).tolist() == [[0, 140, 255]]  # ((10 - 9.5) / 10 + 0.5) * 255 = 140.25
    img = _image([[-1000, 0, 1000]])
    assert to_display(img).tolist() == [[0, 128, 255]]
    assert to_display(_image([[7, 7], [7, 7]]), FullRange()).tolist() == [[0, 0], [0, 0]]


def test_voi_lut_declaring_16_bits_with_12_bit_entries_uses_the_entries_depth():
    lut = VoiLut(first_mapped=0, bits=16, data=np.array([0, 2048, 4095], dtype=np.int64))
    img = _image([[0, 1, 2]], voi_luts=(lut,))
    assert to_display(img).tolist() == [[0, 128, 255]]


def test_window_from_levels_ramps_between_the_two_levels():
    win = window_from_levels(100.0, 300.0)
    y = window_to_float(np.array([100.0, 300.0], dtype=np.float32), win)
    assert y[0] == pytest.approx(0.0, abs=0.7) and y[1] == pytest.approx(255.0, abs=0.7)
