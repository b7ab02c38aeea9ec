"""Radiomic readout of one region (a box or a mask) of a radiograph, with pyradiomics.

The feature classes and settings come from one YAML file, `resources/radiomics.yaml` by default
(the KACL paper's classes: first order, shape 2D, GLCM, GLRLM, GLSZM, NGTDM, GLDM). Features are
computed on modality values (`ImageData.pixels`), never on the display-windowed picture.

Contract used by the viewer's panel and by the KACL feature vector: `RadiomicsResult.values` is
in `feature_names(settings_path)` order, which is fixed for a settings file (feature classes in
the YAML's order, then each class's feature names in pyradiomics' alphabetical order, or the
YAML's list when it names features), so every call with the same settings returns a vector of the
same length and order. Undefined features are NaN; a region that cannot be measured gives a
status other than "ok" and a one-sentence message instead of an exception.

pyradiomics and SimpleITK are imported on the first computation (or `feature_names()` call),
not when this module is imported, so the viewer opens before they load.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrviewer.errors import CxrError

if TYPE_CHECKING:
    from cxrviewer.io.image import ImageData

__all__ = ["RadiomicsResult", "BadRadiomicsSettings", "feature_names", "compute_radiomics", "pixel_box",
           "default_settings_path", "OK", "EMPTY", "OUTSIDE", "TOO_SMALL", "CONSTANT", "NON_FINITE", "INVALID"]

OK = "ok"
EMPTY = "empty"  # the box or mask selects no pixel
OUTSIDE = "outside image"  # the box lies entirely outside the image
TOO_SMALL = "too small"  # fewer than 2 rows or 2 columns (pyradiomics needs an area), or < minimumROISize
CONSTANT = "constant"  # one intensity value: first-order and shape kept, texture classes NaN
NON_FINITE = "non-finite"  # NaN or inf pixels in the region
INVALID = "invalid region"  # pyradiomics rejected the region for another reason (message says why)

#: Classes whose values do not depend on gray-level texture; kept for a constant region.
_INTENSITY_FREE_OR_FIRST_ORDER = ("firstorder", "shape2D", "shape")
_lock = threading.Lock()


class BadRadiomicsSettings(CxrError):
    """The radiomics settings file is missing, unreadable or asks for something we do not support."""


@dataclass(frozen=True, eq=False)
class RadiomicsResult:
    """Features of one region. `values[i]` is the value of `names[i]`; NaN when undefined.

    `region` is the analysed bounding box as half-open pixel indices (x0, y0, x1, y1) within the
    image, or None when nothing inside the image was selected.
    """

    names: tuple[str, ...]
    values: np.ndarray
    status: str
    message: str = ""
    region: tuple[int, int, int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict[str, float | None]:
        """{name: value}, None for NaN (JSON friendly), in `names` order."""
        return {name: (None if math.isnan(v) else float(v)) for name, v in zip(self.names, self.values)}

    def by_class(self) -> dict[str, dict[str, float | None]]:
        """{feature class: {feature: value or None}}, classes in `names` order (for the GUI panel)."""
        grouped: dict[str, dict[str, float | None]] = {}
        for name, value in self.as_dict().items():
            cls, feature = name.split("_", 1)
            grouped.setdefault(cls, {})[feature] = value
        return grouped


def default_settings_path() -> Path:
    """The shipped settings, `resources/radiomics.yaml`."""
    from cxrviewer.resources import path

    return path("radiomics.yaml")


def _resolve(settings_path: str | Path | None) -> str:
    return str(Path(settings_path if settings_path is not None else default_settings_path()).resolve())


@lru_cache(maxsize=8)
def _load_settings(resolved: str) -> dict[str, Any]:
    import yaml

    try:
        params = yaml.safe_load(Path(resolved).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadRadiomicsSettings(resolved, f"cannot read the radiomics settings ({exc})") from exc
    if not isinstance(params, dict) or not isinstance(params.get("featureClass"), dict) or not params["featureClass"]:
        raise BadRadiomicsSettings(resolved, "the radiomics settings name no featureClass")
    image_types = params.get("imageType") or {"Original": {}}
    if set(image_types) != {"Original"}:
        raise BadRadiomicsSettings(resolved, f"only imageType Original is supported, not {sorted(image_types)}")
    return params


def _import_radiomics() -> Any:
    """Import pyradiomics with its stderr log silenced (it warns about binCount on every build)."""
    import radiomics

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("pykwalify").setLevel(logging.WARNING)  # settings validation logs at INFO
    with warnings.catch_warnings():  # its first call imports the classes with the deprecated load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        radiomics.getFeatureClasses()
    return radiomics


def feature_names(settings_path: str | Path | None = None) -> tuple[str, ...]:
    """The stable feature list ("firstorder_Mean", ...) for a settings file, without computing."""
    return _feature_names(_resolve(settings_path))


@lru_cache(maxsize=8)
def _feature_names(resolved: str) -> tuple[str, ...]:
    params = _load_settings(resolved)
    classes = _import_radiomics().getFeatureClasses()
    names: list[str] = []
    for cls, wanted in params["featureClass"].items():
        if cls not in classes:
            raise BadRadiomicsSettings(resolved, f"unknown radiomics feature class {cls!r}")
        available = classes[cls].getFeatureNames()  # {name: deprecated}
        chosen = list(wanted) if wanted else sorted(n for n, deprecated in available.items() if not deprecated)
        unknown = [n for n in chosen if n not in available]
        if unknown:
            raise BadRadiomicsSettings(resolved, f"unknown {cls} features {unknown}")
        names.extend(f"{cls}_{n}" for n in chosen)
    return tuple(names)


@lru_cache(maxsize=8)
def _extractor(resolved: str) -> Any:
    """One `RadiomicsFeatureExtractor` per settings file, built on first use."""
    _import_radiomics()
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    params = _load_settings(resolved)
    try:
        with warnings.catch_warnings():  # pykwalify loads pyradiomics' schema helpers with load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            return RadiomicsFeatureExtractor(dict(params, imageType=params.get("imageType") or {"Original": {}}))
    except Exception as exc:  # noqa: BLE001 - pykwalify/pyradiomics raise assorted types for bad files
        raise BadRadiomicsSettings(resolved, f"pyradiomics rejects the settings ({exc})") from exc


def pixel_box(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel indices (x0, y0, x1, y1), half-open, of a box given in pixel-edge coordinates.

    Pixel column i spans [i, i + 1), so a float box rounds outward: floor(x0), ceil(x1) (same for
    y), then is clipped to the image. Reversed corners are swapped. The result may be empty
    (x1 <= x0 or y1 <= y0), e.g. for a box outside the image.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box coordinates must be finite, got {box}")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    rows, cols = shape
    return (min(max(math.floor(x0), 0), cols), min(max(math.floor(y0), 0), rows),
            min(max(math.ceil(x1), 0), cols), min(max(math.ceil(y1), 0), rows))


def _select(pixels: np.ndarray, box: Any, mask: np.ndarray | None
            ) -> tuple[tuple[int, int, int, int] | None, np.ndarray | None, str]:
    """(region, mask of the region's crop, status): the bounding box and which pixels of it count."""
    rows, cols = pixels.shape
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != pixels.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {pixels.shape}")
        mask = mask.astype(bool, copy=False)
        r_any, c_any = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if r_any.size == 0:
            return None, None, EMPTY
        region = (int(c_any[0]), int(r_any[0]), int(c_any[-1]) + 1, int(r_any[-1]) + 1)
        return region, mask[region[1]:region[3], region[0]:region[2]], OK
    if box is None:
        region = (0, 0, cols, rows)
    else:
        region = pixel_box(box, (rows, cols))
        x0, y0, x1, y1 = (float(v) for v in box)
        overlaps = max(x0, x1) > 0 and min(x0, x1) < cols and max(y0, y1) > 0 and min(y0, y1) < rows
        if not overlaps and x0 != x1 and y0 != y1:
            return None, None, OUTSIDE
    if region[2] <= region[0] or region[3] <= region[1]:
        return None, None, EMPTY
    return region, np.ones((region[3] - region[1], region[2] - region[0]), bool), OK


def _nan_result(names: tuple[str, ...], status: str, message: str,
                region: tuple[int, int, int, int] | None = None) -> RadiomicsResult:
    values = np.full(len(names), np.nan)
    values.setflags(write=False)
    return RadiomicsResult(names, values, status, message, region)


def _spacing_of(image: Any, spacing: tuple[float, float] | None) -> tuple[float, float]:
    if spacing is None:
        spacing = getattr(image, "pixel_spacing", None) or (1.0, 1.0)
    row, col = (float(v) for v in spacing)
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"pixel spacing must be positive (row, col) mm, got {spacing}")
    return row, col


def compute_radiomics(image: np.ndarray | ImageData, box: tuple[float, float, float, float] | None = None,
                      mask: np.ndarray | None = None, *, spacing: tuple[float, float] | None = None,
                      settings_path: str | Path | None = None) -> RadiomicsResult:
    """Radiomic features of one region of `image` (modality values, 2-D, or an `ImageData`).

    The region is `box` (x0, y0, x1, y1) in pixel-edge coordinates (see `pixel_box`: a float box
    rounds outward, then is clipped to the image), or `mask` (boolean, the image's shape), or the
    whole image when both are None. `spacing` is (row, col) in mm; by default the ImageData's
    `pixel_spacing`, else 1 mm (shape features are then in pixels). Only the region's bounding box
    is handed to pyradiomics, so cost follows the region, not the image.

    Returns values in `feature_names(settings_path)` order. Empty, outside, too-small, non-finite
    and constant regions return a status and message rather than raising; bad arguments (both box
    and mask, a mask of the wrong shape, a non-2-D image) raise ValueError.
    """
    if box is not None and mask is not None:
        raise ValueError("give a box or a mask, not both")
    pixels = np.asarray(getattr(image, "pixels", image))
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    row_mm, col_mm = _spacing_of(image, spacing)
    resolved = _resolve(settings_path)
    names = _feature_names(resolved)

    region, roi, status = _select(pixels, box, mask)
    if region is None or roi is None:
        where = "lies outside the image" if status == OUTSIDE else "selects no pixel"
        return _nan_result(names, status, f"The region {where}; no radiomic features.")
    x0, y0, x1, y1 = region
    crop = pixels[y0:y1, x0:x1].astype(np.float64)
    values_in = crop[roi]
    settings = _load_settings(resolved).get("setting") or {}
    min_size = settings.get("minimumROISize") or 1
    if min(x1 - x0, y1 - y0) < 2:
        return _nan_result(names, TOO_SMALL, f"The region is {x1 - x0}×{y1 - y0} pixels; radiomic features "
                           "need at least 2 pixels in each direction.", region)
    if values_in.size < min_size:
        return _nan_result(names, TOO_SMALL, f"The region has {values_in.size} pixels; the radiomics settings "
                           f"ask for at least {min_size}.", region)
    if not np.isfinite(values_in).all():
        return _nan_result(names, NON_FINITE, "The region contains NaN or infinite pixel values; "
                           "no radiomic features.", region)
    constant = bool(values_in.min() == values_in.max())

    raw = _execute(resolved, crop, roi, (row_mm, col_mm), int(settings.get("label", 1)))
    if isinstance(raw, str):
        return _nan_result(names, INVALID, f"pyradiomics rejected the region: {raw}.", region)
    values = np.array([float(raw.get(f"original_{n}", np.nan)) for n in names], dtype=np.float64)
    if constant:
        texture = np.array([n.split("_", 1)[0] not in _INTENSITY_FREE_OR_FIRST_ORDER for n in names])
        values[texture] = np.nan
        values.setflags(write=False)
        return RadiomicsResult(names, values, CONSTANT, f"All {values_in.size} pixels have the value "
                               f"{values_in[0]:g}; texture features are undefined (NaN).", region)
    values.setflags(write=False)
    return RadiomicsResult(names, values, OK, "", region)


def _execute(resolved: str, crop: np.ndarray, roi: np.ndarray, spacing: tuple[float, float],
             label: int) -> dict[str, Any] | str:
    """Run the cached extractor on a cropped region; the error message if pyradiomics rejects it.

    The crop is padded by one pixel (pyradiomics needs background around the label; it crops
    that margin off again before computing) and passed as a single-slice 3-D image so that
    force2D with force2Ddimension 0 keeps all four in-plane directions.
    """
    import SimpleITK as sitk

    with _lock:  # build once even when two workers ask at the same time
        extractor = _extractor(resolved)
    image = np.pad(crop, 1, mode="edge")[None]
    labels = np.pad(roi.astype(np.uint8) * np.uint8(label), 1)[None]
    sitk_image = sitk.GetImageFromArray(np.ascontiguousarray(image))
    sitk_mask = sitk.GetImageFromArray(np.ascontiguousarray(labels))
    for item in (sitk_image, sitk_mask):
        item.SetSpacing((spacing[1], spacing[0], 1.0))  # SimpleITK is (x=col, y=row, z)
    try:
        with np.errstate(all="ignore"):
            return dict(extractor.execute(sitk_image, sitk_mask, label=label))
    except ValueError as exc:  # pyradiomics' checkMask / getMask reject a region with ValueError
        return str(exc).rstrip(".")
