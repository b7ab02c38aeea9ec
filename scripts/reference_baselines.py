"""Non-network references for the model zoo: what a logistic regression reaches on the same folds.

    python scripts/reference_baselines.py [--data nih:../shared/data/nih-sample] [--folds 3] [--seed 0]
        [--probe] [--fuse RUN_FOLD0 RUN_FOLD1 RUN_FOLD2]

Two references, each fit per finding on the training folds and scored on the held-out fold of the
same patient-disjoint split `cxrviewer-train fit --folds K` uses (`patient_folds`, seed 0):
- metadata: age / 100, sex (M = 1), view position (AP = 1) from the NIH table — no pixels at all;
- pixels: the film resized to 32×32 (area), scaled to [0, 1], L2-regularised (C = 0.01);
- with `--probe`, a linear probe on frozen ImageNet features: the 1280-d average-pooled output of
  the ImageNet EfficientNet-Lite0 trunk (one channel, 256 px, the shipped preprocessing),
  standardised on the training folds, L2-regularised (C = 0.01) — what the pretrained network knows
  before any fine-tuning.
A network that does not beat these has learned little beyond what they capture. Prints per-fold
and mean ± std (ddof 0) of the mean AUC over the eight findings, and per-finding means.

`--fuse` takes a recipe's fold runs (`fit --folds K --fold F`, the same K and seed) and asks whether
the network and the metadata hold different information: on each held-out fold, the network's
scores and the metadata regression's are averaged as ranks (a late fusion; no new model is
trained), scored like the references, and compared with the network alone on the same images
(paired bootstrap of the pooled mean-AUC difference).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _features(source, kind: str) -> np.ndarray:
    if kind == "probe":
        return _imagenet_features(source)
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


def _imagenet_features(source, batch: int = 32) -> np.ndarray:
    import torch

    from cxrviewer.models import create_model
    from cxrviewer.models.init import initialise

    model, spec = create_model("efficientnet-lite0")
    initialise(model, spec.architecture, "imagenet")
    rows = []
    with torch.no_grad():
        for start in range(0, len(source.records), batch):
            x = torch.cat([spec.preprocess_with_geometry(source.load_image(r))[0]
                           for r in source.records[start:start + batch]])
            rows.append(model.backbone(x).mean(dim=(2, 3)).numpy())
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import rankdata
    from sklearn.linear_model import LogisticRegression

    from cxrviewer.metrics import paired_bootstrap_mean_auc_difference
    from cxrviewer.trainer.data import open_source
    from cxrviewer.trainer.data.folds import patient_folds

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="nih:../shared/data/nih-sample")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", action="store_true", help="add the linear probe on frozen ImageNet features")
    parser.add_argument("--fuse", nargs="+", default=[], help="a recipe's fold runs, fused with the metadata")
    args = parser.parse_args(argv)
    source = open_source(args.data, labels="default8", seed=args.seed)
    folds = patient_folds(source.records, args.folds, seed=args.seed)
    y = np.stack([r.labels for r in source.records])
    names = list(source.label_names)
    out_of_fold = {}
    for kind, c in (("metadata", 1.0), ("pixels", 0.01), *((("probe", 0.01),) if args.probe else ())):
        x = _features(source, kind)
        scores = np.zeros_like(y)
        for fold in range(args.folds):
            train, test = folds != fold, folds == fold
            if kind == "probe":  # standardised with the training folds' statistics only
                mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
                x_fold = (x - mu) / sd
            else:
                x_fold = x
            for k in range(len(names)):
                known = train & ~np.isnan(y[:, k])
                model = LogisticRegression(C=c, max_iter=2000).fit(x_fold[known], y[known, k])
                scores[test, k] = model.predict_proba(x_fold[test])[:, 1]
        out_of_fold[kind] = scores
        _print(kind, y, scores, folds, args.folds, names)
    if args.fuse:
        network = _network_scores(args.fuse, source, folds)
        fused = np.zeros_like(network)
        for fold in range(args.folds):
            rows = folds == fold
            for k in range(len(names)):
                fused[rows, k] = (rankdata(network[rows, k]) + rankdata(out_of_fold["metadata"][rows, k])) / 2
        _print("network", y, network, folds, args.folds, names)
        _print("network + metadata (rank average)", y, fused, folds, args.folds, names)
        diff = paired_bootstrap_mean_auc_difference(y, fused, network, names)
        print(f"fused minus network, pooled out-of-fold mean AUC: {diff['difference']:+.3f} "
              f"(paired bootstrap 95% CI {diff['ci'][0]:+.3f} to {diff['ci'][1]:+.3f}; "
              f"fused ahead in {diff['p_a_better']:.0%} of resamples)")
    return 0


def _print(kind: str, y: np.ndarray, scores: np.ndarray, folds: np.ndarray, k: int, names: list[str]) -> None:
    from cxrviewer.metrics import mean_auc, roc_auc_per_class

    aucs = [roc_auc_per_class(y[folds == f], scores[folds == f], names) for f in range(k)]
    means = [mean_auc(a) for a in aucs]
    per = np.nanmean(np.array([[a[n] for n in names] for a in aucs], dtype=float), axis=0)
    print(f"{kind}: mean AUC per fold {', '.join(f'{m:.3f}' for m in means)}; {np.mean(means):.3f} ± {np.std(means):.3f}")
    print("  per finding: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, per)))


def _network_scores(runs: list[str], source, folds: np.ndarray) -> np.ndarray:
    """The fold runs' out-of-fold probabilities in the source's record order; each run must have
    held out exactly one of these folds."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pooled_cv import out_of_fold

    row_of = {r.image_id: i for i, r in enumerate(source.records)}
    scores = np.full((len(source.records), len(source.label_names)), np.nan)
    for run in runs:
        classes, _, probs, ids = out_of_fold([Path(run)])
        rows = [row_of.get(i) for i in ids]
        if None in rows or len({int(folds[r]) for r in rows}) != 1 or len(rows) != int((folds == folds[rows[0]]).sum()):
            raise SystemExit(f"{run}: its held-out images are not one fold of this split (other --folds, --seed or data?).")
        scores[np.ix_(rows, [classes.index(n) for n in source.label_names])] = probs
    if np.isnan(scores).any():
        raise SystemExit(f"{' '.join(runs)}: these runs do not hold out every fold of the split.")
    return scores


if __name__ == "__main__":
    sys.exit(main())
