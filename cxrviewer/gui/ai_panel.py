"""`AIPanel`: the reading canvas with the AI on it — findings, heatmap overlay, editable boxes and
radiomics — as one widget another PySide6 application can embed (the viewer's main window does).

    from cxrviewer.gui.ai_panel import AIPanel
    panel = AIPanel(settings=Settings(annotator="dr.a", store_path=Path("reads.cxra")))
    panel.open_path("study/image.dcm")        # loads off the UI thread, then analyses
    panel.analysis.finished.connect(lambda: print(panel.analysis.result.to_json()))
    for action in panel.actions_for_shortcuts(): window.addAction(action)

The state lives in four models (`document`, `analysis`, `boxes`, `radiomics`); the widgets on them
(`canvas`, `findings`, `overlay`, `box_layer`, `radiomics_panel`) hold none. `error` carries every
one-sentence problem (bad file, model that will not load, edit conflict) for the host to show.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

from cxrviewer.gui.analysis_model import AnalysisModel
from cxrviewer.gui.box_items import BoxLayer
from cxrviewer.gui.box_model import BoxModel
from cxrviewer.gui.canvas import ImageCanvas
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.gui.findings_panel import FindingsPanel
from cxrviewer.gui.heatmap_overlay import HeatmapOverlay
from cxrviewer.gui.radiomics_model import RadiomicsModel
from cxrviewer.gui.radiomics_panel import RadiomicsPanel
from cxrviewer.gui.workers import run_task
from cxrviewer.settings import Settings


class AIPanel(QWidget):
    error = Signal(str)  # one sentence for the user
    image_opened = Signal(Path)

    def __init__(self, settings: Settings | None = None, document: ViewerDocument | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or Settings()
        self.document = document or ViewerDocument()
        self.analysis = AnalysisModel(self.document, self.settings)
        self.boxes = BoxModel(self.document, self.analysis, self.settings)
        self.radiomics = RadiomicsModel(self.document, self.boxes)

        self.canvas = ImageCanvas(self.document)
        self.overlay = HeatmapOverlay(self.canvas.view, self.analysis)
        self.box_layer = BoxLayer(self.canvas.view, self.boxes, self.analysis)
        self.findings = FindingsPanel(self.analysis)
        self.radiomics_panel = RadiomicsPanel(self.radiomics)
        self.findings.attach_overlay(self.overlay)  # the panel's "Show heatmap" (H) and opacity slider

        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.findings)
        side.addWidget(self.radiomics_panel)
        side.setSizes([430, 370])
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.canvas)
        split.addWidget(side)
        split.setStretchFactor(0, 1)
        split.setSizes([900, 380])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        self.splitter = split

        for source in (self.document.error, self.analysis.failed, self.boxes.error, self.boxes.conflict,
                       self.radiomics.failed):
            source.connect(self.error)
        if self.boxes.store_error:  # said before anyone listened: say it again once the host is wired
            QTimer.singleShot(0, lambda: self.error.emit(self.boxes.store_error or ""))
        self._wanted: Path | None = None
        self._loading = 0
        self._actions = self._make_actions()

    # --- opening --------------------------------------------------------------------------
    def open_path(self, path: str | Path) -> None:
        """Load an image file off the UI thread and show it (a later call wins over an earlier one)."""
        from cxrviewer.io import load_image

        path = Path(path)
        self._wanted = path
        self._loading += 1

        def done(image) -> None:
            self._loading -= 1
            if path == self._wanted:
                self.document.set_image(image)
                self.image_opened.emit(path)

        def failed(sentence: str) -> None:
            self._loading -= 1
            self.document.error.emit(sentence)  # reaches `error` too

        run_task(lambda: load_image(path), done, failed)

    def open_image(self, image) -> None:
        """Show an already loaded `cxrviewer.io.image.ImageData`."""
        self._wanted = Path(image.path)
        self.document.set_image(image)
        self.image_opened.emit(Path(image.path))

    @property
    def loading(self) -> bool:
        """True while an image file is being loaded."""
        return self._loading > 0

    @property
    def busy(self) -> bool:
        """True while an image loads, the analysis runs or radiomics are computed."""
        return self._loading > 0 or self.analysis.running or self.radiomics.running

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.boxes.apply_settings(settings)
        self.analysis.apply_settings(settings)
        self.findings.refresh_models()

    # --- actions --------------------------------------------------------------------------
    def _make_actions(self) -> dict[str, QAction]:
        def action(key: str, text: str, shortcut, slot, checkable: bool = False) -> QAction:
            act = QAction(text, self)
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.setCheckable(checkable)
            act.triggered.connect(slot)
            act.setObjectName(key)
            return act

        acts = {
            "undo": action("undo", "Undo", QKeySequence.StandardKey.Undo, self.boxes.undo),
            "redo": action("redo", "Redo", QKeySequence.StandardKey.Redo, self.boxes.redo),
            "draw": action("draw", "Draw a box", "B", self.box_layer.set_draw_mode, checkable=True),
            "accept": action("accept", "Accept box", "A", self.box_layer.accept_selected),
            "reject": action("reject", "Reject box", "X", self.box_layer.reject_selected),
            "delete": action("delete", "Delete box", QKeySequence.StandardKey.Delete, self.box_layer.delete_selected),
            "analyse": action("analyse", "Analyse again", "Ctrl+R", self.analysis.analyze),
            "next": action("next", "Next finding", "]", lambda: self.findings.select_next(1)),
            "previous": action("previous", "Previous finding", "[", lambda: self.findings.select_next(-1)),
        }
        self.boxes.history_changed.connect(self._update_history)
        self._update_history()
        return acts

    def _update_history(self) -> None:
        if not hasattr(self, "_actions"):
            return
        undo, redo = self._actions["undo"], self._actions["redo"]
        undo.setEnabled(self.boxes.can_undo())
        redo.setEnabled(self.boxes.can_redo())
        undo.setText(f"Undo {self.boxes.undo_text()}".strip())
        redo.setText(f"Redo {self.boxes.redo_text()}".strip())

    def action(self, key: str) -> QAction:
        return self._actions[key]

    def actions_for_shortcuts(self) -> list[QAction]:
        """Every action of the panel, for the host's menus or `addAction` (their shortcuts work then)."""
        return list(self._actions.values())

    def close_store(self, wait_ms: int = 15000) -> None:
        """Stop the analysis, wait for the background work of the panel to end (a worker still
        importing torch at interpreter exit would fail noisily), stop polling and close the
        annotation store. Call it before the host closes."""
        self.analysis.cancel()
        for pool in (self.analysis.pool, self.radiomics.pool):
            pool.waitForDone(wait_ms)
        self.boxes.close()
