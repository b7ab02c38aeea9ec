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
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np


def out_of_fold(runs: list[Path], which: str = "last") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(findings, labels [N, K], scores [N, K]) over the runs' test splits, pooled."""
    import yaml

    from cxrviewer.models.factory import load_model
    from cxrviewer.trainer.config import TrainConfig
    from cxrviewer.trainer.evaluation import predict
    from cxrviewer.trainer.loop import open_training_source

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    labels, scores, seen, classes = [], [], set(), None
    for run in runs:
        saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
        if config.folds is None or config.fold is None:
            raise SystemExit(f"{run}: not a cross-validation fold run (its config names no fold)")
        model, spec = load_model(run / f"{which}.safetensors")
        source = open_training_source(config)
        records = [r for r in source.records if r.split == "test"]
        overlap = seen & {r.image_id for r in records}
        if overlap:
            raise SystemExit(f"{run}: {len(overlap)} of its test images are in another run's test split")
        seen |= {r.image_id for r in records}
        names = [c for c in spec.targets if c in source.label_names]
        if classes is None:
            classes = names
        elif names != classes:
            raise SystemExit(f"{run}: its findings differ from the first run's")
        probs = predict(model, spec, source, records, device="cpu", batch_size=32)
        labels.append(np.stack([r.labels for r in records])[:, [source.label_names.index(c) for c in classes]])
        scores.append(probs[:, [spec.targets.index(c) for c in classes]])
    return classes or [], np.concatenate(labels), np.concatenate(scores)


def main(argv: list[str] | None = None) -> int:
    from cxrviewer.metrics import bootstrap_auc_ci, mean_auc, roc_auc_per_class

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the fold runs of one recipe")
    parser.add_argument("--which", default="last", choices=("last", "best"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    classes, y_true, y_score = out_of_fold(args.runs, args.which)
    auc = roc_auc_per_class(y_true, y_score, classes)
    ci, mean_ci = bootstrap_auc_ci(y_true, y_score, classes)
    doc = {"runs": [str(r) for r in args.runs], "which": args.which, "n_images": int(len(y_true)),
           "positives": {c: int(np.nansum(y_true[:, k])) for k, c in enumerate(classes)},
           "auc": auc, "mean_auc": mean_auc(auc),
           "auc_ci_95": {c: None if v is None else [round(v[0], 4), round(v[1], 4)] for c, v in ci.items()},
           "mean_auc_ci_95": None if mean_ci is None else [round(mean_ci[0], 4), round(mean_ci[1], 4)]}
    text = json.dumps(doc, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
