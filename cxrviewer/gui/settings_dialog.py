"""The settings dialog: edits a copy of `cxrviewer.settings.Settings`; OK validates and saves it.

    dialog = SettingsDialog(settings, parent)
    if dialog.exec():
        settings = dialog.settings()     # already saved to `settings_path()` (or `path`)

Validation is the core's (`from_mapping`, the same rules as loading the file), so what the dialog
accepts is what the next start reads back. A failure shows one sentence in the dialog, which stays open.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cxrviewer.errors import CxrError
from cxrviewer.settings import DEVICES, Settings, from_mapping

# Listed statically so the dialog opens without torch (`cxrviewer.explain.cam_methods` imports it);
# the combo boxes are editable, so a method registered by a plug-in can still be typed in.
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "native")
BOX_METHODS = ("scalp", "talasila", "threshold")


def _combo(items: tuple[str, ...], current: str, editable: bool = True) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setEditable(editable)
    if current not in items:
        box.addItem(current)
    box.setCurrentText(current)
    return box


class SettingsDialog(QDialog):
    """Edits a copy of `settings`; `settings()` is the edited copy, saved when OK succeeded."""

    def __init__(self, settings: Settings, parent: QWidget | None = None, *, path: str | Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._original = settings
        self._path = path
        self._edited = dataclasses.replace(settings)

        self.annotator = QLineEdit(settings.annotator)
        self.store_path = QLineEdit(str(settings.store_path))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_store)
        store_row = QHBoxLayout()
        store_row.addWidget(self.store_path, 1)
        store_row.addWidget(browse)
        self.model = QLineEdit(settings.model)
        self.device = _combo(DEVICES, settings.device, editable=False)
        self.cam_method = _combo(CAM_METHODS, settings.cam_method)
        self.box_method = _combo(BOX_METHODS, settings.box_method)
        self.analyse_on_open = QCheckBox("Analyse each image when it opens")
        self.analyse_on_open.setChecked(settings.analyse_on_open)
        self.heatmap_opacity = QDoubleSpinBox()
        self.heatmap_opacity.setRange(0.0, 1.0)
        self.heatmap_opacity.setSingleStep(0.05)
        self.heatmap_opacity.setDecimals(2)
        self.heatmap_opacity.setValue(settings.heatmap_opacity)

        form = QFormLayout()
        form.addRow("Annotator name", self.annotator)
        form.addRow("Annotation store", store_row)
        form.addRow("Default model", self.model)
        form.addRow("Device", self.device)
        form.addRow("CAM method", self.cam_method)
        form.addRow("Box method", self.box_method)
        form.addRow("", self.analyse_on_open)
        form.addRow("Heatmap opacity", self.heatmap_opacity)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    def settings(self) -> Settings:
        """The edited copy (the original passed in is never changed)."""
        return self._edited

    def show_error(self, sentence: str) -> None:
        """Show one sentence in the dialog."""
        self.error.setText(sentence)
        self.error.show()

    def _choose_store(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Annotation store", self.store_path.text(),
                                              "Annotation stores (*.db);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.store_path.setText(path)

    def _from_fields(self) -> Settings:
        """The fields as Settings, validated by the same rules as the settings file; CxrError if bad."""
        data = dataclasses.replace(self._original).to_json()
        data.update(annotator=self.annotator.text(), store_path=self.store_path.text(), model=self.model.text(),
                    device=self.device.currentText(), cam_method=self.cam_method.currentText(),
                    box_method=self.box_method.currentText(), analyse_on_open=self.analyse_on_open.isChecked(),
                    heatmap_opacity=round(self.heatmap_opacity.value(), 4))
        checked, problems = from_mapping(data)
        if problems:
            raise CxrError(None, "; ".join(problems))
        # recent folders and thresholds are not edited here: keep them exactly as they were
        return dataclasses.replace(checked, recent_folders=list(self._original.recent_folders),
                                   thresholds=dict(self._original.thresholds), extra=dict(self._original.extra))

    def accept(self) -> None:
        """Validate and save; on failure show the sentence and stay open."""
        try:
            edited = self._from_fields()
            edited.save(self._path)
        except CxrError as err:
            self.show_error(str(err))
            return
        self._edited = edited
        self.error.hide()
        super().accept()
