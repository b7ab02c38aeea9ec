"""Perceptual codes for CIA-Net's negative matching: a DCT perceptual hash with Hamming distance,
and the paper's own 16x16 thumbnail code with cosine distance.

- `phash(image, hash_size=16)`: the classic DCT pHash. The picture is turned to grey (mean over
  channels), min-max normalised to [0, 1], resized to (4 * hash_size)^2 (area averaging), transformed
  with an orthonormal 2-D DCT-II; the top-left hash_size x hash_size low-frequency block is compared
  with its median, giving hash_size^2 bits (256 for the default). The min-max step makes the hash
  independent of any increasing affine intensity map, so the hash of a normalised model input
  ((picture - mean) / std) equals the hash of the 8-bit picture it came from: the model can hash
  its own input tensor without knowing the spec's mean/std, and the trainer hashes its uint8
  pictures with this same function.
- `thumbnail_code(image, size=16)` + `cosine_distance_matrix`: what CIA-Net itself describes
  (Sec. 4.3.2: "resizing all ... negative images to 16x16 and flattening them ... choose the
  nearest hash code based on cosine distance"), on the same min-max normalised grey picture.

numpy + OpenCV only; no torch, so the trainer's data loaders can use it in worker processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import cv2
import numpy as np

HIGHFREQ_FACTOR = 4


def grey01(image: np.ndarray) -> np.ndarray:
    """A 2-D float32 picture in [0, 1] from [H, W], [C, H, W] (C in 1, 3) or [H, W, C] (C in 1, 3, 4),
    min-max normalised (a constant picture gives zeros)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        if a.shape[0] in (1, 3):
            a = a.mean(axis=0)
        elif a.shape[-1] in (1, 3, 4):
            a = a[..., :3].mean(axis=-1)
        else:
            raise ValueError(f"cannot tell the channel axis of an image of shape {a.shape}")
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"expected a 2-D picture (optionally with channels), got shape {np.shape(image)}")
    if not np.all(np.isfinite(a)):
        raise ValueError("the picture contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def _resize(picture: np.ndarray, n: int) -> np.ndarray:
    rows, cols = picture.shape
    interp = cv2.INTER_AREA if (rows >= n and cols >= n) else cv2.INTER_LINEAR
    return cv2.resize(picture, (n, n), interpolation=interp)


@lru_cache(maxsize=8)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (D @ x is the DCT of the column vector x)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    d.setflags(write=False)
    return d


def phash(image: np.ndarray, hash_size: int = 16) -> np.ndarray:
    """The DCT perceptual hash of a picture: bool array of hash_size**2 bits (256 by default)."""
    if hash_size < 2:
        raise ValueError("hash_size must be at least 2")
    n = hash_size * HIGHFREQ_FACTOR
    small = _resize(grey01(image), n).astype(np.float64)
    d = _dct_matrix(n)
    low = (d @ small @ d.T)[:hash_size, :hash_size]
    return (low > np.median(low)).ravel()


def phash_batch(images: Iterable[np.ndarray], hash_size: int = 16) -> np.ndarray:
    """[N, hash_size**2] bool: one hash per picture."""
    hashes = [phash(image, hash_size) for image in images]
    if not hashes:
        return np.zeros((0, hash_size * hash_size), dtype=bool)
    return np.stack(hashes)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray | int:
    """Number of differing bits along the last axis (broadcasting); an int for two single hashes."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"hashes of different lengths ({a.shape[-1]} and {b.shape[-1]} bits)")
    d = np.count_nonzero(a != b, axis=-1)
    return int(d) if np.ndim(d) == 0 else d


def hamming_matrix(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """[Q, N] Hamming distances between hashes [Q, bits] and [N, bits]."""
    q, b = np.atleast_2d(queries).astype(bool), np.atleast_2d(bank).astype(bool)
    return hamming(q[:, None, :], b[None, :, :])


def thumbnail_code(image: np.ndarray, size: int = 16) -> np.ndarray:
    """CIA-Net's matching code (Sec. 4.3.2): the min-max normalised grey picture resized to
    size x size and flattened, float32 [size**2]."""
    return _resize(grey01(image), size).astype(np.float32).ravel()


def cosine_distance_matrix(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """[Q, N] cosine distances (1 - cosine similarity) between codes [Q, D] and [N, D]."""
    q = np.atleast_2d(queries).astype(np.float64)
    b = np.atleast_2d(bank).astype(np.float64)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return 1.0 - qn @ bn.T


def nearest(queries: np.ndarray, bank: np.ndarray, metric: str = "hamming") -> np.ndarray:
    """Index of the nearest bank code for each query ([Q] int64; ties go to the lowest index).
    `metric`: "hamming" (pHash bits) or "cosine" (thumbnail codes)."""
    if len(np.atleast_2d(bank)) == 0:
        raise ValueError("the bank is empty")
    if metric == "hamming":
        dist = hamming_matrix(queries, bank)
    elif metric == "cosine":
        dist = cosine_distance_matrix(queries, bank)
    else:
        raise ValueError(f"unknown metric '{metric}' (hamming or cosine)")
    return np.argmin(dist, axis=1).astype(np.int64)
