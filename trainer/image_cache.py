"""A preprocessed-image cache so decoding is not the training bottleneck.

Each record's image is decoded once through the one preprocessing path (`spec`'s intensity step and
resize, `cxrviewer.models.preprocess`) and kept as an 8-bit picture at the model's input size in a
memory-mapped file; later epochs read 512x512 bytes instead of decoding a PNG or a DICOM. The
normalisation (mean/std, channel repeat) is applied when a batch is built.

Deviation from the inference path: the cached picture is rounded to 8 bits after resizing (the
inference path keeps the resized float), an error of at most 0.5/255 per pixel.

Files: `<folder>/<key>.pix` (uint8 [N, H, W]), `<key>.shape` (int32 [N, 2], the original rows and
columns, for box geometry) and `<key>.ok` (uint8 [N], 1 once a row is filled). The key hashes the
source, its image ids and the preprocessing fields, so a changed source or spec never reads stale
pictures. Rows are written by whichever data-loading process meets them first; processes share the
mapping, so a row is decoded once per machine, not once per worker.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrviewer.models.preprocess import Geometry, input_geometry, intensity_01, resize_to_input

if TYPE_CHECKING:
    from cxrviewer.models.spec import ModelSpec
    from cxrviewer.trainer.data.sources import DataSource


def default_cache_folder() -> Path:
    base = os.environ.get("CXRVIEWER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cxrviewer")
    return Path(base) / "trainer-images"


def geometry_for(shape: tuple[int, int], spec: "ModelSpec") -> Geometry:
    """The input->image geometry the spec's resize gives an image of `shape` (no pixels needed)."""
    return input_geometry(shape, spec.input_size, spec.resize)


def cache_key(source: "DataSource", spec: "ModelSpec") -> str:
    """Hash of what the pictures depend on: the source and its seed (synthetic lesions), each record's
    id, file, file size and modification time, boxes (synthetic lesions), and the preprocessing fields."""
    digest = hashlib.sha1()
    digest.update(f"{source.kind}|{source.root.resolve()}|{source.seed}|{spec.input_size}|{spec.intensity}|"
                  f"{spec.resize}|v1".encode())
    for record in source.records:
        stamp = ""
        if record.path is not None:
            try:
                info = os.stat(record.path)
                stamp = f"{info.st_size}:{info.st_mtime_ns}"
            except OSError:
                stamp = "missing"
        digest.update(f"{record.image_id}|{record.path}|{stamp}|{record.boxes}\0".encode())
    return digest.hexdigest()[:20]


class ImageCache:
    """8-bit pictures at the input size for every record of `source`, filled lazily."""

    def __init__(self, source: "DataSource", spec: "ModelSpec", folder: str | Path | None) -> None:
        self.source = source
        self.spec = spec
        self.size = tuple(spec.input_size)
        self.folder = Path(folder) if folder is not None else None
        self._pix: np.ndarray | None = None
        self._shape: np.ndarray | None = None
        self._ok: np.ndarray | None = None
        if self.folder is not None:
            self.key = cache_key(source, spec)
            self._open()

    def _open(self) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(self.source.records)
        h, w = self.size
        stem = self.folder / self.key
        self._pix = _memmap(stem.with_suffix(".pix"), np.uint8, (n, h, w))
        self._shape = _memmap(stem.with_suffix(".shape"), np.int32, (n, 2))
        self._ok = _memmap(stem.with_suffix(".ok"), np.uint8, (n,))

    def __getstate__(self) -> dict:
        # Worker processes (fork or spawn) reopen the mapping instead of pickling the arrays.
        state = dict(self.__dict__)
        state.update(_pix=None, _shape=None, _ok=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.folder is not None:
            self._open()

    def filled(self) -> int:
        return int(self._ok.sum()) if self._ok is not None else 0

    def picture(self, index: int) -> tuple[np.ndarray, Geometry]:
        """(uint8 [H, W] picture, geometry from input pixels to the original image) of record `index`."""
        if self._ok is not None and self._ok[index]:
            return np.array(self._pix[index]), geometry_for(tuple(self._shape[index]), self.spec)
        image = self.source.load_image(self.source.records[index])
        picture01 = intensity_01(image, self.spec.intensity)
        resized, geometry = resize_to_input(picture01, self.size, self.spec.resize)
        picture = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
        if self._ok is not None:
            self._pix[index] = picture
            self._shape[index] = geometry.image_shape
            self._ok[index] = 1
        return picture, geometry


def _memmap(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """Open (or create, zero-filled) a raw memory-mapped array; a wrong-sized file is recreated."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not path.exists() or path.stat().st_size != nbytes:
        with open(path, "wb") as f:
            f.truncate(nbytes)
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)
