"""`RadiomicsPanel`: the radiomic features of the selected box, grouped by feature class.

A header names the box (finding, coordinates, size in pixels and in mm when the pixel spacing is
known); a busy bar shows while the features are computed in the background; a region that cannot
be measured shows its one-sentence status; Copy puts the table on the clipboard (tab-separated, so
it pastes into a spreadsheet) and Export CSV… writes `RadiomicsModel.to_csv()` to a file.
The panel holds no state: it redraws from `RadiomicsModel` on its signals.
"""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cxrviewer.errors import CxrError
from cxrviewer.gui.radiomics_model import RadiomicsModel

CLASS_TITLES: dict[str, str] = {
    "firstorder": "First order", "shape2D": "Shape (2D)", "shape": "Shape (3D)",
    "glcm": "GLCM · gray-level co-occurrence", "glrlm": "GLRLM · gray-level run length",
    "glszm": "GLSZM · gray-level size zone", "ngtdm": "NGTDM · neighbouring gray-tone difference",
    "gldm": "GLDM · gray-level dependence",
}
UNDEFINED = "\u2014"


def format_value(value: float | None) -> str:
    """A feature value for reading: '—' when undefined, integers as such, else 5 significant digits."""
    if value is None or not math.isfinite(float(value)):
        return UNDEFINED
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 1e7 or abs(v) < 1e-4:
        return f"{v:.4e}"
    if v == round(v) and abs(v) < 1e7:
        return f"{round(v):,}".replace(",", "\u2009")
    return f"{v:,.5g}".replace(",", "\u2009") if abs(v) >= 1e4 else f"{v:.5g}"


class RadiomicsPanel(QWidget):
    """The feature tree of the selected box, with header, busy bar, status, Copy and Export CSV…."""

    def __init__(self, radiomics: RadiomicsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.radiomics = radiomics
        self._collapsed: set[str] = set()
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(6)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #e0a030;")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Feature", "Value"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemCollapsed.connect(lambda item: self._collapsed.add(item.data(0, Qt.ItemDataRole.UserRole)))
        self.tree.itemExpanded.connect(lambda item: self._collapsed.discard(item.data(0, Qt.ItemDataRole.UserRole)))
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the features to the clipboard (tab-separated)")
        self.copy_button.clicked.connect(self.copy)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self.export_dialog)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        for widget in (self.header, self.busy, self.status, self.tree):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        radiomics.started.connect(self.refresh)
        radiomics.finished.connect(self.refresh)
        radiomics.cleared.connect(self.refresh)
        radiomics.failed.connect(self._on_failed)
        self.refresh()

    # --- showing ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw from the model: header, busy bar, status and the feature tree."""
        model = self.radiomics
        self.header.setText(self.header_text())
        self.busy.setVisible(model.running)
        result = model.result
        message = ""
        if result is not None and not result.ok:
            message = result.message or f"The region could not be measured ({result.status})."
        elif model.box is None:
            message = "Select a box on the image to see its radiomic features."
        self._set_status(message)
        self._fill(model.rows() if result is not None else [])
        has_rows = bool(model.rows())
        self.copy_button.setEnabled(has_rows)
        self.export_button.setEnabled(has_rows)

    def header_text(self) -> str:
        """'<b>Effusion</b> · model proposal<br>x 120–340, y 200–460 · 220 × 260 px (39.6 × 46.8 mm)'."""
        model = self.radiomics
        if model.box is None:
            return "<b>Radiomics</b>"
        x0, y0, x1, y1 = model.box
        w, h = x1 - x0, y1 - y0
        size = f"{_num(w)} × {_num(h)} px"
        image = model.document.image
        spacing = getattr(image, "pixel_spacing", None) if image is not None else None
        if spacing:
            row_mm, col_mm = (float(s) for s in spacing)
            size += f" ({w * col_mm:.1f} × {h * row_mm:.1f} mm)"
        busy = " · <i>computing…</i>" if model.running else ""
        return (f"<b>{model.finding}</b>{self._provenance()}<br>"
                f"x {_num(x0)}–{_num(x1)}, y {_num(y0)}–{_num(y1)} · {size}{busy}")

    def _provenance(self) -> str:
        """' · model proposal' or ' · corrected by dr.a' for the selected box."""
        shown = self.radiomics.boxes.selected()
        if shown is None:
            return ""
        if shown.kind == "model":
            return " · <span style='color:#ffb300'>model proposal</span>"
        who = shown.record.annotator if shown.record is not None else ""
        return f" · <span style='color:#00c8e0'>{shown.status}{' by ' + who if who else ''}</span>"

    def _set_status(self, message: str) -> None:
        self.status.setText(message)
        self.status.setVisible(bool(message))

    def _on_failed(self, sentence: str) -> None:
        self.refresh()
        self._set_status(sentence)

    def _fill(self, rows: list[tuple[str, str, float | None]]) -> None:
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for cls, feature, value in rows:
            parent = groups.get(cls)
            if parent is None:
                parent = QTreeWidgetItem([CLASS_TITLES.get(cls, cls), ""])
                parent.setData(0, Qt.ItemDataRole.UserRole, cls)
                font = parent.font(0)
                font.setBold(True)
                parent.setFont(0, font)
                self.tree.addTopLevelItem(parent)
                groups[cls] = parent
            child = QTreeWidgetItem(parent, [feature, format_value(value)])
            child.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            child.setToolTip(0, f"{cls}_{feature}")
            child.setToolTip(1, "undefined for this region" if value is None else repr(float(value)))
        for cls, parent in groups.items():
            parent.setText(1, f"{parent.childCount()} features")
            parent.setForeground(1, self.palette().placeholderText())
            parent.setExpanded(cls not in self._collapsed)

    # --- copy and export ----------------------------------------------------------------------
    def table_text(self) -> str:
        """The features as tab-separated text with a header line (class, feature, value)."""
        lines = ["class\tfeature\tvalue"]
        lines += [f"{cls}\t{feature}\t{'' if v is None else repr(float(v))}" for cls, feature, v in self.radiomics.rows()]
        return "\n".join(lines) + "\n"

    def copy(self) -> None:
        """Copy the table to the clipboard (tab-separated)."""
        QGuiApplication.clipboard().setText(self.table_text())

    def export_to(self, path: str | Path) -> bool:
        """Write the CSV to `path`; a failure is shown as one sentence. True when written."""
        try:
            self.radiomics.export_csv(path)
        except CxrError as err:
            self._set_status(str(err))
            return False
        self.refresh()
        return True

    def export_dialog(self) -> None:
        """Ask where to save the CSV, then write it."""
        image = self.radiomics.document.image
        stem = Path(image.path).stem if image is not None else "radiomics"
        suggested = f"{stem}_{self.radiomics.finding or 'box'}_radiomics.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export radiomic features", suggested, "CSV files (*.csv)")
        if path:
            self.export_to(path)


def _num(value: float) -> str:
    return f"{int(value)}" if float(value) == int(value) else f"{value:.1f}"
