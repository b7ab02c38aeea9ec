"""The minimal viewer, offscreen: it opens the bundled samples and shows real pixels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from cxrviewer.imaging.voi import FullRange  # noqa: E402
from cxrviewer.resources import path as resource  # noqa: E402
from tests.conftest import REPO, dicom_testfile  # noqa: E402
from tests.gui_support import shown_main_window  # noqa: E402


@pytest.fixture
def window(qtbot):
    return shown_main_window(qtbot)


def test_opens_samples_grouped_by_patient_and_shows_the_first_image(window, qtbot):
    window.open_folder(resource("samples"), then_select_first=True)
    qtbot.waitUntil(lambda: window.document.image is not None and window.idle, timeout=30000)
    patients = {window.browser.tree.topLevelItem(i).text(0) for i in range(window.browser.tree.topLevelItemCount())}
    assert {"1", "2", "574", "1511", "7219"} <= patients
    shown = window.canvas.item.image
    assert shown is not None and shown.shape == window.document.image.shape and shown.dtype == np.uint8
    assert shown.std() > 20  # a radiograph, not a blank


def test_invert_and_voi_change_the_pixels(window, qtbot):
    window.open_image(dicom_testfile("RG1_UNCR.dcm"))
    qtbot.waitUntil(lambda: window.document.image is not None, timeout=30000)
    before = window.canvas.item.image.copy()
    window.document.toggle_invert()
    np.testing.assert_array_equal(window.canvas.item.image.astype(int), 255 - before.astype(int))
    window.document.set_voi(FullRange())
    assert not np.array_equal(window.canvas.item.image, before)
    labels = [window.presets.itemText(i) for i in range(window.presets.count())]
    assert labels[0].startswith("Window 1 (C 15000, W 30000") and "Full range" in labels


def test_a_bad_file_shows_one_sentence_and_keeps_the_current_image(window, qtbot, tmp_path):
    window.open_image(dicom_testfile("CT_small.dcm"))
    qtbot.waitUntil(lambda: window.document.image is not None, timeout=30000)
    current = window.document.image
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM but not really")
    with qtbot.waitSignal(window.document.error, timeout=30000) as blocker:
        window.open_image(bad)
    assert blocker.args[0].startswith("broken.dcm: ")
    qtbot.waitUntil(lambda: window.idle, timeout=30000)
    assert window.document.image is current


def test_unreadable_files_are_listed_in_the_browser(window, qtbot, tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 300)
    (tmp_path / "ct.dcm").write_bytes(Path(dicom_testfile("CT_small.dcm")).read_bytes())
    window.open_folder(tmp_path)
    qtbot.waitUntil(lambda: window.idle and window.browser.tree.topLevelItemCount() >= 2, timeout=30000)
    tops = [window.browser.tree.topLevelItem(i) for i in range(window.browser.tree.topLevelItemCount())]
    errors = [t for t in tops if t.text(0).startswith("Unreadable files")]
    assert errors and errors[0].child(0).text(0) == "junk.dcm" and errors[0].child(0).text(1)


def test_demo_screenshot_command(tmp_path):
    out = tmp_path / "shot.png"
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "CXRVIEWER_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "cxrviewer", "--demo", "--screenshot", str(out)],
                            capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    import cv2

    picture = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert picture is not None and picture.shape[0] > 400 and picture.std() > 20


def test_tools_menu_opens_the_retrain_and_settings_dialogs(window, qtbot, tmp_path):
    titles = [a.text() for a in window.tools_menu.actions()]
    assert titles == ["Retrain a model…", "Settings…"]
    retrain = window.open_retrain()
    assert retrain.isVisible() and str(window.settings.store_path) in retrain.store_path.text()
    retrain.close()
    dialog = window.open_settings()
    dialog.annotator.setText("dr-test")
    dialog.accept()
    assert window.settings.annotator == "dr-test"
    from cxrviewer.settings import Settings

    assert Settings.load()[0].annotator == "dr-test"  # saved to the (test) config folder
