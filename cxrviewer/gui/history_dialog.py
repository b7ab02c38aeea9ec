"""The open image's annotation history: every version of every box and label, who wrote it and when
(Annotations ▸ History of this image…). Read-only; the store never forgets a version."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from cxrviewer.annotations.records import short_time

COLUMNS = ("time", "annotator", "box", "version", "finding", "status", "x0, y0, x1, y1", "model", "note")


def history_rows(store, image_key: str) -> list[tuple[str, ...]]:
    """One row per box or label version, oldest first (box rows, then label rows, each in write order)."""
    boxes, labels = store.image_history(image_key)
    rows = [(short_time(b.created_at), b.annotator or "(model)", b.box_id[:8], str(b.version), b.finding, b.status,
             ", ".join(f"{c:.1f}" for c in b.box), b.model_name, b.note) for b in boxes]
    rows += [(short_time(lab.created_at), lab.annotator, "label", str(lab.version), lab.finding,
              "cleared" if lab.value is None else ("present" if lab.value else "absent"), "", "", lab.note)
             for lab in labels]
    return rows


class HistoryDialog(QDialog):
    def __init__(self, store, image_key: str, image_name: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"History — {image_name or image_key}")
        self.resize(980, 420)
        rows = history_rows(store, image_key)
        self.table = QTableWidget(len(rows), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{len(rows)} version(s) in {store.path.name}; nothing is ever overwritten."
                                if rows else "No edit of this image is in the store yet."))
        layout.addWidget(self.table)
