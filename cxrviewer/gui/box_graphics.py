"""Canvas items for one annotation box and for drawing a new one (`box_items.BoxLayer` owns them).

Both items speak pyqtgraph's mouse protocol (`mouseDragEvent` / `mouseClickEvent` / `hoverEvent`):
an item that accepts a left drag keeps the view from panning, one that ignores it lets the view pan.
A drag changes only the item's own rectangle while it lasts; the layer is told once, when the
button is released, so the store gets one version per drag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QPainter, QPainterPath

from cxrviewer.annotations.editing import ShownBox
from cxrviewer.gui import box_draw

if TYPE_CHECKING:
    from cxrviewer.gui.box_items import BoxLayer

MIN_SIZE = 2.0  # image pixels: radiomics needs at least 2 x 2


def rect_of(coords) -> QRectF:
    x0, y0, x1, y1 = (float(c) for c in coords)
    return QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized()


def coords_of(rect: QRectF, snap: bool = False) -> tuple[float, float, float, float]:
    """The rectangle as (x0, y0, x1, y1), half-open; with `snap` on whole pixels."""
    r = rect.normalized()
    coords = (r.left(), r.top(), r.right(), r.bottom())
    return tuple(float(round(c)) if snap else float(c) for c in coords)


class BoxItem(pg.GraphicsObject):
    """One shown box: outline, label, handles when selected; moves and resizes by dragging."""

    def __init__(self, layer: BoxLayer, box: ShownBox, text: str, bounds: QRectF | None) -> None:
        super().__init__()
        self.layer = layer
        self.box = box
        self.text = text
        self.bounds = bounds
        self.rect = rect_of(box.box)
        self.style = box_draw.style_of(box)
        self.selected = False
        self.hovered = False
        self.dragging = False
        self.label_slot = 0  # label heights away from the box, so labels of boxes sharing a corner stack
        self._handle: str | None = None
        self._start = QRectF(self.rect)
        self.setAcceptHoverEvents(True)

    @property
    def box_id(self) -> str:
        return self.box.box_id

    # --- geometry ---------------------------------------------------------------------------
    def _pixel(self) -> tuple[float, float]:
        size = self.pixelSize()
        return (1.0, 1.0) if size is None or not size[0] else (abs(size[0]), abs(size[1]))

    def boundingRect(self) -> QRectF:
        px, py = self._pixel()
        label_w, label_h = box_draw.label_size(self.text)
        pad = box_draw.HANDLE_PX + 2.0
        above = label_h + box_draw.LABEL_GAP_PX + 2.0 + self.label_slot * (label_h + box_draw.LABEL_STACK_GAP_PX)
        r = self.rect.adjusted(-pad * px, -above * py, pad * px, pad * py)
        return r.united(QRectF(r.left(), r.top(), (label_w + pad) * px, r.height()))

    def shape(self) -> QPainterPath:
        px, py = self._pixel()
        grab = box_draw.GRAB_PX
        path = QPainterPath()
        path.addRect(self.rect.adjusted(-grab * px, -grab * py, grab * px, grab * py))
        return path

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()

    def set_rect(self, rect: QRectF) -> None:
        self.prepareGeometryChange()
        self.rect = QRectF(rect)
        self.update()

    def set_selected(self, selected: bool) -> None:
        """Selected: handles and on top; clinician boxes lie above model boxes."""
        self.selected = selected
        self.setZValue(30 if selected else (20 if self.box.kind == "model" else 22))
        self.update()

    def paint(self, painter: QPainter, *args) -> None:
        box_draw.paint_box(painter, self.rect, self.style, self.text, self.selected, self.hovered, self.label_slot)

    def set_label_slot(self, slot: int) -> None:
        if slot != self.label_slot:
            self.prepareGeometryChange()
            self.label_slot = slot
            self.update()

    # --- mouse ------------------------------------------------------------------------------
    def handle_at(self, pos: QPointF) -> str | None:
        """The resize handle under `pos` (item coordinates); only the selected box has handles."""
        return box_draw.handle_at(self.rect, pos, self._pixel()) if self.selected else None

    def hoverEvent(self, ev) -> None:
        if ev.isExit():
            self.hovered = False
            self.unsetCursor()
            self.update()
            return
        ev.acceptDrags(Qt.MouseButton.LeftButton)
        ev.acceptClicks(Qt.MouseButton.LeftButton)
        ev.acceptClicks(Qt.MouseButton.RightButton)
        handle = self.handle_at(ev.pos())
        self.setCursor(box_draw.CURSORS[handle] if handle else Qt.CursorShape.SizeAllCursor)
        if not self.hovered:
            self.hovered = True
            self.update()

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.layer.select(self.box_id)
        elif ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self.layer.select(self.box_id)
            self.layer.show_menu(self.box_id, ev.screenPos())
        else:
            ev.ignore()

    def mouseDragEvent(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()  # right-drag: window/level on the view
            return
        ev.accept()
        if ev.isStart():
            self._handle = self.handle_at(ev.buttonDownPos())
            self._start = QRectF(self.rect)
            self.dragging = True
            self.layer.drag_started(self)
        if not self.dragging:
            return
        delta = ev.pos() - ev.buttonDownPos()
        if self._handle:
            rect = box_draw.resized(self._start, self._handle, delta.x(), delta.y(), MIN_SIZE)
            rect = rect.intersected(self.bounds) if self.bounds is not None else rect
        else:
            shift = QPointF(round(delta.x()), round(delta.y()))  # whole pixels: the size stays exact
            rect = box_draw.kept_inside(self._start.translated(shift), self.bounds)
        self.set_rect(rect)
        if ev.isFinish():
            self.dragging = False
            self.layer.drag_finished(self, coords_of(self._start), coords_of(self.rect))

    def cancel_drag(self) -> None:
        """Put the box back where the drag started (Escape during a drag)."""
        if self.dragging:
            self.dragging = False
            self.set_rect(self._start)
            self.layer.drag_finished(self, coords_of(self._start), coords_of(self._start))


class DrawOverlay(pg.GraphicsObject):
    """A transparent item over the image: in draw mode a left-drag on it draws a new box; otherwise it
    lets drags through (the view pans) and a click on it clears the box selection."""

    def __init__(self, layer: BoxLayer) -> None:
        super().__init__()
        self.layer = layer
        self.bounds = QRectF()
        self.draft: QRectF | None = None
        self.setZValue(10)

    def set_bounds(self, bounds: QRectF | None) -> None:
        self.prepareGeometryChange()
        self.bounds = QRectF(bounds) if bounds is not None else QRectF()
        self.draft = None

    def boundingRect(self) -> QRectF:
        return QRectF(self.bounds)

    def paint(self, painter: QPainter, *args) -> None:
        if self.draft is not None:
            box_draw.paint_draft(painter, self.draft)

    def hoverEvent(self, ev) -> None:
        if ev.isExit() or not self.layer.draw_mode:
            self.unsetCursor()
            return
        ev.acceptDrags(Qt.MouseButton.LeftButton)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            self.layer.select(None)
        ev.ignore()

    def mouseDragEvent(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or (ev.isStart() and not self.layer.draw_mode):
            ev.ignore()  # not drawing: the view pans
            return
        if not ev.isStart() and self.draft is None:
            ev.ignore()
            return
        ev.accept()
        rect = QRectF(ev.buttonDownPos(), ev.pos()).normalized().intersected(self.bounds)
        self.prepareGeometryChange()
        self.draft = rect
        self.update()
        if ev.isFinish():
            self.draft = None
            self.update()
            self.layer.draw_finished(coords_of(rect, snap=True))

    def cancel(self) -> None:
        if self.draft is not None:
            self.draft = None
            self.update()
