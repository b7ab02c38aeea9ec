"""The whole loop in the real main window: open the bundled samples, read the findings, correct a
model box and draw one, retrain on the corrections from the Tools menu's dialog, and switch the
findings panel to the new model; plus the headless `--demo --screenshot` mode and the embedding
example, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from cxrviewer.resources import path as resource  # noqa: E402
from tests.conftest import NIH_SAMPLE, REPO  # noqa: E402
from tests.gui_support import (  # noqa: E402, F401
    fill_tiny_retrain, install_tiny_model, shown_main_window, tiny_default_model, viewer_settings,
)

@pytest.fixture
def window(qtbot, tiny_default_model, viewer_settings):  # noqa: F811 - fixtures
    win = shown_main_window(qtbot, viewer_settings, (1400, 900))
    yield win
    win.close()


def _analysed(window, qtbot) -> None:
    panel = window.panel
    qtbot.waitUntil(lambda: panel.analysis.result is not None and not panel.busy and window.idle, timeout=60000)


@pytest.mark.slow
def test_read_correct_retrain_and_switch_to_the_new_model(window, qtbot, viewer_settings):  # noqa: F811
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE} (only beside the CI checkout)")
    from cxrviewer.annotations import AnnotationStore

    panel = window.panel
    window.open_folder(resource("samples"), then_select_first=True)
    _analysed(window, qtbot)
    assert len(panel.findings.rows()) == 8 and panel.analysis.selected == panel.analysis.ranked()[0].name

    # correct the top finding's model box and draw a second one: each is in the store at once
    top = panel.analysis.selected
    model_box = panel.boxes.boxes(top)[0]
    x0, y0, x1, y1 = model_box.box
    moved = panel.boxes.move(model_box.box_id, (x0 + 8, y0 + 8, x1 + 8, y1 + 8))
    panel.box_layer.set_draw_mode(True)
    drawn = panel.boxes.add(top, (20, 30, 120, 150))
    qtbot.waitUntil(lambda: panel.radiomics.result is not None and not panel.radiomics.running, timeout=60000)
    with AnnotationStore.open(viewer_settings.store_path) as store:
        statuses = {b.box_id: b.status for b in store.current_boxes()}
    assert statuses == {moved: "corrected", drawn: "added"}

    # retrain on the NIH sample with these corrections, from the Tools menu's dialog
    dialog = window.open_retrain()
    qtbot.addWidget(dialog)
    fill_tiny_retrain(dialog, f"nih:{NIH_SAMPLE}", "site-corrected", corrections=True)
    with qtbot.waitSignal(dialog.model_registered, timeout=300000) as blocker:
        dialog.start_button.click()
    assert blocker.args == ["site-corrected"], dialog.error.text()
    start = json.loads(next(line for line in dialog.log.toPlainText().splitlines()
                            if line.startswith("start: ")).split(": ", 1)[1])
    assert start["corrections"]["matched"] == 1  # the sample's stem matched its NIH PNG (one image edited)
    dialog.close()

    # the new model is offered and chosen; the open image is analysed again with it
    panel.findings.refresh_models()
    names = [panel.findings.model_box.itemData(i) or panel.findings.model_box.itemText(i)
             for i in range(panel.findings.model_box.count())]
    assert "site-corrected" in names
    panel.analysis.set_options(model="site-corrected")
    _analysed(window, qtbot)
    assert panel.analysis.model_name == "site-corrected"
    assert panel.analysis.model_identity()[1] != ""  # its sha256, recorded with the next edit


def _env(tmp_path):
    data = tmp_path / "userdata"
    (data / "models").mkdir(parents=True)
    install_tiny_model(data / "models", input_size=128)
    return {**os.environ, "CXRVIEWER_DATA_DIR": str(data), "CXRVIEWER_CONFIG_DIR": str(tmp_path / "config"),
            "CXRVIEWER_CACHE_DIR": str(tmp_path / "cache"), "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}


def test_demo_screenshot_waits_for_findings_heatmap_boxes_and_radiomics(tmp_path):
    out = tmp_path / "demo.png"
    done = subprocess.run([sys.executable, "-m", "cxrviewer", "--demo", "--screenshot", str(out)], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert (image.width(), image.height()) == (1500, 950)
    assert "Traceback" not in done.stderr and "cannot be saved" not in done.stderr
    assert "00000001_000.dcm" in done.stdout  # the first bundled sample
    assert "0 box(es)" in done.stdout or "radiomics shown" in done.stdout  # a box is selected with its features
    settings = json.loads((tmp_path / "config" / "settings.json").read_text()) if (
        tmp_path / "config" / "settings.json").exists() else {}
    assert not settings.get("recent_folders")  # the demo's sample folders are not remembered


def test_demo_screenshot_without_a_model_says_so_in_one_sentence(tmp_path):
    env = {**_env(tmp_path), "CXRVIEWER_DATA_DIR": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "cxrviewer", "--demo", "--screenshot", str(tmp_path / "x.png")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    shipped = resource("models", "registry.json")
    if shipped.is_file() and "default" in json.loads(shipped.read_text()).get("models", {}):
        assert done.returncode == 0, done.stderr[-2000:]  # the shipped default answers
    else:
        assert done.returncode == 1 and "Model 'default' cannot be loaded" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_embedding_example_runs_the_ai_panel_in_a_host_window(tmp_path):
    sample = sorted(resource("samples").rglob("*.dcm"))[0]
    out = tmp_path / "embed.png"
    done = subprocess.run([sys.executable, str(REPO / "examples" / "embed_ai_panel.py"), str(sample),
                           "--store", str(tmp_path / "reads.cxra"), "--screenshot", str(out)],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file() and done.stdout.startswith(f"{sample.name}: top finding ")


def test_a_store_that_is_not_a_store_is_reported_and_the_viewer_still_reads(qtbot, tmp_path, tiny_default_model):  # noqa: F811
    import pyqtgraph as pg

    from cxrviewer.gui.main_window import MainWindow
    from cxrviewer.settings import Settings

    bad = tmp_path / "notes.txt"
    bad.write_text("my own notes, not a database\n")
    pg.setConfigOptions(imageAxisOrder="row-major")
    win = MainWindow(settings=Settings(annotator="t", store_path=bad))
    qtbot.addWidget(win)
    messages: list[str] = []
    win.panel.error.connect(messages.append)
    win.show()
    qtbot.waitUntil(lambda: bool(messages), timeout=5000)
    assert messages[0].startswith("notes.txt: ") and "cannot be saved" in messages[0]
    assert bad.read_text() == "my own notes, not a database\n"  # untouched
    win.open_image(sorted(resource("samples").rglob("*.dcm"))[0])
    qtbot.waitUntil(lambda: win.panel.analysis.result is not None, timeout=60000)  # reading still works
    win.close()


def test_a_new_user_gets_the_default_store_in_a_data_folder_that_did_not_exist(qtbot, tmp_path, monkeypatch):
    import pyqtgraph as pg

    from cxrviewer.gui.main_window import MainWindow
    from cxrviewer.settings import Settings, default_store_path

    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "fresh" / "data"))
    pg.setConfigOptions(imageAxisOrder="row-major")
    win = MainWindow(settings=Settings(annotator="t"))
    qtbot.addWidget(win)
    assert win.panel.boxes.store_error is None and win.panel.boxes.store_path == default_store_path()
    assert default_store_path().is_file() and default_store_path().parent == tmp_path / "fresh" / "data"
    win.close()


def test_the_history_dialog_lists_the_images_versions(window, qtbot):
    from cxrviewer.gui.annotations_menu import open_history

    panel = window.panel
    assert open_history(window, panel) is None  # no image yet: a sentence, no dialog
    window.open_folder(resource("samples"), then_select_first=True)
    _analysed(window, qtbot)
    top = panel.analysis.selected
    box = panel.boxes.boxes(top)[0]
    moved = panel.boxes.move(box.box_id, tuple(c + 4 for c in box.box))
    panel.boxes.accept(moved)
    dialog = open_history(window, panel)
    qtbot.addWidget(dialog)
    column = [dialog.table.item(r, 5).text() for r in range(dialog.table.rowCount())]
    assert column == ["proposed", "corrected", "accepted"]
    assert dialog.table.item(1, 1).text() == "tester" and dialog.table.item(0, 1).text() == "(model)"
