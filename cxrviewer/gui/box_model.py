"""The boxes of the open image as the viewer edits them: a Qt face on `cxrviewer.annotations.editing.BoxEditor`.

Every edit is committed to the annotation store when it is made (no save button; a killed viewer
loses nothing committed). Model boxes come from the analysis result and enter the store only when
touched. Another viewer's edits on the same store are picked up by polling (`refresh_interval_ms`),
and an edit on a box somebody else changed meanwhile is refused and reported through `conflict`
with the other version shown.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from cxrviewer.annotations.editing import BoxEditor, ImageRef, ModelBox, ShownBox
from cxrviewer.errors import CxrError
from cxrviewer.gui.analysis_model import AnalysisModel
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.settings import Settings


class BoxModel(QObject):
    boxes_changed = Signal()
    selection_changed = Signal()
    history_changed = Signal()  # undo/redo availability or text changed
    edited = Signal(str)  # box id: an edit by this viewer was committed
    error = Signal(str)  # one sentence
    conflict = Signal(str)  # one sentence: another viewer changed the box first

    refresh_interval_ms = 2000

    def __init__(self, document: ViewerDocument, analysis: AnalysisModel, settings: Settings | None = None) -> None:
        super().__init__()
        self.document = document
        self.analysis = analysis
        self.settings = settings or Settings()
        self.editor: BoxEditor | None = None
        self.selected_id: str | None = None
        self._marker = None
        self._seen: dict[str, int] = {}  # box id -> the store version last shown
        self.store_error: str | None = None  # why the store could not be opened (None: it is open)
        self._timer = QTimer(self)
        self._timer.setInterval(self.refresh_interval_ms)
        self._timer.timeout.connect(self.poll)
        document.image_changed.connect(self._on_image)
        analysis.finished.connect(self._on_analysis)
        analysis.cleared.connect(self._on_analysis)
        self.open_store(self.settings.store_path)

    # --- the store ------------------------------------------------------------------------
    def open_store(self, path: Path) -> bool:
        """Edit into the store at `path`; on a bad store the error is reported and the old one kept."""
        from cxrviewer.annotations import AnnotationStore
        from cxrviewer.settings import default_store_path

        try:
            if Path(path) == default_store_path():  # a new user's data folder does not exist yet
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            store = AnnotationStore.open(path)
        except OSError as err:
            self.store_error = (f"{Path(path).name}: the store's folder cannot be created ({err.strerror}). "
                                "Box edits cannot be saved until another store is chosen in Settings.")
            self.error.emit(self.store_error)
            return False
        except CxrError as err:
            self.store_error = f"{err} Box edits cannot be saved until another store is chosen in Settings."
            self.error.emit(self.store_error)
            return False
        self.store_error = None
        old = self.editor
        self.editor = BoxEditor(store, self.settings.annotator)
        if old is not None:
            old.store.close()
        self._marker = store.marker()  # before the first read of its boxes
        self._timer.start()
        self._on_image()
        return True

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        if self.editor is None or Path(self.editor.store.path) != Path(settings.store_path):
            self.open_store(settings.store_path)
        elif self.editor is not None:
            self.editor.annotator = settings.annotator

    def close(self) -> None:
        self._timer.stop()
        if self.editor is not None:
            self.editor.store.close()
            self.editor = None

    @property
    def store_path(self) -> Path | None:
        return Path(self.editor.store.path) if self.editor is not None else None

    # --- what is shown --------------------------------------------------------------------
    def boxes(self, finding: str | None = None) -> list[ShownBox]:
        if self.editor is None:
            return []
        try:
            shown = self.editor.boxes(finding)
        except CxrError as err:
            self.error.emit(str(err))
            return []
        self._seen.update({b.box_id: b.record.version for b in shown if b.record is not None})
        return shown

    def selected(self) -> ShownBox | None:
        if self.editor is None or self.selected_id is None:
            return None
        return self.editor.box(self.selected_id)

    def select(self, box_id: str | None) -> None:
        if box_id != self.selected_id:
            self.selected_id = box_id
            self.selection_changed.emit()

    # --- edits ----------------------------------------------------------------------------
    def move(self, box_id: str, coords) -> str | None:
        return self._do(lambda e: e.move(box_id, _clip(coords, self.document), self._seen.get(box_id)))

    def accept(self, box_id: str) -> str | None:
        return self._do(lambda e: e.accept(box_id, self._seen.get(box_id)))

    def reject(self, box_id: str) -> str | None:
        return self._do(lambda e: e.reject(box_id, self._seen.get(box_id)), keep_selection=False)

    def delete(self, box_id: str) -> str | None:
        return self._do(lambda e: e.delete(box_id, self._seen.get(box_id)), keep_selection=False)

    def relabel(self, box_id: str, finding: str) -> str | None:
        return self._do(lambda e: e.relabel(box_id, finding, self._seen.get(box_id)))

    def add(self, finding: str, coords) -> str | None:
        return self._do(lambda e: e.add(finding, _clip(coords, self.document)))

    def undo(self) -> str | None:
        return self._do(lambda e: e.undo())

    def redo(self) -> str | None:
        return self._do(lambda e: e.redo())

    def can_undo(self) -> bool:
        return self.editor is not None and self.editor.can_undo()

    def can_redo(self) -> bool:
        return self.editor is not None and self.editor.can_redo()

    def undo_text(self) -> str:
        return self.editor.undo_text() if self.editor is not None else ""

    def redo_text(self) -> str:
        return self.editor.redo_text() if self.editor is not None else ""

    def _do(self, action, keep_selection: bool = True) -> str | None:
        from cxrviewer.annotations import EditConflict

        if self.editor is None or self.editor.image is None:
            self.error.emit("No image is open for editing boxes.")
            return None
        try:
            box_id = action(self.editor)
        except EditConflict as err:
            self.conflict.emit(str(err))
            box_id = None
        except CxrError as err:
            self.error.emit(str(err))
            box_id = None
        except KeyError:
            box_id = None
        # the poll marker stays where it was: another viewer's write between two polls is never skipped
        if box_id is not None:
            shown = self.editor.box(box_id)
            if shown is not None and shown.record is not None:
                self._seen[box_id] = shown.record.version
            self.selected_id = box_id if (keep_selection and shown is not None) else None
            self.edited.emit(box_id)
        self.boxes_changed.emit()
        self.selection_changed.emit()
        self.history_changed.emit()
        return box_id

    # --- following the image, the analysis and other viewers ------------------------------
    def _on_image(self) -> None:
        if self.editor is None:
            return
        image = self.document.image
        self.editor.open_image(ImageRef.of(image) if image is not None else None)
        self._seen = {}
        self.selected_id = None
        self.boxes_changed.emit()
        self.selection_changed.emit()
        self.history_changed.emit()

    def _on_analysis(self) -> None:
        if self.editor is None:
            return
        result = self.analysis.result
        proposals: list[ModelBox] = []
        if result is not None and self.document.image is not None and result.file == str(self.document.image.path):
            name, sha = self.analysis.model_identity()
            for finding in result.findings:
                for b in finding.boxes:
                    proposals.append(ModelBox(finding.name, b.as_tuple(), b.score, name, sha))
        self.editor.set_proposals(proposals)
        if self.selected_id is not None and self.selected_id.startswith("proposal:"):
            self.selected_id = None
            self.selection_changed.emit()
        self.boxes_changed.emit()

    def poll(self) -> bool:
        """Look for other viewers' edits; True (and `boxes_changed`) when the open image has some."""
        if self.editor is None or self.editor.image is None:
            return False
        try:
            marker, boxes, labels = self.editor.store.changes_since(self._marker)
        except CxrError as err:
            self.error.emit(str(err))
            return False
        self._marker = marker
        key = self.editor.image.key
        if any(b.image_key == key for b in boxes) or any(lab.image_key == key for lab in labels):
            if self.selected_id is not None and self.editor.box(self.selected_id) is None:
                self.selected_id = None
                self.selection_changed.emit()
            self.boxes_changed.emit()
            return True
        return False


def _clip(coords, document: ViewerDocument) -> tuple[float, float, float, float]:
    """Order the corners and keep the box inside the image."""
    x0, y0, x1, y1 = (float(c) for c in coords)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if document.image is not None:
        rows, cols = document.image.shape[:2]
        x0, x1 = max(0.0, x0), min(float(cols), x1)
        y0, y1 = max(0.0, y0), min(float(rows), y1)
    return x0, y0, x1, y1
