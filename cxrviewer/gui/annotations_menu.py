"""The Annotations menu: import and export the store's boxes (NIH `BBox_List` CSV and JSON with
provenance), and where the store lives. Imports and exports run off the UI thread on their own
connection to the store; problems come back as one sentence."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMenu

from cxrviewer.gui.workers import run_task

_FILTERS = "NIH box table (*.csv);;cxrviewer JSON (*.json)"


def import_boxes(store_path: Path, file: Path, annotator: str) -> str:
    """Import `file` (.csv: NIH table, else JSON) into the store; a sentence saying what was done."""
    from cxrviewer.annotations import AnnotationStore
    from cxrviewer.annotations.bbox_io import import_bbox_csv, import_json

    with AnnotationStore.open(store_path) as store:
        if file.suffix.lower() == ".csv":
            report = import_bbox_csv(store, file, annotator, image_dir=file.parent)
        else:
            report = import_json(store, file)
    return (f"{file.name}: {report.boxes_added} box(es) imported, {report.boxes_skipped} already present, "
            f"{report.images_added} new image(s).")


def export_boxes(store_path: Path, file: Path) -> str:
    """Export the store to `file` (.csv: the validated boxes as an NIH table, else everything as JSON)."""
    from cxrviewer.annotations import AnnotationStore
    from cxrviewer.annotations.bbox_io import export_bbox_csv, export_json

    with AnnotationStore.open(store_path) as store:
        n = export_bbox_csv(store, file) if file.suffix.lower() == ".csv" else export_json(store, file)
    return f"{file.name}: {n} box(es) exported."


def open_history(window: QMainWindow, panel):
    """The open image's history dialog (None, with a sentence, when there is no image or store)."""
    from cxrviewer.gui.history_dialog import HistoryDialog

    editor = panel.boxes.editor
    if editor is None or editor.image is None:
        window.statusBar().showMessage("Open an image first (and an annotation store in Settings).", 15000)
        return None
    dialog = HistoryDialog(editor.store, editor.image.key, panel.document.image.path.name, window)
    dialog.show()
    return dialog


def build_annotations_menu(window: QMainWindow, panel) -> QMenu:
    """Add the Annotations menu to `window` for the store of `panel` (an `AIPanel`)."""
    menu = window.menuBar().addMenu("&Annotations")

    def say(sentence: str) -> None:
        window.statusBar().showMessage(sentence, 15000)

    def store_path() -> Path | None:
        path = panel.boxes.store_path
        if path is None:
            say("No annotation store is open (see Tools ▸ Settings).")
        return path

    def ask_import() -> None:
        path = store_path()
        if path is None:
            return
        name, _ = QFileDialog.getOpenFileName(window, "Import boxes", "", _FILTERS)
        if name:
            def done(sentence: str) -> None:
                say(sentence)
                panel.boxes.poll()

            run_task(lambda: import_boxes(path, Path(name), panel.settings.annotator), done, say)

    def ask_export() -> None:
        path = store_path()
        if path is None:
            return
        name, chosen = QFileDialog.getSaveFileName(window, "Export boxes", "boxes.csv", _FILTERS)
        if name:
            file = Path(name)
            if not file.suffix:
                file = file.with_suffix(".json" if "JSON" in chosen else ".csv")
            run_task(lambda: export_boxes(path, file), say, say)

    for text, slot in (("Import boxes…", ask_import), ("Export boxes…", ask_export)):
        act = QAction(text, window)
        act.triggered.connect(slot)
        menu.addAction(act)
    menu.addSeparator()
    history = QAction("History of this image…", window)
    history.setShortcut("Ctrl+Shift+H")
    history.triggered.connect(lambda: open_history(window, panel))
    menu.addAction(history)
    window.addAction(history)
    where = QAction("Show the store's location", window)
    where.triggered.connect(lambda: say(f"Annotation store: {panel.boxes.store_path}"))
    menu.addAction(where)
    return menu
