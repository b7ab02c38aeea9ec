"""Operating thresholds and ROC curves from labels and probabilities.

    calibrate_thresholds(y_true [N, K], y_score [N, K], rule="youden") -> thresholds [K]
    roc_curve(y_true [N], y_score [N]) -> RocCurve(fpr, tpr, thresholds)
    operating_point(y_true [N], y_score [N], threshold) -> OperatingPoint(sensitivity, specificity)

A finding is called positive when ``probability >= threshold`` (as `cxrviewer.analysis.FindingResult`
does), so every candidate threshold is one of the observed scores: at threshold ``t`` the positives
are the scores ``>= t``. Labels are 0/1 with NaN for unknown (masked per class, as in
`cxrviewer.metrics`).

Rules: "youden" maximises Youden's J = sensitivity + specificity - 1 (= TPR - FPR); "f1" maximises
F1 = 2 TP / (2 TP + FP + FN). On a tie the highest threshold wins (the fewest positive calls). A
class whose known labels are all one value (or that has none) gets `fallback` (0.5).
The trainer writes the result into `spec.thresholds` (calibrated on the validation split).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cxrviewer.metrics import known_labels

RULES: tuple[str, ...] = ("youden", "f1")


class RocCurve(NamedTuple):
    """ROC points from (0, 0) to (1, 1); `thresholds[i]` gives point i (the first one is +inf)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class OperatingPoint(NamedTuple):
    threshold: float
    sensitivity: float | None  # None: no known positive
    specificity: float | None  # None: no known negative


def _cumulative(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct scores descending, TP and FP when calling ``score >= that value`` positive)."""
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last_of_value = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)  # end of each run of ties
    tp = np.cumsum(p)[last_of_value]
    fp = np.cumsum(~p)[last_of_value]
    return s[last_of_value], tp.astype(np.float64), fp.astype(np.float64)


def roc_curve(y_true: np.ndarray, y_score: np.ndarray, *, drop_intermediate: bool = False) -> RocCurve:
    """The ROC curve of one class (NaN labels left out); empty arrays when the known labels are all
    positive or all negative (the curve is undefined, as the AUC is).

    `drop_intermediate` leaves out the points in the middle of a straight vertical or horizontal run
    (the curve, and so its area, is unchanged): a compact curve for reports of large test sets."""
    positive, scores = known_labels(y_true, y_score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        empty = np.zeros(0, np.float64)
        return RocCurve(empty, empty, empty)
    values, tp, fp = _cumulative(positive, scores)
    tp, fp, values = np.concatenate([[0.0], tp]), np.concatenate([[0.0], fp]), np.concatenate([[np.inf], values])
    if drop_intermediate and tp.size > 2:
        bend = np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0)
        keep = np.concatenate([[True], bend, [True]])
        tp, fp, values = tp[keep], fp[keep], values[keep]
    return RocCurve(fp / n_neg, tp / n_pos, values)


def best_threshold(y_true: np.ndarray, y_score: np.ndarray, rule: str = "youden") -> float | None:
    """The score maximising `rule` for one class, or None when the known labels have one value."""
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule '{rule}' (known: {', '.join(RULES)})")
    positive, scores = known_labels(y_true, y_score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    values, tp, fp = _cumulative(positive, scores)
    if rule == "youden":
        objective = tp / n_pos - fp / n_neg
    else:
        objective = 2.0 * tp / (tp + fp + n_pos)  # 2TP / (2TP + FP + FN), FN = P - TP
    return float(values[int(np.argmax(objective))])  # argmax: the first (highest) of equal maxima


def calibrate_thresholds(y_true: np.ndarray, y_score: np.ndarray, rule: str = "youden",
                         fallback: float = 0.5) -> np.ndarray:
    """Per-class operating thresholds [K] (float64) from labels [N, K] (NaN unknown) and scores [N, K].

    Each column gets `best_threshold` under `rule`; a column with one label value gets `fallback`."""
    t, s = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"need labels and scores of one shape [N, K], got {t.shape} and {s.shape}")
    found = [best_threshold(t[:, k], s[:, k], rule) for k in range(t.shape[1])]
    return np.array([fallback if v is None else v for v in found], dtype=np.float64)


def operating_point(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> OperatingPoint:
    """Sensitivity and specificity of calling ``score >= threshold`` positive (NaN labels left out)."""
    positive, scores = known_labels(y_true, y_score)
    called = scores >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    sensitivity = float((called & positive).sum() / n_pos) if n_pos else None
    specificity = float((~called & ~positive).sum() / n_neg) if n_neg else None
    return OperatingPoint(float(threshold), sensitivity, specificity)
