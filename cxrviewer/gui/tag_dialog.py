"""A searchable table of every DICOM tag of the current file (or a PNG's file facts).

The header is read with `pydicom.dcmread(stop_before_pixels=True)` off the UI thread; sequences
are expandable rows; Pixel Data and other long or binary values are summarised (VR and size),
never dumped. The filter keeps rows whose tag, keyword, VR or value contains the text, with the
sequence rows above them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QLabel,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cxrviewer.gui.workers import run_task
from cxrviewer.io.image import ImageData

BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
MAX_TEXT = 160  # characters of a value shown before it is cut
MAX_ITEMS = 16  # values of a multi-valued element shown before it is summarised
Row = tuple[str, str, str, str, list]  # tag, keyword, VR, value, children (rows)


def describe_value(elem) -> str:
    """A short text for one element's value: binary and long values are summarised."""
    if elem.VR in BINARY_VRS or elem.tag == 0x7FE00010:
        size = len(elem.value) if elem.value is not None and hasattr(elem.value, "__len__") else 0
        return f"<{elem.VR} binary, {size:,} bytes>"
    value = elem.value
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = list(value)
        if len(items) > MAX_ITEMS:
            return f"{len(items)} values: " + "\\".join(str(v) for v in items[:MAX_ITEMS]) + "\\…"
        text = "\\".join(str(v) for v in items)
    else:
        text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text):,} characters)"


def dataset_rows(ds) -> list[Row]:
    """Rows for every element of `ds` (file meta first when present), sequences as nested rows."""
    rows: list[Row] = []
    meta = getattr(ds, "file_meta", None)
    for elem in list(meta or []) + list(ds):
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        keyword = elem.keyword or ("(private)" if elem.tag.is_private else "")
        if elem.VR == "SQ":
            items = [(f"Item {i + 1}", "", "", f"{len(item)} element(s)", dataset_rows(item))
                     for i, item in enumerate(elem.value)]
            rows.append((tag, keyword, "SQ", f"{len(items)} item(s)", items))
        else:
            rows.append((tag, keyword, str(elem.VR), describe_value(elem), []))
    return rows


def read_rows(path: Path) -> list[Row]:
    """The header rows of a DICOM file (worker side); raises with a one-sentence message."""
    import pydicom

    from cxrviewer.errors import CorruptImage

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise CorruptImage(path, f"its DICOM header cannot be read ({type(exc).__name__})") from exc
    rows = dataset_rows(ds)
    rows.append(("(7FE0,0010)", "PixelData", "", "<pixel data: not read, not shown>", []))
    return rows


def file_facts(image: ImageData) -> list[Row]:
    """Rows of facts for a non-DICOM file: path, format, size, dimensions, depth, spacing."""
    facts = [("Path", str(image.path)), ("Format", image.source_format.upper()),
             ("Dimensions", f"{image.shape[1]} × {image.shape[0]} pixels"), ("Bits stored", str(image.bits_stored)),
             ("Photometric", image.photometric)]
    if image.pixel_spacing:
        facts.append(("Pixel spacing", f"{image.pixel_spacing[0]:g} × {image.pixel_spacing[1]:g} mm"))
    try:
        st = os.stat(image.path)
        facts += [("File size", f"{st.st_size:,} bytes"), ("Modified", time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                      time.localtime(st.st_mtime)))]
    except OSError:
        facts.append(("File", "cannot be read any more"))
    return [("", name, "", value, []) for name, value in facts]


class TagDialog(QDialog):
    """The tag table of `image` (non-modal); `loaded` is True once the rows are shown."""

    def __init__(self, image: ImageData | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Tags — {image.path.name}" if image is not None else "Tags")
        self.resize(760, 640)
        self.filter = QLineEdit(placeholderText="Filter: tag, keyword, VR or value…")
        self.filter.setClearButtonEnabled(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Keyword", "VR", "Value"])
        for column, width in enumerate((110, 220, 40)):
            self.tree.setColumnWidth(column, width)
        self.note = QLabel()
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.tree)
        layout.addWidget(self.note)
        self.filter.textChanged.connect(self.apply_filter)
        self.loaded = False
        if image is None:
            self._show_rows([], "No image is open.")
        elif image.source_format != "dicom":
            self._show_rows(file_facts(image), f"{image.path.name} is not a DICOM file: these are its file facts.")
        else:
            self.note.setText(f"Reading {image.path.name} …")
            path = image.path
            run_task(lambda: read_rows(path), lambda rows: self._show_rows(rows, str(path)),
                     lambda sentence: self._show_rows([], sentence))

    def _show_rows(self, rows: list[Row], note: str) -> None:
        self.tree.clear()
        self.tree.addTopLevelItems([_item(row) for row in rows])
        self.note.setText(note)
        self.loaded = True
        self.apply_filter()

    def apply_filter(self) -> None:
        """Show the rows containing the filter text (any column), with their sequence parents."""
        needle = self.filter.text().strip().casefold()
        for i in range(self.tree.topLevelItemCount()):
            _filter(self.tree.topLevelItem(i), needle)
        if needle:
            self.tree.expandAll()

    def visible_keywords(self) -> list[str]:
        """Keywords of the visible top-level rows (for tests and scripting)."""
        items = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        return [item.text(1) for item in items if not item.isHidden()]


def _item(row: Row) -> QTreeWidgetItem:
    tag, keyword, vr, value, children = row
    item = QTreeWidgetItem([tag, keyword, vr, value])
    item.setToolTip(3, value)
    item.addChildren([_item(child) for child in children])
    return item


def _filter(item: QTreeWidgetItem, needle: str) -> bool:
    """Hide `item` unless it or a descendant matches; returns whether it stays visible."""
    own = not needle or any(needle in item.text(c).casefold() for c in range(4))
    child_hit = False
    for i in range(item.childCount()):
        child_hit |= _filter(item.child(i), "" if own and needle else needle)
    visible = own or child_hit
    item.setHidden(not visible)
    return visible
