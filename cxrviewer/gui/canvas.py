"""The reading canvas: the display image in a pyqtgraph view, with a value/position readout."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal

from cxrviewer.gui.document import ViewerDocument


class ImageCanvas(pg.GraphicsLayoutWidget):
    readout = Signal(str)  # "x, y: value" text for the status bar

    def __init__(self, document: ViewerDocument) -> None:
        super().__init__()
        self.document = document
        self.setBackground("k")
        self.view: pg.ViewBox = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.item)
        document.image_changed.connect(self._on_image)
        document.display_changed.connect(self._on_display)
        self.scene().sigMouseMoved.connect(self._on_mouse)

    def _on_image(self) -> None:
        self._on_display()
        if self.document.image is not None:
            self.view.autoRange(padding=0.01)

    def _on_display(self) -> None:
        pixels = self.document.display_pixels()
        if pixels is None:
            self.item.clear()
            return
        self.item.setImage(pixels, levels=(0, 255), autoLevels=False)

    def _on_mouse(self, pos: QPointF) -> None:
        image = self.document.image
        if image is None:
            return
        point = self.view.mapSceneToView(pos)
        col, row = int(np.floor(point.x())), int(np.floor(point.y()))
        if not (0 <= row < image.shape[0] and 0 <= col < image.shape[1]):
            self.readout.emit("")
            return
        text = f"x {col}, y {row}: {image.pixels[row, col]:g}"
        if image.pixel_spacing:
            text += f"  ({col * image.pixel_spacing[1]:.1f} mm, {row * image.pixel_spacing[0]:.1f} mm)"
        self.readout.emit(text)
