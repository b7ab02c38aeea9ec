"""The rectangle steps of SCALP Algorithm 1 on a binary mask: the k largest all-ones rectangles
(dynamic programming) and the ratio-rule expansion. Rectangles are ``(x0, y0, x1, y1)`` ints,
half-open, in the mask's pixel-edge coordinates (as `cxrviewer.explain.boxes.Box`).

    largest_rectangles(mask, k=5) -> [(x0, y0, x1, y1), ...]
    expand_rectangles(mask, rects) -> [...];  expansion_steps(mask, rect) -> the accepted steps

How the k rectangles are found, exactly and without a per-pixel Python loop:

1. Every one-cell (i, j) gives the classic histogram ("maximal rectangle") DP candidate: bottom row
   i, height ``H[i, j]`` (the run of ones in column j ending at row i) and the widest column span
   around j whose heights are all ``>= H[i, j]``. That span is the intersection of the horizontal
   runs through column j over those rows, i.e. a segmented minimum, down each column, of the cell's
   distances to the two ends of its horizontal run. All of it is numpy over the ones only: run
   lengths by cumulative sums, the distances scattered from row-major to column-major order, the
   segmented minimum as one ``maximum.accumulate`` with per-run offsets. Candidates that the row
   below would extend, and repeats of one rectangle (kept at its left-most lowest column), are
   dropped: what is left is each maximal all-ones rectangle once.
2. The largest candidate (ties: top-most, then left-most, then the shorter) is the first answer.
3. Clearing a rectangle R from the working mask needs no new DP: an all-ones rectangle of the new
   mask lies in some old candidate C and misses R, so it lies in one of the (at most four) parts of
   C beyond one of R's edges (left of, right of, above, below R). Replacing each candidate that meets
   R by those parts keeps "every all-ones rectangle of the working mask is inside a candidate, and
   every candidate is all ones", so the largest candidate is again the largest rectangle of the
   working mask, with the same tie-break as a brute-force search. Repeat until k or no ones left.

Work arrays are kept per thread and reused between calls (`release_scratch` frees them): on a
virtual machine the page faults of fresh multi-megabyte arrays cost more than the arithmetic.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import numpy as np

Rect = tuple[int, int, int, int]


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}


_SCRATCH = _Scratch()


def scratch_array(name: str, shape: int | tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """A C-contiguous work array of this thread, reused across calls (contents are undefined)."""
    shape = (shape,) if isinstance(shape, int) else shape
    size, dt = math.prod(shape), np.dtype(dtype)
    buf = _SCRATCH.arrays.get(name)
    if buf is None or buf.dtype != dt or buf.size < size:
        buf = np.empty(max(size, 0 if buf is None else buf.size * 3 // 2), dt)
        _SCRATCH.arrays[name] = buf
    return buf[:size].reshape(shape)


def release_scratch() -> None:
    """Free this thread's work arrays."""
    _SCRATCH.arrays.clear()


def _arange(n: int) -> np.ndarray:
    buf = _SCRATCH.arrays.get("arange")
    if buf is None or buf.size < n:
        buf = np.arange(max(n, 0 if buf is None else buf.size * 3 // 2), dtype=np.int64)
        _SCRATCH.arrays["arange"] = buf
    return buf[:n]


def _as_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {m.shape}")
    return m if m.dtype == bool else m.astype(bool)


def _runs(grid: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat start positions and lengths of the runs of ones of a contiguous uint8 0/1 grid whose last
    element is 0 (a zero column on the right keeps runs from wrapping)."""
    flat = grid.ravel().view(bool)
    edges = np.flatnonzero(np.not_equal(flat[1:], flat[:-1], out=scratch_array(name, flat.size - 1, bool))) + 1
    if flat[0]:
        edges = np.concatenate(([0], edges))
    starts = edges[0::2]
    return starts, edges[1::2] - starts


def _ramp(lengths: np.ndarray, firsts: np.ndarray | int, step: int, name: str) -> np.ndarray:
    """Concatenated arithmetic runs: ``firsts[r] + step * t`` for t < lengths[r], run after run (one
    cumulative sum over a work array)."""
    n = int(lengths.sum())
    firsts = np.broadcast_to(firsts, lengths.shape)
    jumps = scratch_array("ramp", n, np.int64)
    jumps.fill(step)
    jumps[np.cumsum(lengths) - lengths] = firsts - np.concatenate(([0], firsts[:-1] + step * (lengths[:-1] - 1)))
    return np.cumsum(jumps, out=scratch_array(name, n, np.int64))


def _cell_candidates(m: np.ndarray) -> np.ndarray:
    """Step 1 of the module docstring: the maximal all-ones rectangles of the bool mask `m` (at least
    one one), as a (4, n) array of rows y0, x0, y1, x1."""
    import cv2

    h, w = m.shape
    if w >= 1 << 15:
        raise ValueError(f"mask too wide for the rectangle DP ({w} columns; at most 32767)")
    grid = scratch_array("grid", (h + 1, w + 1), np.uint8)  # zero last row and column: runs never join
    grid[:h, :w] = m
    grid[h, :], grid[:h, w] = 0, 0
    # row-major runs: each one's distances p, q (1-based) to its run's start and end, packed as
    # p * 2**16 + q, written straight to its place in the column-major grid
    starts, lengths = _runs(grid, "edges")
    row, col = np.divmod(starts, w + 1)
    to_t = _ramp(lengths, col * (h + 1) + row, h + 1, "to_t")
    packed_t = scratch_array("packed_t", (w + 1) * (h + 1), np.int32)  # only the ones' cells are read
    packed_t[to_t] = _ramp(lengths, (1 << 16) + lengths, (1 << 16) - 1, "packed")
    # column-major runs: the ones in column-major order and their heights H
    starts, lengths = _runs(cv2.transpose(grid, dst=scratch_array("grid_t", (w + 1, h + 1), np.uint8)), "edges")
    ft = _ramp(lengths, starts, 1, "ft")
    height = _ramp(lengths, 1, 1, "height")
    n = ft.size
    pq = np.take(packed_t, ft, out=scratch_array("pq", n, np.int32))
    pc = np.right_shift(pq, 16, out=scratch_array("pc", n, np.int64))
    qc = np.bitwise_and(pq, 0xFFFF, out=scratch_array("qc", n, np.int64))
    big = w + 2
    offset = np.subtract(_arange(n + 1)[1:], height, out=scratch_array("offset", n, np.int64))
    offset *= big  # constant within a vertical run, increasing from run to run
    spans = []
    for name, dist in (("min_p", pc), ("min_q", qc)):  # segmented minimum = max of (offset + big - d)
        t = np.subtract(big, dist, out=scratch_array(name, n, np.int64))
        t += offset
        np.maximum.accumulate(t, out=t)
        t -= offset
        spans.append(np.subtract(big, t, out=t))
    min_p, min_q = spans
    keep = np.ones(n, bool)  # drop a candidate when the next row's run covers its span
    keep[:-1] = (height[1:] == 1) | (pc[1:] < min_p[:-1]) | (qc[1:] < min_q[:-1])
    sel = np.flatnonzero(keep)
    col, row = np.divmod(ft[sel], h + 1)
    hs, ps = height[sel], min_p[sel]
    # the same rectangle comes from each column of its span where H is lowest: keep the left-most,
    # i.e. drop it where the left neighbour (inside the span, so H >= hs) is taller: cell above is one
    first = (ps == 1) | (grid[row - hs, col - 1] != 0)  # row -1 reads the zero padding
    sel, col, row, hs, ps = sel[first], col[first], row[first], hs[first], ps[first]
    cands = np.empty((4, sel.size), np.int64)
    cands[2] = row + 1
    cands[0] = cands[2] - hs
    cands[1] = col - ps + 1
    cands[3] = col + min_q[sel]
    return cands


def _hits(c: np.ndarray, r: Rect) -> np.ndarray:
    x0, y0, x1, y1 = r
    return (c[1] < x1) & (c[3] > x0) & (c[0] < y1) & (c[2] > y0)


def _parts(met: np.ndarray, r: Rect) -> np.ndarray:
    """The parts of each candidate (columns of `met`, all meeting `r`) left of, right of, above and
    below `r`."""
    x0, y0, x1, y1 = r
    left, right, top, bottom = met[:, met[1] < x0], met[:, met[3] > x1], met[:, met[0] < y0], met[:, met[2] > y1]
    np.minimum(left[3], x0, out=left[3])
    np.maximum(right[1], x1, out=right[1])
    np.minimum(top[2], y0, out=top[2])
    np.maximum(bottom[0], y1, out=bottom[0])
    return np.concatenate((left, right, top, bottom), axis=1)


def _area(c: np.ndarray) -> np.ndarray:
    return (c[2] - c[0]) * (c[3] - c[1])


def _remove(c: np.ndarray, r: Rect) -> np.ndarray:
    """Step 3 of the module docstring: the candidates meeting `r` replaced by their parts beside it."""
    hit = _hits(c, r)
    if not hit.any():
        return c
    return np.concatenate((c[:, ~hit], _parts(c[:, hit], r)), axis=1)


_ACTIVE = 512  # candidates searched first; the smaller ones join only if they may matter


def largest_rectangles(mask: np.ndarray, k: int = 5) -> list[Rect]:
    """The k largest disjoint all-ones rectangles, greedily: the maximum-area all-ones rectangle of the
    working mask, whose cells are then cleared, until `k` rectangles or no ones are left. Ties go to
    the top-most, then left-most, then shorter rectangle. Returns ``(x0, y0, x1, y1)`` half-open.

    Only the `_ACTIVE` largest candidates (and their parts) are searched while the largest of them
    is at least as large as every candidate held back (parts are never larger than their candidate);
    when it is not, the held-back candidates are cut by the rectangles found so far and join. The
    result is the same as searching all candidates throughout."""
    m = _as_mask(mask)
    if k <= 0 or not m.any():
        return []
    pool = _cell_candidates(m)  # spent candidates stay, with area 0; their parts go to `parts`
    area = _area(pool)
    held, bound = None, 0  # held back: candidates with area < bound
    if area.size > _ACTIVE:
        bound = int(np.partition(area, area.size - _ACTIVE)[area.size - _ACTIVE])
        small = area < bound
        if small.any():
            held, pool, area = pool[:, small], pool[:, ~small], area[~small]
    parts = np.empty((4, 0), np.int64)
    parts_area = _area(parts)
    out: list[Rect] = []
    while len(out) < k:
        best = max(int(area.max()) if area.size else 0, int(parts_area.max()) if parts_area.size else 0)
        if held is not None and best < bound:
            for r in out:
                held = _remove(held, r)
            parts = np.concatenate((parts, held), axis=1)
            parts_area, held = _area(parts), None
            continue
        if best <= 0:
            break
        ties = np.concatenate((pool[:, area == best], parts[:, parts_area == best]), axis=1)
        for row in (0, 1, 2):  # top-most, then left-most, then shorter
            ties = ties[:, ties[row] == ties[row].min()]
        y0, x0, y1, x1 = (int(v) for v in ties[:, 0])
        r = (x0, y0, x1, y1)
        out.append(r)
        hit = _hits(pool, r) & (area > 0)
        cut = _parts(pool[:, hit], r)
        area[hit] = 0
        parts = np.concatenate((_remove(parts, r), cut), axis=1)
        parts_area = _area(parts)
    return out


_SIDES = ("top", "bottom", "left", "right")


def _integral(m: np.ndarray) -> np.ndarray:
    import cv2

    h, w = m.shape
    if m.strides[1] != 1:  # OpenCV takes rows with a stride, not scattered columns
        m = np.ascontiguousarray(m)
    return cv2.integral(m.view(np.uint8), sum=scratch_array("integral", (h + 1, w + 1), np.int32))


def _expand(ones_at: np.ndarray, rect: Rect) -> Iterator[tuple[str, Rect, int, int]]:
    h, w = ones_at.shape[0] - 1, ones_at.shape[1] - 1
    s = ones_at.item  # ones in rows [a, b) x cols [c, d) = s(b, d) - s(a, d) - s(b, c) + s(a, c)
    x0, y0, x1, y1 = rect
    growing = list(_SIDES)
    while growing:
        for side in tuple(growing):
            if side == "top":
                a, b, c, d = y0 - 1, y0, x0, x1
            elif side == "bottom":
                a, b, c, d = y1, y1 + 1, x0, x1
            elif side == "left":
                a, b, c, d = y0, y1, x0 - 1, x0
            else:
                a, b, c, d = y0, y1, x1, x1 + 1
            if a < 0 or b > h or c < 0 or d > w:
                growing.remove(side)
                continue
            ones = s(b, d) - s(a, d) - s(b, c) + s(a, c)
            zeros = (b - a) * (d - c) - ones
            if zeros > ones:
                growing.remove(side)
                continue
            y0, y1, x0, x1 = min(a, y0), max(b, y1), min(c, x0), max(d, x1)
            yield side, (x0, y0, x1, y1), zeros, ones


def _check_rect(m: np.ndarray, rect: Rect) -> None:
    x0, y0, x1, y1 = rect
    if not (0 <= x0 < x1 <= m.shape[1] and 0 <= y0 < y1 <= m.shape[0]):
        raise ValueError(f"rectangle {rect} is empty or outside the {m.shape[1]}x{m.shape[0]} mask")


def expansion_steps(mask: np.ndarray, rect: Rect) -> Iterator[tuple[str, Rect, int, int]]:
    """The accepted steps of the SCALP expansion, as ``(side, rect after the step, zeros, ones)``.

    In rounds, each still-growing side in the order top, bottom, left, right looks at the strip of
    pixels that moving it out by one pixel would add (against the current rectangle, so a corner
    pixel is counted by the side that reaches it first). The step is taken when the strip has
    ``zeros <= ones`` (the paper stops at ``ratio(0s, 1s) > 1``); otherwise, or at the mask's border,
    that side stops for good. It ends when every side has stopped.
    """
    m = _as_mask(mask)
    _check_rect(m, rect)
    return _expand(_integral(m).copy(), rect)


def expand_rectangles(mask: np.ndarray, rects: list[Rect]) -> list[Rect]:
    """Each rectangle after the SCALP expansion (see `expansion_steps`), all in the original mask.
    Growth never leaves the bounding box of the mask's ones (a strip outside it is all zeros), so a
    crop to that box gives the same result."""
    if not rects:
        return []
    m = _as_mask(mask)
    ones_at = _integral(m)
    out = []
    for rect in rects:
        _check_rect(m, rect)
        final = rect
        for _, final, _, _ in _expand(ones_at, rect):
            pass
        out.append(final)
    return out
