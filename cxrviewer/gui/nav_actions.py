"""The main window's navigation actions and menus: File (open, recent folders), View, Help.

Every keyboard shortcut of the browser and the canvas is a QAction made here (one place, so
Help ▸ Keyboard shortcuts can list them from the actions themselves). The main window only calls
`NavActions(window)` and the `build_*_menu` functions.

    Ctrl+O open folder · Ctrl+Shift+O open file · Ctrl+Q quit · Ctrl+T DICOM tags · F1 shortcuts
    Ctrl+F filter the browser (Enter returns to the tree)
    F fit · 1 one image pixel per screen pixel · + / - zoom · I invert · R reset display
    F2 file's VOI · F3 lung · F4 soft tissue · F5 bone · F6 full range · F7 auto · . / , next / previous preset
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QMainWindow,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from cxrviewer.imaging.voi import default_voi

MOUSE_GESTURES = [("Left-drag on the image", "Pan"), ("Wheel on the image", "Zoom about the cursor"),
                  ("Right-drag on the image", "Window/level: right = wider, down = higher centre")]
IMAGE_FILTER = "Images (*.dcm *.dicom *.DCM *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)"


def _action(window: QMainWindow, text: str, shortcut: QKeySequence | str | None, slot: Callable) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcuts([QKeySequence(s) for s in shortcut] if isinstance(shortcut, list) else
                            [QKeySequence(shortcut)])
    action.triggered.connect(lambda _checked=False: slot())
    window.addAction(action)  # shortcuts work with the menu bar hidden, too
    return action


class NavActions:
    """The actions, created once per window (they need `window.browser`, `.canvas`, `.presets`)."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        canvas = window.canvas
        self.open_folder = _action(window, "Open folder…", QKeySequence.StandardKey.Open, window._ask_folder)
        self.open_file = _action(window, "Open file…", "Ctrl+Shift+O", lambda: ask_file(window))
        self.quit = _action(window, "Quit", "Ctrl+Q", window.close)
        self.invert = _action(window, "Invert", "I", window.document.toggle_invert)
        self.reset = _action(window, "Reset display", "R", lambda: reset_display(window))
        self.fit = _action(window, "Fit", "F", canvas.fit)
        self.one_to_one = _action(window, "1:1 (actual pixels)", "1", canvas.one_to_one)
        self.zoom_in = _action(window, "Zoom in", ["+", "="], canvas.zoom_in)
        self.zoom_out = _action(window, "Zoom out", "-", canvas.zoom_out)
        self.find = _action(window, "Filter the browser", QKeySequence.StandardKey.Find, window.browser.focus_filter)
        self.tags = _action(window, "DICOM tags…", "Ctrl+T", lambda: open_tag_dialog(window))
        self.shortcuts = _action(window, "Keyboard shortcuts", "F1", lambda: show_shortcuts(window))
        self.presets = window.presets.make_actions(window)
        window.addActions(self.presets)
        window.browser.folder_dropped.connect(window.open_folder)
        window.browser.file_dropped.connect(window.open_image)


def ask_file(window: QMainWindow) -> None:
    """Ask for one image file and open it."""
    name, _ = QFileDialog.getOpenFileName(window, "Open an image file", "", IMAGE_FILTER)
    if name:
        window.open_image(Path(name))


def reset_display(window: QMainWindow) -> None:
    """The file's own VOI, no inversion toggle, the whole image in view (key R)."""
    document = window.document
    if document.image is None:
        return
    if document.invert_toggled:
        document.toggle_invert()
    document.set_voi(default_voi(document.image))
    window.canvas.fit()


def open_tag_dialog(window: QMainWindow) -> QDialog:
    """The tag table of the current image (non-modal)."""
    from cxrviewer.gui.tag_dialog import TagDialog

    dialog = TagDialog(window.document.image, window)
    dialog.show()
    return dialog


# --- recent folders ----------------------------------------------------------------------------
class RecentFoldersMenu(QMenu):
    """File ▸ Recent folders, filled from `window.settings.recent_folders` (most recent first)."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__("Recent folders", window)
        self.window = window
        self.aboutToShow.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        self.clear()
        folders = list(self.window.settings.recent_folders)
        for i, folder in enumerate(folders):
            label = f"&{i + 1} {folder}" if i < 9 else folder
            action = self.addAction(label)
            action.setData(folder)
            action.triggered.connect(lambda _checked=False, f=folder: self.window.open_folder(Path(f)))
        if not folders:
            self.addAction("(none yet)").setEnabled(False)
        else:
            self.addSeparator()
            self.addAction("Clear the list").triggered.connect(self.clear_list)
        self.setEnabled(True)

    def folders(self) -> list[str]:
        return [a.data() for a in self.actions() if a.data()]

    def clear_list(self) -> None:
        self.window.settings.recent_folders = []
        save_settings(self.window)
        self.refresh()


def remember_folder(window: QMainWindow, folder: Path) -> None:
    """Put `folder` first in the recent folders, save the settings and refresh the menu
    (not for the demo's sample folders: `window.remember_folders` is False then)."""
    if not getattr(window, "remember_folders", True):
        return
    window.settings.add_recent_folder(folder)
    save_settings(window)
    menu = getattr(window, "recent_menu", None)
    if menu is not None:
        menu.refresh()


def save_settings(window: QMainWindow) -> None:
    """Save the window's settings; a failure is one sentence in the status bar, never a dialog."""
    from cxrviewer.errors import CxrError

    try:
        window.settings.save()
    except CxrError as exc:
        window.document.error.emit(exc.sentence)


# --- menus -------------------------------------------------------------------------------------
def _insert_menu(window: QMainWindow, title: str, before: QMenu | None) -> QMenu:
    menu = QMenu(title, window)
    bar = window.menuBar()
    if before is not None:
        bar.insertMenu(before.menuAction(), menu)
    else:
        bar.addMenu(menu)
    return menu


def build_file_menu(window: QMainWindow, nav: NavActions) -> QMenu:
    """File: Open folder…, Open file…, Recent folders ▸, Quit; placed first in the menu bar."""
    first = next((a.menu() for a in window.menuBar().actions() if a.menu() is not None), None)
    menu = _insert_menu(window, "&File", first)
    menu.addActions([nav.open_folder, nav.open_file])
    window.recent_menu = RecentFoldersMenu(window)
    menu.addMenu(window.recent_menu)
    menu.addSeparator()
    menu.addAction(nav.quit)
    window.file_menu = menu
    return menu


def build_view_menu(window: QMainWindow, nav: NavActions) -> QMenu:
    """View (zoom, display, presets, tags) after File, and Help ▸ Keyboard shortcuts at the end."""
    menus = [a.menu() for a in window.menuBar().actions() if a.menu() is not None]
    file_menu = getattr(window, "file_menu", None)
    after_file = menus[menus.index(file_menu) + 1] if file_menu in menus[:-1] else None
    menu = _insert_menu(window, "&View", after_file)
    menu.addActions([nav.fit, nav.one_to_one, nav.zoom_in, nav.zoom_out])
    menu.addSeparator()
    menu.addActions([nav.invert, nav.reset])
    presets = menu.addMenu("Window presets")
    presets.addActions(nav.presets)
    menu.addSeparator()
    menu.addActions([nav.find, nav.tags])
    help_menu = window.menuBar().addMenu("&Help")
    help_menu.addAction(nav.shortcuts)
    window.help_menu = help_menu
    return menu


# --- help --------------------------------------------------------------------------------------
def shortcut_rows(window: QMainWindow) -> list[tuple[str, str]]:
    """(action, keys) for every action of the window with a shortcut, then the mouse gestures."""
    rows = []
    for action in window.actions():
        keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts())
        if keys:
            rows.append((action.text().replace("&", ""), keys))
    return rows + MOUSE_GESTURES


def show_shortcuts(window: QMainWindow) -> QDialog:
    """Help ▸ Keyboard shortcuts: a table made from the window's actions (non-modal)."""
    rows = shortcut_rows(window)
    dialog = QDialog(window)
    dialog.setWindowTitle("Keyboard shortcuts")
    table = QTableWidget(len(rows), 2, dialog)
    table.setHorizontalHeaderLabels(["Action", "Keys"])
    table.verticalHeader().setVisible(False)
    table.verticalHeader().setDefaultSectionSize(22)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, (text, keys) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(text))
        table.setItem(r, 1, QTableWidgetItem(keys))
    table.resizeColumnsToContents()
    QVBoxLayout(dialog).addWidget(table)
    dialog.resize(520, 560)
    dialog.table = table
    dialog.show()
    return dialog
