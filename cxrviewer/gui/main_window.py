"""The main window: the patient browser on the left, the AI panel (reading canvas with heatmap and
editable boxes, findings, radiomics) on the right, display controls on top, the triage worklist
in a dock. Every edit goes to the annotation store as it is made; there is no save."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu, QSplitter, QToolBar

from cxrviewer.gui.ai_panel import AIPanel
from cxrviewer.gui.browser import BrowserPanel
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.gui.voi_presets import VoiPresetBox
from cxrviewer.gui.workers import run_task
from cxrviewer.settings import Settings


class MainWindow(QMainWindow):
    def __init__(self, document: ViewerDocument | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self.document = document or ViewerDocument()
        warnings: list[str] = []
        if settings is None:
            settings, warnings = Settings.load()
        self.settings = settings
        self.setWindowTitle("cxrviewer")
        self.browser = BrowserPanel(self.document)
        self.panel = AIPanel(settings, self.document)
        self.canvas = self.panel.canvas
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.browser)
        splitter.addWidget(self.panel)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([320, 1080])
        self.setCentralWidget(splitter)
        self._build_toolbar()
        self.info = QLabel()
        self.statusBar().addPermanentWidget(self.info)
        self._pending = 0  # catalog scans in flight (image loads are the panel's)
        self.browser.image_activated.connect(self.open_image)
        self.canvas.readout.connect(self.info.setText)
        self.panel.error.connect(self.show_message)  # the document's errors come through the panel too
        self.document.image_changed.connect(self._on_image)
        self._build_menus()
        self._build_file_menu()
        self._build_view_menu()
        self._build_ai_menus()
        for warning in warnings:
            self.document.error.emit(warning)

    def _build_toolbar(self) -> None:
        from cxrviewer.gui.nav_actions import NavActions

        bar = QToolBar("Display")
        self.addToolBar(bar)
        self.presets = VoiPresetBox(self.document)
        self.nav = NavActions(self)  # the browser/canvas actions and their shortcuts (nav_actions.py)
        bar.addActions([self.nav.open_folder, self.nav.open_file])
        bar.addSeparator()
        bar.addWidget(QLabel(" VOI "))
        bar.addWidget(self.presets)
        bar.addActions([self.nav.invert, self.nav.reset, self.nav.fit, self.nav.one_to_one])

    def _build_file_menu(self) -> None:
        from cxrviewer.gui.nav_actions import build_file_menu

        build_file_menu(self, self.nav)

    def _build_view_menu(self) -> None:
        from cxrviewer.gui.nav_actions import build_view_menu

        build_view_menu(self, self.nav)

    def _build_menus(self) -> None:
        tools = self.menuBar().addMenu("&Tools")
        retrain = QAction("Retrain a model…", self)
        retrain.triggered.connect(self.open_retrain)
        tools.addAction(retrain)
        preferences = QAction("Settings…", self, shortcut=QKeySequence.StandardKey.Preferences)
        preferences.triggered.connect(self.open_settings)
        tools.addAction(preferences)
        self.tools_menu = tools

    def open_retrain(self) -> QDialog:
        """The retraining dialog (non-modal), on the annotation store of the settings."""
        from cxrviewer.gui.retrain_dialog import RetrainDialog

        dialog = RetrainDialog(self.settings.store_path, self)
        dialog.model_registered.connect(self._model_registered)
        dialog.show()
        return dialog

    def _model_registered(self, name: str) -> None:
        self.panel.findings.refresh_models()
        self.show_message(f"New model '{name}' is installed: choose it in the findings panel's model list.")

    def open_settings(self) -> QDialog:
        """The settings dialog (window-modal); accepted settings become the window's settings."""
        from cxrviewer.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.settings()))
        dialog.open()
        return dialog

    def apply_settings(self, settings: Settings) -> None:
        """Settings accepted in the dialog: the store, annotator, model, device, CAM and thresholds follow."""
        self.settings = settings
        self.panel.apply_settings(settings)
        if self.triage_dock is not None:  # the next triage run scores with the new thresholds
            self.triage_dock.widget().thresholds = settings.thresholds

    # --- the AI menus -----------------------------------------------------------------------
    def _build_ai_menus(self) -> None:
        from cxrviewer.gui.annotations_menu import build_annotations_menu

        act = self.panel.action
        tools = self.tools_menu.menuAction()
        edit = QMenu("&Edit", self)
        self.menuBar().insertMenu(tools, edit)
        edit.addActions([act("undo"), act("redo")])
        edit.addSeparator()
        edit.addActions([act("draw"), act("accept"), act("reject"), act("delete")])
        analysis = QMenu("&Analysis", self)
        self.menuBar().insertMenu(tools, analysis)
        analysis.addActions([act("analyse"), act("next"), act("previous")])
        analysis.addSeparator()
        triage = QAction("Triage a folder…", self, shortcut=QKeySequence("Ctrl+Shift+T"))
        triage.triggered.connect(self.open_triage)
        analysis.addAction(triage)
        self.addActions(self.panel.actions_for_shortcuts())
        self.panel.box_layer.draw_mode_changed.connect(act("draw").setChecked)
        annotations = build_annotations_menu(self, self.panel)
        self.menuBar().insertMenu(tools, annotations)  # moves it before Tools
        self.edit_menu, self.analysis_menu, self.annotations_menu = edit, analysis, annotations
        self.triage_dock: QDockWidget | None = None

    def open_triage(self) -> QDockWidget:
        """The triage worklist in a dock (made once): score a folder, most suspicious first."""
        if self.triage_dock is None:
            from cxrviewer.gui.triage_panel import TriagePanel

            def analyzer():  # the model and device chosen in the findings panel now
                from cxrviewer.analysis import Analyzer

                return Analyzer(self.panel.analysis.model_name, device=self.panel.analysis.device)

            panel = TriagePanel(analyzer, thresholds=self.settings.thresholds)
            panel.image_activated.connect(self.open_image)
            panel.failed.connect(self.show_message)
            dock = QDockWidget("Triage worklist", self)
            dock.setObjectName("triage")
            dock.setWidget(panel)
            self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
            self.triage_dock = dock
        self.triage_dock.show()
        self.triage_dock.raise_()
        return self.triage_dock

    def show_message(self, sentence: str) -> None:
        self.statusBar().showMessage(sentence, 15000)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.triage_dock is not None:
            self.triage_dock.widget().cancel()
        self.panel.close_store()
        super().closeEvent(event)

    # --- opening ----------------------------------------------------------------------------
    def _ask_folder(self) -> None:
        start = self.settings.recent_folders[0] if self.settings.recent_folders else ""
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of studies", start)
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: Path, then_select_first: bool = False) -> None:
        from cxrviewer.gui.nav_actions import remember_folder
        from cxrviewer.io.catalog import Catalog

        self.statusBar().showMessage(f"Scanning {folder} …")
        self._pending += 1

        def done(catalog: Catalog) -> None:
            self._pending -= 1
            self.document.add_catalog(catalog)
            remember_folder(self, folder)
            n = len(catalog.images())
            self.statusBar().showMessage(f"{folder}: {n} image(s), {len(catalog.errors)} unreadable", 8000)
            if then_select_first:
                self.browser.select_first_image(folder)

        run_task(lambda: Catalog.open(folder), done, self._failed)

    def open_image(self, path: Path) -> None:
        """Load and show an image (the panel's loader: off the UI thread, the latest request wins)."""
        self.statusBar().showMessage(f"Loading {Path(path).name} …")
        self.panel.open_path(path)

    def _failed(self, sentence: str) -> None:
        self._pending -= 1
        self.document.error.emit(sentence)  # reaches the status bar through the panel

    def _on_image(self) -> None:
        image = self.document.image
        if image is None:
            return
        meta = image.meta
        title = " · ".join(x for x in (meta.patient_id, meta.study_date, meta.view_position, image.path.name) if x)
        self.setWindowTitle(f"cxrviewer — {title}")
        note = f"{image.path.name}: {image.shape[1]}×{image.shape[0]}, {image.photometric}"
        if image.warnings:
            note += " — " + " ".join(image.warnings)
        self.statusBar().showMessage(note, 10000)

    @property
    def idle(self) -> bool:
        """No catalog scan and no image load in flight."""
        return self._pending == 0 and not self.panel.loading
