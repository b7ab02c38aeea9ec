"""Pooled out-of-fold AUC of a cross-validated recipe, with bootstrap 95% intervals.

    python scripts/pooled_cv.py RUN_FOLD0 RUN_FOLD1 RUN_FOLD2 [--which last] [--json OUT]

Each run folder is one fold of `cxrviewer-train fit --folds K` (its config names the fold). Every
run's model (`last` or `best`) scores its own held-out fold; the scores of all folds are pooled,
so every image of the data is scored exactly once by a model that never trained on it, and the
per-finding AUC and its percentile-bootstrap interval (`cxrviewer.metrics.bootstrap_auc_ci`) are
computed over all of them. This is the estimate a model card quotes for a model then trained on
all the data with the same recipe. (Pooling assumes the folds' models score on one scale; the
mean ± std over folds in `folds.md` does not.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def out_of_fold(runs: list[Path], which: str = "last") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(findings, labels [N, K], scores [N, K]) over the runs' test splits, pooled."""
    from cxrviewer.trainer.crossval import fold_models
    from cxrviewer.trainer.evaluation import predict

    labels, scores, classes = [], [], None
    for fold in fold_models(runs, which):
        names = [c for c in fold.spec.targets if c in fold.source.label_names]
        if classes is not None and names != classes:
            raise SystemExit(f"{fold.run}: its findings differ from the first run's")
        classes = names
        probs = predict(fold.model, fold.spec, fold.source, fold.test, device="cpu", batch_size=32)
        labels.append(np.stack([r.labels for r in fold.test])[:, [fold.source.label_names.index(c) for c in classes]])
        scores.append(probs[:, [fold.spec.targets.index(c) for c in classes]])
    return classes or [], np.concatenate(labels), np.concatenate(scores)


def main(argv: list[str] | None = None) -> int:
    from cxrviewer.trainer.crossval import pooled_auc

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the fold runs of one recipe")
    parser.add_argument("--which", default="last", choices=("last", "best"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    classes, y_true, y_score = out_of_fold(args.runs, args.which)
    doc = {"runs": [str(r) for r in args.runs], "which": args.which, **pooled_auc(y_true, y_score, classes)}
    text = json.dumps(doc, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
