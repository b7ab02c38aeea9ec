"""The findings panel: model/device/CAM choice, the analysis's progress, the ranked findings and the
heatmap controls. It holds no state of its own: it reads `AnalysisModel` and follows its signals.

    panel = FindingsPanel(analysis)
    panel.attach_overlay(HeatmapOverlay(canvas.view, analysis))  # "Show heatmap" (H) and opacity
    panel.refresh_models()                                       # after a new model is registered
    panel.select_next(+1)                                        # for the window's shortcuts

Each finding row: name, probability bar (0-100 %) with the operating threshold as a tick, the value
and a +/− mark (probability >= threshold, the user's override applied). Click a row to select it;
Up/Down move the selection while the list has focus.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from PySide6.QtCore import QLineF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QKeySequence, QPainter, QPalette, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSizePolicy, QSlider, QVBoxLayout, QWidget)

from cxrviewer.gui.analysis_model import AnalysisModel

CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "native": "CAM"}
POSITIVE = QColor("#e8833a")  # warm: above the operating threshold
NEGATIVE = QColor("#4f7fb0")  # cool: below it


@dataclass(frozen=True)
class FindingRow:
    name: str
    probability: float
    threshold: float

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


class FindingList(QWidget):
    """The ranked findings, painted row by row (no per-row widgets)."""

    ROW_HEIGHT = 26

    def __init__(self, panel: FindingsPanel) -> None:
        super().__init__(panel)
        self.panel = panel
        self.rows: list[FindingRow] = []
        self.selected: str | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_rows(self, rows: list[FindingRow], selected: str | None) -> None:
        self.rows, self.selected = rows, selected
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(280, self.ROW_HEIGHT * max(8, len(self.rows)) + 2)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(220, self.sizeHint().height())

    def row_rect(self, i: int) -> QRect:
        return QRect(0, 1 + i * self.ROW_HEIGHT, self.width(), self.ROW_HEIGHT)

    def row_at(self, y: float) -> int | None:
        i = int((y - 1) // self.ROW_HEIGHT)
        return i if 0 <= i < len(self.rows) else None

    def mousePressEvent(self, event) -> None:  # noqa: N802
        i = self.row_at(event.position().y())
        if i is not None:
            self.setFocus()
            self.panel.analysis.select(self.rows[i].name)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        steps = {Qt.Key.Key_Up: -1, Qt.Key.Key_Down: 1}
        if event.key() in steps and self.rows:
            self.panel.select_next(steps[event.key()])
        else:
            super().keyPressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        if not self.rows:
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No analysis")
            return
        for i, row in enumerate(self.rows):
            self._paint_row(painter, pal, self.row_rect(i), row)

    def _paint_row(self, painter: QPainter, pal: QPalette, rect: QRect, row: FindingRow) -> None:
        text = pal.color(QPalette.ColorRole.WindowText)
        if row.name == self.selected:
            highlight = QColor(pal.color(QPalette.ColorRole.Highlight))
            highlight.setAlpha(110 if self.hasFocus() else 70)
            painter.fillRect(rect, highlight)
        w, h, y = rect.width(), rect.height(), rect.top()
        name_w, value_w, mark_w = int(w * 0.36), 52, 22
        bar = QRectF(8 + name_w, y + h / 2 - 4, max(20, w - name_w - value_w - mark_w - 20), 8)
        colour = POSITIVE if row.positive else NEGATIVE
        font = painter.font()
        font.setBold(row.positive)
        painter.setFont(font)
        painter.setPen(text)
        painter.drawText(QRect(8, y, name_w - 4, h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         painter.fontMetrics().elidedText(row.name, Qt.TextElideMode.ElideRight, name_w - 4))
        track = QColor(text)
        track.setAlpha(40)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(track)
        painter.drawRoundedRect(bar, 3, 3)
        painter.setBrush(colour)
        painter.drawRoundedRect(QRectF(bar.left(), bar.top(), bar.width() * min(1.0, row.probability), bar.height()),
                                3, 3)
        tick_x = bar.left() + bar.width() * min(1.0, max(0.0, row.threshold))  # the operating threshold
        painter.setPen(text)
        painter.drawLine(QLineF(tick_x, bar.top() - 4, tick_x, bar.bottom() + 4))
        painter.drawText(QRect(int(bar.right()) + 4, y, value_w, h),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{100 * row.probability:.1f} %")
        mark = QRectF(w - mark_w - 2, y + h / 2 - 8, 16, 16)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour if row.positive else track)
        painter.drawEllipse(mark)
        painter.setPen(QColor("white") if row.positive else text)
        painter.drawText(mark, Qt.AlignmentFlag.AlignCenter, "+" if row.positive else "−")
        font.setBold(False)
        painter.setFont(font)


class ElidedLabel(QLabel):
    """One line of text, elided to the width; the whole text is the tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.full_text = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def set_full_text(self, text: str) -> None:
        self.full_text = text
        self.setToolTip(text)
        self._elide()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        self.setText(self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideRight, max(10, self.width())))


class LazyComboBox(QComboBox):
    """A combo box that calls `before_popup()` before it opens its list."""

    def __init__(self, before_popup) -> None:
        super().__init__()
        self.before_popup = before_popup

    def showPopup(self) -> None:  # noqa: N802
        self.before_popup()
        super().showPopup()


class FindingsPanel(QWidget):
    heatmap_visible_changed = Signal(bool)
    heatmap_opacity_changed = Signal(float)  # 0 .. 1

    def __init__(self, analysis: AnalysisModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.analysis = analysis
        self._listed = False  # listing the options imports torch: it waits (see `refresh_options`)
        self.model_box, self.device_box, self.cam_box = (LazyComboBox(self._list_once) for _ in range(3))
        self._fill(self.model_box, [], analysis.model_name)
        self._fill(self.device_box, [], analysis.device)
        self._fill(self.cam_box, [], analysis.cam)
        self.analyse_button = QPushButton("Analyse")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.progress.setSizePolicy(policy)
        self.progress.hide()  # shown while an analysis runs
        self.status = ElidedLabel()
        self.list = FindingList(self)
        self.show_heatmap = QCheckBox("Show heatmap (H)")
        self.show_heatmap.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(100 * analysis.settings.heatmap_opacity))
        self.opacity_label = QLabel()
        self._layout()
        self._on_opacity(self.opacity.value())
        self.toggle_shortcut = QShortcut(QKeySequence("H"), self)
        self.toggle_shortcut.activated.connect(self.show_heatmap.toggle)
        self.model_box.activated.connect(self._choose)
        self.device_box.activated.connect(self._choose)
        self.cam_box.activated.connect(self._choose)
        self.analyse_button.clicked.connect(self._analyse)
        self.show_heatmap.toggled.connect(self.heatmap_visible_changed)
        self.opacity.valueChanged.connect(self._on_opacity)
        # Bound methods only: `progress` is emitted from the worker thread and must be queued.
        analysis.started.connect(self._on_started)
        analysis.progress.connect(self._on_progress)
        analysis.finished.connect(self._on_finished)
        analysis.failed.connect(self._on_failed)
        analysis.cleared.connect(self._on_cleared)
        analysis.selection_changed.connect(self._on_selection)
        analysis.options_changed.connect(self._sync_options)
        analysis.document.image_changed.connect(self._on_image)
        self._on_image()
        if analysis.result is not None:
            self._on_finished()
        else:
            self._on_cleared()

    def _layout(self) -> None:
        options = QGroupBox("Analysis")
        form = QFormLayout(options)
        form.addRow("Model", self.model_box)
        form.addRow("Device", self.device_box)
        form.addRow("CAM", self.cam_box)
        run = QHBoxLayout()
        run.addWidget(self.analyse_button)
        run.addWidget(self.progress, 1)
        form.addRow(run)
        form.addRow(self.status)
        findings = QGroupBox("Findings")
        QVBoxLayout(findings).addWidget(self.list)
        heat = QGroupBox("Heatmap")
        row = QHBoxLayout(heat)
        row.addWidget(self.show_heatmap)
        row.addWidget(self.opacity, 1)
        row.addWidget(self.opacity_label)
        self.opacity_label.setMinimumWidth(self.opacity_label.fontMetrics().horizontalAdvance("100 %"))
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        for box in (options, findings, heat):
            outer.addWidget(box)
        outer.addStretch(1)

    # --- public -----------------------------------------------------------------------------
    def attach_overlay(self, overlay) -> None:
        """Let the heatmap controls drive `overlay` (a HeatmapOverlay); applies the current state."""
        self.heatmap_visible_changed.connect(overlay.set_visible)
        self.heatmap_opacity_changed.connect(overlay.set_opacity)
        overlay.set_visible(self.show_heatmap.isChecked())
        overlay.set_opacity(self.opacity.value() / 100.0)

    def refresh_models(self) -> None:
        """List the registered models again (e.g. after a retrained model was installed)."""
        self._fill(self.model_box, self.analysis.available_models(), self.analysis.model_name)

    def refresh_options(self) -> None:
        """List the models, devices and CAM methods. This imports torch, so it is done once torch is
        loaded (the first analysis) or when the user opens one of the lists, never as the window opens."""
        self._listed = True
        self.refresh_models()
        self._fill(self.device_box, self.analysis.available_devices(), self.analysis.device)
        self._fill(self.cam_box, self.analysis.available_cams(), self.analysis.cam)

    def select_next(self, step: int) -> None:
        """Select the finding `step` rows below (negative: above) the selected one, clamped."""
        names = [row.name for row in self.list.rows]
        if not names:
            return
        current = names.index(self.analysis.selected) if self.analysis.selected in names else (-1 if step > 0 else 0)
        self.analysis.select(names[min(len(names) - 1, max(0, current + step))])

    def rows(self) -> list[FindingRow]:
        """The rows shown, top to bottom."""
        return list(self.list.rows)

    # --- user actions -----------------------------------------------------------------------
    def _choose(self, _index: int) -> None:
        self.analysis.set_options(model=self.model_box.currentData() or None,
                                  device=self.device_box.currentData() or None,
                                  cam=self.cam_box.currentData() or None)

    def _analyse(self) -> None:
        self.analysis.analyze()

    def _on_opacity(self, value: int) -> None:
        self.opacity_label.setText(f"{value} %")
        self.heatmap_opacity_changed.emit(value / 100.0)

    def _list_once(self) -> None:
        if not self._listed:
            self.refresh_options()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if "torch" in sys.modules:  # free once torch is loaded
            self._list_once()

    # --- following the analysis --------------------------------------------------------------
    def _on_started(self, sentence: str) -> None:
        self.progress.setValue(0)
        self.progress.show()
        self.status.set_full_text(sentence)
        self.status.setStyleSheet("")

    def _on_progress(self, fraction: float) -> None:  # queued from the worker thread
        self.progress.setValue(round(100 * fraction))

    def _on_finished(self) -> None:
        result = self.analysis.result
        if result is None:
            return
        self.progress.setValue(100)
        self.progress.hide()
        method = CAM_LABELS.get(result.cam_method, result.cam_method or self.analysis.cam)
        self.status.set_full_text(f"{method} · {sum(result.timings.values()):.2f} s")
        self.status.setStyleSheet("")
        self._fill_rows()
        self._list_once()

    def _on_failed(self, sentence: str) -> None:
        self.progress.setValue(0)
        self.progress.hide()
        self.status.set_full_text(sentence)
        self.status.setStyleSheet("color: #e0605a;")
        self._fill_rows()

    def _on_cleared(self) -> None:
        if not self.analysis.running:
            self.progress.setValue(0)
            self.progress.hide()
            self.status.set_full_text("")
        self._fill_rows()

    def _on_selection(self) -> None:
        self.list.set_rows(self.list.rows, self.analysis.selected)

    def _fill_rows(self) -> None:
        analysis = self.analysis
        rows = [FindingRow(f.name, f.probability, analysis.threshold(f.name)) for f in analysis.ranked()]
        self.list.set_rows(rows, analysis.selected)

    def _sync_options(self) -> None:
        for box, current in ((self.model_box, self.analysis.model_name), (self.device_box, self.analysis.device),
                             (self.cam_box, self.analysis.cam)):
            self._fill(box, [box.itemData(i) for i in range(box.count())], current)

    def _on_image(self) -> None:
        self.analyse_button.setEnabled(self.analysis.document.image is not None)
        if not self.analysis.running and self.analysis.result is None:  # no stale failure sentence
            self.status.set_full_text("")

    def _fill(self, box: QComboBox, items: list[str], current: str) -> None:
        """Replace `box`'s items (the current value kept even when unlisted) without emitting.
        Each item's data is its name; CAM methods show their usual label."""
        box.blockSignals(True)
        box.clear()
        for name in dict.fromkeys(items + ([current] if current and current not in items else [])):
            box.addItem(CAM_LABELS.get(name, name) if box is self.cam_box else name, name)
        box.setCurrentIndex(max(0, box.findData(current)))
        box.blockSignals(False)
