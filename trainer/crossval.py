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

`fold_models(runs)` reopens finished fold runs (e.g. for a model card) and `pooled_auc` scores their
pooled out-of-fold predictions: every image once, by the model that never trained on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from cxrviewer.trainer.config import TrainConfig


class FoldModel(NamedTuple):
    """One fold run of a cross-validation: its model and the source split by its fold."""

    run: Path
    config: dict[str, Any]  # the run's saved configuration (config.yaml)
    model: Any
    spec: Any
    source: Any
    test: list  # the fold's held-out records


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


def fold_models(runs: Sequence[str | Path], which: str = "last") -> Iterator[FoldModel]:
    """Each fold run's model with its fold's source and held-out records, checking that the runs'
    test splits are disjoint (the runs of one `fit --folds K`)."""
    import yaml

    from cxrviewer.errors import CxrError
    from cxrviewer.models.factory import load_model
    from cxrviewer.trainer.loop import open_training_source

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    seen: set[str] = set()
    for run in map(Path, runs):
        saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
        if config.folds is None or config.fold is None:
            raise CxrError(run, "this run is not a cross-validation fold (its configuration names no fold)")
        source = open_training_source(config)
        records = [r for r in source.records if r.split == "test"]
        ids = {r.image_id for r in records}
        if seen & ids:
            raise CxrError(run, f"{len(seen & ids)} of this run's test images are in another run's test split")
        seen |= ids
        model, spec = load_model(run / f"{which}.safetensors")
        yield FoldModel(run, saved, model, spec, source, records)


def pooled_auc(y_true, y_score, classes: Sequence[str]) -> dict[str, Any]:
    """AUC per finding, the mean, and their bootstrap 95% intervals of pooled out-of-fold scores."""
    import numpy as np

    from cxrviewer.metrics import bootstrap_auc_ci, mean_auc, roc_auc_per_class

    auc = roc_auc_per_class(y_true, y_score, classes)
    ci, mean_ci = bootstrap_auc_ci(y_true, y_score, classes)
    return {"classes": list(classes), "n_images": int(len(y_true)), "auc": auc, "mean_auc": mean_auc(auc),
            "auc_ci": {c: None if v is None else [round(v[0], 4), round(v[1], 4)] for c, v in ci.items()},
            "mean_auc_ci": None if mean_ci is None else [round(mean_ci[0], 4), round(mean_ci[1], 4)],
            "positives": {c: int(np.nansum(y_true[:, k])) for k, c in enumerate(classes)}}
