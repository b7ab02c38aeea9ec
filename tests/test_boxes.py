"""Box generation: SCALP Algorithm 1 against brute force, Talasila et al.'s contour boxes, the
threshold baseline, and the exact box mapping."""

from __future__ import annotations

import threading
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cxrviewer.explain import boxes as B
from cxrviewer.explain import rectangles as R

# ------------------------------------------------------------------------------------- reference


def _prefix(m: np.ndarray) -> np.ndarray:
    p = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64)
    p[1:, 1:] = m.astype(np.int64).cumsum(0).cumsum(1)
    return p


def _ones(p: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> int:
    return int(p[y1, x1] - p[y0, x1] - p[y1, x0] + p[y0, x0])


def brute_best(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """The maximum-area all-ones rectangle over *all* rectangles (2-D prefix sums), ties: top-most,
    left-most, shorter; (x0, y0, x1, y1) or None."""
    h, w = m.shape
    p = _prefix(m)
    y0, y1 = np.triu_indices(h + 1, 1)
    x0, x1 = np.triu_indices(w + 1, 1)
    ya, yb, xa, xb = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    full = (p[yb, xb] - p[ya, xb] - p[yb, xa] + p[ya, xa]) == (yb - ya) * (xb - xa)
    if not full.any():
        return None
    i, j = np.nonzero(full)
    area = (y1[i] - y0[i]) * (x1[j] - x0[j])
    best = area == area.max()
    i, j = i[best], j[best]
    o = np.lexsort((y1[i], x0[j], y0[i]))[0]
    return int(x0[j[o]]), int(y0[i[o]]), int(x1[j[o]]), int(y1[i[o]])


def _area(r: tuple[int, int, int, int]) -> int:
    return (r[2] - r[0]) * (r[3] - r[1])


def _all_ones(m: np.ndarray, r: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = r
    return x1 > x0 and y1 > y0 and bool(m[y0:y1, x0:x1].all())


@st.composite
def masks(draw: st.DrawFn, max_side: int = 14) -> np.ndarray:
    """Noise masks, or unions of random rectangles (blob-like), up to max_side x max_side."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    if draw(st.booleans()):
        return draw(hnp.arrays(bool, (h, w)))
    m = np.zeros((h, w), bool)
    for _ in range(draw(st.integers(0, 5))):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        m[y0:draw(st.integers(y0 + 1, h)), x0:draw(st.integers(x0 + 1, w))] = True
    return m


# ------------------------------------------------------------------------------- the rectangle DP


@settings(max_examples=300, deadline=None)
@given(masks())
def test_first_rectangle_is_the_brute_force_maximum(m):
    got = R.largest_rectangles(m, 1)
    want = brute_best(m)
    if want is None:
        assert got == []
        return
    assert _all_ones(m, got[0])
    assert _area(got[0]) == _area(want)
    assert got[0] == want  # same tie-break: top-most, left-most, shorter


@settings(max_examples=300, deadline=None)
@given(masks(), st.integers(1, 8), st.sampled_from([1, 3, 512]))
def test_k_candidates_are_greedy_disjoint_maxima_of_the_working_mask(m, k, active):
    with mock.patch.object(R, "_ACTIVE", active):  # few active candidates: the held-back ones must join
        got = R.largest_rectangles(m, k)
    work = m.copy()
    for i, r in enumerate(got):
        assert _all_ones(work, r), (i, r)  # all ones in the working mask at its time (hence disjoint)
        assert r == brute_best(work)  # the i-th has the maximum area once the previous are removed
        x0, y0, x1, y1 = r
        work[y0:y1, x0:x1] = False
    assert len(got) == k or not work.any()  # stops only at k or when no ones are left


def _stack_max_area(m: np.ndarray) -> int:
    """The textbook O(n^2) histogram + stack maximal rectangle (area only), pure Python."""
    best, heights = 0, [0] * m.shape[1]
    for row in m:
        heights = [hh + 1 if v else 0 for hh, v in zip(heights, row)]
        stack: list[int] = []
        for j, hh in enumerate([*heights, 0]):
            while stack and heights[stack[-1]] >= hh:
                top = heights[stack.pop()]
                best = max(best, top * (j - (stack[-1] + 1 if stack else 0)))
            stack.append(j)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_rectangles_on_larger_maps_match_the_stack_dp(seed):
    rng = np.random.default_rng(seed)
    import cv2

    small = rng.random((6, 6)).astype(np.float32)
    heat = cv2.resize(small, (61, 47), interpolation=cv2.INTER_LINEAR)
    for m in (heat > np.quantile(heat, 0.7), rng.random((40, 33)) < 0.8):
        work = m.copy()
        got = R.largest_rectangles(m, 5)
        with mock.patch.object(R, "_ACTIVE", 10):
            assert R.largest_rectangles(m, 5) == got
        for r in got:
            assert _all_ones(work, r) and _area(r) == _stack_max_area(work)
            work[r[1]:r[3], r[0]:r[2]] = False


@settings(max_examples=300, deadline=None)
@given(masks(), st.data())
def test_expansion_never_adds_a_strip_with_more_zeros_than_ones(m, data):
    h, w = m.shape
    if data.draw(st.booleans()) and m.any():
        rect = R.largest_rectangles(m, 1)[0]
    else:
        x0, y0 = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
        rect = (x0, y0, data.draw(st.integers(x0 + 1, w)), data.draw(st.integers(y0 + 1, h)))
    p = _prefix(m)
    prev = rect
    for side, cur, zeros, ones in R.expansion_steps(m, rect):
        grown = [a != b for a, b in zip(prev, cur)]
        assert sum(grown) == 1 and grown[("left", "top", "right", "bottom").index(side)]
        strip_ones = _ones(p, *cur) - _ones(p, *prev)
        strip_size = _area(cur) - _area(prev)
        assert (zeros, ones) == (strip_size - strip_ones, strip_ones)
        assert zeros <= ones
        prev = cur
    assert R.expand_rectangles(m, [rect]) == [prev]


def test_expansion_grows_over_a_mostly_filled_blob():
    m = np.zeros((10, 10), bool)
    m[2:8, 2:8] = True
    m[2, 3] = False  # one hole in the top row: 5 ones vs 1 zero, accepted
    assert R.expand_rectangles(m, [(4, 4, 6, 6)]) == [(2, 2, 8, 8)]


# ------------------------------------------------------------------------------ the SCALP method


def _gauss(shape, cy, cx, sigma, amp=1.0):
    y, x = np.mgrid[:shape[0], :shape[1]]
    return amp * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("cy,cx,sigma", [(20, 30, 6), (5, 5, 3), (50, 10, 9), (31.5, 31.5, 4)])
def test_single_blob_box_contains_the_peak(cy, cx, sigma):
    heat = _gauss((64, 64), cy, cx, sigma)
    (box,) = B.boxes_from_heatmap(heat)
    py, px = np.unravel_index(np.argmax(heat), heat.shape)
    assert box.x0 <= px < box.x1 and box.y0 <= py < box.y1
    assert 0.6 < box.score <= 1


def test_the_brighter_of_two_blobs_wins_even_when_smaller():
    heat = _gauss((80, 120), 40, 30, 6, amp=1.0) + _gauss((80, 120), 40, 85, 12, amp=0.8)
    boxes = B.scalp_boxes(heat, top=None)
    assert len(boxes) >= 2
    best = boxes[0]
    assert best.x1 <= 60  # the bright blob (x = 30), not the larger dim one (x = 85)
    assert best.area < max(b.area for b in boxes)
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    assert B.scalp_boxes(heat) == [best]


@pytest.mark.parametrize("method", sorted(B.BOX_METHODS))
def test_constant_map_gives_no_box(method):
    assert B.boxes_from_heatmap(np.full((16, 16), 0.3), method=method) == []
    assert B.boxes_from_heatmap(np.zeros((4, 4)), method=method) == []


def test_threshold_is_strictly_greater_on_the_scaled_map():
    heat = np.zeros((8, 8))
    heat[0, 0] = 255.0  # min 0, max 255: scaled values are the values themselves
    heat[4:6, 4:6] = 180.0
    assert B.threshold_mask(heat, 180).sum() == 1
    assert B.scalp_boxes(heat)[0].as_tuple() == (0, 0, 1, 1)
    assert B.threshold_boxes(heat)[0].as_tuple() == (0, 0, 1, 1)
    heat[4:6, 4:6] = 181.0
    assert B.threshold_mask(heat, 180).sum() == 5
    assert B.threshold_boxes(heat)[0].as_tuple() == (0, 0, 6, 6)
    # 180 of 255 after min-max scaling of another range: (v - 10) * 255 / 255 with v = 190
    heat = np.array([[10.0, 190.0, 191.0, 265.0]])
    assert B.threshold_mask(heat, 180).tolist() == [[False, False, True, True]]


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.floats(-1e6, 1e6, width=32)),
       st.one_of(st.sampled_from([0.0, 127.0, 180.0, 254.9, 255.0]), st.floats(-1, 300)))
def test_threshold_mask_equals_the_scaled_comparison(heat, threshold):
    lo, hi = float(heat.min()), float(heat.max())
    got = B.threshold_mask(heat, threshold)
    if lo == hi:
        assert got is None
        return
    scaled = (heat.astype(np.float64) - lo) * 255.0 / (hi - lo)
    np.testing.assert_array_equal(got, scaled > threshold)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="2-D"):
        B.boxes_from_heatmap(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        B.boxes_from_heatmap(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="unknown box method 'nope'"):
        B.boxes_from_heatmap(np.zeros((2, 2)), method="nope")


def test_registry_registers_by_name_once():
    assert {"scalp", "talasila", "threshold"} <= set(B.BOX_METHODS)
    with pytest.raises(ValueError, match="already registered"):
        B.register_box_method("scalp")(B.scalp_boxes)

    @B.register_box_method("test-whole-map")
    def whole(heatmap, **_):
        return [B.Box(0, 0, heatmap.shape[1], heatmap.shape[0], 1.0)]

    try:
        assert B.boxes_from_heatmap(np.zeros((3, 5)), method="test-whole-map") == [B.Box(0, 0, 5, 3, 1.0)]
    finally:
        del B.BOX_METHODS["test-whole-map"]


def test_scalp_is_the_same_in_threads():
    rng = np.random.default_rng(3)
    import cv2

    maps = [cv2.resize(rng.random((8, 8)).astype(np.float32), (96, 128)) for _ in range(24)]
    want = [B.scalp_boxes(h, top=None) for h in maps]
    got: dict[int, list[B.Box]] = {}

    def work(i: int) -> None:
        for j in range(i, len(maps), 4):
            got[j] = B.scalp_boxes(maps[j], top=None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[j] for j in range(len(maps))] == want


# ------------------------------------------------------------------- Talasila and the baseline


def test_talasila_returns_the_exact_rectangles_of_two_blobs():
    heat = np.zeros((40, 60), np.float32)
    heat[5:15, 8:30] = 0.9  # 22 x 10 = 220 px
    heat[20:36, 40:52] = 1.0  # 12 x 16 = 192 px
    boxes = B.boxes_from_heatmap(heat, method="talasila")
    assert [b.as_tuple() for b in boxes] == [(8, 5, 30, 15), (40, 20, 52, 36)]  # largest first
    assert boxes[0].score == pytest.approx(int(0.9 * 255) / 255) and boxes[1].score == 1.0
    assert B.talasila_boxes(heat, top=1) == boxes[:1]
    heat[5:15, 8:30] = 0.49  # 124 after scaling: below 127, gone
    assert [b.as_tuple() for b in B.talasila_boxes(heat)] == [(40, 20, 52, 36)]


def test_threshold_baseline_boxes_everything_above():
    heat = np.zeros((30, 30))
    heat[2:4, 3:5] = 1.0
    heat[20:25, 10:12] = 0.9
    (box,) = B.boxes_from_heatmap(heat, method="threshold")
    assert box.as_tuple() == (3, 2, 12, 25)
    assert B.threshold_boxes(heat, threshold=240)[0].as_tuple() == (3, 2, 5, 4)


# ------------------------------------------------------------------------------------- mapping


def test_a_box_covering_the_map_maps_to_the_whole_image():
    whole = B.Box(0, 0, 7, 7, 0.5)
    assert B.scale_box(whole, (7, 7), (1024, 1024)) == B.Box(0, 0, 1024, 1024, 0.5)
    assert B.scale_box(B.Box(0, 0, 16, 12), (12, 16), (2500, 2048)).as_tuple() == (0, 0, 2048, 2500)
    # one heatmap pixel is an exact block of image pixels, no rounding
    assert B.scale_box(B.Box(3, 1, 4, 2), (7, 7), (224, 224)).as_tuple() == (96, 32, 128, 64)


def test_mapping_composes_resize_then_crop():
    # heatmap 7x7 on a 224x224 centre crop of the image resized to 256x256; the image is 1000x800 (h x w)
    heat_to_input = B.resize_transform((7, 7), (224, 224))
    input_to_resized = (1.0, 1.0, 16.0, 16.0)
    resized_to_image = B.resize_transform((256, 256), (1000, 800))
    t = B.compose_transforms(B.compose_transforms(heat_to_input, input_to_resized), resized_to_image)
    box = B.Box(1, 2, 5, 7, 0.8)
    step = B.map_box(B.map_box(B.map_box(box, heat_to_input), input_to_resized), resized_to_image)
    assert B.map_box(box, t).as_tuple() == pytest.approx(step.as_tuple())
    assert B.map_box(box, t).as_tuple() == pytest.approx((150.0, 312.5, 550.0, 937.5))
    assert B.map_box(box, t).score == 0.8
    assert B.map_box(B.Box(0, 0, 7, 7), t).as_tuple() == pytest.approx((50.0, 62.5, 750.0, 937.5))


def test_a_flip_keeps_the_edges_ordered():
    box = B.map_box(B.Box(1, 2, 3, 5), (-1.0, 1.0, 10.0, 0.0))  # horizontal flip of a 10-wide map
    assert box.as_tuple() == (7, 2, 9, 5)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=24),
                  elements=st.floats(0, 1, width=32)))
def test_talasila_matches_the_8bit_threshold_contour_pipeline(heat):
    import cv2

    lo, hi = float(heat.min()), float(heat.max())
    got = B.talasila_boxes(heat)
    if lo == hi:
        assert got == []
        return
    u8 = np.clip((heat.astype(np.float64) - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 127, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    want = sorted((cv2.boundingRect(c) for c in contours), key=lambda r: -r[2] * r[3])
    assert sorted((b.x0, b.y0, b.width, b.height) for b in got) == sorted(want)
    for b in got:
        x0, y0, x1, y1 = (int(v) for v in b.as_tuple())
        assert b.score == pytest.approx(u8[y0:y1, x0:x1].mean() / 255)
