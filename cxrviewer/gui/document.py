"""The viewer's state: open catalogs, the current image and how it is displayed.

Widgets hold no state of their own: they read from this object and listen to its signals
(the napari ViewerModel / QtViewer split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from cxrviewer.imaging.voi import FullRange, VoiChoice, default_voi, to_display
from cxrviewer.io.image import ImageData
from cxrviewer.io.catalog import Catalog


class ViewerDocument(QObject):
    catalogs_changed = Signal()
    image_changed = Signal()  # a new image (or none)
    display_changed = Signal()  # same image, new VOI or inversion
    error = Signal(str)  # one sentence for the user
    busy = Signal(str)  # status text while something loads; "" when idle

    def __init__(self) -> None:
        super().__init__()
        self.catalogs: list[Catalog] = []
        self.image: ImageData | None = None
        self.voi: VoiChoice = FullRange()
        self.invert_toggled = False
        self._display: np.ndarray | None = None

    # --- catalogs ---------------------------------------------------------------------------
    def add_catalog(self, catalog: Catalog) -> None:
        self.catalogs = [c for c in self.catalogs if Path(c.folder) != Path(catalog.folder)] + [catalog]
        self.catalogs_changed.emit()

    # --- image and display -----------------------------------------------------------------
    def set_image(self, image: ImageData | None) -> None:
        self.image = image
        self.voi = default_voi(image) if image is not None else FullRange()
        self.invert_toggled = False
        self._display = None
        self.image_changed.emit()

    def set_voi(self, voi: VoiChoice) -> None:
        self.voi = voi
        self._display = None
        self.display_changed.emit()

    def toggle_invert(self) -> None:
        self.invert_toggled = not self.invert_toggled
        self._display = None
        self.display_changed.emit()

    def display_pixels(self) -> np.ndarray | None:
        """The 8-bit picture for the screen (cached until the VOI or inversion changes)."""
        if self.image is None:
            return None
        if self._display is None:
            invert = self.image.inverted != self.invert_toggled
            self._display = to_display(self.image, self.voi, invert=invert)
        return self._display
