"""Metrics against reference implementations (scikit-learn's AUC, torchvision's box IoU) and
hand-made localization cases, including the strict ">" at exactly T."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrviewer.explain.boxes import Box
from cxrviewer.metrics import (
    IOU_THRESHOLDS,
    iou,
    iou_matrix,
    localization_accuracy,
    localization_records,
    mean_auc,
    roc_auc,
    roc_auc_per_class,
)
from tests.conftest import REPO

# ------------------------------------------------------------------------------------------- AUC


@pytest.mark.parametrize("seed", range(10))
def test_auc_matches_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = (rng.random((n, 4)) < [0.1, 0.5, 0.9, 0.3]).astype(int)
    y[:2, :] = [[0] * 4, [1] * 4]  # both labels present in every column
    scores = np.round(rng.random((n, 4)) * rng.integers(2, 20), 0) / 7  # few distinct values: many ties
    scores[:, 3] = y[:, 3] * 0.5 + rng.random(n)  # informative column
    aucs = roc_auc_per_class(y, scores, ["a", "b", "c", "d"])
    for k, name in enumerate("abcd"):
        assert aucs[name] == pytest.approx(roc_auc_score(y[:, k], scores[:, k]), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_sklearn_on_small_tied_samples(pairs):
    from sklearn.metrics import roc_auc_score

    y = np.array([p[0] for p in pairs], int)
    s = np.array([p[1] for p in pairs], float)
    got = roc_auc(y, s)
    if y.min() == y.max():
        assert got is None
    else:
        assert got == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_known_values_and_undefined_classes():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([0, 1], [0.2, 0.2]) == 0.5
    y = np.array([[0, 1, 1], [1, 1, 0], [0, 1, np.nan], [1, 1, np.nan]])
    s = np.array([[0.1, 0.3, 0.9], [0.7, 0.2, 0.1], [0.3, 0.5, 0.0], [0.9, 0.1, 0.0]])
    aucs = roc_auc_per_class(y, s, ["Mass", "Nodule", "Effusion"])
    assert aucs == {"Mass": 1.0, "Nodule": None, "Effusion": 1.0}  # NaN labels are left out
    assert mean_auc(aucs) == 1.0
    assert mean_auc({"Mass": None, "Nodule": None}) is None
    assert mean_auc({"a": 0.5, "b": None, "c": 1.0}) == 0.75


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.1, np.inf])
    with pytest.raises(ValueError, match="K = 2"):
        roc_auc_per_class(np.zeros((3, 3)), np.zeros((3, 3)), ["a", "b"])


def test_metrics_do_not_import_sklearn():
    code = "import sys, cxrviewer.metrics; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------------------- IoU


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.integers(0, 50, (n, 2)).astype(float)
    wh = rng.integers(0, 30, (n, 2)).astype(float)  # zero-size boxes included
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_iou_matrix_matches_torchvision(seed):
    import torch
    from torchvision.ops import box_iou

    rng = np.random.default_rng(seed)
    a, b = _random_boxes(rng, 17), _random_boxes(rng, 11)
    a[0] = b[0]  # one identical pair
    want = box_iou(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    want = np.nan_to_num(want, nan=0.0)  # torchvision divides 0 by 0 for two empty boxes
    got = iou_matrix(a, b)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0, 0] == 1.0 or (a[0, 2] - a[0, 0]) * (a[0, 3] - a[0, 1]) == 0
    for i in range(len(a)):
        for j in range(len(b)):
            assert iou(a[i], b[j]) == pytest.approx(got[i, j], abs=1e-12)


def test_iou_hand_made_and_box_objects():
    assert iou(Box(0, 0, 2, 2), Box(1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert iou((0, 0, 2, 1), (0, 0, 1, 1)) == 0.5
    assert iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching half-open boxes share no pixel
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert iou_matrix(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)


# ------------------------------------------------------------------------- localization accuracy


def test_localization_accuracy_strictly_greater_than_t():
    gt = (0, 0, 10, 1)  # area 10
    records = [
        ("img1", "Mass", gt, (0, 0, 1, 1)),  # IoU = 1/10 = 0.1 exactly: a miss at T = 0.1
        ("img2", "Mass", gt, (0, 0, 2, 1)),  # 0.2
        ("img3", "Mass", gt, (0, 0, 7, 1)),  # 0.7 exactly: a miss at T = 0.7
        ("img4", "Mass", gt, None),  # no box: a miss everywhere
        ("img5", "Nodule", (0, 0, 2, 1), (0, 0, 1, 1)),  # 0.5 exactly
    ]
    acc = localization_accuracy(records)
    assert list(acc) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    assert acc["0.1"]["per_class"] == {"Mass": 0.5, "Nodule": 1.0}  # 0.2 and 0.7 > 0.1
    assert acc["0.2"]["per_class"] == {"Mass": 0.25, "Nodule": 1.0}
    assert acc["0.4"]["per_class"] == {"Mass": 0.25, "Nodule": 1.0}
    assert acc["0.5"]["per_class"] == {"Mass": 0.25, "Nodule": 0.0}
    assert acc["0.7"]["per_class"] == {"Mass": 0.0, "Nodule": 0.0}
    assert acc["0.1"]["mean"] == 0.75  # unweighted over the classes present
    assert acc["0.5"]["mean"] == 0.125


def test_several_boxes_of_one_class_on_one_image_are_separate_records():
    gt = [("img1", "Nodule", (0, 0, 4, 4)), ("img1", "Nodule", (10, 10, 14, 14)), ("img2", "Mass", (0, 0, 4, 4))]
    preds = {("img1", "Nodule"): Box(0, 0, 4, 4, 0.9)}  # finds the first nodule only; nothing for img2
    records = localization_records(gt, preds)
    assert [r.pred_box for r in records] == [Box(0, 0, 4, 4, 0.9), Box(0, 0, 4, 4, 0.9), None]
    acc = localization_accuracy(records, thresholds=(0.5,))
    assert acc == {"0.5": {"per_class": {"Nodule": 0.5, "Mass": 0.0}, "mean": 0.25}}


def test_localization_accuracy_edge_cases():
    assert localization_accuracy([]) == {format(t, "g"): {"per_class": {}, "mean": None} for t in IOU_THRESHOLDS}
    keys = list(localization_accuracy([("a", "c", (0, 0, 1, 1), (0, 0, 1, 1))], np.arange(0.1, 0.8, 0.1)))
    assert keys == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]


def test_bootstrap_intervals_contain_the_auc_and_narrow_with_more_images():
    from cxrviewer.metrics import bootstrap_auc_ci, roc_auc

    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, (n, 2)).astype(float)
        s = y + rng.normal(0, 1.0, (n, 2))
        return y, s

    y, s = sample(60)
    per_class, mean = bootstrap_auc_ci(y, s, ["a", "b"], n_boot=400)
    for j, name in enumerate("ab"):
        lo, hi = per_class[name]
        assert lo < roc_auc(y[:, j], s[:, j]) < hi
    assert mean[0] < (roc_auc(y[:, 0], s[:, 0]) + roc_auc(y[:, 1], s[:, 1])) / 2 < mean[1]
    y2, s2 = sample(1000)
    wide = per_class["a"][1] - per_class["a"][0]
    per_class2, _ = bootstrap_auc_ci(y2, s2, ["a", "b"], n_boot=400)
    assert per_class2["a"][1] - per_class2["a"][0] < wide / 2
    # a class without a positive has no AUC and no interval; the mean is over the defined classes
    y3 = np.concatenate([y2[:40, :1], np.zeros((40, 1))], axis=1)
    per_class3, mean3 = bootstrap_auc_ci(y3, s2[:40], ["a", "none"], n_boot=200)
    assert per_class3["none"] is None and per_class3["a"] is not None and mean3 == pytest.approx(per_class3["a"])


def test_paired_bootstrap_tells_a_better_scorer_from_a_tie():
    from cxrviewer.metrics import paired_bootstrap_mean_auc_difference, roc_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 2)).astype(float)
    noise = rng.normal(0, 1.0, (300, 2))
    good, weak = y + noise, 0.3 * y + noise  # the same noise: the paired interval is narrow
    result = paired_bootstrap_mean_auc_difference(y, good, weak, ["a", "b"], n_boot=300)
    expected = np.mean([roc_auc(y[:, j], good[:, j]) - roc_auc(y[:, j], weak[:, j]) for j in range(2)])
    assert result["difference"] == pytest.approx(expected) and result["difference"] > 0
    assert 0 < result["ci"][0] < result["difference"] < result["ci"][1] and result["p_a_better"] == 1.0
    same = paired_bootstrap_mean_auc_difference(y, good, good.copy(), ["a", "b"], n_boot=50)
    assert same["difference"] == 0 and same["ci"] == (0, 0) and same["p_a_better"] == 0
    # two scorers of equal skill on independent noise: the interval straddles zero
    other = y + rng.normal(0, 1.0, (300, 2))
    tie = paired_bootstrap_mean_auc_difference(y, good, other, ["a", "b"], n_boot=300)
    assert tie["ci"][0] < 0 < tie["ci"][1]
    # a class with one label value is left out of both means
    y1 = y.copy()
    y1[:, 1] = 0
    assert paired_bootstrap_mean_auc_difference(y1, good, weak, ["a", "b"], n_boot=20)["difference"] == \
        pytest.approx(roc_auc(y[:, 0], good[:, 0]) - roc_auc(y[:, 0], weak[:, 0]))
    with pytest.raises(ValueError, match="two"):
        paired_bootstrap_mean_auc_difference(y, good, weak[:10], ["a", "b"])
