"""The triage worklist: score a folder (or a list of files) off the UI thread, most suspicious first.

    panel = TriagePanel(lambda: Analyzer(settings.model, device=settings.device),
                        thresholds=settings.thresholds)
    dock = QDockWidget("Worklist", window); dock.setWidget(panel)
    panel.image_activated.connect(window.open_image)
    panel.start(folder)            # or the panel's own "Score folder…" button

`TriagePanel(analyzer_factory, parent=None, *, batch_size=16, thresholds=None)`:
`analyzer_factory()` returns a `cxrviewer.analysis.Analyzer` (or anything with its `model`, `spec`,
`device`, `amp`); it is called in the worker thread at the start of each run, so loading a model
never blocks the window (return a cached one to load it once). `cxrviewer.triage.triage` runs in a
`QThread`; it reports through queued signals only, and no widget is touched outside the UI thread.

Signals:
  `image_activated(Path)`  a worklist row was double-clicked (error rows too: opening says why).
  `progress(int, int)`     (done, total) images after each batch; the progress bar shows the percent.
  `finished(list)`         the run's `TriageRow`s, sorted as shown; a cancelled run gives those
                           scored so far.
  `failed(str)`            the run could not be made (e.g. the model cannot be loaded): one sentence.

Methods: `start(source) -> bool` (False while a run is going), `cancel()`, `export_csv(path)` (through
`triage.write_csv`; None and the sentence in the status line if it cannot be written),
`wait(ms) -> bool`, `running`, `sort_by(column, descending=None)`. Columns: file, patient, top
finding, its probability, number of positive findings (their names in the tooltip), error. A click
on a column's header sorts the worklist by it (again: the other way); numbers sort as numbers and
unreadable files stay last. `rows` is always in the order shown (double-click and CSV export follow it).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThread, Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from cxrviewer.errors import CxrError
from cxrviewer.triage import TriageRow, triage, write_csv

Source = str | Path | Iterable[str | Path]
COLUMNS = ("File", "Patient", "Top finding", "Probability", "Positives", "Error")
# per column: its sort key, and whether the first click sorts descending (numbers: largest first)
_SORTS: tuple[tuple[Callable[[TriageRow], Any], bool], ...] = (
    (lambda r: r.path.name.lower(), False), (lambda r: r.patient_id, False), (lambda r: r.top_finding.lower(), False),
    (lambda r: r.top_probability or 0.0, True), (lambda r: len(r.positives), True), (lambda r: r.error or "", False))
_TRIAGE_ORDER = (3, True)  # (column, descending) of the rows as triage() returns them: most suspicious first


class _TriageThread(QThread):
    """Builds the analyzer and runs `triage` in its own thread; reports only through signals."""

    progressed = Signal(int, int)
    done = Signal(object)  # (rows, targets, cancelled)
    failed = Signal(str)

    def __init__(self, source: Source, factory: Callable[[], Any], batch_size: int,
                 thresholds: Mapping[str, float] | None) -> None:
        super().__init__()
        self.source = source if isinstance(source, (str, Path)) else [Path(p) for p in source]
        self.factory = factory
        self.batch_size = batch_size
        self.thresholds = dict(thresholds) if thresholds else None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            analyzer = self.factory()
            rows = triage(self.source, analyzer, progress=self.progressed.emit, cancel=self.stop.is_set,
                          batch_size=self.batch_size, thresholds=self.thresholds)
            self.done.emit((rows, list(analyzer.spec.targets), self.stop.is_set()))
        except CxrError as err:
            self.failed.emit(str(err))
        except Exception as exc:  # noqa: BLE001 - the panel shows one sentence, the log keeps the trace
            traceback.print_exc()
            self.failed.emit(f"Triage stopped: {type(exc).__name__}: {exc}")


_LIVE: set[_TriageThread] = set()  # a run outlives its panel until the thread ends


def _reap() -> None:
    for thread in [t for t in _LIVE if t.isFinished()]:
        _LIVE.discard(thread)


class TriagePanel(QWidget):
    """A worklist of scored images, most suspicious first (see the module docstring)."""

    image_activated = Signal(Path)
    progress = Signal(int, int)
    finished = Signal(list)
    failed = Signal(str)

    def __init__(self, analyzer_factory: Callable[[], Any], parent: QWidget | None = None, *,
                 batch_size: int = 16, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(parent)
        self.analyzer_factory = analyzer_factory
        self.batch_size = batch_size
        self.thresholds = thresholds
        self.rows: list[TriageRow] = []
        self.targets: list[str] = []
        self._thread: _TriageThread | None = None
        self._build()
        self._update_buttons()

    def _build(self) -> None:
        self.choose_button = QPushButton("Score folder…")
        self.cancel_button = QPushButton("Cancel")
        self.export_button = QPushButton("Export CSV…")
        self.choose_button.clicked.connect(self._ask_folder)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self._ask_csv)
        buttons = QHBoxLayout()
        for button in (self.choose_button, self.cancel_button, self.export_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.status = QLabel("Choose a folder to score its images.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        header = self.table.horizontalHeader()
        header.setSectionsClickable(True)
        header.sectionClicked.connect(self.sort_by)
        self._sorted: tuple[int, bool] = _TRIAGE_ORDER
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

    # --- running ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, source: Source) -> bool:
        """Score `source` (a folder, a file or a list of files) in the background; False if a run is going."""
        if self.running:
            return False
        _reap()
        thread = _TriageThread(source, self.analyzer_factory, self.batch_size, self.thresholds)
        thread.progressed.connect(self._on_progress)  # receivers in the UI thread: queued connections
        thread.done.connect(self._on_done)
        thread.failed.connect(self._on_failed)
        _LIVE.add(thread)
        self._thread = thread
        self.rows, self.targets = [], []
        self.table.setRowCount(0)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        name = Path(source).name if isinstance(source, (str, Path)) else "the chosen files"
        self.status.setText(f"Scoring {name} …")
        self._update_buttons()
        thread.start()
        return True

    def cancel(self) -> None:
        """Stop after the batch being scored; the rows scored so far are shown."""
        if self._thread is not None and not self._thread.stop.is_set():
            self._thread.stop.set()
            self.status.setText("Cancelling after the current batch …")
            self._update_buttons()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the current run's thread ends (for tests and shutdown); True if none is left."""
        thread = self._thread
        return thread is None or thread.wait(msecs)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self.cancel()
        super().closeEvent(event)

    def _on_progress(self, done: int, total: int) -> None:
        percent = 100 if total == 0 else round(100 * done / total)
        self.progress_bar.setValue(percent)
        self.progress_bar.setFormat(f"%p% ({done} of {total})")
        self.progress.emit(done, total)

    def _on_done(self, result: tuple[list[TriageRow], list[str], bool]) -> None:
        rows, targets, cancelled = result
        self._thread = None
        self.rows, self.targets = rows, targets
        self._sorted = _TRIAGE_ORDER
        self._fill_table()
        bad = sum(not r.ok for r in rows)
        scored = len(rows) - bad
        if cancelled:
            self.status.setText(f"Cancelled: {scored} image(s) scored, {bad} unreadable.")
        else:
            self.progress_bar.setValue(100)
            self.status.setText(f"{scored} image(s) scored, {bad} unreadable; most suspicious first.")
        self._update_buttons()
        self.finished.emit(rows)

    def _on_failed(self, sentence: str) -> None:
        self._thread = None
        self.status.setText(sentence)
        self._update_buttons()
        self.failed.emit(sentence)

    # --- the worklist ------------------------------------------------------------------------
    def sort_by(self, column: int, descending: bool | None = None) -> None:
        """Sort the worklist by a column (`descending` None: the other way if it is already sorted
        by it, else largest-first for numbers and A-Z for text); unreadable files stay last, except
        when sorting by the error column, which puts them first."""
        if not 0 <= column < len(COLUMNS):
            return
        if descending is None:
            current, was_descending = self._sorted
            descending = not was_descending if current == column else _SORTS[column][1]
        key = _SORTS[column][0]
        ok = sorted((r for r in self.rows if r.ok), key=lambda r: (key(r), str(r.path)), reverse=descending)
        bad = sorted((r for r in self.rows if not r.ok), key=lambda r: str(r.path))
        if column == 5:  # sorting by the error: the unreadable files are what the user asked for
            bad.sort(key=lambda r: (r.error or "", str(r.path)), reverse=descending)
            self.rows = bad + ok
        else:
            self.rows = ok + bad
        self._sorted = (column, descending)
        self._fill_table()

    def _fill_table(self) -> None:
        column, descending = self._sorted
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSortIndicator(
            column, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder)
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            probability = "" if row.top_probability is None else f"{row.top_probability:.3f}"
            positives = str(len(row.positives)) if row.ok else ""
            cells = (row.path.name, row.patient_id, row.top_finding, probability, positives, row.error or "")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 0:
                    item.setToolTip(str(row.path))
                elif j == 4 and row.positives:
                    item.setToolTip(", ".join(row.positives))
                elif j == 5 and row.error:
                    item.setToolTip(row.error)
                self.table.setItem(i, j, item)

    def _on_double_click(self, row: int, _column: int) -> None:
        if 0 <= row < len(self.rows):
            self.image_activated.emit(self.rows[row].path)

    def export_csv(self, path: str | Path) -> Path | None:
        """Write the worklist (`triage.write_csv`); None, with the sentence in the status line, on failure."""
        try:
            out = write_csv(self.rows, path, targets=self.targets or None)
        except CxrError as err:
            self.status.setText(str(err))
            self.failed.emit(str(err))
            return None
        self.status.setText(f"Worklist written to {out}.")
        return out

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Score the images of a folder")
        if folder:
            self.start(Path(folder))

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the worklist", "worklist.csv", "CSV files (*.csv)")
        if path:
            self.export_csv(Path(path))

    def _update_buttons(self) -> None:
        running = self._thread is not None
        self.choose_button.setEnabled(not running)
        self.cancel_button.setEnabled(running and not self._thread.stop.is_set())
        self.export_button.setEnabled(not running and bool(self.rows))
