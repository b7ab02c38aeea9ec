"""`cxrviewer-train fit --folds K`: K-fold patient-disjoint cross-validation.

Run f of K trains on the other K-1 folds (a seeded tenth of their patients held out for validation:
best checkpoint and thresholds) and is evaluated on fold f (`cxrviewer.trainer.evaluation`, the
same code as `cxrviewer-train evaluate`) with its best model, or with its last one under
`--select last` (on a small validation split the "best" epoch is mostly noise). Each run is an ordinary run folder `NAME/foldF`, resumable
with `fit --resume NAME/foldF` (the fold is part of its saved configuration). The summary — mean ±
standard deviation of every AUC and localization accuracy across the folds — goes to
`NAME/folds.md` and `NAME/folds.json`, each fold's own report to `NAME/foldF/report/`. With
`lesions` > 0 each fold is also scored on that many synthetic lesions inserted into its held-out
normal films (`cxrviewer.trainer.heldout_lesions`). Boxes come from the model's own box method
(`spec.extra["box_method"]`) unless one is given.
SCALP reports 3-fold cross-validation.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from cxrviewer.trainer.config import TrainConfig


def cross_validate(config: TrainConfig, k: int, *, reporter_kind: str = "rich", cam: str = "gradcam",
                   box_method: str | None = None, lesions: int = 0) -> Path:
    from cxrviewer.models.factory import load_model
    from cxrviewer.trainer.evaluation import evaluate
    from cxrviewer.trainer.loop import fit, open_training_source
    from cxrviewer.trainer.progress import make_reporter
    from cxrviewer.trainer.report import write_folds_report, write_report

    base = config.name or f"{config.method}-cv{k}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    results = []
    for fold in range(k):
        fold_config = dataclasses.replace(config, name=f"{base}/fold{fold}", folds=k, fold=fold)
        fold_config.validate()
        run = fit(fold_config, reporter=make_reporter(reporter_kind))
        model, spec = load_model(run / f"{config.select}.safetensors")
        source = open_training_source(fold_config)
        result = evaluate(model, spec, source, split="test", device=config.device, cam=cam, box_method=box_method,
                          batch_size=config.batch_size, lesions=lesions)
        result.model, result.data = f"{run.name} ({base})", config.data
        write_report(result, run / "report", title=f"{config.method}, fold {fold} of {k} (test split)")
        results.append(result)
    out = Path(config.output) / base
    write_folds_report(results, out, title=f"{config.method}: {k}-fold cross-validation on {config.data}")
    return out / "folds.md"
