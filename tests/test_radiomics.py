"""cxrviewer.radiomics: the per-box pyradiomics readout and the stable KACL feature vector."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("radiomics", reason="pyradiomics is not installed (pip install cxrviewer[radiomics])")

from cxrviewer import radiomics as rad  # noqa: E402
from cxrviewer.io.image import ImageData  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIH_PNG = SHARED_DATA / "nih-sample" / "images" / "00000001_000.png"
CLASSES = ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "ngtdm", "gldm")
BOX = (200, 180, 264, 244)  # 64 x 64, inside the right lung of 00000001_000.png (512 x 512)


@pytest.fixture(scope="module")
def nih() -> np.ndarray:
    """A real NIH chest X-ray (8-bit PNG) as float32 modality values."""
    if not NIH_PNG.is_file():
        pytest.skip(f"shared sample data absent ({NIH_PNG} not found)")
    cv2 = pytest.importorskip("cv2")
    pixels = cv2.imread(str(NIH_PNG), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.ndim == 2
    return pixels.astype(np.float32)


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    """A synthetic radiograph-like image: smooth gradient + blobs + noise, 12-bit range."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:160, 0:200]
    img = 800 + 6 * xx + 3 * yy + 400 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 60, yy.shape)
    return np.clip(img, 0, 4095).astype(np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)  # NaN == NaN here


# ---- names and order --------------------------------------------------------------------------

def test_names_are_stable_and_equal_feature_names(textured):
    names = rad.feature_names()
    assert names is rad.feature_names()  # cached
    assert len(names) == len(set(names)) > 90
    first = rad.compute_radiomics(textured, (10, 10, 60, 50))
    second = rad.compute_radiomics(textured, (100, 40, 180, 150))
    assert first.names == second.names == names
    assert first.values.dtype == np.float64 and first.values.shape == (len(names),)
    assert list(first.as_dict()) == list(names)


def test_all_seven_classes_present_in_yaml_order(textured):
    result = rad.compute_radiomics(textured, (10, 10, 60, 50))
    assert tuple(result.by_class()) == CLASSES
    assert tuple(dict.fromkeys(n.split("_", 1)[0] for n in rad.feature_names())) == CLASSES
    assert {"firstorder_Mean", "shape2D_PixelSurface", "glcm_Contrast", "glrlm_RunEntropy", "glszm_ZoneEntropy",
            "ngtdm_Coarseness", "gldm_DependenceEntropy"} <= set(result.names)


def test_custom_settings_file_names_and_order(tmp_path, textured):
    settings = tmp_path / "r.yaml"
    settings.write_text("setting: {force2D: true, force2Ddimension: 0, binCount: 16, label: 1, additionalInfo: false}\n"
                        "imageType: {Original: {}}\n"
                        "featureClass: {glcm: [Contrast], firstorder: [Maximum, Mean]}\n")
    assert rad.feature_names(settings) == ("glcm_Contrast", "firstorder_Maximum", "firstorder_Mean")
    result = rad.compute_radiomics(textured, (10, 10, 40, 40), settings_path=settings)
    region = textured[10:40, 10:40]
    np.testing.assert_allclose(result.values[1:], [region.max(), region.mean()], rtol=1e-6)


def test_unsupported_settings_are_a_typed_error(tmp_path):
    settings = tmp_path / "log.yaml"
    settings.write_text("imageType: {LoG: {sigma: [1.0]}}\nfeatureClass: {firstorder: []}\n")
    with pytest.raises(rad.BadRadiomicsSettings, match="Original"):
        rad.feature_names(settings)


# ---- values on a real radiograph --------------------------------------------------------------

def test_values_finite_for_a_normal_box(nih):
    result = rad.compute_radiomics(nih, BOX)
    assert result.status == "ok" and result.message == "" and result.region == BOX
    assert np.isfinite(result.values).all(), [n for n, v in result.as_dict().items() if v is None]
    json.dumps(result.as_dict())


def test_box_and_equivalent_mask_give_identical_values(nih):
    mask = np.zeros(nih.shape, bool)
    x0, y0, x1, y1 = BOX
    mask[y0:y1, x0:x1] = True
    _same(rad.compute_radiomics(nih, BOX).values, rad.compute_radiomics(nih, mask=mask).values)


def test_independent_of_cropping(nih):
    x0, y0, x1, y1 = BOX
    margin = 9
    pre = nih[y0 - margin:y1 + margin, x0 - margin:x1 + margin].copy()
    shifted = (margin, margin, margin + x1 - x0, margin + y1 - y0)
    _same(rad.compute_radiomics(nih, BOX).values, rad.compute_radiomics(pre, shifted).values)
    # a box touching the image border: the crop already ends at the edge
    exact = nih[y0:y1, x0:x1].copy()
    _same(rad.compute_radiomics(nih, BOX).values, rad.compute_radiomics(exact).values)


def test_first_order_matches_numpy(nih):
    x0, y0, x1, y1 = BOX
    region = nih[y0:y1, x0:x1].astype(np.float64)
    got = rad.compute_radiomics(nih, BOX).as_dict()
    np.testing.assert_allclose(got["firstorder_Mean"], region.mean(), rtol=1e-12)
    assert got["firstorder_Minimum"] == region.min() and got["firstorder_Maximum"] == region.max()
    np.testing.assert_allclose(got["firstorder_10Percentile"], np.percentile(region, 10), rtol=1e-12)
    np.testing.assert_allclose(got["firstorder_90Percentile"], np.percentile(region, 90), rtol=1e-12)
    np.testing.assert_allclose(got["firstorder_Median"], np.median(region), rtol=1e-12)
    np.testing.assert_allclose(got["firstorder_Variance"], region.var(), rtol=1e-9)
    np.testing.assert_allclose(got["firstorder_Energy"], np.sum(region ** 2), rtol=1e-12)
    assert got["shape2D_PixelSurface"] == region.size


def test_float_box_rounds_outward(nih):
    floaty = rad.compute_radiomics(nih, (200.6, 180.2, 263.1, 243.9))
    assert floaty.region == BOX
    _same(floaty.values, rad.compute_radiomics(nih, BOX).values)
    assert rad.pixel_box((-3.5, 2.5, 9.0, 600.2), (512, 512)) == (0, 2, 9, 512)
    assert rad.pixel_box((9, 20, 3, 10), (512, 512)) == (3, 10, 9, 20)  # reversed corners


# ---- spacing ----------------------------------------------------------------------------------

def test_spacing_scales_shape_not_first_order(textured):
    box = (20, 30, 84, 94)
    plain = rad.compute_radiomics(textured, box).as_dict()
    half = rad.compute_radiomics(textured, box, spacing=(0.5, 0.5)).as_dict()
    assert half["shape2D_PixelSurface"] == pytest.approx(plain["shape2D_PixelSurface"] * 0.25)
    assert half["shape2D_Perimeter"] == pytest.approx(plain["shape2D_Perimeter"] * 0.5)
    # TotalEnergy is Energy times the pixel area by definition; every other intensity feature
    # is independent of spacing.
    assert half["firstorder_TotalEnergy"] == pytest.approx(plain["firstorder_TotalEnergy"] * 0.25)
    for name, value in plain.items():
        if not name.startswith("shape2D_") and name != "firstorder_TotalEnergy":
            assert half[name] == value, name


def test_spacing_is_row_col_and_imagedata_supplies_it(textured):
    box = (10, 20, 90, 40)  # 20 rows x 80 columns: a square in mm when columns are 4x narrower
    square = rad.compute_radiomics(textured, box, spacing=(1.0, 0.25)).as_dict()
    assert square["shape2D_Elongation"] > 0.9
    assert square["shape2D_PixelSurface"] == pytest.approx(20 * 80 * 0.25)
    image = ImageData(path=Path("synthetic.png"), pixels=textured, pixel_spacing=(1.0, 0.25))
    _same(rad.compute_radiomics(image, box).values, rad.compute_radiomics(textured, box, spacing=(1.0, 0.25)).values)


# ---- properties of the settings ---------------------------------------------------------------

def test_texture_uses_all_four_in_plane_directions(textured):
    """Transposing the region leaves every feature unchanged (a one-directional texture would not)."""
    region = textured[10:74, 30:130]
    a = rad.compute_radiomics(region)
    b = rad.compute_radiomics(np.ascontiguousarray(region.T))
    np.testing.assert_allclose(b.values, a.values, rtol=1e-9, atol=1e-12)


def test_texture_is_invariant_to_bit_depth(textured):
    """binCount: the same picture at 8 and 12 bits has the same texture; intensities scale."""
    eight = np.round(textured / 16.0)
    a = rad.compute_radiomics(eight, (20, 20, 120, 120)).as_dict()
    b = rad.compute_radiomics(eight * 16.0, (20, 20, 120, 120)).as_dict()
    for name in a:
        if name.split("_")[0] in ("glcm", "glrlm", "glszm", "gldm", "shape2D"):
            assert b[name] == pytest.approx(a[name], rel=1e-9), name
    assert b["firstorder_Mean"] == pytest.approx(16 * a["firstorder_Mean"])


# ---- regions that cannot be measured ----------------------------------------------------------

@pytest.mark.parametrize(("box", "status"), [
    ((100, 100, 101, 101), "too small"),  # one pixel
    ((100, 100, 101, 140), "too small"),  # one column
    ((100, 100, 100, 140), "empty"),  # zero width
    ((400, 300, 500, 420), "outside image"),
    ((-40, -40, -2, -1), "outside image"),
])
def test_unmeasurable_boxes_give_a_status(textured, box, status):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rad.compute_radiomics(textured, box)
    assert result.status == status and not result.ok
    assert result.message.endswith(".") and len(result.message) > 10
    assert np.isnan(result.values).all() and len(result.values) == len(rad.feature_names())
    assert all(v is None for v in result.as_dict().values())


def test_empty_mask_and_nan_region(textured):
    assert rad.compute_radiomics(textured, mask=np.zeros(textured.shape, bool)).status == "empty"
    holed = textured.copy()
    holed[50, 50] = np.nan
    result = rad.compute_radiomics(holed, (40, 40, 60, 60))
    assert result.status == "non-finite" and np.isnan(result.values).all()


def test_constant_region_keeps_defined_features_only():
    flat = np.full((40, 40), 512.0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rad.compute_radiomics(flat, (5, 5, 25, 35))
    assert result.status == "constant" and "512" in result.message
    got = result.by_class()
    assert got["firstorder"]["Mean"] == 512.0 and got["firstorder"]["Variance"] == 0.0
    assert got["shape2D"]["PixelSurface"] == 20 * 30
    assert all(v is None for cls in CLASSES[2:] for v in got[cls].values())


def test_non_rectangular_mask(textured):
    yy, xx = np.mgrid[0:160, 0:200]
    disc = (yy - 80) ** 2 + (xx - 100) ** 2 <= 30 ** 2
    result = rad.compute_radiomics(textured, mask=disc)
    assert result.ok and result.region == (70, 50, 131, 111)
    assert result.as_dict()["shape2D_PixelSurface"] == disc.sum()
    np.testing.assert_allclose(result.as_dict()["firstorder_Mean"], textured[disc].astype(np.float64).mean())


def test_bad_arguments_raise(textured):
    with pytest.raises(ValueError, match="not both"):
        rad.compute_radiomics(textured, (0, 0, 9, 9), mask=np.ones(textured.shape, bool))
    with pytest.raises(ValueError, match="shape"):
        rad.compute_radiomics(textured, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="2-D"):
        rad.compute_radiomics(textured[None])


# ---- import hygiene and log noise -------------------------------------------------------------

def test_lazy_import_and_silent_extraction():
    code = (
        "import sys, numpy as np\n"
        "import cxrviewer.radiomics as r\n"
        "assert 'radiomics' not in sys.modules and 'SimpleITK' not in sys.modules\n"
        "img = np.random.default_rng(0).normal(100, 20, (64, 64)).astype('float32')\n"
        "assert r.compute_radiomics(img, (4, 4, 60, 60)).ok\n"
        "r.compute_radiomics(np.ones((9, 9)), (2, 2, 8, 8))\n"
        "r.compute_radiomics(img, (4, 4, 5, 5))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
