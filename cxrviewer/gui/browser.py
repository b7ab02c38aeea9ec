"""Patient ▸ Study ▸ Series ▸ Image tree over the open catalogs, with a filter box."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from cxrviewer.gui.document import ViewerDocument
from cxrviewer.io.catalog_tree import PatientNode, filter_tree, is_synthetic

PATH_ROLE = Qt.ItemDataRole.UserRole


class BrowserPanel(QWidget):
    image_activated = Signal(Path)

    def __init__(self, document: ViewerDocument) -> None:
        super().__init__()
        self.document = document
        self.filter = QLineEdit(placeholderText="Filter: patient, name, date, finding…")
        self.filter.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Patient / study / image", "Details"])
        self.tree.setColumnWidth(0, 230)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.tree)
        self.filter.textChanged.connect(self.rebuild)
        self.tree.currentItemChanged.connect(self._on_current)
        document.catalogs_changed.connect(self.rebuild)

    def rebuild(self) -> None:
        self.tree.clear()
        text = self.filter.text().strip()
        for catalog in self.document.catalogs:
            patients = filter_tree(catalog.patients(), text) if text else catalog.patients()
            for patient in patients:
                self.tree.addTopLevelItem(self._patient_item(patient))
            if catalog.errors and not text:
                errors = QTreeWidgetItem([f"Unreadable files ({len(catalog.errors)})", str(catalog.folder)])
                for path, sentence in catalog.errors:
                    child = QTreeWidgetItem([Path(path).name, sentence])
                    child.setToolTip(1, sentence)
                    errors.addChild(child)
                self.tree.addTopLevelItem(errors)
        self.tree.expandToDepth(0 if self.tree.topLevelItemCount() > 20 else 3)

    def _patient_item(self, patient: PatientNode) -> QTreeWidgetItem:
        details = " ".join(x for x in (patient.name, patient.sex, patient.birth_date) if x)
        item = QTreeWidgetItem([patient.patient_id, details])
        for study in patient.studies:
            label = study.date or ("(no date)" if not is_synthetic(study.study_uid) else "(study)")
            study_item = QTreeWidgetItem([label, study.description or study.accession])
            item.addChild(study_item)
            for series in study.series:
                series_item = QTreeWidgetItem([f"{series.modality or '?'} series {series.number or ''}".strip(),
                                               series.description])
                study_item.addChild(series_item)
                for image in series.images:
                    facts = [image.view_position, image.laterality if image.laterality != "U" else "", f"{image.columns}×{image.rows}"]
                    if image.labels:
                        facts.append(", ".join(image.labels))
                    image_item = QTreeWidgetItem([image.path.name, "  ".join(f for f in facts if f)])
                    image_item.setData(0, PATH_ROLE, str(image.path))
                    image_item.setToolTip(0, str(image.path))
                    series_item.addChild(image_item)
        return item

    def _on_current(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        path = current.data(0, PATH_ROLE) if current is not None else None
        if path:
            self.image_activated.emit(Path(path))

    def select_first_image(self) -> bool:
        """Make the first image of the tree current (opens it); False when there is none."""
        iterator = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while iterator:
            item = iterator.pop(0)
            if item.data(0, PATH_ROLE):
                self.tree.setCurrentItem(item)
                return True
            iterator[0:0] = [item.child(i) for i in range(item.childCount())]
        return False
