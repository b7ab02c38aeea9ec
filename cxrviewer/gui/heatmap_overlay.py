"""The CAM heatmap of the selected finding, drawn over the radiograph in the canvas's view.

    overlay = HeatmapOverlay(canvas.view, analysis)
    overlay.set_opacity(0.5)     # 0 .. 1, multiplies the colour map's own alpha
    overlay.set_visible(False)   # the user's switch; it also hides while there is no result

The heatmap (float32 [rows, cols] in [0, 1], the image's size) goes through one RGBA lookup table
(a jet colour map whose alpha is 0 below `FLOOR` and ramps up to opaque), built once; a map is turned
into pixels with one uint8 -> uint32 gather, so a 2k x 2k map takes a few tens of milliseconds.
The item sits at the image item's origin, one heatmap pixel per image pixel.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from cxrviewer.gui.analysis_model import AnalysisModel

FLOOR = 0.2  # heatmap values below this are fully transparent
FULL = 0.75  # ... and from this value on the colour is fully opaque
Z_VALUE = 10.0  # above the image item (0); box items should sit higher still


def _jet(v: np.ndarray) -> np.ndarray:
    """The jet colour map: [N] in [0, 1] -> [N, 3] in [0, 1]."""
    return np.stack([np.clip(1.5 - np.abs(4.0 * v - k), 0.0, 1.0) for k in (3.0, 2.0, 1.0)], axis=1)


def make_lut(floor: float = FLOOR, full: float = FULL) -> np.ndarray:
    """The [256, 4] uint8 RGBA table: jet colours, alpha 0 up to `floor`, rising to 255 at `full`."""
    v = np.linspace(0.0, 1.0, 256)
    alpha = np.clip((v - floor) / max(full - floor, 1e-6), 0.0, 1.0) ** 0.8
    alpha[v < floor] = 0.0
    rgba = np.concatenate([_jet(v), alpha[:, None]], axis=1)
    return np.ascontiguousarray(np.round(rgba * 255.0).astype(np.uint8))


LUT = make_lut()
_LUT32 = LUT.view(np.uint32).ravel()  # one 32-bit word per entry: a single gather per pixel


def heatmap_rgba(heat: np.ndarray) -> np.ndarray:
    """A heatmap [rows, cols] in [0, 1] -> RGBA uint8 [rows, cols, 4] through `LUT`."""
    scaled = np.multiply(heat, 255.0, dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += 0.5
    index = scaled.astype(np.uint8)
    return _LUT32[index].view(np.uint8).reshape(*index.shape, 4)


class HeatmapOverlay:
    """An RGBA `pg.ImageItem` in `view` following the analysis's result and selected finding."""

    def __init__(self, view: pg.ViewBox, analysis: AnalysisModel) -> None:
        self.view = view
        self.analysis = analysis
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setZValue(Z_VALUE)
        self.item.setVisible(False)
        view.addItem(self.item, ignoreBounds=True)  # autoRange/fit follows the image, not this
        self.opacity = float(analysis.settings.heatmap_opacity)
        self.wanted = True  # the user's "Show heatmap" switch
        self.shown: str | None = None  # the finding whose map the item holds
        self._shown_result: object = None
        self.item.setOpacity(self.opacity)
        analysis.selection_changed.connect(self.refresh)
        analysis.finished.connect(self.refresh)
        analysis.cleared.connect(self.refresh)

    # --- the user's controls ---------------------------------------------------------------
    def set_opacity(self, opacity: float) -> None:
        """0 (invisible) .. 1 (the colour map's own alpha); no recolouring needed."""
        self.opacity = min(1.0, max(0.0, float(opacity)))
        self.item.setOpacity(self.opacity)

    def set_visible(self, visible: bool) -> None:
        self.wanted = bool(visible)
        self.refresh()

    @property
    def visible(self) -> bool:
        """Whether a heatmap is on screen now."""
        return self.item.isVisible()

    # --- following the analysis --------------------------------------------------------------
    def refresh(self) -> None:
        """Show the selected finding's map (converted only when the finding or result changed)."""
        analysis = self.analysis
        finding = analysis.selected
        if analysis.result is None or finding is None:
            self._clear()
            return
        if finding != self.shown or analysis.result is not self._shown_result:
            try:
                heat = analysis.heatmap(finding)
            except (StopIteration, ValueError, TypeError):  # a finding the result lacks, or no CAMs
                self._clear()
                return
            self.item.setImage(heatmap_rgba(heat), autoLevels=False, levels=(0, 255))
            self.shown, self._shown_result = finding, analysis.result
        self.item.setVisible(self.wanted)

    def _clear(self) -> None:
        self.item.setVisible(False)
        if self.shown is not None:
            self.item.clear()
        self.shown, self._shown_result = None, None
