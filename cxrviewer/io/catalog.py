"""The patient/study catalog of a folder: Patient ▸ Study ▸ Series ▸ Image, from headers only.

    cat = Catalog.open("/data/cxr")          # incremental scan; instant when nothing changed
    for patient in cat.patients(): ...
    cat.errors, cat.duplicates                # what could not be catalogued, and why
    cat.close()

DICOM files are recognised by content (with or without the .dcm suffix or the 128-byte preamble);
PNG/JPEG files take patient, follow-up study, labels, view, age and sex from an NIH labels table
found by `find_labels_table`, else they go under the unknown patient, one study per folder. The
SQLite index (`catalog_db`) makes reopening an unchanged folder a matter of `stat` calls; with
`rescan=False` not even that. Non-image DICOM, corrupt and unreadable files end up in `errors`
with their one-sentence reason and never stop the scan.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cxrviewer.errors import CxrError, MissingFile
from cxrviewer.io import catalog_scan
from cxrviewer.io.catalog_db import CatalogDB, cache_dir, default_index_path
from cxrviewer.io.catalog_scan import FileRecord
from cxrviewer.io.catalog_tree import (
    SYNTHETIC_PREFIX, UNKNOWN_PATIENT, CatalogImage, PatientNode, SeriesNode, StudyNode,
    build_tree, filter_tree, is_synthetic, split_records,
)
from cxrviewer.io.labels import LabelRow, find_labels_table, read_labels_table

__all__ = [
    "Catalog", "CatalogImage", "PatientNode", "ScanReport", "SeriesNode", "StudyNode",
    "SYNTHETIC_PREFIX", "UNKNOWN_PATIENT", "cache_dir", "default_index_path", "is_synthetic",
]

Progress = Callable[[int, int], None]
POOL_MIN_FILES = 1500  # below this a process pool costs more to start than it saves
_CHUNK = 64
_RASTER_FORMATS = ("png", "jpeg")


@dataclass
class ScanReport:
    """What one scan did. Counts are files; `errors` and `duplicates` are the catalog's current lists."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, str, Path]] = field(default_factory=list)
    seconds: float = 0.0


class Catalog:
    """The catalog of one folder, backed by its SQLite index. Use from one thread at a time."""

    def __init__(self, folder: Path, db: CatalogDB, workers: int | None = None) -> None:
        self.folder = folder
        self.workers = workers
        self._db = db
        self.errors: list[tuple[Path, str]] = []
        self.duplicates: list[tuple[Path, str, Path]] = []
        self._patients: list[PatientNode] = []
        self._images: list[CatalogImage] = []

    @classmethod
    def open(cls, folder: str | Path, index_path: str | Path | None = None, *, rescan: bool = True,
             progress: Progress | None = None, workers: int | None = None) -> "Catalog":
        """Open the catalog of `folder`, creating or repairing its index as needed.

        `index_path` overrides the default per-folder file under the cache dir. With `rescan`
        (default) the folder is rescanned incrementally; without it the index is trusted as is
        (a folder never scanned before is still scanned). `progress(done, total)` reports the
        files read. `workers`: reader processes (None: automatic, 1: none).
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise MissingFile(folder, "the folder does not exist or is not a folder")
        index = Path(index_path).expanduser().resolve() if index_path is not None else default_index_path(folder)
        catalog = cls(folder, CatalogDB(index, folder), workers)
        if rescan or catalog._db.get_meta("scanned") is None:
            catalog.scan(progress)
        else:
            catalog._load()
        return catalog

    @property
    def index_path(self) -> Path | None:
        """The index file, or None when the index could not be written and lives in memory."""
        return None if self._db.in_memory else self._db.path

    # -- scanning ----------------------------------------------------------------------------
    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Bring the index up to date with the folder: read new and changed files, drop removed ones."""
        t0 = time.perf_counter()
        exclude: set[Path] = set()
        if self._db.path is not None:
            exclude = {Path(str(self._db.path) + s) for s in ("", "-wal", "-shm", "-journal")}
        on_disk = catalog_scan.walk(self.folder, exclude)
        stored = self._db.stats()
        labels_sig = self._labels_signature()
        relabel = labels_sig != (self._db.get_meta("labels") or "")
        report = ScanReport()
        todo: list[tuple[str, int, int]] = []
        for rel, (size, mtime) in on_disk.items():
            old = stored.get(rel)
            if old is None:
                report.added += 1
            elif (old[0], old[1]) != (size, mtime):
                report.changed += 1
            elif relabel and old[2] in _RASTER_FORMATS:
                report.changed += 1  # the labels table changed: its images take new facts
            else:
                report.unchanged += 1
                continue
            todo.append((rel, size, mtime))
        removed = [rel for rel in stored if rel not in on_disk]
        report.removed = len(removed)
        todo.sort()
        labels = self._labels_for(todo) if todo else None
        if removed:
            self._db.delete(removed)
        self._read_into_index(todo, labels, progress)
        self._db.set_meta("labels", labels_sig)
        self._db.set_meta("scanned", str(time.time()))
        self._load()
        report.errors, report.duplicates = list(self.errors), list(self.duplicates)
        report.seconds = time.perf_counter() - t0
        return report

    def _read_into_index(self, todo: list[tuple[str, int, int]], labels: dict[str, LabelRow] | None,
                         progress: Progress | None) -> None:
        """Read `todo` (in a process pool when it pays) and store the records in batches."""
        total, done = len(todo), 0
        if progress is not None:
            progress(0, total)
        chunks = [todo[i:i + _CHUNK] for i in range(0, total, _CHUNK)]
        workers = self.workers if self.workers is not None else min(os.cpu_count() or 1, 8)
        pending: list[FileRecord] = []

        def take(records: list[FileRecord]) -> None:
            nonlocal done
            pending.extend(records)
            done += len(records)
            if len(pending) >= 512:  # a scan cut short keeps what it read
                self._db.put(pending)
                pending.clear()
            if progress is not None:
                progress(done, total)

        if workers > 1 and total >= POOL_MIN_FILES:
            ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(catalog_scan.read_records, self.folder, c, _subset(labels, c)) for c in chunks]
                for fut in futures:
                    take(fut.result())
        else:
            for chunk in chunks:
                take(catalog_scan.read_records(self.folder, chunk, labels))
        self._db.put(pending)

    # -- labels table ------------------------------------------------------------------------
    def _labels_signature(self) -> str:
        table = find_labels_table(self.folder)
        if table is None:
            return ""
        try:
            st = table.stat()
        except OSError:
            return ""
        return f"{table}|{st.st_size}|{st.st_mtime_ns}"

    def _labels_for(self, todo: list[tuple[str, int, int]]) -> dict[str, LabelRow] | None:
        """The labels table rows for the files about to be read (None without a table)."""
        table = find_labels_table(self.folder)
        if table is None:
            self._db.set_meta("labels_error", "")
            return None
        try:
            rows = read_labels_table(table)
        except CxrError as exc:
            self._db.set_meta("labels_error", f"{table}\n{exc}")
            return None
        self._db.set_meta("labels_error", "")
        names = {Path(rel).name for rel, _, _ in todo}
        return {n: rows[n] for n in names if n in rows}

    # -- the tree ----------------------------------------------------------------------------
    def _load(self) -> None:
        kept, self.errors, self.duplicates = split_records(self.folder, self._db.records())
        labels_error = self._db.get_meta("labels_error") or ""
        if labels_error:
            table, sentence = labels_error.split("\n", 1)
            self.errors.insert(0, (Path(table), sentence))
        self._patients = build_tree(self.folder, kept)
        self._images = [img for p in self._patients for st in p.studies for se in st.series for img in se.images]

    def patients(self) -> list[PatientNode]:
        """Patients sorted by id, the unknown patient last; studies by date, series by number."""
        return list(self._patients)

    def images(self) -> list[CatalogImage]:
        """Every catalogued image, in tree order (each file once; duplicates and errors left out)."""
        return list(self._images)

    def search(self, text: str) -> list[PatientNode]:
        """Filter by patient id or name, study date or finding label (case-insensitive substring)."""
        return filter_tree(self._patients, text)

    def close(self) -> None:
        """Close the index. The tree already returned stays usable."""
        self._db.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _subset(labels: dict[str, LabelRow] | None, chunk: list[tuple[str, int, int]]) -> dict[str, LabelRow] | None:
    """Only the rows a chunk needs, so a worker is not sent a 100,000-row table."""
    if not labels:
        return None
    names = (Path(rel).name for rel, _, _ in chunk)
    return {n: labels[n] for n in names if n in labels}
