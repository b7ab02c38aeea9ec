"""Widgets of the findings panel: the ranked finding list (painted rows with probability bars and
threshold ticks), an elided one-line label and a combo box that fills itself when opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QLineF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QComboBox, QLabel, QSizePolicy, QWidget

if TYPE_CHECKING:
    from cxrviewer.gui.findings_panel import FindingsPanel

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
