"""The findings panel and the heatmap overlay on a tiny random model, offscreen."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, Qt, QTimer  # noqa: E402

import cxrviewer.resources  # noqa: E402
from cxrviewer.io import load_image  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.gui_support import install_tiny_model, tiny_default_model, viewer_settings  # noqa: E402, F401

TIMEOUT = 20000


def samples() -> list:
    return sorted(cxrviewer.resources.path("samples").rglob("*.dcm"))


@pytest.fixture
def viewer(qtbot, tiny_default_model, viewer_settings):  # noqa: F811
    import pyqtgraph as pg
    from PySide6.QtWidgets import QSplitter

    from cxrviewer.gui.analysis_model import AnalysisModel
    from cxrviewer.gui.canvas import ImageCanvas
    from cxrviewer.gui.document import ViewerDocument
    from cxrviewer.gui.findings_panel import FindingsPanel
    from cxrviewer.gui.heatmap_overlay import HeatmapOverlay

    pg.setConfigOptions(imageAxisOrder="row-major")
    viewer_settings.device = "cpu"
    document = ViewerDocument()
    analysis = AnalysisModel(document, viewer_settings)
    canvas = ImageCanvas(document)
    panel = FindingsPanel(analysis)
    overlay = HeatmapOverlay(canvas.view, analysis)
    panel.attach_overlay(overlay)
    window = QSplitter()
    window.addWidget(canvas)
    window.addWidget(panel)
    qtbot.addWidget(window)
    window.resize(900, 600)
    window.show()

    class Viewer:
        pass

    v = Viewer()
    v.document, v.analysis, v.canvas, v.panel, v.overlay, v.window = document, analysis, canvas, panel, overlay, window
    yield v
    analysis.cancel()
    analysis.pool.waitForDone(30000)


def open_and_wait(qtbot, viewer, path) -> None:
    viewer.document.set_image(load_image(path))
    qtbot.waitUntil(lambda: viewer.analysis.result is not None and not viewer.analysis.running, timeout=TIMEOUT)


def test_findings_are_ranked_with_marks_against_the_thresholds(qtbot, viewer):
    viewer.analysis.settings.thresholds = {"Mass": 0.0, "Nodule": 1.0}  # user overrides
    open_and_wait(qtbot, viewer, samples()[0])
    rows = viewer.panel.rows()
    assert len(rows) == 8
    probabilities = [r.probability for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [r.name for r in rows] == [f.name for f in viewer.analysis.ranked()]
    for row in rows:
        assert row.threshold == viewer.analysis.threshold(row.name)
        assert row.positive == (row.probability >= viewer.analysis.threshold(row.name))
    by_name = {r.name: r for r in rows}
    assert by_name["Mass"].positive and not by_name["Nodule"].positive
    assert viewer.panel.status.full_text.startswith("Grad-CAM · ") and viewer.panel.status.full_text.endswith(" s")
    assert viewer.panel.list.selected == rows[0].name == viewer.analysis.selected

    # Clicking a row selects it; Up/Down and select_next move the selection.
    third = viewer.panel.list.row_rect(2).center()
    qtbot.mouseClick(viewer.panel.list, Qt.MouseButton.LeftButton, pos=QPoint(third.x(), third.y()))
    assert viewer.analysis.selected == rows[2].name == viewer.panel.list.selected
    qtbot.keyClick(viewer.panel.list, Qt.Key.Key_Down)
    assert viewer.analysis.selected == rows[3].name
    qtbot.keyClick(viewer.panel.list, Qt.Key.Key_Up)
    qtbot.keyClick(viewer.panel.list, Qt.Key.Key_Up)
    assert viewer.analysis.selected == rows[1].name
    viewer.panel.select_next(-5)
    assert viewer.analysis.selected == rows[0].name
    viewer.panel.select_next(20)
    assert viewer.analysis.selected == rows[-1].name
    assert viewer.panel.device_box.count() >= 2 and viewer.panel.model_box.count() >= 1  # listed after a run


def test_the_selected_findings_heatmap_is_overlaid(qtbot, viewer):
    from cxrviewer.gui.heatmap_overlay import LUT, heatmap_rgba

    open_and_wait(qtbot, viewer, samples()[0])
    shape = viewer.document.image.shape
    for finding in [f.name for f in viewer.analysis.ranked()][:3]:
        viewer.analysis.select(finding)
        heat = viewer.analysis.heatmap(finding)
        shown = viewer.overlay.item.image
        assert heat.shape == shape and shown.shape == (*shape, 4) and shown.dtype == np.uint8
        expected = LUT[(np.clip(heat, 0, 1) * 255 + 0.5).astype(np.uint8)]  # the LUT of the heatmap
        np.testing.assert_array_equal(shown, expected)
        np.testing.assert_array_equal(shown, heatmap_rgba(heat))
        assert (shown[..., 3] > 0).any() and viewer.overlay.visible
    assert LUT[: int(0.2 * 255), 3].max() == 0 and LUT[-1, 3] == 255  # low end transparent
    assert viewer.overlay.item.zValue() > viewer.canvas.item.zValue()
    assert viewer.overlay.item.pos() == viewer.canvas.item.pos()

    viewer.panel.opacity.setValue(30)
    assert viewer.overlay.item.opacity() == pytest.approx(0.3)
    viewer.panel.show_heatmap.setChecked(False)
    assert not viewer.overlay.visible
    viewer.panel.toggle_shortcut.activated.emit()  # the H key
    assert viewer.panel.show_heatmap.isChecked() and viewer.overlay.visible

    viewer.document.set_image(None)
    assert not viewer.overlay.visible and viewer.panel.rows() == []


def test_moving_on_cancels_the_running_analysis(qtbot, viewer):
    first, second = samples()[0], samples()[4]
    viewer.analysis.set_options(cam="scorecam")  # seconds on the tiny model: still running when we move on
    viewer.document.set_image(load_image(first))
    qtbot.waitUntil(lambda: viewer.panel.progress.value() > 0, timeout=TIMEOUT)
    assert viewer.analysis.running and viewer.panel.progress.isVisible()
    with qtbot.waitSignal(viewer.analysis.started, timeout=TIMEOUT) as started:
        viewer.document.set_image(load_image(second))
    assert second.name in started.args[0] and viewer.panel.progress.value() == 0
    # The stale run stops at its next progress report, so the single analysis thread takes up the
    # second image at once (a stale run never reports progress).
    qtbot.waitUntil(lambda: viewer.panel.progress.value() > 0, timeout=3000)
    assert viewer.analysis.result is None
    viewer.analysis.set_options(cam="gradcam")  # finish quickly
    qtbot.waitUntil(lambda: viewer.analysis.result is not None, timeout=TIMEOUT)
    assert viewer.analysis.result.file == str(second) and viewer.analysis.result.cam_method == "gradcam"
    qtbot.wait(50)
    assert viewer.analysis.result.file == str(second) and not viewer.panel.progress.isVisible()


def test_the_panel_opens_without_importing_torch(tmp_path):
    code = ("import sys\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from cxrviewer.gui.analysis_model import AnalysisModel\n"
            "from cxrviewer.gui.canvas import ImageCanvas\n"
            "from cxrviewer.gui.document import ViewerDocument\n"
            "from cxrviewer.gui.findings_panel import FindingsPanel\n"
            "from cxrviewer.gui.heatmap_overlay import HeatmapOverlay\n"
            "document = ViewerDocument(); analysis = AnalysisModel(document); canvas = ImageCanvas(document)\n"
            "panel = FindingsPanel(analysis); panel.attach_overlay(HeatmapOverlay(canvas.view, analysis))\n"
            "panel.show(); app.processEvents()\n"
            "print('torch' in sys.modules)\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_changing_the_cam_method_analyses_again(qtbot, viewer):
    open_and_wait(qtbot, viewer, samples()[0])
    before = viewer.analysis.result
    index = viewer.panel.cam_box.findData("gradcam++")
    assert viewer.panel.cam_box.itemText(index) == "Grad-CAM++"
    viewer.panel.cam_box.setCurrentIndex(index)
    viewer.panel.cam_box.activated.emit(index)  # as a user's choice
    assert viewer.analysis.cam == "gradcam++"
    qtbot.waitUntil(lambda: viewer.analysis.result is not None and viewer.analysis.result is not before,
                    timeout=TIMEOUT)
    assert viewer.analysis.result.cam_method == "gradcam++"
    assert viewer.panel.status.full_text.startswith("Grad-CAM++ · ")


def test_a_missing_model_is_one_sentence(qtbot, viewer, capfd):
    viewer.document.set_image(load_image(samples()[0]))
    with qtbot.waitSignal(viewer.analysis.failed, timeout=TIMEOUT) as blocker:
        viewer.analysis.set_options(model="nope")
    sentence = blocker.args[0]
    assert viewer.panel.status.full_text == sentence and "'nope'" in sentence
    assert sentence.endswith(".") and "\n" not in sentence and "Traceback" not in sentence
    assert viewer.panel.model_box.currentData() == "nope" and viewer.panel.rows() == []
    assert "Traceback" not in capfd.readouterr().err


def test_the_ui_keeps_breathing_while_a_model_runs(qtbot, viewer, tiny_default_model):  # noqa: F811
    install_tiny_model(tiny_default_model.parent, "big", 320)
    viewer.panel.refresh_models()
    assert viewer.panel.model_box.findData("big") >= 0
    viewer.analysis.set_options(model="big")
    open_and_wait(qtbot, viewer, samples()[0])  # warm-up: the model is loaded and built

    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    qtbot.wait(30)
    gaps.clear()
    last[0] = time.perf_counter()
    for path in samples()[1:4]:  # three measured runs back to back
        open_and_wait(qtbot, viewer, path)
    viewer.analysis.set_options(model="default", cam="scorecam")  # ~0.3 s between progress reports
    qtbot.waitUntil(lambda: viewer.panel.progress.value() > 0, timeout=TIMEOUT)
    qtbot.wait(600)
    timer.stop()
    worst = max(gaps)
    print(f"heartbeat: {len(gaps)} ticks, max gap {1000 * worst:.1f} ms")
    assert worst < 0.1, f"the UI thread stalled for {1000 * worst:.0f} ms"


def test_a_cam_method_the_model_lacks_is_one_sentence(qtbot, viewer, capfd):
    viewer.document.set_image(load_image(samples()[0]))
    with qtbot.waitSignal(viewer.analysis.failed, timeout=TIMEOUT) as blocker:
        viewer.analysis.set_options(cam="native")  # a plain ResNet has no native maps
    assert blocker.args[0].startswith(f"{samples()[0].name}: model 'default' cannot be explained with 'native'")
    assert viewer.panel.status.full_text == blocker.args[0]
    assert "Traceback" not in capfd.readouterr().err


def test_a_14_label_model_shows_eight_findings_and_the_other_six_on_request(qtbot, viewer, tmp_path):
    """Issue 14 item 3: the viewer's eight findings first, the model's other six behind a check
    box; the age / sex / view the model was given (from the DICOM tags) are shown beside them."""
    from cxrviewer.models.spec import DEFAULT_TARGETS
    from cxrviewer.trainer.data.sources import LABEL_SPACES

    folder = tmp_path / "userdata" / "models"
    install_tiny_model(folder, "nih14", targets=LABEL_SPACES["nih14"], inputs=("age", "sex", "view"))
    viewer.analysis.set_options(model="nih14")
    open_and_wait(qtbot, viewer, samples()[0])
    assert {r.name for r in viewer.panel.rows()} == set(DEFAULT_TARGETS)
    assert viewer.panel.show_all.isVisible() and viewer.panel.show_all.text() == "Show 6 more findings"
    inputs = viewer.panel.inputs_label.full_text
    assert inputs.startswith("Model inputs: age ") and " years" in inputs and "sex " in inputs and "view " in inputs
    viewer.panel.show_all.setChecked(True)
    assert {r.name for r in viewer.panel.rows()} == set(LABEL_SPACES["nih14"])
    viewer.analysis.select("Hernia")
    viewer.panel.show_all.setChecked(False)  # hiding the selected finding selects the top one shown
    assert len(viewer.panel.rows()) == 8 and viewer.analysis.selected == viewer.panel.rows()[0].name
