"""Non-network references for the model zoo: what a logistic regression reaches on the same folds.

    python scripts/reference_baselines.py [--data nih:../shared/data/nih-sample] [--folds 3] [--seed 0]

Two references, each fit per finding on the training folds and scored on the held-out fold of the
same patient-disjoint split `cxrviewer-train fit --folds K` uses (`patient_folds`, seed 0):
- metadata: age / 100, sex (M = 1), view position (AP = 1) from the NIH table — no pixels at all;
- pixels: the film resized to 32×32 (area), scaled to [0, 1], L2-regularised (C = 0.01).
A network that does not beat these has learned little beyond what they capture. Prints per-fold
and mean ± std (ddof 0) of the mean AUC over the eight findings, and per-finding means.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _features(source, kind: str) -> np.ndarray:
    if kind == "metadata":
        return np.array([[float(r.age if r.age is not None else 50) / 100, float(r.sex == "M"), float(r.view == "AP")]
                         for r in source.records])
    import cv2

    rows = []
    for r in source.records:
        pixels = source.load_image(r).pixels.astype(np.float32)
        small = cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_AREA)
        rows.append((small / max(float(small.max()), 1.0)).ravel())
    return np.array(rows)


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression

    from cxrviewer.metrics import mean_auc, roc_auc_per_class
    from cxrviewer.trainer.data import open_source
    from cxrviewer.trainer.data.folds import patient_folds

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="nih:../shared/data/nih-sample")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source = open_source(args.data, labels="default8", seed=args.seed)
    folds = patient_folds(source.records, args.folds, seed=args.seed)
    y = np.stack([r.labels for r in source.records])
    names = list(source.label_names)
    for kind, c in (("metadata", 1.0), ("pixels", 0.01)):
        x = _features(source, kind)
        means, per_class = [], []
        for fold in range(args.folds):
            train, test = folds != fold, folds == fold
            scores = np.zeros((int(test.sum()), len(names)))
            for k in range(len(names)):
                known = train & ~np.isnan(y[:, k])
                model = LogisticRegression(C=c, max_iter=2000).fit(x[known], y[known, k])
                scores[:, k] = model.predict_proba(x[test])[:, 1]
            auc = roc_auc_per_class(y[test], scores, names)
            means.append(mean_auc(auc))
            per_class.append([auc[n] for n in names])
        per = np.nanmean(np.array(per_class, dtype=float), axis=0)
        print(f"{kind}: mean AUC per fold {', '.join(f'{m:.3f}' for m in means)}; "
              f"{np.mean(means):.3f} ± {np.std(means):.3f}")
        print("  per finding: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, per)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
