"""The window/VOI preset chooser: the file's own VOIs first, then full range and an automatic one."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QComboBox

from cxrviewer.gui.document import ViewerDocument
from cxrviewer.imaging.voi import FullRange, VoiChoice, window_from_levels
from cxrviewer.io.image import ImageData


def presets_for(image: ImageData) -> list[tuple[str, VoiChoice]]:
    presets: list[tuple[str, VoiChoice]] = []
    for i, lut in enumerate(image.voi_luts, start=1):
        presets.append((f"VOI LUT {i}" + (f": {lut.explanation}" if lut.explanation else ""), lut))
    for i, w in enumerate(image.windows, start=1):
        name = w.explanation or f"Window {i}"
        presets.append((f"{name} (C {w.center:g}, W {w.width:g}{', ' + w.function if w.function != 'LINEAR' else ''})", w))
    presets.append(("Full range", FullRange()))
    lo, hi = np.percentile(image.pixels[::4, ::4], [0.5, 99.5])
    if hi > lo:
        presets.append(("Auto (0.5–99.5 %)", window_from_levels(float(lo), float(hi))))
    return presets


class VoiPresetBox(QComboBox):
    def __init__(self, document: ViewerDocument) -> None:
        super().__init__()
        self.document = document
        self.setMinimumContentsLength(24)
        self._presets: list[tuple[str, VoiChoice]] = []
        document.image_changed.connect(self._fill)
        self.activated.connect(self._choose)

    def _fill(self) -> None:
        self.clear()
        image = self.document.image
        self._presets = presets_for(image) if image is not None else []
        for name, _ in self._presets:
            self.addItem(name)
        self.setEnabled(bool(self._presets))

    def _choose(self, index: int) -> None:
        if 0 <= index < len(self._presets):
            self.document.set_voi(self._presets[index][1])
