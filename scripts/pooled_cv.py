"""Pooled out-of-fold AUC of a cross-validated recipe, with bootstrap 95% intervals.

    python scripts/pooled_cv.py RUN_FOLD0 RUN_FOLD1 RUN_FOLD2 [--which last] [--json OUT]
    python scripts/pooled_cv.py A_FOLD0 A_FOLD1 A_FOLD2 --against B_FOLD0 B_FOLD1 B_FOLD2
    python scripts/pooled_cv.py RUN_FOLD0 RUN_FOLD1 RUN_FOLD2 --findings default8

`--findings` (a label space such as default8, or a comma list) restricts the figures to those
findings, e.g. the viewer's eight of a model trained on all fourteen NIH labels.

Each run folder is one fold of `cxrviewer-train fit --folds K` (its config names the fold). Every
run's model (`last` or `best`) scores its own held-out fold; the scores of all folds are pooled,
so every image of the data is scored exactly once by a model that never trained on it, and the
per-finding AUC and its percentile-bootstrap interval (`cxrviewer.metrics.bootstrap_auc_ci`) are
computed over all of them. This is the estimate a model card quotes for a model then trained on
all the data with the same recipe. (Pooling assumes the folds' models score on one scale; the
mean ± std over folds in `folds.md` does not.)

With `--against`, a second recipe's fold runs (on the same folds) are pooled too and the two are
compared on the same images: the mean-AUC difference (first minus second) with a paired bootstrap
95% interval (`cxrviewer.metrics.paired_bootstrap_mean_auc_difference`), which is how two recipes
whose separate intervals overlap are told apart, or shown to be tied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def out_of_fold(runs: list[Path], which: str = "last") -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(findings, labels [N, K], scores [N, K], image ids [N]) over the runs' test splits, pooled."""
    from cxrviewer.trainer.crossval import fold_models
    from cxrviewer.trainer.evaluation import predict

    labels, scores, ids, classes = [], [], [], None
    for fold in fold_models(runs, which):
        names = [c for c in fold.spec.targets if c in fold.source.label_names]
        if classes is not None and names != classes:
            raise SystemExit(f"{fold.run}: its findings differ from the first run's")
        classes = names
        probs = predict(fold.model, fold.spec, fold.source, fold.test, device="cpu", batch_size=32)
        labels.append(np.stack([r.labels for r in fold.test])[:, [fold.source.label_names.index(c) for c in classes]])
        scores.append(probs[:, [fold.spec.targets.index(c) for c in classes]])
        ids.extend(r.image_id for r in fold.test)
    return classes or [], np.concatenate(labels), np.concatenate(scores), ids


def restrict(result: tuple, findings: str | None) -> tuple:
    """An out_of_fold() result kept to `findings` (a label-space name or "A,B,..."; None: all)."""
    if not findings:
        return result
    from cxrviewer.trainer.data.sources import LABEL_SPACES

    classes, y_true, y_score, ids = result
    wanted = LABEL_SPACES.get(findings) or tuple(n.strip() for n in findings.split(",") if n.strip())
    missing = [n for n in wanted if n not in classes]
    if missing:
        raise SystemExit(f"--findings: these runs do not score {', '.join(missing)}")
    cols = [classes.index(n) for n in wanted]
    return list(wanted), y_true[:, cols], y_score[:, cols], ids


def compare(first: tuple, second: tuple, where: str = "--against") -> dict:
    """The paired comparison of two out_of_fold() results, aligned by image id (`where` names the
    second recipe's runs in an error)."""
    from cxrviewer.metrics import paired_bootstrap_mean_auc_difference

    classes, y_true, score_a, ids_a = first
    classes_b, y_true_b, score_b, ids_b = second
    if classes_b != classes or sorted(ids_a) != sorted(ids_b):
        raise SystemExit(f"{where}: these runs did not score the same images and findings as the first "
                         "recipe's (other folds or other data).")
    order = {image_id: k for k, image_id in enumerate(ids_b)}
    take = [order[image_id] for image_id in ids_a]
    if not np.array_equal(np.nan_to_num(y_true_b[take], nan=-1), np.nan_to_num(y_true, nan=-1)):
        raise SystemExit(f"{where}: these runs' labels of the same images differ from the first recipe's.")
    result = paired_bootstrap_mean_auc_difference(y_true, score_a, score_b[take], classes)
    if result["ci"] is not None:
        result["ci"] = [round(v, 4) for v in result["ci"]]
    return result


def main(argv: list[str] | None = None) -> int:
    from cxrviewer.trainer.crossval import pooled_auc

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the fold runs of one recipe")
    parser.add_argument("--which", default="last", choices=("last", "best"))
    parser.add_argument("--against", nargs="+", type=Path, default=[],
                        help="another recipe's fold runs: compare the two on the same images")
    parser.add_argument("--findings", help="only these findings: a label space (default8) or A,B,...")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    first = restrict(out_of_fold(args.runs, args.which), args.findings)
    classes, y_true, y_score, _ = first
    doc = {"runs": [str(r) for r in args.runs], "which": args.which, "findings": args.findings or "all", **pooled_auc(y_true, y_score, classes)}
    if args.against:
        second = restrict(out_of_fold(args.against, args.which), args.findings)
        doc["against"] = {"runs": [str(r) for r in args.against], **pooled_auc(second[1], second[2], classes)}
        doc["difference"] = compare(first, second, where=" ".join(map(str, args.against)))
    text = json.dumps(doc, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
