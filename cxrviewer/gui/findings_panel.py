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

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSlider, QVBoxLayout, QWidget)

from cxrviewer.gui.analysis_model import AnalysisModel
from cxrviewer.gui.finding_list import ElidedLabel, FindingList, FindingRow, LazyComboBox

CAM_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "native": "CAM"}


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
        self.show_all = QCheckBox("Show all findings")  # the model's findings beyond the viewer's eight
        self.show_all.setChecked(analysis.show_all_findings)
        self.inputs_label = ElidedLabel()  # the age / sex / view the model was given
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
        self.show_all.toggled.connect(self._on_show_all)
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
        column = QVBoxLayout(findings)
        column.addWidget(self.list)
        column.addWidget(self.show_all)
        column.addWidget(self.inputs_label)
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

    def _on_show_all(self, checked: bool) -> None:
        self.analysis.set_show_all_findings(checked)
        self._fill_rows()

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
        others = len(analysis.other_findings())
        self.show_all.setVisible(others > 0)
        self.show_all.setText(f"Show {others} more findings")
        inputs = analysis.result.inputs if analysis.result is not None else {}
        self.inputs_label.set_full_text("Model inputs: " + " · ".join(f"{k} {v}" for k, v in inputs.items())
                                        if inputs else "")
        self.inputs_label.setVisible(bool(inputs))

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
