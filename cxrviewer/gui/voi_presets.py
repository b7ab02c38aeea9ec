"""The window/VOI preset chooser: the file's own VOIs first, then chest presets, full range and auto.

Chest radiographs are not calibrated like CT: the same tissue has different values on different
detectors, after different processing. So the chest presets are windows over percentiles of the
image's own values *inside the body*, counted in attenuation order (from the most transparent,
air, to the most attenuating, bone and metal; for MONOCHROME1 that is from high to low values):

- "inside the body": the central 80 % × 80 % of the image (edges hold collimation, markers and
  labels), without the values in the lowest or highest 1 % of the whole image's value range
  (direct exposure and the collimator's shadow, often saturated).
- **Lung**: attenuation percentiles 1 → 80: from aerated lung to soft tissue, so lung markings
  and vessels get the contrast; the mediastinum and abdomen go white.
- **Soft tissue** (mediastinum): percentiles 15 → 99.9: lungs go dark; heart, mediastinum,
  hila, diaphragm and tubes/lines get the contrast.
- **Bone**: percentiles 40 → 100: the more attenuating half: spine, ribs over the heart,
  clavicles, hardware; aerated lung is black.

(The ramp of each LINEAR window runs from the lower percentile's value to the upper one's.)

For CT (values in HU) the usual fixed windows replace them: lung C −600 W 1500, mediastinum
C 40 W 400, bone C 400 W 1800. Then come **Full range** (min..max) and **Auto** (the 0.5–99.5 %
percentiles of all values).

Keyboard (actions from `VoiPresetBox.make_actions`): F2 the file's own VOI (Auto when it has
none), F3 Lung, F4 Soft tissue, F5 Bone, F6 Full range, F7 Auto; full stop (.) next preset,
comma (,) previous preset (] and [ belong to the findings panel).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox

from cxrviewer.gui.document import ViewerDocument
from cxrviewer.imaging.voi import FullRange, VoiChoice, window_from_levels
from cxrviewer.io.image import ImageData, VoiWindow

CHEST_PERCENTILES = {"lung": (1.0, 80.0), "soft": (15.0, 99.9), "bone": (40.0, 100.0)}
CT_WINDOWS = {"lung": (-600.0, 1500.0), "soft": (40.0, 400.0), "bone": (400.0, 1800.0)}
NAMES = {"lung": "Lung", "soft": "Soft tissue", "bone": "Bone"}
# (key of the preset, label of the action, shortcut)
SHORTCUTS = [("file", "File's own VOI", "F2"), ("lung", "Lung window", "F3"), ("soft", "Soft tissue window", "F4"),
             ("bone", "Bone window", "F5"), ("full", "Full range", "F6"), ("auto", "Auto window", "F7")]


def body_values(image: ImageData) -> np.ndarray:
    """Values inside the body in attenuation order (negated for MONOCHROME1), subsampled to ~512²."""
    step = max(1, max(image.shape) // 512)
    pixels = image.pixels[::step, ::step]
    rows, cols = pixels.shape
    central = pixels[rows // 10: rows - rows // 10, cols // 10: cols - cols // 10].ravel()
    lo, hi = float(np.min(image.pixels)), float(np.max(image.pixels))
    margin = 0.01 * (hi - lo)
    inside = central[(central > lo + margin) & (central < hi - margin)]
    values = inside if inside.size >= 100 else central
    return -values if image.inverted else values


def chest_presets(image: ImageData) -> list[tuple[str, str, VoiChoice]]:
    """(key, name, window) of Lung, Soft tissue and Bone for `image` (see the module docstring)."""
    out: list[tuple[str, str, VoiChoice]] = []
    if image.meta.modality.upper() == "CT":
        for key, (center, width) in CT_WINDOWS.items():
            out.append((key, f"{NAMES[key]} (C {center:g}, W {width:g})", VoiWindow(center, width, explanation=NAMES[key])))
        return out
    values = body_values(image)
    if values.size == 0:
        return out
    sign = -1.0 if image.inverted else 1.0
    for key, (q_lo, q_hi) in CHEST_PERCENTILES.items():
        a, b = (sign * float(v) for v in np.percentile(values, [q_lo, q_hi]))
        lo, hi = min(a, b), max(a, b)
        if hi > lo:
            w = window_from_levels(lo, hi)
            out.append((key, f"{NAMES[key]} (C {w.center:.0f}, W {w.width:.0f})", w))
    return out


def keyed_presets(image: ImageData) -> list[tuple[str, str, VoiChoice]]:
    """Every preset as (key, name, VOI): the file's own ("file", "file2", …), chest, "full", "auto"."""
    presets: list[tuple[str, str, VoiChoice]] = []
    own: list[tuple[str, VoiChoice]] = []
    for i, lut in enumerate(image.voi_luts, start=1):
        own.append((f"VOI LUT {i}" + (f": {lut.explanation}" if lut.explanation else ""), lut))
    for i, w in enumerate(image.windows, start=1):
        name = w.explanation or f"Window {i}"
        own.append((f"{name} (C {w.center:g}, W {w.width:g}{', ' + w.function if w.function != 'LINEAR' else ''})", w))
    for i, (name, voi) in enumerate(own):
        presets.append(("file" if i == 0 else f"file{i + 1}", name, voi))
    presets += chest_presets(image)
    presets.append(("full", "Full range", FullRange()))
    lo, hi = np.percentile(image.pixels[::4, ::4], [0.5, 99.5])
    if hi > lo:
        presets.append(("auto", "Auto (0.5–99.5 %)", window_from_levels(float(lo), float(hi))))
    return presets


def presets_for(image: ImageData) -> list[tuple[str, VoiChoice]]:
    """(name, VOI) of every preset, in menu order."""
    return [(name, voi) for _key, name, voi in keyed_presets(image)]


def same_voi(a: VoiChoice, b: VoiChoice) -> bool:
    """True when two VOI choices are the same (VOI LUTs by identity: they hold arrays)."""
    if a is b:
        return True
    if isinstance(a, VoiWindow) and isinstance(b, VoiWindow):
        return (a.center, a.width, a.function) == (b.center, b.width, b.function)
    return isinstance(a, FullRange) and isinstance(b, FullRange)


class VoiPresetBox(QComboBox):
    """The preset chooser; it follows the document's VOI, showing "Custom" for a dragged window."""

    def __init__(self, document: ViewerDocument) -> None:
        super().__init__()
        self.document = document
        self.setMinimumContentsLength(24)
        self._presets: list[tuple[str, VoiChoice]] = []
        self._keys: list[str] = []
        document.image_changed.connect(self._fill)
        document.display_changed.connect(self._follow)
        self.activated.connect(self._choose)

    def _fill(self) -> None:
        self.clear()
        image = self.document.image
        keyed = keyed_presets(image) if image is not None else []
        self._keys = [key for key, _name, _voi in keyed]
        self._presets = [(name, voi) for _key, name, voi in keyed]
        for name, _ in self._presets:
            self.addItem(name)
        self.setEnabled(bool(self._presets))
        self._follow()

    def _follow(self) -> None:
        """Select the preset the document shows, or a trailing "Custom" entry for any other window."""
        n = len(self._presets)
        if self.count() > n:
            self.removeItem(n)
        if self.document.image is None:
            return
        voi = self.document.voi
        for i, (_name, preset) in enumerate(self._presets):
            if same_voi(voi, preset):
                self.setCurrentIndex(i)
                return
        text = f"Custom (C {voi.center:.0f}, W {voi.width:.0f})" if isinstance(voi, VoiWindow) else "Custom"
        self.addItem(text)
        self.setCurrentIndex(n)

    def _choose(self, index: int) -> None:
        if 0 <= index < len(self._presets):
            self.document.set_voi(self._presets[index][1])

    # --- keyboard ----------------------------------------------------------------------------
    def choose_key(self, key: str) -> bool:
        """Apply the preset with this key ("file", "lung", "soft", "bone", "full", "auto"); False if absent.

        "file" falls back to "auto" for a file without VOI of its own.
        """
        keys = [key, "auto"] if key == "file" else [key]
        for k in keys:
            if k in self._keys:
                self._choose(self._keys.index(k))
                return True
        return False

    def step(self, delta: int) -> None:
        """Apply the next (delta = 1) or previous (-1) preset, wrapping around."""
        if self._presets:
            current = self.currentIndex() if self.currentIndex() < len(self._presets) else -1
            self._choose((current + delta) % len(self._presets))

    def make_actions(self, parent) -> list[QAction]:
        """One action per fixed preset key (F2–F7) plus next (.) and previous (,)."""
        actions = []
        for key, label, shortcut in SHORTCUTS:
            actions.append(_action(parent, label, shortcut, lambda _=False, k=key: self.choose_key(k)))
        actions.append(_action(parent, "Next preset", ".", lambda: self.step(1)))
        actions.append(_action(parent, "Previous preset", ",", lambda: self.step(-1)))
        return actions


def _action(parent, text: str, shortcut: str, slot: Callable) -> QAction:
    action = QAction(text, parent, shortcut=QKeySequence(shortcut))
    action.triggered.connect(slot)
    return action
