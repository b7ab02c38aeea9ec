"""`BoxLayer`: the annotation boxes of the open image drawn on the canvas as editable rectangles.

    layer = BoxLayer(canvas.view, boxes, analysis)
    layer.set_draw_mode(True)         # key B: a left-drag on the image draws one box of the selected finding
    layer.accept_selected()           # key A;  reject_selected(): X;  delete_selected(): Del / Backspace

The layer shows the boxes of the selected finding (`show_all_findings` for every finding) in image
pixel coordinates: model proposals dashed amber with the score, clinician boxes solid cyan with a
check and the annotator; the selected box thicker with eight resize handles. A click selects, a
drag moves the box or (on a handle) resizes it, a right-click opens Accept / Reject / Delete /
Relabel. A drag is committed once, after the button is released (`BoxModel.move`), so the store
gets one version and radiomics is computed once. Items are rebuilt from the model on every
`boxes_changed` (deferred while a drag is in progress) and restyled on `selection_changed`; the
layer holds no box state of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMenu

from cxrviewer.gui import box_draw
from cxrviewer.gui.analysis_model import AnalysisModel
from cxrviewer.gui.box_graphics import MIN_SIZE, BoxItem, DrawOverlay
from cxrviewer.gui.box_model import BoxModel

Coords = tuple[float, float, float, float]
_SAME_PX = 0.5


class BoxLayer(QObject):
    draw_mode_changed = Signal(bool)

    def __init__(self, view: pg.ViewBox, boxes: BoxModel, analysis: AnalysisModel,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.boxes = boxes
        self.analysis = analysis
        self.draw_mode = False
        self.show_all_findings = False
        self.menu: QMenu | None = None  # the open context menu, if any
        self._items: list[BoxItem] = []
        self._drag: BoxItem | None = None
        self._pending = False  # boxes changed during a drag: rebuild when it ends
        self.overlay = DrawOverlay(self)
        view.addItem(self.overlay, ignoreBounds=True)
        view.sigTransformChanged.connect(self._place_labels)  # label overlaps depend on the zoom
        boxes.boxes_changed.connect(self._on_boxes_changed)
        boxes.selection_changed.connect(self.restyle)
        analysis.selection_changed.connect(self._on_finding)
        for widget in view.scene().views() if view.scene() is not None else []:
            widget.installEventFilter(self)  # keys reach the canvas widget, not the scene's filters
        self.rebuild()

    # --- options ----------------------------------------------------------------------------
    def set_draw_mode(self, on: bool) -> None:
        """In draw mode a left-drag on the image draws a new box (key B toggles it); the mode ends
        with the box (unless Shift is held when the button is released) or with Escape."""
        on = bool(on)
        if on != self.draw_mode:
            self.draw_mode = on
            self.overlay.cancel()
            self.overlay.unsetCursor()
            self.draw_mode_changed.emit(on)

    def set_show_all_findings(self, on: bool) -> None:
        """Show the boxes of every finding, not only the selected one's."""
        if bool(on) != self.show_all_findings:
            self.show_all_findings = bool(on)
            self.rebuild()

    def findings(self) -> list[str]:
        """The finding names a box can be labelled with (the model's, else the default eight)."""
        result = self.analysis.result
        if result is not None and result.findings:
            return [f.name for f in result.findings]
        from cxrviewer.models.spec import DEFAULT_TARGETS

        return list(DEFAULT_TARGETS)

    # --- items ------------------------------------------------------------------------------
    def items(self) -> list[BoxItem]:
        """The box items now in the view, in drawing order."""
        return list(self._items)

    def item(self, box_id: str) -> BoxItem | None:
        return next((i for i in self._items if i.box_id == box_id), None)

    def rebuild(self) -> None:
        """Replace every item with the model's current boxes (the selected finding's, or all)."""
        if self._drag is not None:
            self._pending = True
            return
        self._pending = False
        for item in self._items:
            self.view.removeItem(item)
        self._items = []
        image = self.boxes.document.image
        bounds = None if image is None else QRectF(0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
        self.overlay.set_bounds(bounds)
        if image is None:
            return
        finding = None if self.show_all_findings else self.analysis.selected
        if finding is None and not self.show_all_findings:
            return
        selected = self.boxes.selected_id
        for shown in self.boxes.boxes(finding):
            item = BoxItem(self, shown, box_draw.label_text(shown, self._score(shown)), bounds)
            item.set_selected(shown.box_id == selected)
            self.view.addItem(item, ignoreBounds=True)
            self._items.append(item)
        self._place_labels()

    def _place_labels(self, *_args) -> None:
        """Give each box the first label slot whose label overlaps no earlier box's label on screen
        (boxes sharing a corner, e.g. two findings' boxes from one heatmap, stack their labels)."""
        scene = self.view.scene()
        views = scene.views() if scene is not None else []
        if not views or self._drag is not None:
            return
        placed: list[QRectF] = []
        for item in self._items:
            corner = QPointF(views[0].mapFromScene(self.view.mapViewToScene(item.rect.topLeft())))
            slot, where = 0, box_draw.label_rect(corner, item.text, 0)
            while slot < 8 and any(where.intersects(other) for other in placed):
                slot += 1
                where = box_draw.label_rect(corner, item.text, slot)
            placed.append(where)
            item.set_label_slot(slot)

    def restyle(self) -> None:
        """Mark the selected box (thicker, handles, on top)."""
        selected = self.boxes.selected_id
        for item in self._items:
            item.set_selected(item.box_id == selected)

    def _score(self, shown) -> float | None:
        """The model's score of a stored proposal (the store keeps no scores), from the current result."""
        result, record = self.analysis.result, shown.record
        if shown.score is not None or result is None or record is None or record.orig is None:
            return shown.score
        for finding in result.findings:
            for b in finding.boxes if finding.name == shown.finding else ():
                if all(abs(a - c) <= _SAME_PX for a, c in zip(b.as_tuple(), record.orig)):
                    return float(b.score)
        return None

    def _on_boxes_changed(self) -> None:
        self.rebuild()

    def _on_finding(self) -> None:
        shown = self.boxes.selected()
        if shown is not None and not self.show_all_findings and shown.finding != self.analysis.selected:
            self.boxes.select(None)
        self.rebuild()

    # --- selection and edits ------------------------------------------------------------------
    def select(self, box_id: str | None) -> None:
        self.boxes.select(box_id)

    def accept_selected(self) -> str | None:
        """Accept the selected box as it stands (key A)."""
        return self._on_selected(self.boxes.accept)

    def reject_selected(self) -> str | None:
        """Reject the selected box (key X): a model box is marked rejected and hidden."""
        return self._on_selected(self.boxes.reject)

    def delete_selected(self) -> str | None:
        """Delete the selected box (Del / Backspace)."""
        return self._on_selected(self.boxes.delete)

    def relabel_selected(self, finding: str) -> str | None:
        """Give the selected box another finding; the view follows it to that finding."""
        box_id = self._on_selected(lambda b: self.boxes.relabel(b, finding))
        if box_id is not None and not self.show_all_findings:
            self.analysis.select(finding)  # the box stays in view, still selected
        return box_id

    def _on_selected(self, action: Callable[[str], str | None]) -> str | None:
        box_id = self.boxes.selected_id
        if box_id is None or self._drag is not None:
            return None
        return action(box_id)

    # --- what the items report ----------------------------------------------------------------
    def drag_started(self, item: BoxItem) -> None:
        self._drag = item
        if self.boxes.selected_id != item.box_id:
            self.boxes.select(item.box_id)

    def drag_finished(self, item: BoxItem, before: Coords, after: Coords) -> None:
        """The button was released: commit the move once, after the event has been handled."""
        QTimer.singleShot(0, lambda: self._commit_move(item, before, after))

    def _commit_move(self, item: BoxItem, before: Coords, after: Coords) -> None:
        self._drag = None
        if after != before and self.boxes.move(item.box_id, after) is not None:
            return  # boxes_changed rebuilt the items
        if self._pending or after != before:
            self.rebuild()  # refused (conflict, error) or changed meanwhile: show the store's state

    def draw_finished(self, coords: Coords) -> None:
        QTimer.singleShot(0, lambda: self._commit_draw(coords))

    def _commit_draw(self, coords: Coords) -> None:
        x0, y0, x1, y1 = coords
        if x1 - x0 < MIN_SIZE or y1 - y0 < MIN_SIZE:
            return  # a click, not a box
        finding = self.analysis.selected
        if finding is None:
            shown = self.boxes.selected()
            finding = shown.finding if shown is not None else None
        if finding is None:
            self.boxes.error.emit("Select a finding before drawing a box.")
            return
        self.boxes.add(finding, coords)
        # one box per B, as annotation tools do; Shift held at the release keeps drawing
        if not QApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.set_draw_mode(False)

    # --- context menu and keys ----------------------------------------------------------------
    def context_menu(self, box_id: str) -> QMenu:
        """Accept / Reject / Delete / Relabel ▸ for one box (acting on it as the selected box)."""
        shown = next((b for b in self.boxes.boxes() if b.box_id == box_id), None)
        views = self.view.scene().views() if self.view.scene() is not None else []
        menu = QMenu(views[0] if views else None)
        act = menu.addAction("Accept", self.accept_selected)
        act.setShortcut("A")
        act.setEnabled(shown is not None and shown.status != "accepted")
        act = menu.addAction("Reject", self.reject_selected)
        act.setShortcut("X")
        act.setEnabled(shown is not None and shown.kind == "model")
        menu.addAction("Delete", self.delete_selected).setShortcut("Del")
        relabel = menu.addMenu("Relabel")
        for name in self.findings():
            action = relabel.addAction(name, lambda n=name: self.relabel_selected(n))
            action.setCheckable(True)
            action.setChecked(shown is not None and shown.finding == name)
            action.setEnabled(shown is None or shown.finding != name)
        return menu

    def show_menu(self, box_id: str, screen_pos: QPointF) -> None:
        self.menu = self.context_menu(box_id)
        self.menu.popup(screen_pos.toPoint())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        """Del / Backspace delete the selected box; Escape cancels a drag, then leaves draw mode."""
        if event.type() != QEvent.Type.KeyPress:
            return False
        key = event.key()
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.boxes.selected_id is not None:
            self.delete_selected()
            return True
        if key == Qt.Key.Key_Escape:
            if self._drag is not None:
                self._drag.cancel_drag()
            elif self.overlay.draft is not None:
                self.overlay.cancel()
            elif self.draw_mode:
                self.set_draw_mode(False)
            else:
                return False
            return True
        return False
