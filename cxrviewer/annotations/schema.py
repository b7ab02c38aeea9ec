"""The SQLite layout of an annotation store and the careful opening that never harms a foreign file.

A store is marked twice: `PRAGMA application_id` holds `APPLICATION_ID` and `PRAGMA user_version`
the schema version. Before anything is written, an existing file is checked read-only: it must
start with the SQLite header, carry our application id (or be an empty database), and have a
schema version this code knows. Anything else is refused with `BadStore` and left byte-identical.
Rows are append-only: triggers abort any UPDATE or DELETE of a box or label version.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cxrviewer.errors import CxrError, first_line

SCHEMA_VERSION = 1
APPLICATION_ID = 0x43585241  # "CXRA"
BUSY_TIMEOUT_MS = 30_000
_SQLITE_MAGIC = b"SQLite format 3\x00"

_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS images (
    image_key TEXT PRIMARY KEY, path TEXT, patient_id TEXT NOT NULL DEFAULT '',
    study_uid TEXT NOT NULL DEFAULT '', rows INTEGER, cols INTEGER, added_at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS boxes (
    box_id TEXT NOT NULL, version INTEGER NOT NULL, image_key TEXT NOT NULL REFERENCES images(image_key),
    finding TEXT NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    orig_x0 REAL, orig_y0 REAL, orig_x1 REAL, orig_y1 REAL,
    status TEXT NOT NULL CHECK (status IN ('proposed','accepted','corrected','added','imported','deleted')),
    annotator TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, model_name TEXT NOT NULL DEFAULT '',
    model_sha256 TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (box_id, version)
)""",
    """CREATE INDEX IF NOT EXISTS boxes_by_image ON boxes(image_key)""",
    """CREATE TABLE IF NOT EXISTS labels (
    image_key TEXT NOT NULL REFERENCES images(image_key), finding TEXT NOT NULL, version INTEGER NOT NULL,
    value REAL, annotator TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,
    model_name TEXT NOT NULL DEFAULT '', model_sha256 TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (image_key, finding, version)
)""",
    """CREATE TRIGGER IF NOT EXISTS boxes_no_update BEFORE UPDATE ON boxes
    BEGIN SELECT RAISE(ABORT, 'box versions are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS boxes_no_delete BEFORE DELETE ON boxes
    BEGIN SELECT RAISE(ABORT, 'box versions are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
    BEGIN SELECT RAISE(ABORT, 'label versions are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
    BEGIN SELECT RAISE(ABORT, 'label versions are append-only'); END""",
)


class BadStore(CxrError):
    """A file that is not an annotation store, or one written by a newer cxrviewer."""


class BadAnnotation(CxrError, ValueError):
    """An edit the store refuses: an invalid box or label, an unknown image or box id."""


def _check_existing(path: Path) -> None:
    """Refuse `path` (read-only checks) unless it is empty, an empty database or one of our stores."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise BadStore(path, f"the file cannot be read ({exc.strerror or exc})") from exc
    if not head:
        return  # a zero-byte file is an empty SQLite database
    if head != _SQLITE_MAGIC:
        raise BadStore(path, "this is not an annotation store (not an SQLite database)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BadStore(path, f"this is not a readable annotation store ({first_line(exc)})") from exc
    if app_id == 0 and version == 0 and n_objects == 0:
        return
    if app_id != APPLICATION_ID:
        raise BadStore(path, "this SQLite database is not an annotation store")
    if version > SCHEMA_VERSION:
        raise BadStore(path, f"the store has schema version {version}, newer than the {SCHEMA_VERSION} "
                             "this cxrviewer reads; update cxrviewer")


def _set_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL; the switch needs a moment alone with the file, so retry while others hold it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise BadStore(path, f"the store cannot be opened for writing ({first_line(exc)})") from exc
            time.sleep(0.05)
    if str(mode).lower() != "wal":
        raise BadStore(path, f"the store cannot use write-ahead logging here (journal mode {mode})")


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if absent) the store at `path` in WAL mode with a busy timeout; autocommit.

    Write with explicit `BEGIN IMMEDIATE` transactions so concurrent writers queue on the lock
    instead of failing. Raises `BadStore` for a foreign or newer file, which is left untouched.
    """
    if path.exists():
        if path.is_dir():
            raise BadStore(path, "this is a folder, not an annotation store")
        _check_existing(path)
    elif not path.parent.is_dir():
        raise BadStore(path, "the folder for the annotation store does not exist")
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise BadStore(path, f"the store cannot be opened ({first_line(exc)})") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _set_wal(conn, path)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        _initialise(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _initialise(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a fresh store once, under the write lock (two openers may race)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if app_id not in (0, APPLICATION_ID):
                raise BadStore(path, "this SQLite database is not an annotation store")
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
