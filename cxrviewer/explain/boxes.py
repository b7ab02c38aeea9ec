"""Boxes from a heatmap: SCALP Algorithm 1, Talasila et al.'s contour boxes, a plain threshold box.

Coordinate convention (every box in cxrviewer): a `Box` is in *pixel-edge* coordinates of the map it
was found on, half-open. `Box(x0, y0, x1, y1)` covers columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``,
so ``width = x1 - x0`` and ``height = y1 - y0``; the box covering a whole ``H x W`` map is
``(0, 0, W, H)``. This is the continuous convention of torchvision's ``box_iou`` (area =
``(x1-x0)*(y1-y0)``). `map_box` carries a box to another image exactly (no rounding); round only
when displaying or exporting.

Scaling (all methods): a heatmap is scaled to [0, 255] by min-max, ``(v - min) * 255 / (max - min)``
in float64; a constant map gives no box. Non-finite values raise `ValueError`.

    boxes_from_heatmap(heatmap, method="scalp", **params) -> list[Box]
    BOX_METHODS, register_box_method(name)
    map_box(box, (sx, sy, tx, ty)), scale_box(box, from_shape, to_shape), compose_transforms(a, b)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from cxrviewer.explain.rectangles import expand_rectangles, largest_rectangles, scratch_array

BoxMethod = Callable[..., "list[Box]"]
Transform = tuple[float, float, float, float]
BOX_METHODS: dict[str, BoxMethod] = {}


@dataclass(frozen=True)
class Box:
    """A half-open box in pixel-edge coordinates (see the module docstring) with a score in [0, 1]."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


def register_box_method(name: str) -> Callable[[BoxMethod], BoxMethod]:
    """Decorator: register ``fn(heatmap, **params) -> list[Box]`` under `name` (names are unique)."""

    def deco(fn: BoxMethod) -> BoxMethod:
        if name in BOX_METHODS:
            raise ValueError(f"box method {name!r} is already registered")
        BOX_METHODS[name] = fn
        return fn

    return deco


def boxes_from_heatmap(heatmap: np.ndarray, method: str = "scalp", **params: object) -> list[Box]:
    """Boxes for one 2-D heatmap by the registered `method`, best first, in the heatmap's pixels."""
    fn = BOX_METHODS.get(method)
    if fn is None:
        raise ValueError(f"unknown box method {method!r}; available: {', '.join(sorted(BOX_METHODS))}")
    return fn(heatmap, **params)


# ----------------------------------------------------------------------------------------- scaling


def _as_map(heatmap: np.ndarray) -> np.ndarray:
    h = np.asarray(heatmap)
    if h.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D, got shape {h.shape}")
    if h.dtype not in (np.float32, np.float64):
        h = h.astype(np.float64)
    return h


def _range(h: np.ndarray) -> tuple[float, float, float] | None:
    """(min, max, max - min) as floats, or None for a constant (or empty) map."""
    if h.size == 0:
        return None
    lo, hi = float(h.min()), float(h.max())
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        raise ValueError("the heatmap has non-finite values (NaN or infinity)")
    return None if hi == lo else (lo, hi, hi - lo)


def _scaled(v: float, lo: float, span: float) -> float:
    return (v - lo) * 255.0 / span


_FMT = {np.dtype(np.float32): ("<f", "<i", 31), np.dtype(np.float64): ("<d", "<q", 63)}


def _to_key(x: float, dtype: np.dtype) -> int:
    """Float -> integer in the same order (adjacent floats of `dtype` get adjacent integers)."""
    ffmt, ifmt, bits = _FMT[dtype]
    i = struct.unpack(ifmt, struct.pack(ffmt, x))[0]
    return i if i >= 0 else -(i & ((1 << bits) - 1))


def _from_key(k: int, dtype: np.dtype) -> float:
    ffmt, ifmt, bits = _FMT[dtype]
    i = k if k >= 0 else (-k) - (1 << bits)  # magnitude with the sign bit set, as a signed int
    return struct.unpack(ffmt, struct.pack(ifmt, i))[0]


def threshold_mask(heatmap: np.ndarray, threshold: float) -> np.ndarray | None:
    """``scaled > threshold`` (strictly greater) as a bool array, or None for a constant map."""
    found = _mask_above(_as_map(heatmap), threshold)
    return None if found is None else found[0].copy()


def _mask_above(h: np.ndarray, threshold: float) -> tuple[np.ndarray, float, float] | None:
    """``(mask, min, span)`` with ``mask = scaled > threshold`` exactly, in a per-thread work array,
    or None for a constant map. The scaled map is never materialised: the scaling is monotone in
    floating point, so the mask is ``heatmap > t`` for the largest value t of the heatmap's dtype
    whose scaled value is ``<= threshold``, found by bisection over the dtype's float grid."""
    if math.isnan(threshold):
        raise ValueError("the threshold is NaN")
    rng = _range(h)
    if rng is None:
        return None
    lo, hi, span = rng
    out = scratch_array("mask", h.shape, bool)
    if threshold < 0:
        out.fill(True)
    elif _scaled(hi, lo, span) <= threshold:
        out.fill(False)
    else:
        a, b = _to_key(lo, h.dtype), _to_key(hi, h.dtype)  # invariant: scaled(a) <= threshold < scaled(b)
        while b - a > 1:
            mid = (a + b) // 2
            if _scaled(_from_key(mid, h.dtype), lo, span) <= threshold:
                a = mid
            else:
                b = mid
        np.greater(h, h.dtype.type(_from_key(a, h.dtype)), out=out)
    return out, lo, span


def _mean_scaled(h: np.ndarray, lo: float, span: float, x0: int, y0: int, x1: int, y1: int) -> float:
    """Mean of the [0, 255]-scaled heatmap inside a half-open rectangle."""
    return _scaled(float(np.mean(h[y0:y1, x0:x1], dtype=np.float64)), lo, span)


# ----------------------------------------------------------------------------------------- methods


@register_box_method("scalp")
def scalp_boxes(heatmap: np.ndarray, *, threshold: float = 180.0, k: int = 5, top: int | None = 1) -> list[Box]:
    """SCALP Algorithm 1 (Dong et al.), exactly:

    1. scale the heatmap to [0, 255] (min-max; a constant map gives no box);
    2. ``mask = scaled > threshold`` (default 180, strictly greater: a pixel scaled to exactly 180 is 0);
    3. the k largest all-ones rectangles by dynamic programming. The paper does not state k; the
       default is 5. They are found greedily and disjointly: the maximum-area rectangle of the
       working mask, then its cells are cleared and the next is sought, until k or no ones are
       left, so the candidates come from different blobs (ties: top-most, then left-most, then the
       shorter); see `cxrviewer.explain.rectangles.largest_rectangles`;
    4. each candidate grows one pixel per side per round while the strip a side would add, read in
       the *original* mask, has no more zeros than ones (the paper: until ratio(0s, 1s) > 1); see
       `cxrviewer.explain.rectangles.expansion_steps`;
    5. candidates are ranked by the mean scaled intensity inside the grown rectangle (best first;
       equal means keep the order of step 3), ``score = mean / 255``.

    Returns the best `top` boxes (default 1, the paper's output); ``top=None`` returns all candidates.
    """
    h = _as_map(heatmap)
    found = _mask_above(h, threshold)
    if found is None or k <= 0:
        return []
    mask, lo, span = found
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    r0, c0 = int(rows[0]), int(cols[0])  # work in the bounding box of the ones (exact: expand_rectangles)
    crop = mask[r0:int(rows[-1]) + 1, c0:int(cols[-1]) + 1]
    boxes = []
    for x0, y0, x1, y1 in expand_rectangles(crop, largest_rectangles(crop, k)):
        x0, y0, x1, y1 = x0 + c0, y0 + r0, x1 + c0, y1 + r0
        mean = _mean_scaled(h, lo, span, x0, y0, x1, y1)
        boxes.append(Box(float(x0), float(y0), float(x1), float(y1), mean / 255.0))
    boxes.sort(key=lambda b: -b.score)  # stable: equal means keep the DP order
    return boxes if top is None else boxes[:top]


@register_box_method("talasila")
def talasila_boxes(heatmap: np.ndarray, *, threshold: int = 127, top: int | None = None) -> list[Box]:
    """Talasila et al. (BYOL + CAM loss), "Evaluation Metrics": the scaled map as 8-bit
    (``uint8(scaled)``, truncating, like ``np.uint8(255 * cam)``), pixels ``> threshold`` (127, as
    ``cv2.threshold(..., THRESH_BINARY)``) kept, external contours (`cv2.findContours`, 8-connected
    blobs; holes ignored) and the bounding rectangle of each (`cv2.boundingRect`, exact for the blob).
    Sorted by area (largest first), then by score; ``score`` = mean 8-bit intensity inside / 255.
    Returns all boxes by default (the paper draws one per region), or the first `top`."""
    import cv2

    h = _as_map(heatmap)
    # uint8(scaled) > threshold  <=>  scaled >= floor(threshold) + 1  <=>  scaled > the float below it
    found = _mask_above(h, math.nextafter(math.floor(threshold) + 1.0, -math.inf))
    if found is None:
        return []
    mask, lo, span = found
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, hh = cv2.boundingRect(contour)
        u8 = np.clip((h[y:y + hh, x:x + w].astype(np.float64) - lo) * 255.0 / span, 0, 255).astype(np.uint8)
        boxes.append(Box(float(x), float(y), float(x + w), float(y + hh), float(u8.mean()) / 255.0))
    boxes.sort(key=lambda b: (-b.area, -b.score, b.y0, b.x0))
    return boxes if top is None else boxes[:top]


@register_box_method("threshold")
def threshold_boxes(heatmap: np.ndarray, *, threshold: float = 180.0) -> list[Box]:
    """Baseline: the bounding box of every pixel with ``scaled > threshold`` (default 180), one box,
    ``score`` = mean scaled intensity inside / 255."""
    h = _as_map(heatmap)
    found = _mask_above(h, threshold)
    if found is None:
        return []
    mask, lo, span = found
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    return [Box(float(x0), float(y0), float(x1), float(y1), _mean_scaled(h, lo, span, x0, y0, x1, y1) / 255.0)]


# ----------------------------------------------------------------------------------------- mapping


def map_box(box: Box, transform: Transform) -> Box:
    """Carry a box through the affine map ``x' = x*sx + tx, y' = y*sy + ty`` given as
    ``(sx, sy, tx, ty)`` from one image's pixel-edge coordinates to another's, exactly (no rounding).
    A negative scale (a flip) swaps the edges so that x0 <= x1 still holds. The score is kept."""
    sx, sy, tx, ty = transform
    xa, xb = box.x0 * sx + tx, box.x1 * sx + tx
    ya, yb = box.y0 * sy + ty, box.y1 * sy + ty
    return replace(box, x0=min(xa, xb), y0=min(ya, yb), x1=max(xa, xb), y1=max(ya, yb))


def resize_transform(from_shape: tuple[int, ...], to_shape: tuple[int, ...]) -> Transform:
    """The transform of a resize from ``(rows, cols)`` `from_shape` to `to_shape` (edges map to edges)."""
    return (to_shape[1] / from_shape[1], to_shape[0] / from_shape[0], 0.0, 0.0)


def compose_transforms(first: Transform, then: Transform) -> Transform:
    """The transform that applies `first`, then `then`."""
    sx1, sy1, tx1, ty1 = first
    sx2, sy2, tx2, ty2 = then
    return (sx1 * sx2, sy1 * sy2, tx1 * sx2 + tx2, ty1 * sy2 + ty2)


def scale_box(box: Box, from_shape: tuple[int, ...], to_shape: tuple[int, ...]) -> Box:
    """A box on a ``(rows, cols)`` map of `from_shape`, on the same picture resized to `to_shape`."""
    return map_box(box, resize_transform(from_shape, to_shape))
