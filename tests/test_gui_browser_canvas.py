"""Browser (thumbnails, filter, drops, recent folders), reading canvas, presets and the tag dialog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from cxrviewer.resources import path as resource
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from cxrviewer.gui.main_window import MainWindow
from cxrviewer.gui.nav_actions import open_tag_dialog, shortcut_rows, show_shortcuts
from cxrviewer.gui.voi_presets import keyed_presets
from cxrviewer.imaging.voi import default_voi
from cxrviewer.io.image import VoiWindow
from tests.conftest import dicom_testfile
from tests.gui_support import shown_main_window

SAMPLE_WITH_SPACING = resource("samples", "1", "0", "00000001_000.dcm")  # PixelSpacing 0.767787 \ 0.749074


def _window(qtbot) -> MainWindow:
    return shown_main_window(qtbot)


@pytest.fixture
def window(qtbot):
    return _window(qtbot)


def _open(window, qtbot, path: Path) -> None:
    window.open_image(Path(path))
    qtbot.waitUntil(lambda: window.document.image is not None and window.document.image.path == Path(path)
                    and window.idle, timeout=30000)


def _png_folder(folder: Path, n: int) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), rng.integers(0, 255, (48, 40), dtype=np.uint8))
    return folder


# --- browser --------------------------------------------------------------------------------------
def test_thumbnails_appear_on_image_rows_and_come_from_the_disk_cache_next_time(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    first = _window(qtbot)
    first.open_folder(resource("samples"))
    browser = first.browser
    qtbot.waitUntil(lambda: first.idle and bool(browser.image_items()), timeout=30000)
    rows = {Path(item.data(0, Qt.ItemDataRole.UserRole)): item for item in browser.image_items()}
    assert len(rows) == 7
    qtbot.waitUntil(lambda: set(rows) <= set(browser.thumbs.icons), timeout=60000)
    for path, item in rows.items():
        assert item.icon(0).cacheKey() == browser.thumbs.icons[path].cacheKey()
        picture = item.icon(0).pixmap(40, 40).toImage().convertToFormat(QImage.Format.Format_Grayscale8)
        assert np.frombuffer(picture.constBits(), np.uint8, picture.sizeInBytes()).std() > 10  # not the placeholder
    assert browser.thumbs.made == 7 and browser.thumbs.from_disk == 0
    assert list((tmp_path / "cache" / "thumbnails").glob("*/*.png"))

    second = _window(qtbot)
    second.open_folder(resource("samples"))
    qtbot.waitUntil(lambda: len(second.browser.thumbs.icons) == 7, timeout=60000)
    assert second.browser.thumbs.from_disk == 7 and second.browser.thumbs.made == 0


def test_thumbnails_are_made_lazily_for_visible_rows_of_a_large_folder(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    folder = _png_folder(tmp_path / "many", 120)
    window.open_folder(folder)
    browser = window.browser
    qtbot.waitUntil(lambda: window.idle and len(browser.image_items()) == 120, timeout=60000)
    qtbot.waitUntil(lambda: bool(browser.thumbs.icons) and not browser.thumbs.busy, timeout=60000)
    qtbot.wait(300)
    assert 0 < len(browser.thumbs.icons) < 60  # only the rows on screen and a few below
    last = Path(browser.image_items()[-1].data(0, Qt.ItemDataRole.UserRole))
    assert last not in browser.thumbs.icons
    browser.tree.scrollToBottom()
    qtbot.waitUntil(lambda: last in browser.thumbs.icons, timeout=60000)
    assert len(browser.thumbs.icons) < 120


def test_filter_narrows_the_tree_and_keeps_thumbnails(window, qtbot):
    window.open_folder(resource("samples"))
    browser = window.browser
    qtbot.waitUntil(lambda: window.idle and browser.tree.topLevelItemCount() >= 5, timeout=30000)
    qtbot.waitUntil(lambda: len(browser.thumbs.icons) == 7, timeout=60000)
    browser.filter.setText("574")
    tops = [browser.tree.topLevelItem(i).text(0) for i in range(browser.tree.topLevelItemCount())]
    assert tops == ["574"]
    (item,) = browser.image_items()
    assert item.icon(0).cacheKey() == browser.thumbs.icons[Path(item.data(0, Qt.ItemDataRole.UserRole))].cacheKey()
    browser.filter.setText("20000103")  # a study date
    assert {browser.tree.topLevelItem(i).text(0) for i in range(browser.tree.topLevelItemCount())} == {"1", "1511"}
    browser.filter.clear()
    assert browser.tree.topLevelItemCount() >= 5


def _mime(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


@pytest.mark.filterwarnings("ignore:Function.*QDragEnterEvent:DeprecationWarning")
def test_dropping_a_folder_or_a_file_opens_it(window, qtbot, tmp_path):
    folder = _png_folder(tmp_path / "dropped", 2)
    mime = _mime(folder)
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    window.browser.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.browser.folder_dropped, timeout=5000) as blocker:
        window.browser.dropEvent(drop)
    assert blocker.args == [folder]
    qtbot.waitUntil(lambda: window.idle and any(Path(c.folder) == folder for c in window.document.catalogs),
                    timeout=30000)
    rg1 = dicom_testfile("RG1_UNCR.dcm")
    file_mime = _mime(rg1)  # the event does not own its MIME data: keep it alive
    with qtbot.waitSignal(window.browser.paths_dropped, timeout=5000) as blocker:
        window.browser.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, file_mime,
                                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    assert blocker.args == [[rg1]]
    qtbot.waitUntil(lambda: window.document.image is not None and window.document.image.path == rg1, timeout=30000)
    text_only = QMimeData()
    text_only.setText("not a file")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, text_only, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    window.browser.dragEnterEvent(enter)
    assert not enter.isAccepted()


def test_recent_folders_are_saved_and_fill_the_file_menu(window, qtbot, tmp_path):
    from cxrviewer.settings import Settings, normalize_folder

    folder = _png_folder(tmp_path / "recent", 1)
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.idle and bool(window.document.catalogs), timeout=30000)
    key = normalize_folder(folder)
    assert window.settings.recent_folders[0] == key
    assert Settings.load()[0].recent_folders[0] == key  # saved (to the test's config folder)
    titles = [a.text() for a in window.file_menu.actions()]
    assert titles[:3] == ["Open folder…", "Open file…", "Recent folders"] and titles[-1] == "Quit"
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus[:2] == ["&File", "&View"] and menus[-1] == "&Help"
    assert window.recent_menu.folders()[0] == key
    window.document.catalogs = []
    window.recent_menu.actions()[0].trigger()
    qtbot.waitUntil(lambda: window.idle and bool(window.document.catalogs), timeout=30000)
    assert Path(window.document.catalogs[0].folder) == folder


# --- canvas ---------------------------------------------------------------------------------------
class _FakeRightDrag:
    """Just enough of pyqtgraph's MouseDragEvent for ViewBox.mouseDragEvent."""

    def __init__(self, dx: float, dy: float, start: bool, finish: bool) -> None:
        self.delta, self.start, self.finish, self.accepted = QPointF(dx, dy), start, finish, False

    def button(self):
        return Qt.MouseButton.RightButton

    def isStart(self):
        return self.start

    def isFinish(self):
        return self.finish

    def buttonDownScreenPos(self, _button=None):
        return QPointF(100, 100)

    def screenPos(self):
        return QPointF(100, 100) + self.delta

    def accept(self):
        self.accepted = True


def test_right_drag_sets_window_and_level_and_does_not_zoom(window, qtbot):
    _open(window, qtbot, dicom_testfile("RG1_UNCR.dcm"))
    canvas = window.canvas
    assert not canvas.view.menuEnabled()
    start = window.document.voi
    assert isinstance(start, VoiWindow) and (start.center, start.width) == (15000, 30000)
    before_range = canvas.view.viewRange()
    canvas.view.mouseDragEvent(_FakeRightDrag(0, 0, start=True, finish=False))
    canvas.view.mouseDragEvent(_FakeRightDrag(120, 0, start=False, finish=False))
    wider = window.document.voi
    assert wider.width > start.width and wider.center == start.center
    canvas.view.mouseDragEvent(_FakeRightDrag(120, -80, start=False, finish=True))
    lower = window.document.voi
    assert lower.center < start.center and lower.width == wider.width
    assert np.allclose(canvas.view.viewRange(), before_range)  # pyqtgraph's right-drag zoom is off
    # the gesture is scaled to the image's value range: across the canvas = about the whole range
    span = canvas._span
    assert 0.05 * span < wider.width - start.width < 0.5 * span
    assert window.presets.currentText().startswith("Custom")

    window.document.toggle_invert()
    window.nav.reset.trigger()
    assert window.document.voi == default_voi(window.document.image) and not window.document.invert_toggled


def _mouse(canvas, kind: QEvent.Type, pos: QPoint, button, buttons) -> None:
    event = QMouseEvent(kind, QPointF(pos), QPointF(canvas.mapToGlobal(pos)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(canvas.viewport(), event)


def test_real_mouse_and_keys_reach_the_canvas(window, qtbot):
    _open(window, qtbot, dicom_testfile("RG1_UNCR.dcm"))
    canvas, right = window.canvas, Qt.MouseButton.RightButton
    start, view_range = window.document.voi, canvas.view.viewRange()
    origin = QPoint(canvas.width() // 2 - 50, canvas.height() // 2 - 25)  # on the image, whatever the layout
    _mouse(canvas, QEvent.Type.MouseButtonPress, origin, right, right)
    for i in range(1, 11):
        qtbot.wait(15)
        _mouse(canvas, QEvent.Type.MouseMove, origin + QPoint(10 * i, 5 * i), Qt.MouseButton.NoButton, right)
    _mouse(canvas, QEvent.Type.MouseButtonRelease, origin + QPoint(100, 50), right, Qt.MouseButton.NoButton)
    assert window.document.voi.width > start.width and window.document.voi.center > start.center
    assert np.allclose(canvas.view.viewRange(), view_range)
    qtbot.keyClick(canvas, Qt.Key.Key_F3)
    assert window.presets.currentText().startswith("Lung")
    qtbot.keyClick(canvas, Qt.Key.Key_1)
    assert np.allclose(canvas.view.viewPixelSize(), (1.0, 1.0), rtol=1e-3)
    qtbot.keyClick(canvas, Qt.Key.Key_R)
    assert window.document.voi == start and canvas.view.viewPixelSize()[0] > 1.0


def test_one_to_one_fit_and_zoom(window, qtbot):
    _open(window, qtbot, dicom_testfile("RG1_UNCR.dcm"))
    canvas = window.canvas
    qtbot.waitUntil(lambda: canvas.view.viewPixelSize()[0] > 1.0, timeout=5000)  # fitted: 1841 px in < 700
    window.nav.one_to_one.trigger()
    assert np.allclose(canvas.view.viewPixelSize(), (1.0, 1.0), rtol=1e-3)
    window.nav.zoom_in.trigger()
    assert np.allclose(canvas.view.viewPixelSize(), (0.8, 0.8), rtol=1e-3)
    window.nav.zoom_out.trigger()
    window.nav.zoom_out.trigger()
    assert np.allclose(canvas.view.viewPixelSize(), (1.25, 1.25), rtol=1e-3)
    window.nav.fit.trigger()
    (x0, x1), (y0, y1) = canvas.view.viewRange()
    assert x0 <= 0 and y0 <= 0 and x1 >= 1841 and y1 >= 1955


def test_readout_shows_value_and_position_in_mm(window, qtbot):
    _open(window, qtbot, SAMPLE_WITH_SPACING)
    image = window.document.image
    row_mm, col_mm = image.pixel_spacing
    assert row_mm != col_mm
    text = window.canvas.readout_at(10.2, 20.7)
    assert text.startswith(f"x 10, y 20: {image.pixels[20, 10]:g}")
    assert f"({10.5 * col_mm:.1f} mm, {20.5 * row_mm:.1f} mm)" in text
    scene = window.canvas.view.mapViewToScene(QPointF(10.5, 20.5))
    with qtbot.waitSignal(window.canvas.readout, timeout=5000) as blocker:
        window.canvas._on_mouse(scene)
    assert blocker.args[0] == window.canvas.readout_at(10.5, 20.5)
    assert window.canvas.readout_at(-1, 5) == ""

    _open(window, qtbot, dicom_testfile("CT_small.dcm"))
    qtbot.waitUntil(lambda: window.canvas.unit == "HU", timeout=5000)
    assert " HU  (" in window.canvas.readout_at(64, 64)


# --- presets --------------------------------------------------------------------------------------
def test_chest_presets_exist_give_distinct_windows_and_have_keys(window, qtbot):
    _open(window, qtbot, dicom_testfile("RG1_UNCR.dcm"))  # MONOCHROME1: attenuation runs high -> low
    presets = {key: voi for key, _name, voi in keyed_presets(window.document.image)}
    assert {"file", "lung", "soft", "bone", "full", "auto"} <= set(presets)
    lung, soft, bone = presets["lung"], presets["soft"], presets["bone"]
    assert lung.center > soft.center > bone.center  # MONOCHROME1: more attenuation = lower values
    assert len({(w.center, w.width) for w in (lung, soft, bone)}) == 3
    labels = [window.presets.itemText(i) for i in range(window.presets.count())]
    assert labels[0].startswith("Window 1 (C 15000") and labels[1].startswith("Lung")

    by_text = {a.text(): a for a in window.nav.presets}
    by_text["Lung window"].trigger()
    assert window.document.voi == lung and window.presets.currentText().startswith("Lung")
    by_text["Bone window"].trigger()
    assert window.document.voi == bone
    by_text["File's own VOI"].trigger()
    assert window.document.voi == presets["file"]
    by_text["Next preset"].trigger()
    assert window.document.voi == lung
    assert by_text["Lung window"].shortcut().toString() == "F3"

    _open(window, qtbot, SAMPLE_WITH_SPACING)  # MONOCHROME2
    p = {key: voi for key, _name, voi in keyed_presets(window.document.image)}
    assert p["lung"].center < p["soft"].center < p["bone"].center

    _open(window, qtbot, dicom_testfile("CT_small.dcm"))
    p = {key: voi for key, _name, voi in keyed_presets(window.document.image)}
    assert (p["lung"].center, p["lung"].width) == (-600, 1500)


def test_help_lists_the_shortcuts_from_the_actions(window):
    rows = dict(shortcut_rows(window))
    assert rows["Lung window"] == "F3" and rows["DICOM tags…"] == "Ctrl+T" and rows["Fit"] == "F"
    assert rows["1:1 (actual pixels)"] == "1" and rows["Reset display"] == "R" and rows["Invert"] == "I"
    assert "Right-drag on the image" in rows
    keys = [k for action in window.actions() for k in action.shortcuts()]
    assert len(keys) == len({k.toString() for k in keys})  # no ambiguous shortcut
    dialog = show_shortcuts(window)
    assert dialog.isVisible() and dialog.table.rowCount() == len(shortcut_rows(window))
    dialog.close()


# --- tag dialog -----------------------------------------------------------------------------------
def test_tag_dialog_lists_tags_and_filters(window, qtbot):
    _open(window, qtbot, dicom_testfile("RG1_UNCR.dcm"))
    dialog = open_tag_dialog(window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.loaded, timeout=10000)
    everything = dialog.visible_keywords()
    assert {"PatientID", "Modality", "TransferSyntaxUID"} <= set(everything)
    items = {dialog.tree.topLevelItem(i).text(1): dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount())}
    assert items["PatientID"].text(3) == "9RG1"
    assert items["FileMetaInformationVersion"].text(3).startswith("<OB binary")
    assert "not read" in items["PixelData"].text(3)
    dialog.filter.setText("patientid")
    assert "PatientID" in dialog.visible_keywords() and len(dialog.visible_keywords()) < len(everything) // 4
    dialog.filter.clear()
    assert dialog.visible_keywords() == everything


def test_tag_dialog_shows_sequences_and_file_facts_for_png(window, qtbot, tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from cxrviewer.gui.tag_dialog import dataset_rows

    ds = Dataset()
    ds.PatientID = "P1"
    item = Dataset()
    item.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.add_new(0x00091010, "OB", b"\x00" * 5000)
    rows = {row[1]: row for row in dataset_rows(ds)}
    seq = rows["AnatomicRegionSequence"]
    assert seq[2] == "SQ" and seq[4][0][4][0][1] == "CodeMeaning" and seq[4][0][4][0][3] == "Chest"
    assert rows["(private)"][3] == "<OB binary, 5,000 bytes>"

    png = _png_folder(tmp_path / "png", 1) / "img000.png"
    _open(window, qtbot, png)
    dialog = open_tag_dialog(window)
    qtbot.addWidget(dialog)
    assert dialog.loaded and "not a DICOM file" in dialog.note.text()
    assert {"Path", "Format", "Dimensions", "File size"} <= set(dialog.visible_keywords())
