"""Editable boxes on the canvas and the radiomics panel, offscreen: model and clinician styles, a
mouse drag committed once on release (store + radiomics), undo/redo, drawing, the box actions, the
CSV export, and the store's safety when the writer is killed or another process edits the same image."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QApplication

from cxrviewer.annotations import AnnotationStore
from tests.conftest import REPO
from tests.gui_support import tiny_default_model, viewer_settings  # noqa: F401


class Viewer:
    """Document, models, canvas, box layer and radiomics panel wired as the main window wires them."""

    def __init__(self, qtbot, settings) -> None:
        import pyqtgraph as pg

        from cxrviewer.gui.analysis_model import AnalysisModel
        from cxrviewer.gui.box_items import BoxLayer
        from cxrviewer.gui.box_model import BoxModel
        from cxrviewer.gui.canvas import ImageCanvas
        from cxrviewer.gui.document import ViewerDocument
        from cxrviewer.gui.radiomics_model import RadiomicsModel
        from cxrviewer.gui.radiomics_panel import RadiomicsPanel

        pg.setConfigOptions(imageAxisOrder="row-major")
        self.qtbot = qtbot
        self.document = ViewerDocument()
        self.analysis = AnalysisModel(self.document, settings)
        self.boxes = BoxModel(self.document, self.analysis, settings)
        self.radiomics = RadiomicsModel(self.document, self.boxes)
        self.canvas = ImageCanvas(self.document)
        self.layer = BoxLayer(self.canvas.view, self.boxes, self.analysis)
        self.panel = RadiomicsPanel(self.radiomics)
        for widget in (self.canvas, self.panel):
            qtbot.addWidget(widget)
        self.canvas.resize(800, 800)
        self.canvas.show()
        self.panel.resize(420, 700)
        self.panel.show()

    def open_sample(self) -> None:
        import cxrviewer.resources

        import cxrviewer.io

        path = min(cxrviewer.resources.path("samples").rglob("*.dcm"))
        self.document.set_image(cxrviewer.io.load_image(path))
        self.qtbot.waitUntil(lambda: self.analysis.result is not None, timeout=120000)
        self.qtbot.waitUntil(lambda: bool(self.layer.items()), timeout=10000)
        self.canvas.fit()
        QApplication.processEvents()

    def to_widget(self, x: float, y: float) -> QPoint:
        """Image pixel (x, y) -> a point on the canvas viewport."""
        scene = self.canvas.view.mapViewToScene(QPointF(x, y))
        return self.canvas.mapFromScene(scene)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 6) -> None:
        """A left-button drag on the canvas between two image positions, with real mouse events."""
        viewport = self.canvas.viewport()
        a, b = self.to_widget(*start), self.to_widget(*end)
        self.qtbot.mouseMove(viewport, a)
        self.qtbot.wait(20)
        self.qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
        for i in range(1, steps + 1):
            self.qtbot.wait(20)  # pyqtgraph drops moves closer than its rate limit
            p = a + (b - a) * (i / steps)
            self.qtbot.mouseMove(viewport, p)
        self.qtbot.wait(20)
        self.qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)
        self.qtbot.wait(20)

    def click(self, x: float, y: float, button=Qt.MouseButton.LeftButton) -> None:
        viewport = self.canvas.viewport()
        p = self.to_widget(x, y)
        self.qtbot.mouseMove(viewport, p)
        self.qtbot.wait(20)
        self.qtbot.mouseClick(viewport, button, pos=p)
        self.qtbot.wait(20)

    def close(self) -> None:
        self.boxes.close()
        self.analysis.pool.waitForDone(60000)
        self.radiomics.pool.waitForDone(60000)


@pytest.fixture
def viewer(qtbot, tiny_default_model, viewer_settings):  # noqa: F811
    v = Viewer(qtbot, viewer_settings)
    v.open_sample()
    yield v
    v.close()


def _other_store(viewer) -> AnnotationStore:
    return AnnotationStore.open(viewer.boxes.store_path)


def _in_view(viewer) -> list:
    """The box items actually in the canvas's view."""
    from cxrviewer.gui.box_graphics import BoxItem

    return [i for i in viewer.canvas.view.childGroup.childItems() if isinstance(i, BoxItem)]


def _empty_spot(viewer, width: float, height: float) -> tuple[float, float]:
    """An image position in view where a width x height drag touches no box."""
    from PySide6.QtCore import QRectF

    (vx0, vx1), (vy0, vy1) = viewer.canvas.view.viewRange()
    rows, cols = viewer.document.image.shape[:2]
    taken = [i.rect.adjusted(-15, -15, 15, 15) for i in viewer.layer.items()]
    for x in range(int(max(vx0, 0)) + 10, int(min(vx1, cols) - width - 10), 10):
        for y in range(int(max(vy0, 0)) + 10, int(min(vy1, rows) - height - 10), 10):
            if not any(r.intersects(QRectF(x, y, width, height)) for r in taken):
                return float(x), float(y)
    raise AssertionError("no free place for the drag")


def _room(low: float, high: float, size: int, step: float) -> float:
    """A shift of a box edge pair [low, high] by `step` that stays in [0, size]: forward, back, or 0."""
    return step if high + step <= size else -step if low - step >= 0 else 0.0


def _wait_radiomics(viewer, computations: int) -> None:
    viewer.qtbot.waitUntil(lambda: viewer.radiomics.computations >= computations
                           and not viewer.radiomics.running, timeout=60000)


# --- (a) styles, a drag committed once on release, radiomics recomputed once ---------------------
def test_model_boxes_are_drawn_with_the_model_style(viewer):
    from cxrviewer.gui import box_draw

    items = viewer.layer.items()
    finding = viewer.analysis.selected
    assert items and all(i.box.kind == "model" and i.box.finding == finding for i in items)
    assert all(i.style is box_draw.MODEL_STYLE and i.style.dashed for i in items)
    assert all(i.text.startswith(f"{finding} · model 0.") for i in items)
    assert all(i.scene() is viewer.canvas.scene() for i in items)


def test_dragging_a_box_commits_one_correction_and_recomputes_radiomics_once(viewer):
    item = viewer.layer.items()[0]
    x0, y0, x1, y1 = item.box.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    viewer.click(cx, cy)
    assert viewer.boxes.selected_id == item.box_id and item.selected
    _wait_radiomics(viewer, 1)
    before = viewer.radiomics.computations
    range_before = viewer.canvas.view.viewRange()
    busy_shown = []
    viewer.radiomics.started.connect(lambda: busy_shown.append(viewer.panel.busy.isVisibleTo(viewer.panel)))

    rows, cols = viewer.document.image.shape[:2]
    # towards the side with room (the tiny model's box can span the whole width: then it cannot move across)
    want = (_room(x0, x1, cols, 40), _room(y0, y1, rows, 25))
    assert want != (0, 0)
    viewer.drag((cx, cy), (cx + want[0], cy + want[1]))
    viewer.qtbot.waitUntil(lambda: viewer.boxes.selected() is not None and viewer.boxes.selected().stored)
    assert viewer.canvas.view.viewRange() == range_before  # the drag moved the box, not the view
    moved = viewer.boxes.selected()
    dx, dy = moved.box[0] - x0, moved.box[1] - y0
    assert abs(dx - want[0]) <= 3 and abs(dy - want[1]) <= 3, (moved.box, (x0, y0, x1, y1), want)
    assert moved.box[2] - moved.box[0] == pytest.approx(x1 - x0)  # a move keeps the size
    with _other_store(viewer) as store:
        history = store.history(moved.box_id)
    assert [h.status for h in history] == ["proposed", "corrected"]  # exactly one version for the drag
    assert history[0].box == pytest.approx((x0, y0, x1, y1)) and history[1].box == moved.box
    assert history[1].annotator == "tester"

    _wait_radiomics(viewer, before + 1)
    assert viewer.radiomics.computations == before + 1 and busy_shown == [True]
    assert not viewer.panel.busy.isVisibleTo(viewer.panel)
    assert viewer.radiomics.box == pytest.approx(moved.box, abs=0.01)
    tree = viewer.panel.tree
    assert tree.topLevelItemCount() == 7 and tree.topLevelItem(0).text(0) == "First order"
    assert tree.topLevelItem(0).child(0).text(1) not in ("", "\u2014")
    assert f"x {int(moved.box[0])}" in viewer.panel.header.text()
    new = viewer.layer.item(moved.box_id)
    assert new.box.kind == "clinician" and new.selected and new.text.startswith("\u2713 ")
    assert _in_view(viewer) == viewer.layer.items()  # the proposal's item is gone, none left stale


def test_dragging_a_handle_resizes_and_a_drag_elsewhere_pans(viewer):
    item = viewer.layer.items()[0]
    viewer.boxes.select(item.box_id)
    x0, y0, x1, y1 = item.box.box
    viewer.drag((x1, y1), (x1 - 30, y1 - 20))  # the bottom-right handle, inwards
    viewer.qtbot.waitUntil(lambda: viewer.boxes.selected() is not None and viewer.boxes.selected().stored)
    b = viewer.boxes.selected().box
    assert b[:2] == pytest.approx((x0, y0)) and abs(b[2] - x1 + 30) <= 3 and abs(b[3] - y1 + 20) <= 3

    viewer.analysis.select(None)  # no finding selected: no boxes, the image is all empty
    assert viewer.layer.items() == [] and _in_view(viewer) == [] and viewer.boxes.selected_id is None
    viewer.canvas.zoom(2.0)
    range_before = viewer.canvas.view.viewRange()
    rows, cols = viewer.document.image.shape[:2]
    viewer.drag((cols / 2, rows / 2), (cols / 2 + 60, rows / 2 + 40))
    assert viewer.canvas.view.viewRange() != range_before  # not in draw mode: the view panned


# --- (b) undo / redo -----------------------------------------------------------------------
def test_undo_and_redo_restore_the_coordinates_in_the_store_and_the_items(viewer):
    item = viewer.layer.items()[0]
    original = item.box.box
    box_id = viewer.boxes.move(item.box_id, (10, 20, 200, 220))
    assert viewer.layer.item(box_id).box.box == (10, 20, 200, 220)
    viewer.boxes.undo()
    with _other_store(viewer) as store:
        assert store.box(box_id).box == pytest.approx(original) and store.box(box_id).status == "proposed"
    assert viewer.layer.item(box_id).box.box == pytest.approx(original)
    assert viewer.layer.item(box_id).box.kind == "model"
    viewer.boxes.redo()
    with _other_store(viewer) as store:
        assert store.box(box_id).box == (10, 20, 200, 220)
    assert viewer.layer.item(box_id).rect.getCoords() == (10, 20, 200, 220)


# --- (c) draw, delete, accept, reject, relabel ----------------------------------------------
def test_draw_mode_adds_a_box_of_the_selected_finding(viewer):
    finding = viewer.analysis.selected
    spot = _empty_spot(viewer, 100, 80)
    viewer.layer.set_draw_mode(True)
    viewer.drag(spot, (spot[0] + 100, spot[1] + 80))
    viewer.qtbot.waitUntil(lambda: any(i.box.status == "added" for i in viewer.layer.items()))
    added = next(i for i in viewer.layer.items() if i.box.status == "added")
    with _other_store(viewer) as store:
        rec = store.box(added.box_id)
    assert rec.status == "added" and rec.finding == finding and rec.annotator == "tester"
    assert abs(rec.box[0] - spot[0]) <= 3 and abs(rec.box[2] - rec.box[0] - 100) <= 4
    assert viewer.boxes.selected_id == added.box_id
    # one box per B: the next drag pans the view; with Shift held at the release the mode stays on
    changes = []
    viewer.layer.draw_mode_changed.connect(changes.append)
    assert not viewer.layer.draw_mode
    viewer.layer.set_draw_mode(True)
    spot = _empty_spot(viewer, 60, 50)
    from unittest import mock

    with mock.patch("cxrviewer.gui.box_items.QApplication.keyboardModifiers",
                    return_value=Qt.KeyboardModifier.ShiftModifier):
        viewer.drag(spot, (spot[0] + 60, spot[1] + 50))
    viewer.qtbot.waitUntil(lambda: sum(i.box.status == "added" for i in viewer.layer.items()) == 2)
    assert viewer.layer.draw_mode and changes == [True]


def test_labels_of_boxes_sharing_a_corner_stack_instead_of_overlapping(viewer):
    from PySide6.QtCore import QPointF

    from cxrviewer.gui import box_draw

    finding = viewer.analysis.selected
    x, y = _empty_spot(viewer, 120, 100)
    a = viewer.boxes.add(finding, (x, y, x + 120, y + 100))
    b = viewer.boxes.add(finding, (x, y, x + 60, y + 50))  # same corner, smaller box
    viewer.qtbot.waitUntil(lambda: viewer.layer.item(a) is not None and viewer.layer.item(b) is not None)

    def label(item):
        views = viewer.canvas.view.scene().views()
        corner = views[0].mapFromScene(viewer.canvas.view.mapViewToScene(item.rect.topLeft()))
        return box_draw.label_rect(QPointF(corner), item.text, item.label_slot)

    def labels_apart():
        rects = [label(i) for i in viewer.layer.items()]
        return not any(r.intersects(o) for k, r in enumerate(rects) for o in rects[k + 1:])

    first, second = viewer.layer.item(a), viewer.layer.item(b)
    assert {first.label_slot, second.label_slot} == {0, 1} and labels_apart()
    # the bounding rect covers the stacked label, so it is repainted with the box
    stacked = first if first.label_slot else second
    assert stacked.boundingRect().top() < stacked.rect.top() - 2 * box_draw.label_size(stacked.text)[1] * stacked._pixel()[1]
    viewer.canvas.zoom(0.5)  # further out: boxes closer on screen, labels still apart
    QApplication.processEvents()
    assert labels_apart()


def test_accept_reject_relabel_delete_and_the_context_menu_go_to_the_store(viewer, qtbot):
    first = viewer.layer.items()[0]
    viewer.click(*first.rect.center().toTuple(), button=Qt.MouseButton.RightButton)
    menu = viewer.layer.menu
    assert menu is not None and [a.text() for a in menu.actions()][:3] == ["Accept", "Reject", "Delete"]
    relabel = menu.actions()[3].menu()
    assert len(relabel.actions()) == 8
    menu.close()

    box_id = viewer.layer.accept_selected()
    with _other_store(viewer) as store:
        assert store.box(box_id).status == "accepted"
    assert viewer.layer.item(box_id).box.kind == "clinician"

    target = next(n for n in viewer.layer.findings() if n != viewer.analysis.selected)
    assert viewer.layer.relabel_selected(target) == box_id
    with _other_store(viewer) as store:
        assert store.box(box_id).finding == target
    assert viewer.analysis.selected == target and viewer.layer.item(box_id).selected

    viewer.canvas.setFocus()
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Delete)
    with _other_store(viewer) as store:
        assert store.box(box_id).status == "deleted"
    assert viewer.layer.item(box_id) is None and viewer.boxes.selected_id is None

    viewer.layer.set_show_all_findings(True)
    model_box = next(i for i in viewer.layer.items() if i.box.kind == "model")
    viewer.boxes.select(model_box.box_id)
    rejected = viewer.layer.reject_selected()
    with _other_store(viewer) as store:
        rec = store.box(rejected)
    assert rec.status == "deleted" and rec.note == "rejected"
    assert _in_view(viewer) == viewer.layer.items() and viewer.layer.item(rejected) is None


# --- (f) radiomics CSV ------------------------------------------------------------------------
def test_radiomics_csv_export_and_copy(viewer, tmp_path):
    item = viewer.layer.items()[0]
    viewer.boxes.select(item.box_id)
    _wait_radiomics(viewer, 1)
    out = tmp_path / "features.csv"
    assert viewer.panel.export_to(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "image,finding,x0,y0,x1,y1,class,feature,value"
    assert len(lines) == 1 + len(viewer.radiomics.rows()) > 50
    assert any(",firstorder,Mean," in line for line in lines)
    viewer.panel.copy()
    assert QApplication.clipboard().text().startswith("class\tfeature\tvalue\nfirstorder\t")
    assert not viewer.panel.export_to(tmp_path / "missing" / "x.csv")
    assert viewer.panel.status.text().startswith("x.csv: ") and viewer.panel.status.isVisibleTo(viewer.panel)

    # a region that cannot be measured: its one sentence, and '—' for the undefined values
    thin = viewer.boxes.add(viewer.analysis.selected, (10, 10, 11, 40))
    assert viewer.boxes.selected_id == thin
    viewer.qtbot.waitUntil(lambda: viewer.radiomics.result is not None and not viewer.radiomics.running
                           and viewer.radiomics.box == (10, 10, 11, 40), timeout=60000)
    assert viewer.radiomics.result.status == "too small"
    assert viewer.panel.status.text() == viewer.radiomics.result.message and viewer.panel.status.text()
    first = viewer.panel.tree.topLevelItem(0)
    assert first is None or first.child(0).text(1) == "—"
    assert "1 × 30 px" in viewer.panel.header.text()


# --- (d), (e): another process on the same store -------------------------------------------------
CHILD = textwrap.dedent('''
    """An annotator in another process: BoxEditor on the same store, driven by JSON lines on stdin."""
    import json
    import sys

    from cxrviewer.annotations import AnnotationStore, EditConflict
    from cxrviewer.annotations.editing import BoxEditor, ImageRef

    store = AnnotationStore.open(sys.argv[1])
    editor = BoxEditor(store, sys.argv[2])
    editor.open_image(ImageRef(sys.argv[3], None, rows=int(sys.argv[4]), cols=int(sys.argv[5])))
    print(json.dumps({"ready": True}), flush=True)

    def report(box_id):
        rec = store.box(box_id)
        print(json.dumps({"id": box_id, "version": rec.version, "box": rec.box, "status": rec.status}), flush=True)

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "burst":  # add a box, move it, add the next ...: one line per committed edit
            last = None
            for i in range(cmd["n"]):
                x = float(10 + (i * 7) % 300)
                if last is None or i % 2 == 0:
                    last = editor.add("Nodule", (x, 10.0, x + 40.0, 60.0))
                else:
                    editor.move(last, (x, 20.0, x + 44.0, 70.0))
                report(last)
        elif cmd["op"] == "add":
            report(editor.add(cmd["finding"], tuple(cmd["box"])))
        elif cmd["op"] == "move":
            editor.boxes()  # what this annotator sees now
            try:
                report(editor.move(cmd["id"], tuple(cmd["box"])))
            except EditConflict as err:
                print(json.dumps({"conflict": str(err)}), flush=True)
''')


class Child:
    """The CHILD script in its own process, on `store_path`, editing image `key` as `annotator`."""

    def __init__(self, tmp_path, store_path, annotator: str, key: str, rows: int, cols: int) -> None:
        import json

        self.json = json
        script = tmp_path / "child_editor.py"
        script.write_text(CHILD)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, str(script), str(store_path), annotator, key, str(rows),
                                      str(cols)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=str(REPO))
        assert self.read() == {"ready": True}

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the child process ended (exit {self.proc.poll()})"
        return self.json.loads(line)

    def send(self, **cmd) -> None:
        self.proc.stdin.write(self.json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, **cmd) -> dict:
        self.send(**cmd)
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def _integrity(path) -> str:
    with sqlite3.connect(path) as raw:
        return raw.execute("PRAGMA integrity_check").fetchone()[0]


def test_edits_reported_committed_survive_a_sigkill(tmp_path):
    store_path = tmp_path / "reads.cxra"
    child = Child(tmp_path, store_path, "dr.killed", "1.2.3.4", 512, 512)
    child.send(op="burst", n=100000)
    reported = [child.read() for _ in range(40)]  # it keeps committing while we read
    os.kill(child.proc.pid, signal.SIGKILL)
    child.close()
    assert child.proc.returncode == -signal.SIGKILL

    assert _integrity(store_path) == "ok"
    with AnnotationStore.open(store_path) as store:
        for edit in reported:
            versions = {(h.version, h.box, h.status) for h in store.history(edit["id"])}
            assert (edit["version"], tuple(edit["box"]), edit["status"]) in versions
            assert all(h.annotator == "dr.killed" for h in store.history(edit["id"]))
        # the store takes new edits after the crash
        store.add_box("1.2.3.4", "Mass", (1, 1, 9, 9), "dr.next")
    assert _integrity(store_path) == "ok"


def test_two_processes_editing_one_image(viewer, tmp_path, qtbot):
    image = viewer.document.image
    rows, cols = image.shape[:2]
    key = viewer.boxes.editor.image.key
    finding = viewer.analysis.selected
    mine = viewer.layer.items()[0]
    box_a = viewer.boxes.move(mine.box_id, tuple(c + 2 for c in mine.box.box))  # a stored box both can see
    child = Child(tmp_path, viewer.boxes.store_path, "dr.other", key, rows, cols)
    try:
        # another box of the same image: this viewer's poll picks it up
        other = child.ask(op="add", finding=finding, box=[20, 30, 90, 100])
        with qtbot.waitSignal(viewer.boxes.boxes_changed, timeout=5000):
            assert viewer.boxes.poll()
        assert viewer.layer.item(other["id"]) is not None
        assert viewer.layer.item(other["id"]).text == f"\u2713 {finding} · dr.other"

        # the same box: the other annotator moves it first; this viewer's drag on what it saw is refused
        theirs = child.ask(op="move", id=box_a, box=[50, 60, 150, 170])
        assert theirs["status"] == "corrected"
        item = viewer.layer.item(box_a)
        viewer.boxes.select(box_a)
        c = item.rect.center()
        with qtbot.waitSignal(viewer.boxes.conflict, timeout=5000) as blocker:
            sx, sy = (1 if c.x() < cols / 2 else -1), (1 if c.y() < rows / 2 else -1)  # room to move
            viewer.drag((c.x(), c.y()), (c.x() + 20 * sx, c.y() + 20 * sy))
        sentence = blocker.args[0]
        assert sentence.startswith("reads.cxra: box ") and "dr.other" in sentence and sentence.endswith(".")
        assert "\n" not in sentence
        qtbot.waitUntil(lambda: viewer.layer.item(box_a) is not None
                        and viewer.layer.item(box_a).box.box == (50, 60, 150, 170))  # their version shown

        # now that it shows their version, this viewer's edit goes through; and theirs on the old one fails
        assert viewer.boxes.move(box_a, (52, 62, 152, 172)) == box_a
        again = child.ask(op="move", id=box_a, box=[0, 0, 30, 30])
        assert "conflict" not in again  # the child re-reads before editing, like a poll
        with AnnotationStore.open(viewer.boxes.store_path) as store:
            history = [(h.annotator, h.box) for h in store.history(box_a)]
            assert ("dr.other", (50, 60, 150, 170)) in history and ("tester", (52, 62, 152, 172)) in history
            assert history[-1] == ("dr.other", (0, 0, 30, 30))
            assert store.box(other["id"]).annotator == "dr.other"
        assert viewer.boxes.poll() and viewer.layer.item(box_a).box.box == (0, 0, 30, 30)

        # both at once: their burst on their own boxes while this viewer keeps moving box A
        child.send(op="burst", n=30)
        ours = []
        for i in range(10):
            viewer.boxes.boxes()  # what this viewer shows (a poll would do the same)
            coords = (float(i), 5.0, 40.0 + i, 45.0)
            assert viewer.boxes.move(box_a, coords) == box_a
            ours.append(coords)
        burst = [child.read() for _ in range(30)]
        with AnnotationStore.open(viewer.boxes.store_path) as store:
            mine_now = [h.box for h in store.history(box_a) if h.annotator == "tester"]
            assert mine_now[-10:] == ours
            for edit in burst:
                assert (edit["version"], tuple(edit["box"])) in {(h.version, h.box) for h in store.history(edit["id"])}
        assert _integrity(viewer.boxes.store_path) == "ok"
    finally:
        child.close()
