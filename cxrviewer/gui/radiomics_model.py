"""Radiomic features of the selected box, computed in the background when an edit finishes.

The features follow the box model's selection and committed edits (a drag only commits when it is
released, so nothing is computed during the drag). Results are cached per image and box, so going
back to a box or undoing an edit shows its features at once. A stale computation (the box changed
or another one was selected meanwhile) is dropped when it finishes.
"""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal

from cxrviewer.gui.box_model import BoxModel
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.gui.workers import run_task

_CACHE_SIZE = 256


class RadiomicsModel(QObject):
    started = Signal()
    finished = Signal()  # self.result is the selected box's RadiomicsResult
    failed = Signal(str)
    cleared = Signal()

    def __init__(self, document: ViewerDocument, boxes: BoxModel) -> None:
        super().__init__()
        self.document = document
        self.boxes = boxes
        self.result: Any = None  # cxrviewer.radiomics.RadiomicsResult
        self.box: tuple[float, float, float, float] | None = None
        self.finding = ""
        self.running = False
        self.computations = 0  # how many were actually computed (not served from the cache)
        self._generation = 0
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1)
        boxes.selection_changed.connect(self.update)
        boxes.boxes_changed.connect(self.update)

    def update(self) -> None:
        """Show the features of the selected box: from the cache, or computed in the background."""
        shown = self.boxes.selected()
        image = self.document.image
        if shown is None or image is None:
            self._set(None, None, "")
            return
        box = tuple(round(float(c), 2) for c in shown.box)
        if box == self.box and (self.result is not None or self.running):
            return
        key = (str(image.path), box)
        if key in self._cache:
            self._cache.move_to_end(key)
            self._set(self._cache[key], box, shown.finding)
            return
        self._generation += 1
        generation = self._generation
        self.box, self.finding, self.result, self.running = box, shown.finding, None, True
        self.started.emit()

        def work():
            from cxrviewer.radiomics import compute_radiomics

            return compute_radiomics(image, box=box)

        def done(result) -> None:
            self._cache[key] = result
            self.computations += 1
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            if generation == self._generation:
                self.running = False
                self.result = result
                self.finished.emit()

        def failed(sentence: str) -> None:
            if generation == self._generation:
                self.running = False
                self.failed.emit(sentence)

        run_task(work, done, failed, pool=self.pool)

    def _set(self, result: Any, box, finding: str) -> None:
        self._generation += 1
        self.running = False
        self.result, self.box, self.finding = result, box, finding
        if result is None:
            self.cleared.emit()
        else:
            self.finished.emit()

    # --- export ---------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, float | None]]:
        """(class, feature, value or None) of the current result."""
        if self.result is None:
            return []
        return [(cls, name, value) for cls, feats in self.result.by_class().items() for name, value in feats.items()]

    def to_csv(self) -> str:
        """The features as CSV text (image, finding, box, class, feature, value)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "finding", "x0", "y0", "x1", "y1", "class", "feature", "value"])
        image = self.document.image
        name = Path(image.path).name if image is not None else ""
        for cls, feature, value in self.rows():
            writer.writerow([name, self.finding, *(self.box or ("",) * 4), cls, feature,
                             "" if value is None else repr(float(value))])
        return out.getvalue()

    def export_csv(self, path: str | Path) -> Path:
        from cxrviewer.errors import CxrError

        path = Path(path)
        try:
            path.write_text(self.to_csv())
        except OSError as err:
            raise CxrError(path, f"cannot write the radiomics table there ({err.strerror})") from err
        return path
