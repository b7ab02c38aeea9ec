"""Thumbnails for the browser, made off the UI thread, a few at a time, only for the rows asked for.

The browser asks for the image rows that are visible (and a few below); the loader reads them
from the disk cache (`cxrviewer.io.thumbnails.ThumbnailCache`) or makes them in one worker thread,
in chunks of `CHUNK`, newest request first. Only the 8-bit thumbnails stay in memory (≤ 128² bytes
each), so a 2,000-image folder never holds more than one full image's pixels at a time.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap

from cxrviewer.errors import CxrError
from cxrviewer.gui.workers import run_task
from cxrviewer.io.thumbnails import ThumbnailCache

CHUNK = 4
_STOPPING = threading.Event()  # set at interpreter exit: chunks in flight stop after their current file


@atexit.register
def _stop_workers() -> None:
    """Let a chunk in flight finish its current file before Python tears down its signal objects."""
    _STOPPING.set()
    from PySide6.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(5000)


def make_chunk(cache: ThumbnailCache, paths: list[Path]) -> list[tuple[Path, QImage | str, bool]]:
    """Worker side: (path, picture or error sentence, came from the disk cache) for each path."""
    out: list[tuple[Path, QImage | str, bool]] = []
    for path in paths:
        if _STOPPING.is_set():
            break
        picture = cache.cached(path)
        from_disk = picture is not None
        if picture is None:
            try:
                picture = cache.thumbnail(path)
            except CxrError as exc:
                out.append((path, exc.sentence, False))
                continue
            except Exception as exc:  # noqa: BLE001 - a decoder's failure on a damaged file
                out.append((path, f"{path.name}: the thumbnail cannot be made ({type(exc).__name__}).", False))
                continue
        out.append((path, to_qimage(picture), from_disk))
    return out


def to_qimage(picture: np.ndarray) -> QImage:
    """A deep-copied 8-bit grayscale QImage of a uint8 [h, w] array (safe to pass between threads)."""
    picture = np.ascontiguousarray(picture, dtype=np.uint8)
    rows, cols = picture.shape
    return QImage(picture.data, cols, rows, picture.strides[0], QImage.Format.Format_Grayscale8).copy()


def square_icon(image: QImage, side: int) -> QIcon:
    """The thumbnail centred on a black square of `side` pixels (rows keep one height)."""
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor("black"))
    scaled = QPixmap.fromImage(image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation)
    from PySide6.QtGui import QPainter

    painter = QPainter(pixmap)
    painter.drawPixmap((side - scaled.width()) // 2, (side - scaled.height()) // 2, scaled)
    painter.end()
    return QIcon(pixmap)


class ThumbnailLoader(QObject):
    """Makes thumbnails on request; `ready(path, icon)` or `failed(path, sentence)` on the UI thread."""

    ready = Signal(Path, QIcon)
    failed = Signal(Path, str)
    idle = Signal()  # nothing queued and nothing in flight

    def __init__(self, cache: ThumbnailCache | None = None, icon_side: int = 40) -> None:
        super().__init__()
        self.cache = cache or ThumbnailCache()
        self.icon_side = icon_side
        self.icons: dict[Path, QIcon] = {}
        self.errors: dict[Path, str] = {}
        self.made = 0  # thumbnails generated from pixels
        self.from_disk = 0  # thumbnails read back from the disk cache
        self._queue: list[Path] = []  # most urgent last
        self._in_flight: set[Path] = set()
        self._wanted: set[Path] | None = None  # rows that exist; None = any
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy or bool(self._queue)

    def placeholder(self) -> QIcon:
        pixmap = QPixmap(QSize(self.icon_side, self.icon_side))
        pixmap.fill(QColor(40, 40, 40))
        return QIcon(pixmap)

    def set_rows(self, paths: set[Path]) -> None:
        """The image rows that exist now; queued requests for other paths are dropped."""
        self._wanted = set(paths)
        self._queue = [p for p in self._queue if p in self._wanted]

    def request(self, paths: list[Path]) -> None:
        """Ask for thumbnails of `paths` (first = most urgent); known or pending ones are skipped."""
        fresh = [p for p in paths if p not in self.icons and p not in self.errors and p not in self._in_flight
                 and (self._wanted is None or p in self._wanted)]
        if not fresh:
            return
        urgent = list(reversed(fresh))
        self._queue = [p for p in self._queue if p not in set(urgent)] + urgent
        self._next()

    def _next(self) -> None:
        if self._busy:
            return
        chunk: list[Path] = []
        while self._queue and len(chunk) < CHUNK:
            path = self._queue.pop()
            if path not in self.icons and path not in self.errors:
                chunk.append(path)
        if not chunk:
            self.idle.emit()
            return
        self._busy = True
        self._in_flight = set(chunk)
        cache = self.cache
        run_task(lambda: make_chunk(cache, chunk), self._done, self._chunk_failed)

    def _done(self, results: list[tuple[Path, QImage | str, bool]]) -> None:
        self._busy = False
        self._in_flight = set()
        for path, picture, from_disk in results:
            if isinstance(picture, str):
                self.errors[path] = picture
                self.failed.emit(path, picture)
                continue
            self.from_disk += from_disk
            self.made += not from_disk
            icon = self.icons[path] = square_icon(picture, self.icon_side)
            self.ready.emit(path, icon)
        self._next()

    def _chunk_failed(self, sentence: str) -> None:
        for path in self._in_flight:
            self.errors[path] = sentence
        self._busy = False
        self._in_flight = set()
        self._next()
