"""The triage worklist panel, offscreen: a background run over the sample studies plus a corrupt file,
sorted rows, the unreadable file with its sentence, progress, cancel, double-click and CSV export."""

from __future__ import annotations

import csv
import shutil
import threading
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import torch
from PySide6.QtCore import QPoint, QThread, Qt
from PySide6.QtTest import QTest

from cxrviewer.analysis import Analyzer
from cxrviewer.errors import CxrError
from cxrviewer.gui.triage_panel import COLUMNS, TriagePanel
from cxrviewer.models import create_model
from cxrviewer.resources import path as resource_path
from cxrviewer.triage import CSV_FIXED

SAMPLES_DIR = resource_path("samples")
N_SAMPLES = len(list(SAMPLES_DIR.rglob("*.dcm")))


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other jobs
    torch.manual_seed(0)
    model, spec = create_model("resnet18", input_size=(64, 64))
    yield Analyzer(model, spec, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def studies(tmp_path):
    """A copy of the sample studies plus one file that claims to be DICOM and is not."""
    folder = tmp_path / "studies"
    shutil.copytree(SAMPLES_DIR, folder, ignore=shutil.ignore_patterns("*.md"))
    (folder / "junk.dcm").write_bytes(b"DICM? no." * 20)
    return folder


def _panel(qtbot, analyzer, **kwargs) -> TriagePanel:
    threads: list[QThread] = []

    def factory() -> Analyzer:
        threads.append(QThread.currentThread())
        return analyzer

    panel = TriagePanel(factory, **kwargs)
    panel.factory_threads = threads
    qtbot.addWidget(panel)
    return panel


def _texts(panel: TriagePanel, column: int) -> list[str]:
    return [panel.table.item(r, column).text() for r in range(panel.table.rowCount())]


def test_a_folder_becomes_a_sorted_worklist_with_its_unreadable_file(qtbot, analyzer, studies, tmp_path):
    panel = _panel(qtbot, analyzer, batch_size=3)
    panel.show()
    seen: list[tuple[int, int]] = []
    panel.progress.connect(lambda done, total: seen.append((done, total)))
    with qtbot.waitSignal(panel.finished, timeout=60000) as blocker:
        assert panel.start(studies)
        assert panel.running and not panel.start(studies)  # one run at a time
    rows = blocker.args[0]
    assert rows == panel.rows and len(rows) == N_SAMPLES + 1 and not panel.running
    assert panel.factory_threads and panel.factory_threads[0] is not QThread.currentThread()  # off the UI thread
    assert [panel.table.horizontalHeaderItem(j).text() for j in range(len(COLUMNS))] == list(COLUMNS)
    assert _texts(panel, 0) == [r.path.name for r in rows]
    probabilities = [float(t) for t in _texts(panel, 3)[:-1]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert [r.top_probability for r in rows[:-1]] == sorted((r.top_probability for r in rows[:-1]), reverse=True)
    assert _texts(panel, 4)[:-1] == [str(len(r.positives)) for r in rows[:-1]]
    assert all(t for t in _texts(panel, 1)[:-1]) and all(t for t in _texts(panel, 2)[:-1])
    last = panel.table.rowCount() - 1
    assert panel.table.item(last, 0).text() == "junk.dcm" and _texts(panel, 5)[:-1] == [""] * N_SAMPLES
    error = panel.table.item(last, 5).text()
    assert error.startswith("junk.dcm: ") and error.endswith(".") and "\n" not in error
    assert panel.table.item(last, 3).text() == "" and rows[-1].error == error
    assert panel.progress_bar.value() == 100 and seen[-1] == (N_SAMPLES + 1, N_SAMPLES + 1)
    assert "unreadable" in panel.status.text() and panel.export_button.isEnabled()

    qtbot.waitExposed(panel)
    centre = panel.table.visualItemRect(panel.table.item(1, 2)).center()
    with qtbot.waitSignal(panel.image_activated, timeout=5000) as activated:
        # a real double-click: press, release, then the double-click press (Qt checks the pressed cell)
        QTest.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=centre)
        QTest.mouseDClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    assert activated.args == [rows[1].path]
    opened = []
    panel.image_activated.connect(opened.append)
    QTest.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=centre)  # a single click opens nothing
    qtbot.wait(50)
    assert opened == []

    out = panel.export_csv(tmp_path / "out" / "worklist.csv")
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [*CSV_FIXED, *(f"p_{t}" for t in analyzer.spec.targets)]
    assert [t["path"] for t in table] == [str(r.path) for r in rows]
    assert table[-1]["error"] == error and str(out) in panel.status.text()
    with qtbot.waitSignal(panel.failed, timeout=5000) as refused:
        assert panel.export_csv(tmp_path / "out") is None  # a folder
    assert refused.args[0].startswith("out: the worklist cannot be written") and panel.status.text() == refused.args[0]


def test_a_header_click_sorts_the_worklist_and_the_rows_follow(qtbot, analyzer, studies, tmp_path):
    panel = _panel(qtbot, analyzer)
    panel.show()
    with qtbot.waitSignal(panel.finished, timeout=60000):
        assert panel.start(studies)
    header = panel.table.horizontalHeader()
    assert (header.sortIndicatorSection(), header.sortIndicatorOrder()) == (3, Qt.SortOrder.DescendingOrder)
    qtbot.waitExposed(panel)

    def click_header(column: int) -> None:
        QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(header.sectionViewportPosition(column) + 5, header.height() // 2))

    click_header(3)  # already most probable first: the other way
    probabilities = [float(t) for t in _texts(panel, 3)[:-1]]
    assert probabilities == sorted(probabilities) and header.sortIndicatorOrder() == Qt.SortOrder.AscendingOrder
    assert _texts(panel, 0)[-1] == "junk.dcm"  # unreadable files stay last
    click_header(4)  # a count sorts as a number, largest first
    counts = [int(t) for t in _texts(panel, 4)[:-1]]
    assert counts == sorted(counts, reverse=True) and _texts(panel, 0)[-1] == "junk.dcm"
    click_header(0)
    assert _texts(panel, 0)[:-1] == sorted(_texts(panel, 0)[:-1], key=str.lower)
    click_header(5)  # by the error: the unreadable file comes first
    assert _texts(panel, 0)[0] == "junk.dcm"
    # rows follow the order shown: what a double-click opens, what the CSV lists
    assert [r.path.name for r in panel.rows] == _texts(panel, 0)
    panel.sort_by(3, descending=True)
    with qtbot.waitSignal(panel.image_activated, timeout=5000) as activated:
        panel._on_double_click(0, 0)
    assert activated.args == [panel.rows[0].path] and panel.rows[0].top_probability == max(
        r.top_probability for r in panel.rows if r.ok)
    out = panel.export_csv(tmp_path / "sorted.csv")
    with open(out, newline="", encoding="utf-8") as f:
        assert [t["path"] for t in csv.DictReader(f)] == [str(r.path) for r in panel.rows]


def test_cancel_stops_after_the_current_batch(qtbot, analyzer):
    gate, calls = threading.Event(), []

    def hold_second_batch(module, args) -> None:
        calls.append(args[0].shape[0])
        if len(calls) >= 2:
            gate.wait(30)  # the second batch waits until the test has pressed Cancel

    handle = analyzer.model.register_forward_pre_hook(hold_second_batch)
    try:
        panel = _panel(qtbot, analyzer, batch_size=1)
        seen: list[tuple[int, int]] = []
        panel.progress.connect(lambda done, total: seen.append((done, total)))
        panel.start(sorted(SAMPLES_DIR.rglob("*.dcm")))
        qtbot.waitUntil(lambda: any(done >= 1 for done, _ in seen), timeout=60000)
        with qtbot.waitSignal(panel.finished, timeout=60000) as blocker:
            assert panel.cancel_button.isEnabled()
            panel.cancel_button.click()
            assert not panel.cancel_button.isEnabled()
            gate.set()
    finally:
        gate.set()
        handle.remove()
    rows = blocker.args[0]
    assert 1 <= len(rows) <= 2 < N_SAMPLES and len(calls) == len(rows)  # no batch after the cancel
    assert panel.table.rowCount() == len(rows) and panel.status.text().startswith("Cancelled")
    assert panel.progress_bar.value() < 100 and panel.choose_button.isEnabled() and not panel.running


def test_a_model_that_cannot_load_is_one_sentence_and_the_panel_stays_usable(qtbot, analyzer, tmp_path):
    attempts = []

    def factory() -> Analyzer:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise CxrError(tmp_path / "broken.pt", "the model file is damaged")
        return analyzer

    panel = TriagePanel(factory)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.failed, timeout=30000) as blocker:
        panel.start(SAMPLES_DIR)
    assert blocker.args == ["broken.pt: the model file is damaged."] and panel.status.text() == blocker.args[0]
    assert not panel.running and panel.table.rowCount() == 0
    missing = tmp_path / "missing.dcm"
    with qtbot.waitSignal(panel.finished, timeout=60000) as done:
        panel.start([missing])
    assert [r.error for r in done.args[0]] == ["missing.dcm: the file does not exist."]
    assert panel.progress_bar.value() == 100 and panel.wait()
