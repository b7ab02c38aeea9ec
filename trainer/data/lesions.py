"""Simple, seeded models of chest X-ray findings drawn into real normal radiographs.

Geometry (all in the image's pixel coordinates, pixel centres at i + 0.5):
- Lung fields: two ellipses in the central region of a PA film, centred at (0.31 W, 0.46 H) and
  (0.69 W, 0.46 H) with semi-axes about (0.13 W, 0.26 H). A crude but adequate stand-in for
  segmented lungs on a centred PA/AP film.
- Nodule: a disc of radius 1.2-3.2 % of the width (about 1-3 cm on a 1024 px film) inside a lung;
  Mass: radius 4-7 % (over 3 cm). Thickness profile of a sphere (brighter centre), Gaussian edge.
- Effusion: the lower part of one lung field (its ellipse stretched 12 % downwards, into the
  costophrenic angle) under a meniscus: the upper edge rises towards the lateral chest wall
  (y = level - h * u^2, u = 0 medially, 1 laterally), denser downwards.
- Cardiomegaly: a widened cardiac silhouette: an ellipse centred at (0.54 W, 0.58 H), right of
  centre (patient's left), semi-axes 19-23 % W by 11-14 % H (cardiothoracic ratio over 0.5), brightened.
- Atelectasis: plate-like (discoid) atelectasis: a thin band (rotated thin ellipse, +-20 degrees)
  in the lower half of a lung.
- Consolidation: a patchy, ill-defined airspace opacity: 3-6 overlapping discs within one lung
  field, strongly blurred edges and a smooth mottled texture.
- Pneumothorax: the lung collapses medially and downwards: the lung ellipse shrunk to 72-85 %
  about a point on its medial-inferior edge; in the gap between the two, above the collapsed
  lung's centre (apical and lateral, where air collects upright), lung markings vanish (heavy
  blur) and the film darkens by 25-35 % (air), with a thin bright visceral pleural line along the
  collapsed edge. The one model that darkens rather than brightens.

Intensity: an opacity adds brightness as a saturating blend `I + a (255 - I)` (a = alpha x soft
mask), which keeps the 8-bit range and looks like added attenuation; the blend scales the film's
own texture by (1 - a), so Gaussian noise of the film's estimated noise level x sqrt(1 - (1-a)^2)
is added back: the lesion's texture matches the background's.

Boxes: the pixel extent of the *hard* (unblurred) mask, half-open edges. The soft edge is a
Gaussian blur of that mask, so the box is the lesion's 50 % opacity contour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

Ellipse = tuple[float, float, float, float]  # cx, cy, a, b
LESION_MODEL_VERSION = 1  # bump when a drawing changes: cached synthetic images are keyed by it
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "Nodule", "Mass", "Effusion", "Cardiomegaly", "Atelectasis", "Consolidation", "Pneumothorax",
)


def lung_fields(width: int, height: int) -> tuple[Ellipse, Ellipse]:
    """(image-left lung = patient's right, image-right lung = patient's left) as ellipses."""
    return ((0.31 * width, 0.46 * height, 0.135 * width, 0.26 * height),
            (0.69 * width, 0.46 * height, 0.125 * width, 0.25 * height))


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return (np.arange(w, dtype=np.float32) + 0.5)[None, :], (np.arange(h, dtype=np.float32) + 0.5)[:, None]


def _ellipse_r2(shape: tuple[int, int], e: Ellipse, angle: float = 0.0) -> np.ndarray:
    """Normalised squared radius of every pixel centre w.r.t. ellipse `e` (<= 1 inside)."""
    x, y = _grid(shape)
    dx, dy = x - e[0], y - e[1]
    c, s = np.cos(angle), np.sin(angle)
    return ((dx * c + dy * s) / e[2]) ** 2 + ((-dx * s + dy * c) / e[3]) ** 2


def _blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(float(sigma), 0.3))


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Half-open pixel extent (x0, y0, x1, y1) of a boolean mask, None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


@dataclass(frozen=True)
class Lesion:
    """One drawn finding: its class, how it is drawn (`model`, `params`), opacity and edge blur."""

    kind: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    alpha: float = 0.4
    blur: float = 2.0

    def hard_mask(self, shape: tuple[int, int]) -> np.ndarray:
        return _MASKS[self.model](self, shape)

    def box(self, shape: tuple[int, int]) -> tuple[float, float, float, float] | None:
        return mask_box(self.hard_mask(shape))

    def draw(self, image: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
        """The float image with this lesion added (values stay within 0..255)."""
        if self.model == "pneumothorax":
            return _draw_pneumothorax(self, image, rng, noise_sigma)
        hard = self.hard_mask(image.shape)
        profile = _PROFILES.get(self.model, lambda les, shp, m: m)(self, image.shape, hard.astype(np.float32))
        a = self.alpha * np.clip(_blur(profile, self.blur), 0.0, 1.0)
        out = image + a * (255.0 - image)
        keep = np.sqrt(np.clip(1.0 - (1.0 - a) ** 2, 0.0, 1.0))
        out += rng.normal(0.0, noise_sigma, image.shape).astype(np.float32) * keep
        return np.clip(out, 0.0, 255.0)


# --- hard masks and profiles per model -------------------------------------------------------------
def _disc_mask(les: Lesion, shape: tuple[int, int]) -> np.ndarray:
    p = les.params
    return _ellipse_r2(shape, (p["cx"], p["cy"], p["r"], p["r"])) <= 1.0


def _disc_profile(les: Lesion, shape: tuple[int, int], hard: np.ndarray) -> np.ndarray:
    p = les.params
    r2 = _ellipse_r2(shape, (p["cx"], p["cy"], p["r"], p["r"]))
    return hard * (0.55 + 0.45 * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)))  # path length through a sphere


def _ellipse_mask(les: Lesion, shape: tuple[int, int]) -> np.ndarray:
    p = les.params
    inside = _ellipse_r2(shape, tuple(p["ellipse"]), p.get("angle", 0.0)) <= 1.0
    if "clip" in p:
        inside &= _ellipse_r2(shape, tuple(p["clip"])) <= 1.0
    return inside


def _effusion_u(les: Lesion, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    p = les.params
    cx, _, a, _ = p["lung"]
    x, y = _grid(shape)
    u = np.clip(p["side"] * (x - cx) / (2.0 * a) + 0.5, 0.0, 1.0)  # 0 medial .. 1 lateral
    return y - (p["level"] - p["meniscus"] * u * u), y


def _effusion_mask(les: Lesion, shape: tuple[int, int]) -> np.ndarray:
    below, _ = _effusion_u(les, shape)
    cx, cy, a, b = les.params["lung"]
    return (below >= 0.0) & (_ellipse_r2(shape, (cx, cy, a, 1.12 * b)) <= 1.0)  # down to the costophrenic angle


def _effusion_profile(les: Lesion, shape: tuple[int, int], hard: np.ndarray) -> np.ndarray:
    below, _ = _effusion_u(les, shape)
    return hard * (0.75 + 0.25 * np.clip(below / (0.1 * shape[0]), 0.0, 1.0))


def _blobs_mask(les: Lesion, shape: tuple[int, int]) -> np.ndarray:
    p = les.params
    union = np.zeros(shape, bool)
    for cx, cy, r in p["blobs"]:
        union |= _ellipse_r2(shape, (cx, cy, r, r)) <= 1.0
    return union & (_ellipse_r2(shape, tuple(p["lung"])) <= 1.0)


def _blobs_profile(les: Lesion, shape: tuple[int, int], hard: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(les.params["texture_seed"]).normal(size=shape).astype(np.float32)
    mottle = _blur(noise, 0.02 * shape[1])
    mottle = (mottle - mottle.min()) / max(float(np.ptp(mottle)), 1e-6)
    return hard * (0.7 + 0.3 * mottle)


def _pneumothorax_masks(les: Lesion, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    p = les.params
    lung = _ellipse_r2(shape, tuple(p["lung"])) <= 1.0
    collapsed = _ellipse_r2(shape, tuple(p["collapsed"])) <= 1.0
    _, y = _grid(shape)
    apical = y < p["collapsed"][1]  # air collects at the apex and laterally in an upright film
    return lung & ~collapsed & apical, collapsed


def _draw_pneumothorax(les: Lesion, image: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    gap, collapsed = _pneumothorax_masks(les, image.shape)
    m = np.clip(_blur(gap, les.blur), 0.0, 1.0)
    smooth = _blur(image, 0.02 * image.shape[1])
    air = smooth * (1.0 - les.params["darken"]) + rng.normal(0.0, noise_sigma, image.shape).astype(np.float32)
    out = image * (1.0 - m) + air * m
    edge = cv2.dilate(collapsed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~collapsed & gap
    line = les.alpha * np.clip(_blur(edge, 0.7) * 2.0, 0.0, 1.0)
    return np.clip(out + line * (255.0 - out), 0.0, 255.0)


_MASKS: dict[str, Callable[[Lesion, tuple[int, int]], np.ndarray]] = {
    "disc": _disc_mask, "ellipse": _ellipse_mask, "effusion": _effusion_mask, "blobs": _blobs_mask,
    "pneumothorax": lambda les, shape: _pneumothorax_masks(les, shape)[0],
}
_PROFILES = {"disc": _disc_profile, "effusion": _effusion_profile, "blobs": _blobs_profile}


# --- planners: draw a lesion's parameters from a seeded generator -----------------------------------
def _in_ellipse(rng: np.random.Generator, e: Ellipse, margin_x: float, margin_y: float) -> tuple[float, float]:
    """A uniform point of ellipse `e` shrunk by the margins (so a shape of that size fits)."""
    t, rad = rng.uniform(0.0, 2.0 * np.pi), np.sqrt(rng.uniform(0.0, 1.0))
    return (e[0] + max(e[2] - margin_x, 1.0) * rad * np.cos(t), e[1] + max(e[3] - margin_y, 1.0) * rad * np.sin(t))


def _side(rng: np.random.Generator, w: int, h: int) -> tuple[Ellipse, int]:
    k = int(rng.integers(2))
    return lung_fields(w, h)[k], (-1 if k == 0 else 1)  # lateral direction in x


def _plan_round(kind: str, lo: float, hi: float, rng: np.random.Generator, w: int, h: int) -> Lesion:
    lung, _ = _side(rng, w, h)
    r = float(rng.uniform(lo, hi) * w)
    cx, cy = _in_ellipse(rng, lung, 1.1 * r, 1.1 * r)
    return Lesion(kind, "disc", {"cx": cx, "cy": cy, "r": r}, float(rng.uniform(0.3, 0.45)), 0.15 * r)


def plan_lesion(kind: str, rng: np.random.Generator, width: int, height: int) -> Lesion:
    """Seeded parameters of one lesion of class `kind` for a width x height film."""
    w, h = width, height
    if kind == "Nodule":
        return _plan_round(kind, 0.012, 0.032, rng, w, h)
    if kind == "Mass":
        return _plan_round(kind, 0.04, 0.07, rng, w, h)
    if kind == "Effusion":
        lung, side = _side(rng, w, h)
        level = lung[1] + lung[3] * float(rng.uniform(0.15, 0.55))
        params = {"lung": lung, "side": side, "level": level, "meniscus": float(rng.uniform(0.04, 0.1)) * h}
        return Lesion(kind, "effusion", params, float(rng.uniform(0.3, 0.45)), 0.008 * w)
    if kind == "Cardiomegaly":
        e = (0.54 * w, 0.58 * h, float(rng.uniform(0.19, 0.23)) * w, float(rng.uniform(0.11, 0.14)) * h)
        return Lesion(kind, "ellipse", {"ellipse": e}, float(rng.uniform(0.3, 0.42)), 0.012 * w)
    if kind == "Atelectasis":
        lung, _ = _side(rng, w, h)
        a, b = float(rng.uniform(0.06, 0.1)) * w, float(rng.uniform(0.008, 0.016)) * h
        lower = (lung[0], lung[1] + 0.45 * lung[3], lung[2], 0.5 * lung[3])
        cx, cy = _in_ellipse(rng, lower, 0.7 * a, 0.7 * a)
        params = {"ellipse": (cx, cy, a, b), "angle": float(np.deg2rad(rng.uniform(-20, 20))), "clip": lung}
        return Lesion(kind, "ellipse", params, float(rng.uniform(0.4, 0.55)), 0.35 * b)
    if kind == "Consolidation":
        lung, _ = _side(rng, w, h)
        cx, cy = _in_ellipse(rng, lung, 0.06 * w, 0.06 * w)
        blobs = []
        for _ in range(int(rng.integers(3, 7))):
            r = float(rng.uniform(0.03, 0.06)) * w
            blobs.append((cx + float(rng.normal(0, 0.03 * w)), cy + float(rng.normal(0, 0.04 * h)), r))
        params = {"blobs": blobs, "lung": lung, "texture_seed": int(rng.integers(2**31))}
        return Lesion(kind, "blobs", params, float(rng.uniform(0.35, 0.5)), 0.012 * w)
    if kind == "Pneumothorax":
        lung, side = _side(rng, w, h)
        k = float(rng.uniform(0.72, 0.85))
        hx, hy = lung[0] - side * 0.7 * lung[2], lung[1] + 0.7 * lung[3]  # on the medial-inferior edge
        collapsed = (hx + k * (lung[0] - hx), hy + k * (lung[1] - hy), k * lung[2], k * lung[3])
        params = {"lung": lung, "collapsed": collapsed, "darken": float(rng.uniform(0.25, 0.35))}
        return Lesion(kind, "pneumothorax", params, 0.2, 1.5)
    raise ValueError(f"no synthetic model for '{kind}' (models: {', '.join(SYNTHETIC_CLASSES)})")


def noise_level(image: np.ndarray) -> float:
    """Robust estimate of the film's pixel noise (grey levels) from its high-pass residual."""
    h, w = image.shape
    centre = image[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(np.float32)
    residual = centre - cv2.GaussianBlur(centre, (0, 0), 1.0)
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return float(np.clip(1.4826 * mad, 0.5, 8.0))
