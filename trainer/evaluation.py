"""`cxrviewer-train evaluate`: per-class ROC AUC and localization accuracy of a model on a data source.

    result = run_evaluation("runs/x/best.safetensors", "nih:/data/nih", split="test", report_dir="out/")
    result = evaluate(model, spec, source, split="test", device="auto", cam="gradcam", box_method="scalp")
    probs = predict(model, spec, source, records)                # [N, len(spec.targets)]

Classification: probabilities (sigmoid of the logits) of every image of the split, each image through
`spec.preprocess(source.load_image(record))` (the one preprocessing path), scored per class by
`cxrviewer.metrics.roc_auc_per_class` over the findings the model and the data share (NaN labels
masked per class; None where a class has one label value only).

Localization: every image of the split that carries boxes goes through the viewer's own
`cxrviewer.analysis.Analyzer` with the classes of its boxes; the predicted box of a class is the
first (best) box the analyzer gives for it, in original-image pixels. Each ground-truth box is a
hit at T when IoU > T (`cxrviewer.metrics.localization_accuracy`: per class and the mean over the
classes that have boxes), for T = 0.1 ... 0.7. Box classes the model does not score are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrviewer.errors import CxrError
from cxrviewer.metrics import (
    IOU_THRESHOLDS, bootstrap_auc_ci, localization_accuracy, localization_records, mean_auc, roc_auc_per_class,
)
from cxrviewer.trainer.data.sources import SPLITS, DataSource, Record
from cxrviewer.trainer.thresholds import operating_point, roc_curve

Progress = Callable[[str, int, int], Any]  # progress(stage, done, total); stage "predict" or "localize"


class EvaluationError(CxrError, ValueError):
    """An evaluation that cannot run: an empty split, or a model and data without a shared finding."""


@dataclass
class EvaluationResult:
    """What `evaluate` measured; `to_json()` is the `results.json` document."""

    model: str
    split: str
    classes: list[str]  # the findings scored: the model's targets that the data labels, in model order
    n_images: int
    n_boxed_images: int
    auc: dict[str, float | None]
    mean_auc: float | None
    localization: dict[str, dict[str, Any]]  # {"0.1": {"per_class": {...}, "mean": ...}, ...}
    n_boxes: dict[str, int] = field(default_factory=dict)  # ground-truth boxes scored, per class
    roc: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # {finding: {"fpr": [...], "tpr": [...]}}
    thresholds: dict[str, float] = field(default_factory=dict)  # operating thresholds used
    operating: dict[str, dict[str, float | None]] = field(default_factory=dict)  # sensitivity/specificity there
    data: str = ""
    auc_ci: dict[str, list[float] | None] = field(default_factory=dict)  # bootstrap 95% interval per class
    mean_auc_ci: list[float] | None = None  # bootstrap 95% interval of the mean AUC
    # on synthetic lesions in the split's normal films (`cxrviewer.trainer.heldout_lesions`; empty if not run)
    lesion_localization: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_lesions: dict[str, int] = field(default_factory=dict)  # lesions scored, per class

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (None where a value is undefined; no NaN)."""
        return {"model": self.model, "data": self.data, "split": self.split, "n_images": self.n_images,
                "n_boxed_images": self.n_boxed_images, "auc": dict(self.auc), "mean_auc": self.mean_auc,
                "localization": self.localization, "n_boxes": dict(self.n_boxes), "thresholds": dict(self.thresholds),
                "operating": self.operating, "roc": self.roc, "auc_ci_95": dict(self.auc_ci),
                "mean_auc_ci_95": self.mean_auc_ci, "lesion_localization": self.lesion_localization,
                "n_lesions": dict(self.n_lesions)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EvaluationResult:
        """Read back a `to_json()` document (e.g. a fold's results.json for a cross-validation report)."""
        return cls(model=doc.get("model", ""), split=doc.get("split", ""), classes=list(doc["auc"]),
                   n_images=int(doc["n_images"]), n_boxed_images=int(doc.get("n_boxed_images", 0)),
                   auc=dict(doc["auc"]), mean_auc=doc["mean_auc"], localization=dict(doc["localization"]),
                   n_boxes=dict(doc.get("n_boxes", {})), roc=dict(doc.get("roc", {})),
                   thresholds=dict(doc.get("thresholds", {})), operating=dict(doc.get("operating", {})),
                   data=doc.get("data", ""), auc_ci=dict(doc.get("auc_ci_95", {})),
                   mean_auc_ci=doc.get("mean_auc_ci_95"),
                   lesion_localization=dict(doc.get("lesion_localization", {})),
                   n_lesions=dict(doc.get("n_lesions", {})))


class _Images:
    """Map-style dataset: record i -> its preprocessed input [C, H, W] (for a DataLoader)."""

    def __init__(self, spec: Any, source: DataSource, records: Sequence[Record]) -> None:
        self.spec, self.source, self.records = spec, source, list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Any:
        from cxrviewer.models.metadata import values_of_record

        record = self.records[i]
        image = self.spec.preprocess(self.source.load_image(record))[0]
        return image, self.spec.metadata_vector(values_of_record(record))


def predict(model: Any, spec: Any, source: DataSource, records: Sequence[Record], *, device: str = "cpu",
            batch_size: int = 16, workers: int = 0, progress: Progress | None = None) -> np.ndarray:
    """Probabilities [N, len(spec.targets)] (float32) of `records`, in batches, under inference mode.

    `workers` > 0 decodes and preprocesses in that many DataLoader processes."""
    import torch

    n, k = len(records), len(spec.targets)
    if n == 0:
        return np.zeros((0, k), np.float32)
    loader = torch.utils.data.DataLoader(_Images(spec, source, records), batch_size=max(1, int(batch_size)),
                                         num_workers=max(0, int(workers)), shuffle=False)
    was_training = model.training
    model.to(device).eval()
    out, done = [], 0
    try:
        with torch.inference_mode():
            for images, metadata in loader:
                logits = model(images.to(device), metadata.to(device)) if spec.inputs else model(images.to(device))
                out.append(torch.sigmoid(logits.float()).cpu().numpy())
                done += len(images)
                if progress is not None:
                    progress("predict", done, n)
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float32, copy=False)


def _records_of(source: DataSource, split: str) -> list[Record]:
    if split == "all":
        return list(source.records)
    if split not in SPLITS:
        raise EvaluationError(source.root, f"unknown split '{split}' (all, {', '.join(SPLITS)})")
    return source.subset(split).records


def _thresholds(spec: Any, thresholds: Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
    """Operating threshold per target: the spec's, overridden by a mapping or a full sequence."""
    used = dict(zip(spec.targets, (float(t) for t in spec.thresholds)))
    if isinstance(thresholds, Mapping):
        used.update({str(n): float(t) for n, t in thresholds.items() if n in used})
    elif thresholds is not None:
        values = [float(t) for t in thresholds]
        if len(values) != len(spec.targets):
            raise EvaluationError(None, f"need one threshold per model target ({len(spec.targets)}), got {len(values)}")
        used = dict(zip(spec.targets, values))
    return used


def _localize(analyzer: Any, source: DataSource, boxed: Sequence[Record], classes: Sequence[str],
              progress: Progress | None, stage: str = "localize") -> list:
    """Localization records (image, class, ground truth, predicted box or None) of the boxed images."""
    truth, predicted = [], {}
    for done, record in enumerate(boxed, 1):
        wanted = [c for c in dict.fromkeys(b[0] for b in record.boxes) if c in classes]
        result = analyzer.analyze(source.load_image(record), classes=wanted)
        for finding in result.findings:
            predicted[(record.image_id, finding.name)] = finding.boxes[0].as_tuple() if finding.boxes else None
        truth.extend((record.image_id, b[0], tuple(b[1:])) for b in record.boxes if b[0] in classes)
        if progress is not None:
            progress(stage, done, len(boxed))
    return localization_records(truth, predicted)


def evaluate(model: Any, spec: Any, source: DataSource, *, split: str = "test", device: str = "auto",
             cam: str = "gradcam", box_method: str | None = None,
             thresholds: Sequence[float] | Mapping[str, float] | None = None,
             batch_size: int = 16, workers: int = 0, progress: Progress | None = None,
             lesions: int = 0, lesion_seed: int = 0) -> EvaluationResult:
    """AUC per class and localization accuracy of (model, spec) on `split` ("test", "val", "train" or
    "all") of `source` (see the module docstring). `thresholds`: operating points to report
    sensitivity/specificity at (default: `spec.thresholds`). `lesions` > 0 (an `nih:` source): also
    score localization on that many synthetic lesions inserted into the split's normal films
    (`cxrviewer.trainer.heldout_lesions`)."""
    from cxrviewer.analysis import Analyzer, resolve_device

    records = _records_of(source, split)
    where = f"{source.kind}:{source.root}"
    if not records:
        raise EvaluationError(None, f"the {split} split of {where} holds no images")
    classes = [c for c in spec.targets if c in source.label_names]
    if not classes:
        raise EvaluationError(None, f"the model's findings ({', '.join(spec.targets)}) and the labels of {where} "
                                    f"({', '.join(source.label_names)}) have none in common")
    device = resolve_device(device)
    probs = predict(model, spec, source, records, device=device, batch_size=batch_size, workers=workers,
                    progress=progress)
    labels = np.stack([r.labels for r in records]).astype(np.float32)
    y_true = labels[:, [source.label_names.index(c) for c in classes]]
    y_score = probs[:, [spec.targets.index(c) for c in classes]]
    auc = roc_auc_per_class(y_true, y_score, classes)
    ci, mean_ci = bootstrap_auc_ci(y_true, y_score, classes)
    used = _thresholds(spec, thresholds)
    roc, operating = {}, {}
    for k, name in enumerate(classes):
        curve = roc_curve(y_true[:, k], y_score[:, k], drop_intermediate=True)
        if curve.fpr.size:
            roc[name] = {"fpr": [round(float(v), 6) for v in curve.fpr], "tpr": [round(float(v), 6) for v in curve.tpr]}
        point = operating_point(y_true[:, k], y_score[:, k], used[name])
        operating[name] = {"sensitivity": point.sensitivity, "specificity": point.specificity}

    boxed = [r for r in records if any(b[0] in classes for b in r.boxes)]
    loc_records = []
    analyzer = Analyzer(model, spec, device=device, cam=cam, box_method=box_method) if boxed or lesions else None
    if boxed:
        loc_records = _localize(analyzer, source, boxed, classes, progress)
    lesion_loc, n_lesions = {}, {}
    if lesions:
        from cxrviewer.trainer.heldout_lesions import lesion_localization, lesion_source

        lesion_loc, n_lesions = lesion_localization(
            analyzer, lesion_source(source, records, classes, n_images=lesions, seed=lesion_seed), progress=progress)
    n_boxes: dict[str, int] = {}
    for rec in loc_records:
        n_boxes[rec.class_name] = n_boxes.get(rec.class_name, 0) + 1
    return EvaluationResult(model=spec.name or spec.architecture, split=split, classes=classes,
                            n_images=len(records), n_boxed_images=len(boxed), auc=auc, mean_auc=mean_auc(auc),
                            localization=localization_accuracy(loc_records, IOU_THRESHOLDS),
                            n_boxes={c: n_boxes[c] for c in classes if c in n_boxes}, roc=roc,
                            thresholds={c: used[c] for c in classes}, operating=operating, data=where,
                            auc_ci={c: None if v is None else [round(v[0], 4), round(v[1], 4)] for c, v in ci.items()},
                            mean_auc_ci=None if mean_ci is None else [round(mean_ci[0], 4), round(mean_ci[1], 4)],
                            lesion_localization=lesion_loc, n_lesions=n_lesions)


def run_evaluation(model_ref: str | Path | tuple[Any, Any], data: str, *, split: str = "test",
                   labels: str | Sequence[str] = "default8", json_out: str | Path | None = None,
                   report_dir: str | Path | None = None, device: str = "auto", cam: str = "gradcam",
                   box_method: str | None = None, seed: int = 0, batch_size: int = 16, workers: int = 0,
                   data_options: Mapping[str, Any] | None = None, progress: Progress | None = None,
                   lesions: int = 0) -> EvaluationResult:
    """Open `data` ("KIND:PATH") over `labels` with the split `seed` (and the source kind's
    `data_options`, as in training), load the model (a file path, a registered name or a
    (model, spec) pair), evaluate, and write `json_out` and/or the report folder
    (`cxrviewer.trainer.report.write_report`) when given."""
    from cxrviewer.trainer.data import open_source

    source = open_source(data, labels=labels, seed=seed, **dict(data_options or {}))
    if isinstance(model_ref, tuple):
        model, spec = model_ref
        name = spec.name or spec.architecture
    else:
        from cxrviewer.models.factory import load_model

        model, spec = load_model(model_ref)
        name = str(model_ref)
    result = evaluate(model, spec, source, split=split, device=device, cam=cam, box_method=box_method,
                      batch_size=batch_size, workers=workers, progress=progress, lesions=lesions)
    result.model, result.data = name, data
    if json_out is not None:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    if report_dir is not None:
        from cxrviewer.trainer.report import write_report

        write_report(result, report_dir, title=f"{name} on {data} ({split} split)")
    return result
