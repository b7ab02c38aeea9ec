"""Evaluation metrics: per-class ROC AUC, box IoU and localization accuracy as in the papers.

    roc_auc(y_true [N], y_score [N]) -> float | None
    roc_auc_per_class(y_true [N, K], y_score [N, K], names) -> {name: float | None};  mean_auc(...)
    iou(box_a, box_b) -> float;  iou_matrix(a [N, 4], b [M, 4]) -> [N, M]
    localization_accuracy(records, thresholds=(0.1, ..., 0.7)) -> {"0.1": {"per_class", "mean"}, ...}

Boxes are ``(x0, y0, x1, y1)`` half-open pixel-edge boxes (`cxrviewer.explain.boxes.Box` or any
object with those attributes, or a sequence of four numbers): area ``(x1 - x0) * (y1 - y0)``, the
continuous convention of torchvision's ``box_iou``. numpy only: no scikit-learn at runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


# ------------------------------------------------------------------------------------------- AUC


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.concatenate(([0], np.flatnonzero(xs[1:] != xs[:-1]) + 1))
    ends = np.append(starts[1:], x.size)
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def known_labels(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D positive flags (bool) and scores (float64) with the NaN labels left out; checks the values."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {t.size} vs {s.size}")
    keep = ~np.isnan(t)
    t, s = t[keep], s[keep]
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (or NaN for missing)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return t == 1.0, s


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve of one class by the Mann-Whitney U statistic (ties count one half).

    Labels are 0/1 (bool, int or float); NaN labels (missing or uncertain) are left out. Returns
    None, *undefined*, when the remaining labels are all positive or all negative."""
    pos, s = known_labels(y_true, y_score)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    u = _average_ranks(s)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc_per_class(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """`roc_auc` of each column of ``[N, K]`` labels and scores, by class name (None: undefined,
    the class has only one label value in `y_true`)."""
    t, s = np.asarray(y_true), np.asarray(y_score)
    if t.ndim != 2 or t.shape != s.shape or t.shape[1] != len(names):
        raise ValueError(f"need [N, K] labels and scores with K = {len(names)} names, got {t.shape} and {s.shape}")
    return {name: roc_auc(t[:, k], s[:, k]) for k, name in enumerate(names)}


def mean_auc(aucs: Mapping[str, float | None]) -> float | None:
    """The mean over the classes whose AUC is defined; None if none is."""
    defined = [v for v in aucs.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def bootstrap_auc_ci(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str], *, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> tuple[dict[str, tuple[float, float] | None],
                                                                  tuple[float, float] | None]:
    """Percentile bootstrap intervals of each class's AUC and of the mean AUC over the classes.

    Images are resampled with replacement (the same resample for every class, so the mean's
    interval keeps the classes' correlation); a resample where a class has only one label value
    is skipped for that class (and for the mean). Returns ({class: (low, high) or None}, mean's
    (low, high) or None); None when fewer than half the resamples define the value.
    """
    t, s = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape or t.shape[1] != len(names):
        raise ValueError(f"need [N, K] labels and scores with K = {len(names)} names, got {t.shape} and {s.shape}")
    rng = np.random.default_rng(seed)
    n, k = t.shape
    values = np.full((n_boot, k), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        for j in range(k):
            auc = roc_auc(t[idx, j], s[idx, j])
            if auc is not None:
                values[b, j] = auc
    defined = [j for j in range(k) if roc_auc(t[:, j], s[:, j]) is not None]
    per_class = {name: _percentile_interval(values[:, j], n_boot, level) for j, name in enumerate(names)}
    means = values[:, defined].mean(axis=1) if defined else np.full(n_boot, np.nan)
    return per_class, _percentile_interval(means, n_boot, level)


def _percentile_interval(values: np.ndarray, n_boot: int, level: float) -> tuple[float, float] | None:
    """The central `level` percentile interval of bootstrap values (NaN = a resample that did not
    define the value); None when fewer than half of the `n_boot` resamples define it."""
    values = values[~np.isnan(values)]
    if values.size < n_boot / 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap_mean_auc_difference(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                                          names: Sequence[str], *, n_boot: int = 2000, level: float = 0.95,
                                          seed: int = 0) -> dict[str, Any]:
    """Mean AUC of scores A minus that of scores B on the same images, with a paired bootstrap interval.

    Both score sets are evaluated on the same resample of images each time, so the interval is that
    of the difference (narrower than comparing two independent intervals when A and B err on the same
    images). Classes with a single label value in the data are left out of both means. Returns
    {"difference", "ci": (low, high) or None, "p_a_better": share of resamples where A's mean is higher}.
    """
    t = np.asarray(y_true, dtype=np.float64)
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if t.ndim != 2 or a.shape != t.shape or b.shape != t.shape or t.shape[1] != len(names):
        raise ValueError(f"need [N, K] labels and two [N, K] scores with K = {len(names)} names, "
                         f"got {t.shape}, {a.shape} and {b.shape}")
    defined = [j for j in range(t.shape[1]) if roc_auc(t[:, j], a[:, j]) is not None]
    if not defined:
        return {"difference": None, "ci": None, "p_a_better": None}

    def mean_difference(idx: np.ndarray) -> float:
        """NaN when the resample leaves a class with one label value."""
        diffs = []
        for j in defined:
            auc_a, auc_b = roc_auc(t[idx, j], a[idx, j]), roc_auc(t[idx, j], b[idx, j])
            if auc_a is None or auc_b is None:
                return float("nan")
            diffs.append(auc_a - auc_b)
        return float(np.mean(diffs))

    rng = np.random.default_rng(seed)
    n = len(t)
    values = np.array([mean_difference(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    defined_values = values[~np.isnan(values)]
    return {"difference": mean_difference(np.arange(n)), "ci": _percentile_interval(values, n_boot, level),
            "p_a_better": float(np.mean(defined_values > 0)) if defined_values.size else None}


# ------------------------------------------------------------------------------------------- IoU


def _coords(box: Any) -> tuple[float, float, float, float]:
    if hasattr(box, "x0"):
        return float(box.x0), float(box.y0), float(box.x1), float(box.y1)
    x0, y0, x1, y1 = box
    return float(x0), float(y0), float(x1), float(y1)


def iou(box_a: Any, box_b: Any) -> float:
    """Intersection over union of two half-open boxes; 0.0 when the union is empty."""
    ax0, ay0, ax1, ay1 = _coords(box_a)
    bx0, by0, bx1, by1 = _coords(box_b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    area_a = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0)
    area_b = max(0.0, bx1 - bx0) * max(0.0, by1 - by0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` (x0, y0, x1, y1) -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# -------------------------------------------------------------------------- localization accuracy


class LocalizationRecord(NamedTuple):
    """One annotated box: the image, its class, the ground-truth box and the box predicted for that
    image and class (None: no box predicted, a miss)."""

    image_id: str
    class_name: str
    gt_box: Any
    pred_box: Any | None


def localization_records(ground_truth: Iterable[tuple[str, str, Any]],
                         predictions: Mapping[tuple[str, str], Any | None]) -> list[LocalizationRecord]:
    """Pair each ``(image_id, class_name, gt_box)`` with ``predictions[(image_id, class_name)]``
    (missing key: None). An image with several boxes of one class gives one record per box, each
    scored against the same prediction (NIH's box table lists such images once per box)."""
    return [LocalizationRecord(i, c, g, predictions.get((i, c))) for i, c, g in ground_truth]


def localization_accuracy(records: Iterable[tuple[str, str, Any, Any | None]],
                          thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, dict[str, Any]]:
    """Localization accuracy as in SCALP (Table II) and the NIH ChestX-ray8 protocol.

    For each record ``(image_id, class_name, gt_box, pred_box_or_None)`` the prediction is a hit at
    threshold T when ``IoU(pred, gt) > T``, strictly; no predicted box is a miss. Each ground-truth
    box is its own record, so an image with two boxes of one class counts twice. Per class, the
    accuracy is hits / records of that class; ``mean`` is the unweighted mean over the classes that
    have records (None when there are none). Keys are the thresholds as ``format(T, "g")`` ("0.1").
    """
    by_class: dict[str, list[float]] = {}
    for _image_id, class_name, gt_box, pred_box in records:
        by_class.setdefault(class_name, []).append(np.nan if pred_box is None else iou(pred_box, gt_box))
    ious = {name: np.asarray(v) for name, v in by_class.items()}  # NaN (no prediction) is never > T
    out: dict[str, dict[str, Any]] = {}
    for t in thresholds:
        per_class = {name: float(np.mean(v > t)) for name, v in ious.items()}
        out[format(t, "g")] = {"per_class": per_class,
                               "mean": float(np.mean(list(per_class.values()))) if per_class else None}
    return out
