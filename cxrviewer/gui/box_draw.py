"""How an annotation box looks and where its handles are (no state, no events: `box_items` uses these).

Model proposals are dashed amber and carry the model's score; clinician boxes (accepted, corrected,
added, imported) are solid cyan with a check mark and the annotator. The selected box is drawn
thicker, faintly filled, with eight square resize handles. Pens are cosmetic and handles and labels
are drawn in screen pixels, so a box looks the same at every zoom.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen

from cxrviewer.annotations.editing import MODEL, ShownBox

HANDLE_PX = 8.0  # side of a drawn handle, screen pixels
GRAB_PX = 7.0  # how far from a handle's centre a press still grabs it, screen pixels
LABEL_GAP_PX = 3.0
LABEL_STACK_GAP_PX = 1.0  # between the stacked labels of boxes sharing a corner

#: handle name -> (x factor, y factor) of its position on the box (0 = left/top, 1 = right/bottom)
HANDLES: dict[str, tuple[float, float]] = {
    "tl": (0.0, 0.0), "t": (0.5, 0.0), "tr": (1.0, 0.0), "r": (1.0, 0.5),
    "br": (1.0, 1.0), "b": (0.5, 1.0), "bl": (0.0, 1.0), "l": (0.0, 0.5),
}
CURSORS: dict[str, Qt.CursorShape] = {
    "tl": Qt.CursorShape.SizeFDiagCursor, "br": Qt.CursorShape.SizeFDiagCursor,
    "tr": Qt.CursorShape.SizeBDiagCursor, "bl": Qt.CursorShape.SizeBDiagCursor,
    "t": Qt.CursorShape.SizeVerCursor, "b": Qt.CursorShape.SizeVerCursor,
    "l": Qt.CursorShape.SizeHorCursor, "r": Qt.CursorShape.SizeHorCursor,
}


@dataclass(frozen=True)
class BoxStyle:
    """Colour, dash and width of one kind of box."""

    color: QColor
    dashed: bool
    width: float
    selected_width: float


MODEL_STYLE = BoxStyle(QColor(255, 179, 0), True, 1.6, 2.8)  # amber
CLINICIAN_STYLE = BoxStyle(QColor(0, 229, 255), False, 1.8, 3.0)  # cyan
DRAFT_COLOR = QColor(120, 255, 140)  # a box being drawn


def style_of(box: ShownBox) -> BoxStyle:
    return MODEL_STYLE if box.kind == MODEL else CLINICIAN_STYLE


def label_text(box: ShownBox, score: float | None = None) -> str:
    """'Effusion · model 0.87' for a model box, '✓ Effusion · dr.a' for a clinician's."""
    if box.kind == MODEL:
        score = box.score if box.score is not None else score
        return f"{box.finding} · model" + (f" {score:.2f}" if score is not None else "")
    who = box.record.annotator if box.record is not None and box.record.annotator else box.status
    note = "" if box.status in ("accepted", "added") else f" ({box.status})"
    return f"\u2713 {box.finding} · {who}{note}"


def box_pen(style: BoxStyle, selected: bool, hovered: bool = False) -> QPen:
    color = QColor(style.color)
    if hovered and not selected:
        color = color.lighter(125)
    pen = QPen(color, style.selected_width if selected else style.width)
    pen.setCosmetic(True)
    if style.dashed:
        pen.setStyle(Qt.PenStyle.CustomDashLine)
        pen.setDashPattern([5.0, 3.0])
    pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
    return pen


def fill_brush(style: BoxStyle, selected: bool, hovered: bool) -> QBrush:
    if not (selected or hovered):
        return QBrush(Qt.BrushStyle.NoBrush)
    color = QColor(style.color)
    color.setAlpha(34 if selected else 18)
    return QBrush(color)


def label_font() -> QFont:
    font = QFont()
    font.setPixelSize(12)
    font.setBold(True)
    return font


def handle_points(rect: QRectF) -> dict[str, QPointF]:
    """Where each of the eight handles sits on `rect` (item coordinates)."""
    return {name: QPointF(rect.left() + fx * rect.width(), rect.top() + fy * rect.height())
            for name, (fx, fy) in HANDLES.items()}


def handle_at(rect: QRectF, pos: QPointF, pixel: tuple[float, float]) -> str | None:
    """The handle within `GRAB_PX` screen pixels of `pos`, or None; `pixel` is one screen pixel in
    item units (x, y)."""
    px, py = (max(abs(p), 1e-9) for p in pixel)
    best, best_d = None, GRAB_PX
    for name, point in handle_points(rect).items():
        d = max(abs(pos.x() - point.x()) / px, abs(pos.y() - point.y()) / py)
        if d <= best_d:
            best, best_d = name, d
    return best


def resized(rect: QRectF, handle: str, dx: float, dy: float, min_size: float) -> QRectF:
    """`rect` with the edges that `handle` moves shifted by (dx, dy) onto whole pixels, at least
    `min_size` wide and high."""
    x0, y0, x1, y1 = rect.left(), rect.top(), rect.right(), rect.bottom()
    if "l" in handle:
        x0 = min(round(x0 + dx), x1 - min_size)
    if "r" in handle:
        x1 = max(round(x1 + dx), x0 + min_size)
    if "t" in handle:
        y0 = min(round(y0 + dy), y1 - min_size)
    if "b" in handle:
        y1 = max(round(y1 + dy), y0 + min_size)
    return QRectF(QPointF(x0, y0), QPointF(x1, y1))


def kept_inside(rect: QRectF, bounds: QRectF | None) -> QRectF:
    """`rect` shifted (not resized) so it lies inside `bounds` where it fits."""
    if bounds is None:
        return rect
    dx = max(0.0, bounds.left() - rect.left()) - max(0.0, rect.right() - bounds.right())
    dy = max(0.0, bounds.top() - rect.top()) - max(0.0, rect.bottom() - bounds.bottom())
    return rect.translated(dx, dy)


def label_size(text: str) -> tuple[float, float]:
    """(width, height) of a label in screen pixels."""
    metrics = QFontMetricsF(label_font())
    return metrics.horizontalAdvance(text) + 10.0, metrics.height() + 4.0


def label_rect(top_left: QPointF, text: str, slot: int = 0) -> QRectF:
    """Where a box's label goes in screen pixels, given the box's top-left corner on screen: above
    the box (inside it when there is no room above), `slot` label heights further out, so that the
    labels of boxes sharing a corner stack instead of overlapping (`BoxLayer` assigns the slots)."""
    width, height = label_size(text)
    step = height + LABEL_STACK_GAP_PX
    y = top_left.y() - height - LABEL_GAP_PX - slot * step
    if top_left.y() - height - LABEL_GAP_PX < 0:  # no room above (image top edge in view): inside the box
        y = top_left.y() + LABEL_GAP_PX + slot * step
    return QRectF(top_left.x() - 1.0, y, width, height)


def paint_box(painter: QPainter, rect: QRectF, style: BoxStyle, text: str, selected: bool, hovered: bool,
              slot: int = 0) -> None:
    """Draw the box outline (item coordinates), then its label (in label slot `slot`) and handles
    in screen pixels."""
    painter.setPen(box_pen(style, selected, hovered))
    painter.setBrush(fill_brush(style, selected, hovered))
    painter.drawRect(rect)
    transform = painter.transform()
    top_left = transform.map(rect.topLeft())
    corners = [transform.map(p) for p in handle_points(rect).values()]
    painter.save()
    painter.resetTransform()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    _paint_label(painter, label_rect(top_left, text, slot), style, text, selected)
    if selected:
        painter.setPen(QPen(QColor(20, 20, 20), 1.0))
        painter.setBrush(QBrush(QColor(250, 250, 250)))
        half = HANDLE_PX / 2
        for point in corners:
            painter.drawRect(QRectF(point.x() - half, point.y() - half, HANDLE_PX, HANDLE_PX))
    painter.restore()


def _paint_label(painter: QPainter, where: QRectF, style: BoxStyle, text: str, selected: bool) -> None:
    x, y, width, height = where.x(), where.y(), where.width(), where.height()
    back = QColor(15, 18, 22, 215 if selected else 185)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(back)
    painter.drawRoundedRect(QRectF(x, y, width, height), 3.0, 3.0)
    painter.setBrush(style.color)
    painter.drawRect(QRectF(x, y, 3.0, height))  # colour tab: amber = model, cyan = clinician
    painter.setFont(label_font())
    painter.setPen(style.color if selected else style.color.lighter(110))
    painter.drawText(QRectF(x + 6.0, y, width - 6.0, height), int(Qt.AlignmentFlag.AlignVCenter), text)


def paint_draft(painter: QPainter, rect: QRectF) -> None:
    """The rubber band of a box being drawn."""
    pen = QPen(DRAFT_COLOR, 1.5)
    pen.setCosmetic(True)
    pen.setStyle(Qt.PenStyle.DashLine)
    painter.setPen(pen)
    fill = QColor(DRAFT_COLOR)
    fill.setAlpha(30)
    painter.setBrush(fill)
    painter.drawRect(rect)
