"""The catalog's SQLite index: one row per scanned file, plus a few key/value facts.

The index is a cache: a file from another schema version, for another folder, or one SQLite
cannot read is deleted and rebuilt, never fatal. WAL journalling keeps a reader (the GUI) and a
rescan from blocking each other. When the index location cannot be written, the index lives in
memory for this session (the scan still works; reopening is then a full scan).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from cxrviewer.io.catalog_scan import RECORD_COLUMNS, FileRecord

SCHEMA_VERSION = 1
_INT_COLUMNS = {"size", "mtime_ns", "series_number", "rows", "columns", "instance_number", "follow_up"}
_COLUMN_SQL = ", ".join(
    f"{c} {'INTEGER' if c in _INT_COLUMNS else 'TEXT'}{' PRIMARY KEY' if c == 'rel' else ''}"
    for c in RECORD_COLUMNS
)
_INSERT_SQL = (
    f"INSERT OR REPLACE INTO files ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
)


def cache_dir() -> Path:
    """`$CXRVIEWER_CACHE_DIR`, else `~/.cache/cxrviewer`."""
    env = os.environ.get("CXRVIEWER_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cxrviewer"


def default_index_path(folder: str | Path) -> Path:
    """`<cache dir>/catalogs/<sha1 of the absolute folder path>.sqlite` (the folder may be read-only)."""
    key = hashlib.sha1(str(Path(folder).resolve()).encode("utf-8")).hexdigest()
    return cache_dir() / "catalogs" / f"{key}.sqlite"


class CatalogDB:
    """The index for one folder. Not for concurrent use from several threads at once."""

    def __init__(self, path: Path | None, folder: Path) -> None:
        self.path = path
        self.folder = folder
        self.rebuilt = False  # True when an unusable index file was thrown away
        self.in_memory = False
        self.conn = self._open()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._memory()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            if self._usable(conn):
                return conn
            conn.close()
        except (sqlite3.DatabaseError, OSError):
            pass
        return self._fresh()

    def _fresh(self) -> sqlite3.Connection:
        """Delete an unusable index (corrupt, other schema, other folder) and start an empty one."""
        if self.path is None:
            return self._memory()
        try:
            existed = self.path.exists()
            self._remove_files()
            conn = self._init(sqlite3.connect(self.path, check_same_thread=False))
        except (sqlite3.DatabaseError, OSError):
            return self._memory()
        self.rebuilt = self.rebuilt or existed
        return conn

    def _memory(self) -> sqlite3.Connection:
        self.in_memory = True
        return self._init(sqlite3.connect(":memory:", check_same_thread=False))

    def reset(self) -> None:
        """Throw the index away and start empty (after SQLite reported it damaged mid-use)."""
        self.close()
        self.conn = self._fresh()

    def _usable(self, conn: sqlite3.Connection) -> bool:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            return False
        conn.execute("PRAGMA journal_mode=WAL")
        return self.get_meta("folder", conn) == str(self.folder)

    def _init(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.execute("DROP TABLE IF EXISTS files")
            conn.execute("DROP TABLE IF EXISTS meta")
            conn.execute(f"CREATE TABLE files ({_COLUMN_SQL})")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('folder', ?)", (str(self.folder),))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn

    def _remove_files(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                Path(str(self.path) + suffix).unlink()
            except FileNotFoundError:
                pass

    # -- reading and writing -----------------------------------------------------------------
    def get_meta(self, key: str, conn: sqlite3.Connection | None = None) -> str | None:
        row = (conn or self.conn).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def stats(self) -> dict[str, tuple[int, int, str]]:
        """{relative path: (size, mtime_ns, fmt)} of every indexed file."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute("SELECT rel, size, mtime_ns, fmt FROM files")}

    def records(self) -> list[FileRecord]:
        """Every stored record, sorted by path."""
        cur = self.conn.execute(f"SELECT {', '.join(RECORD_COLUMNS)} FROM files ORDER BY rel")
        return [FileRecord(*row) for row in cur]

    def put(self, records: Iterable[FileRecord]) -> None:
        """Insert or replace records, in one transaction."""
        rows = [tuple(getattr(r, c) for c in RECORD_COLUMNS) for r in records]
        with self.conn:
            self.conn.executemany(_INSERT_SQL, rows)

    def delete(self, rels: Iterable[str]) -> None:
        with self.conn:
            self.conn.executemany("DELETE FROM files WHERE rel = ?", [(r,) for r in rels])

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
