"""Patient ▸ Study ▸ Series ▸ Image tree over the open catalogs, with thumbnails, a filter box and drops.

Image rows get their thumbnail icon once they are visible (scrolled into view or expanded):
`browser_thumbs.ThumbnailLoader` makes them off the UI thread through the disk cache. Files and
folders dropped on the panel are announced with `paths_dropped`, `folder_dropped` and
`file_dropped`; the main window opens them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QLineEdit,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cxrviewer.gui.browser_thumbs import ThumbnailLoader
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.io.catalog_tree import PatientNode, filter_tree, is_synthetic
from cxrviewer.io.thumbnails import ThumbnailCache

PATH_ROLE = Qt.ItemDataRole.UserRole
ICON_SIDE = 40
PREFETCH_ROWS = 16  # thumbnails requested below the last visible row
EMPTY_HINT = "Drop a folder or file here, or use File ▸ Open folder… (Ctrl+O)"


class BrowserPanel(QWidget):
    image_activated = Signal(Path)
    paths_dropped = Signal(list)  # every local path of a drop, as Path
    folder_dropped = Signal(Path)
    file_dropped = Signal(Path)

    def __init__(self, document: ViewerDocument, thumbnails: ThumbnailCache | None = None) -> None:
        super().__init__()
        self.document = document
        self.filter = QLineEdit(placeholderText="Filter: patient, name, date, finding…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # plain-key shortcuts work from the start
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Patient / study / image", "Details"])
        self.tree.setColumnWidth(0, 250)
        self.tree.setIconSize(QSize(ICON_SIDE, ICON_SIDE))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.tree)
        self.setAcceptDrops(True)
        self.thumbs = ThumbnailLoader(thumbnails, ICON_SIDE)
        self.thumbs.ready.connect(self._on_thumbnail)
        self.thumbs.failed.connect(self._on_thumbnail_failed)
        self._placeholder = self.thumbs.placeholder()
        self._rows: dict[Path, list[QTreeWidgetItem]] = {}
        self._visible_timer = QTimer(self, singleShot=True, interval=60)
        self._visible_timer.timeout.connect(self.request_visible_thumbnails)
        self.filter.textChanged.connect(self.rebuild)
        self.filter.returnPressed.connect(self.tree.setFocus)
        self.tree.currentItemChanged.connect(self._on_current)
        self.tree.itemExpanded.connect(lambda _item: self._visible_timer.start())
        self.tree.verticalScrollBar().valueChanged.connect(lambda _v: self._visible_timer.start())
        document.catalogs_changed.connect(self.rebuild)
        self.rebuild()

    # --- the tree --------------------------------------------------------------------------
    def rebuild(self) -> None:
        self.tree.clear()
        self._rows = {}
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
        if not self.document.catalogs:
            hint = QTreeWidgetItem([EMPTY_HINT])
            hint.setFlags(Qt.ItemFlag.NoItemFlags)
            self.tree.addTopLevelItem(hint)
            self.tree.setFirstColumnSpanned(0, self.tree.rootIndex(), True)
        self.thumbs.set_rows(set(self._rows))
        self.tree.expandToDepth(0 if self.tree.topLevelItemCount() > 20 else 3)
        self._visible_timer.start()

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
                    series_item.addChild(self._image_item(image))
        return item

    def _image_item(self, image) -> QTreeWidgetItem:
        facts = [image.view_position, image.laterality if image.laterality != "U" else "",
                 f"{image.columns}×{image.rows}"]
        if image.labels:
            facts.append(", ".join(image.labels))
        item = QTreeWidgetItem([image.path.name, "  ".join(f for f in facts if f)])
        path = Path(image.path)
        item.setData(0, PATH_ROLE, str(path))
        item.setToolTip(0, str(path))
        if path in self.thumbs.errors:
            self._mark_failed(item, self.thumbs.errors[path])
        else:
            item.setIcon(0, self.thumbs.icons.get(path, self._placeholder))
        self._rows.setdefault(path, []).append(item)
        return item

    def _on_current(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        path = current.data(0, PATH_ROLE) if current is not None else None
        if path:
            self.image_activated.emit(Path(path))

    def select_first_image(self, folder: Path | None = None) -> bool:
        """Make the first image of the tree (of `folder`'s catalog if given) current, which opens it;
        False when there is none."""
        root = Path(folder).absolute() if folder is not None else None
        iterator = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while iterator:
            item = iterator.pop(0)
            path = item.data(0, PATH_ROLE)
            if path and (root is None or Path(path).absolute().is_relative_to(root)):
                self.tree.setCurrentItem(item)
                return True
            iterator[0:0] = [item.child(i) for i in range(item.childCount())]
        return False

    def focus_filter(self) -> None:
        """Put the cursor in the filter box (Ctrl+F); Enter goes back to the tree."""
        self.filter.setFocus()
        self.filter.selectAll()

    def image_items(self) -> list[QTreeWidgetItem]:
        """Every image row of the tree now (after the filter)."""
        return [item for items in self._rows.values() for item in items]

    # --- thumbnails ------------------------------------------------------------------------
    def visible_image_paths(self) -> list[Path]:
        """Image rows on screen, top to bottom, then up to PREFETCH_ROWS image rows below them."""
        viewport = self.tree.viewport()
        item = self.tree.itemAt(2, 2)
        paths: list[Path] = []
        below = 0
        while item is not None and below < PREFETCH_ROWS:
            if self.tree.visualItemRect(item).top() > viewport.height():
                below += 1
            path = item.data(0, PATH_ROLE)
            if path:
                paths.append(Path(path))
            item = self.tree.itemBelow(item)
        return paths

    def request_visible_thumbnails(self) -> None:
        """Ask the loader for the thumbnails of the rows on screen (and a few below)."""
        paths = self.visible_image_paths()
        if paths:
            self.thumbs.request(paths)

    def _on_thumbnail(self, path: Path, icon) -> None:
        for item in self._rows.get(path, []):
            item.setIcon(0, icon)

    def _on_thumbnail_failed(self, path: Path, sentence: str) -> None:
        for item in self._rows.get(path, []):
            self._mark_failed(item, sentence)

    def _mark_failed(self, item: QTreeWidgetItem, sentence: str) -> None:
        item.setIcon(0, self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
        item.setToolTip(0, sentence)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._visible_timer.start()

    # --- drops ---------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = dropped_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_paths(paths)

    def open_paths(self, paths: list[Path]) -> None:
        """Announce dropped paths: `paths_dropped` once, then `folder_dropped`/`file_dropped` for each."""
        self.paths_dropped.emit(list(paths))
        for path in paths:
            if path.is_dir():
                self.folder_dropped.emit(path)
            elif path.is_file():
                self.file_dropped.emit(path)
            else:
                self.document.error.emit(f"{path.name}: this dropped item is neither a file nor a folder.")


def dropped_paths(mime) -> list[Path]:
    """The local files and folders in a drag's MIME data (URLs that are not local are ignored)."""
    if mime is None or not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
