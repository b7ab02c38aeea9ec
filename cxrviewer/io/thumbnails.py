"""A disk cache of small display pictures for the study browser (Qt-free).

    cache = ThumbnailCache()                          # $CXRVIEWER_CACHE_DIR/thumbnails, 128 px
    picture = cache.thumbnail(path)                   # np.uint8 [h, w], max(h, w) <= 128
    for path, result in cache.generate_many(paths):   # as they complete, in any order
        ...                                           # result: np.ndarray, or an error sentence

A thumbnail is the display path at its defaults (`load_image`, then `to_display` with the file's
own VOI and MONOCHROME1 inverted), shrunk with `cv2.INTER_AREA` so its longer side is `max_side`
(never enlarged). It is stored as a grayscale PNG named after the file's absolute path, size,
mtime and `max_side`: a changed file gets a new thumbnail, and the stale one is deleted when the
new one is written. Writes are atomic, so several processes may share the cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrviewer.errors import CorruptImage, CxrError, MissingFile, first_line, reading
from cxrviewer.io.catalog_db import cache_dir
from cxrviewer.parallel import cpu_count, fork_context

DEFAULT_MAX_SIDE = 128
FORK_MIN_FILES = 4  # a fork pool starts in ~20 ms; one thumbnail of a 2k DICOM takes ~30-60 ms
SPAWN_MIN_FILES = 64  # a spawn pool costs ~1 s to start: only for folders (Qt loaded, threads running)
_CHUNK = 8

Result = np.ndarray | str


def thumbnails_dir() -> Path:
    """`<cache dir>/thumbnails` (`$CXRVIEWER_CACHE_DIR`, else `~/.cache/cxrviewer`)."""
    return cache_dir() / "thumbnails"


def shrink(picture: np.ndarray, max_side: int) -> np.ndarray:
    """`picture` resized with INTER_AREA so its longer side is `max_side`; smaller pictures unchanged."""
    import cv2

    rows, cols = picture.shape[:2]
    scale = max_side / max(rows, cols)
    if scale >= 1.0:
        return np.ascontiguousarray(picture)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # cv2 wants (width, height)
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def render_thumbnail(path: str | Path, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """A fresh thumbnail of `path` (no cache). Raises a `CxrError` subclass for a bad file."""
    from cxrviewer.imaging.voi import to_display
    from cxrviewer.io import load_image

    image = load_image(path, labels={})  # the pixels only: no labels table needed
    return shrink(to_display(image), max_side)


@dataclass
class ThumbnailCache:
    """Thumbnails of at most `max_side` pixels under `folder` (default: `thumbnails_dir()`)."""

    folder: Path = field(default_factory=thumbnails_dir)
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if int(self.max_side) < 1:
            raise ValueError(f"max_side must be at least 1 pixel, not {self.max_side}")
        self.max_side = int(self.max_side)

    # -- keys ---------------------------------------------------------------------------------
    def _prefix(self, path: Path) -> str:
        digest = hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()
        return f"{digest}-{self.max_side}-"

    def entry(self, path: str | Path) -> Path:
        """The cache file for `path` as it is on disk now. Raises `MissingFile` when it cannot be stat'ed."""
        path = Path(path).expanduser().absolute()
        with reading(path):
            st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise MissingFile(path, "this is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise MissingFile(path, "this is not a regular file")
        prefix = self._prefix(path)
        return self.folder / prefix[:2] / f"{prefix}{st.st_size}_{st.st_mtime_ns}.png"

    # -- reading and writing ------------------------------------------------------------------
    def cached(self, path: str | Path) -> np.ndarray | None:
        """The stored thumbnail if it is current, else None (never generates, never raises)."""
        try:
            return _read_png(self.entry(path))
        except CxrError:
            return None

    def thumbnail(self, path: str | Path) -> np.ndarray:
        """The thumbnail of `path` (uint8 [h, w]), generated and stored when missing or stale.

        Raises a `CxrError` subclass with a one-sentence message when the file cannot be shown.
        """
        entry = self.entry(path)
        picture = _read_png(entry)
        if picture is None:
            picture = render_thumbnail(path, self.max_side)
            self._store(entry, picture)
        return picture

    def _store(self, entry: Path, picture: np.ndarray) -> None:
        """Write atomically and delete stale siblings; a cache that cannot be written is not an error."""
        import cv2

        ok, data = cv2.imencode(".png", picture)
        if not ok:
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=entry.name, suffix=".tmp", dir=entry.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data.tobytes())
            os.replace(tmp, entry)
            prefix = "-".join(entry.name.split("-", 2)[:2]) + "-"  # digest-side-: every version of the file
            for old in entry.parent.glob(prefix + "*.png"):
                if old != entry:
                    old.unlink(missing_ok=True)
        except OSError:
            pass

    def clear(self) -> None:
        """Delete every stored thumbnail (of every size)."""
        for png in self.folder.glob("*/*.png"):
            png.unlink(missing_ok=True)

    # -- many at once -------------------------------------------------------------------------
    def generate_many(self, paths: Iterable[str | Path], workers: int | None = None, *,
                      start_method: str | None = None) -> Iterator[tuple[Path, Result]]:
        """Yield `(path, thumbnail or error sentence)` for every path, as each completes.

        Cached thumbnails come first, straight from disk; the rest are made in a process pool
        when that pays (`workers`: None = automatic, 1 = in this process). The pool is forked
        when that is safe (`cxrviewer.parallel.fork_context`); with Qt loaded or other threads
        running, a spawn pool is used for large batches only. A bad file yields its sentence;
        nothing raises out of the generator. Closing the generator early (`.close()`, or
        dropping it) cancels the thumbnails not yet started.
        """
        todo: list[Path] = []
        for raw in paths:
            path = Path(raw)
            try:
                picture = _read_png(self.entry(path))
            except CxrError as exc:
                yield path, exc.sentence
                continue
            if picture is None:
                todo.append(path)
            else:
                yield path, picture
        if not todo:
            return
        context = _pool_context(len(todo), workers, start_method)
        if context is None:
            for path in todo:
                yield path, _one(self, path)
            return
        n_workers = max(1, min(workers or min(cpu_count(), 8), len(todo)))
        yield from self._pooled(todo, context, n_workers)

    def _pooled(self, todo: list[Path], context, n_workers: int) -> Iterator[tuple[Path, Result]]:
        size = max(1, min(_CHUNK, len(todo) // (4 * n_workers)))  # small chunks early: results stream
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        pool = ProcessPoolExecutor(n_workers, mp_context=context)
        left: dict[Future, list[Path]] = {}
        try:
            with warnings.catch_warnings():  # 3.12+: "multi-threaded, fork()" (idle BLAS threads)
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                for chunk in chunks:
                    left[pool.submit(_chunk, self.folder, self.max_side, chunk)] = chunk
            while left:
                done, _ = wait(left, return_when=FIRST_COMPLETED)
                for fut in done:
                    chunk = left.pop(fut)
                    try:
                        results = fut.result()
                    except Exception:  # noqa: BLE001 - a broken pool: a worker died (out of memory?)
                        # not retried here: a file that kills a worker must not take this process down
                        results = [(p, CxrError(p, "the thumbnail process stopped while making this thumbnail "
                                                   "(the image may be too large or damaged)").sentence)
                                   for p in chunk]
                    yield from results
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _one(cache: ThumbnailCache, path: Path) -> Result:
    """One thumbnail, or the sentence that says why not (never raises for a bad file)."""
    try:
        return cache.thumbnail(path)
    except CxrError as exc:
        return exc.sentence
    except MemoryError:
        return CxrError(path, "the image is too large to make a thumbnail").sentence
    except Exception as exc:  # noqa: BLE001 - a decoder's own failure on a damaged file
        return CorruptImage(path, f"the image cannot be decoded ({first_line(exc)})").sentence


def _chunk(folder: Path, max_side: int, paths: list[Path]) -> list[tuple[Path, Result]]:
    """Worker side of `generate_many`."""
    cache = ThumbnailCache(folder, max_side)
    return [(path, _one(cache, path)) for path in paths]


def _read_png(entry: Path) -> np.ndarray | None:
    """A stored thumbnail, or None when absent or unreadable (a damaged entry is regenerated)."""
    import cv2

    try:
        data = np.fromfile(entry, dtype=np.uint8)
    except OSError:
        return None
    picture = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    return picture if picture is not None and picture.ndim == 2 and picture.dtype == np.uint8 else None


def _pool_context(n: int, workers: int | None, start_method: str | None):
    """The multiprocessing context for `n` thumbnails, or None to make them in this process."""
    import multiprocessing

    if workers == 1 or n < 2 or (workers is None and cpu_count() < 2):
        return None
    if start_method is not None:
        return multiprocessing.get_context(start_method)
    context = fork_context(n, FORK_MIN_FILES)
    if context is None and n >= SPAWN_MIN_FILES:
        context = multiprocessing.get_context("spawn")
    return context


def thumbnail(path: str | Path, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """`ThumbnailCache(max_side=max_side).thumbnail(path)` in the default cache folder."""
    return ThumbnailCache(max_side=max_side).thumbnail(path)


def generate_many(paths: Iterable[str | Path], workers: int | None = None,
                  max_side: int = DEFAULT_MAX_SIDE) -> Iterator[tuple[Path, Result]]:
    """`ThumbnailCache(max_side=max_side).generate_many(paths, workers)` in the default cache folder."""
    return ThumbnailCache(max_side=max_side).generate_many(paths, workers)
