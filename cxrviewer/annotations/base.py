"""The plumbing under `AnnotationStore`: the connection, write transactions and the images table.

Writes run in `BEGIN IMMEDIATE` transactions (the write lock taken up front, waiting up to the busy
timeout), so two writers queue instead of one failing with "database is locked" halfway through.
The connection may be used from several threads of one process; a lock serialises them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from cxrviewer.annotations.records import ImageRecord, utc_now
from cxrviewer.annotations.schema import BadAnnotation, BadStore, connect

_IMAGE_COLUMNS = "image_key, path, patient_id, study_uid, rows, cols, added_at"


def _image(row: Sequence) -> ImageRecord:
    return ImageRecord(row[0], None if row[1] is None else Path(row[1]), row[2], row[3], row[4], row[5], row[6])


class StoreBase:
    """An open store file: connection, transactions, images (boxes and labels: `AnnotationStore`)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path) -> Self:
        """Open the store at `path`, creating it if absent; `BadStore` for a foreign or newer file."""
        path = Path(path).expanduser()
        return cls(path, connect(path))

    def close(self) -> None:
        """Close the file; later calls raise `BadStore`. Closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}{' (closed)' if self._db is None else ''}>"

    # -- plumbing ----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise BadStore(self.path, "the annotation store is closed")
        return self._db

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, tuple(args)).fetchall()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if the block raises."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _find_image(self, conn: sqlite3.Connection, image_key: str) -> ImageRecord | None:
        row = conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE image_key = ?", (image_key,)).fetchone()
        return None if row is None else _image(row)

    def _require_image(self, conn: sqlite3.Connection, image_key: str) -> ImageRecord:
        image = self._find_image(conn, image_key)
        if image is None:
            raise BadAnnotation(self.path, f"image '{image_key}' is not in the store (add it first)")
        return image

    def _annotator(self, annotator: str) -> str:
        name = str(annotator).strip()
        if not name:
            raise BadAnnotation(self.path, "an annotator's edit must name the annotator")
        return name

    # -- images ------------------------------------------------------------------------------
    def add_image(self, image_key: str, path: str | Path | None = None, patient_id: str = "",
                  study_uid: str = "", rows: int | None = None, cols: int | None = None) -> ImageRecord:
        """Register an image, or fill in what an earlier call left out (a new path replaces the old).

        `rows`/`cols` are the image file's pixel size (both or neither); a size that contradicts
        the stored one is refused, since the image's boxes are in that size's coordinates.
        """
        key = str(image_key).strip()
        if not key:
            raise BadAnnotation(self.path, "an image needs a non-empty key")
        if (rows is None) != (cols is None) or (rows is not None and (int(rows) <= 0 or int(cols) <= 0)):
            raise BadAnnotation(self.path, f"image '{key}' needs both rows and cols as positive numbers or neither")
        rows, cols = (None, None) if rows is None else (int(rows), int(cols))
        text_path = None if path is None else str(path)
        with self._write() as conn:
            old = self._find_image(conn, key)
            if old is None:
                conn.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key, text_path, patient_id, study_uid, rows, cols, utc_now()))
            else:
                if rows is not None and old.rows is not None and (old.rows, old.cols) != (rows, cols):
                    raise BadAnnotation(self.path, f"image '{key}' is {old.cols}x{old.rows} in the store, "
                                                   f"not {cols}x{rows}")
                if rows is not None and old.rows is None and conn.execute(
                        "SELECT count(*) FROM boxes WHERE image_key = ? AND (x1 > ? OR y1 > ?)",
                        (key, cols, rows)).fetchone()[0]:
                    raise BadAnnotation(self.path, f"image '{key}' already has boxes reaching beyond {cols}x{rows}, "
                                                   "so that cannot be its size")
                conn.execute("UPDATE images SET path = COALESCE(?, path), "
                             "patient_id = CASE WHEN patient_id = '' THEN ? ELSE patient_id END, "
                             "study_uid = CASE WHEN study_uid = '' THEN ? ELSE study_uid END, "
                             "rows = COALESCE(rows, ?), cols = COALESCE(cols, ?) WHERE image_key = ?",
                             (text_path, patient_id, study_uid, rows, cols, key))
            return self._require_image(conn, key)

    def image(self, image_key: str) -> ImageRecord | None:
        """One image's record, or None when the store does not know it."""
        with self._lock:
            return self._find_image(self._conn(), image_key)

    def images(self) -> list[ImageRecord]:
        """Every image, in the order they were added."""
        return [_image(r) for r in self._query(f"SELECT {_IMAGE_COLUMNS} FROM images ORDER BY rowid")]
