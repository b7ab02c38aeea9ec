"""The main window: browser on the left, reading canvas on the right, display controls on top."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QFileDialog, QLabel, QMainWindow, QSplitter, QToolBar

from cxrviewer.gui.browser import BrowserPanel
from cxrviewer.gui.canvas import ImageCanvas
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
        self.canvas = ImageCanvas(self.document)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.browser)
        splitter.addWidget(self.canvas)
        splitter.setSizes([340, 900])
        self.setCentralWidget(splitter)
        self._build_toolbar()
        self.info = QLabel()
        self.statusBar().addPermanentWidget(self.info)
        self._pending = 0  # loads in flight
        self._wanted: Path | None = None  # the image the user asked for last
        self.browser.image_activated.connect(self.open_image)
        self.canvas.readout.connect(self.info.setText)
        self.document.error.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.document.image_changed.connect(self._on_image)
        self._build_menus()
        self._build_file_menu()
        self._build_view_menu()
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
        dialog.model_registered.connect(
            lambda name: self.statusBar().showMessage(f"New model '{name}' is installed and can be chosen.", 15000))
        dialog.show()
        return dialog

    def open_settings(self) -> QDialog:
        """The settings dialog (window-modal); accepted settings become the window's settings."""
        from cxrviewer.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: setattr(self, "settings", dialog.settings()))
        dialog.open()
        return dialog

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
                self.browser.select_first_image()

        run_task(lambda: Catalog.open(folder), done, self._failed)

    def open_image(self, path: Path) -> None:
        from cxrviewer.io import load_image

        self._wanted = path
        self._pending += 1
        self.statusBar().showMessage(f"Loading {path.name} …")

        def done(image) -> None:
            self._pending -= 1
            if path == self._wanted:  # the user may have moved on while this loaded
                self.document.set_image(image)

        run_task(lambda: load_image(path), done, self._failed)

    def _failed(self, sentence: str) -> None:
        self._pending -= 1
        self.document.error.emit(sentence)

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
        return self._pending == 0
