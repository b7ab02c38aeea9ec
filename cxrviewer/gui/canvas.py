"""The reading canvas: the display image in a pyqtgraph view, window/level by mouse, zoom, readout.

Mouse: left-drag pans, the wheel zooms about the cursor, right-drag sets window/level
(`nav_readout.drag_window`: horizontal = width, vertical = centre). pyqtgraph's own right-drag
zoom and its context menu are off. Other widgets add overlay items to `canvas.view`.
"""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal

from cxrviewer.gui.document import ViewerDocument
from cxrviewer.gui.nav_readout import (
    as_window,
    drag_window,
    read_rescale_type,
    readout_text,
    value_range,
    value_unit,
)
from cxrviewer.gui.workers import run_task
from cxrviewer.io.image import VoiWindow

ZOOM_STEP = 1.25


class ReadingViewBox(pg.ViewBox):
    """A ViewBox whose right-drag is handed to `on_right_drag(event)` instead of zooming."""

    def __init__(self, on_right_drag) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._on_right_drag = on_right_drag

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self._on_right_drag(ev)
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            return
        super().mouseClickEvent(ev)


class ImageCanvas(pg.GraphicsLayoutWidget):
    readout = Signal(str)  # "x 12, y 34: value unit  (mm, mm)" for the status bar; "" outside

    def __init__(self, document: ViewerDocument) -> None:
        super().__init__()
        self.document = document
        self.setBackground("k")
        self.view: pg.ViewBox = ReadingViewBox(self._right_drag)
        self.ci.addItem(self.view)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.item)
        self.unit = ""  # unit of the modality values of the current image ("HU", ...)
        self._drag_start: VoiWindow | None = None
        self._span = 1.0  # value range of the current image, for window/level gestures
        self._last_scene_pos: QPointF | None = None
        document.image_changed.connect(self._on_image)
        document.display_changed.connect(self._on_display)
        self.scene().sigMouseMoved.connect(self._on_mouse)

    # --- document -> picture ----------------------------------------------------------------
    def _on_image(self) -> None:
        self._drag_start = None
        self._on_display()
        image = self.document.image
        if image is None:
            self.unit = ""
            return
        lo, hi = value_range(image)
        self._span = hi - lo
        self.unit = value_unit(image)
        self.fit()
        if image.source_format == "dicom":
            self._load_unit(image.path)

    def _load_unit(self, path: Path) -> None:
        def done(kind: str) -> None:
            image = self.document.image
            if image is not None and image.path == path:
                self.unit = value_unit(image, kind)
                self._refresh_readout()

        run_task(lambda: read_rescale_type(path), done, lambda _sentence: None)

    def _on_display(self) -> None:
        pixels = self.document.display_pixels()
        if pixels is None:
            self.item.clear()
            return
        self.item.setImage(pixels, levels=(0, 255), autoLevels=False)

    # --- zoom ------------------------------------------------------------------------------
    def fit(self) -> None:
        """Show the whole image (key F)."""
        if self.document.image is not None:
            self.view.autoRange(items=[self.item], padding=0.01)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, about the centre of the view (key 1)."""
        if self.document.image is None:
            return
        px, py = self.view.viewPixelSize()
        if px > 0 and py > 0:
            self.view.scaleBy(x=1.0 / px, y=1.0 / py, center=self.view.viewRect().center())

    def zoom(self, factor: float) -> None:
        """Magnify by `factor` (> 1 zooms in) about the centre of the view (keys + and -)."""
        if self.document.image is not None and factor > 0:
            self.view.scaleBy(x=1.0 / factor, y=1.0 / factor, center=self.view.viewRect().center())

    def zoom_in(self) -> None:
        self.zoom(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom(1.0 / ZOOM_STEP)

    # --- window/level ------------------------------------------------------------------------
    def _right_drag(self, ev) -> None:
        if ev.isStart():
            self.begin_window_drag()
        delta = ev.screenPos() - ev.buttonDownScreenPos(Qt.MouseButton.RightButton)
        self.window_drag(delta.x(), delta.y())
        if ev.isFinish():
            self._drag_start = None

    def begin_window_drag(self) -> None:
        """Remember the window a right-drag starts from."""
        image = self.document.image
        self._drag_start = as_window(image, self.document.voi) if image is not None else None

    def window_drag(self, dx: float, dy: float) -> None:
        """Set the window for a right-drag of (dx, dy) screen pixels from where it started."""
        if self.document.image is None:
            return
        if self._drag_start is None:
            self.begin_window_drag()
        size = float(max(self.width(), self.height(), 1))
        self.document.set_voi(drag_window(self._drag_start, dx, dy, self._span, size))

    # --- readout ---------------------------------------------------------------------------
    def _on_mouse(self, pos: QPointF) -> None:
        self._last_scene_pos = pos
        self._refresh_readout()

    def _refresh_readout(self) -> None:
        image = self.document.image
        if image is None or self._last_scene_pos is None:
            return
        point = self.view.mapSceneToView(self._last_scene_pos)
        self.readout.emit(readout_text(image, point.x(), point.y(), self.unit))

    def readout_at(self, col: float, row: float) -> str:
        """The readout text for image position (col, row), as the status bar would show it."""
        image = self.document.image
        return readout_text(image, col, row, self.unit) if image is not None else ""
