"""Evaluation reports: tables as the papers print them, the JSON document and two figures.

    write_report(result, out_dir, title=...) -> {"md": ..., "json": ..., "roc": ..., "localization": ...}
    write_folds_report(results, out_dir, title=...) -> {"md": ..., "json": ...}

`results.md` holds an AUC table (one row; columns = findings + Mean, 3 decimals), a localization
table (rows T(IoU) = 0.1 ... 0.7; columns = the findings that have boxes + Mean; accuracies with
2 decimals, as in the SCALP and ChestX-ray8 tables) and the operating points. `roc.png` draws one
ROC curve per finding with its AUC in the legend; `localization.png` the accuracy against T(IoU) per
finding and their mean. matplotlib is imported inside the plotting functions and draws on an explicit
Agg canvas (`FigureCanvasAgg`, no pyplot).

Cross-validation (`write_folds_report`): per finding, the mean ± sample standard deviation (ddof=1)
over the folds where the value is defined, of the AUC and of the localization accuracy at each
T(IoU), in `folds.md` and `folds.json` (which also keeps every fold's values).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrviewer.metrics import IOU_THRESHOLDS
from cxrviewer.trainer.evaluation import EvaluationResult

DASH = "–"


def _fmt(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---:" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _box_classes(result: EvaluationResult) -> list[str]:
    """The findings with localization records, in the result's class order."""
    first = result.localization.get(format(IOU_THRESHOLDS[0], "g"), {}).get("per_class", {})
    return [c for c in result.classes if c in first] + [c for c in first if c not in result.classes]


def _loc_table(localization: dict[str, dict[str, Any]], cell, classes: Sequence[str] | None = None,
               counts: tuple[str, dict[str, int]] | None = None) -> list[str]:
    """Rows T(IoU) x classes (+ Mean), each value formatted by `cell`; `classes` default to every
    class named at any T; `counts` = (label, per-class counts) adds a row of the boxes scored."""
    if classes is None:
        classes = list(dict.fromkeys(c for e in localization.values() for c in e["per_class"]))
    rows = [[f"T(IoU)={key}"] + [cell(entry["per_class"].get(c)) for c in classes] + [cell(entry["mean"])]
            for key, entry in localization.items()]
    if counts is not None:
        label, n = counts
        rows.append([label] + [str(n.get(c, DASH)) for c in classes] + [str(sum(n.values()))])
    return _table(["T(IoU)", *classes, "Mean"], rows)


def _ci(interval) -> str:
    return "–" if not interval else f"{interval[0]:.3f}–{interval[1]:.3f}"


def results_markdown(result: EvaluationResult, title: str) -> str:
    """The `results.md` text (see the module docstring)."""
    summary = (f"Model `{result.model}`, data `{result.data}`, split `{result.split}`: {result.n_images} images, "
               f"{result.n_boxed_images} with boxes.")
    lines = [f"# {title}", "", summary, "", "## Classification (ROC AUC)", ""]
    lines += _table([*result.classes, "Mean"],
                    [[_fmt(result.auc.get(c), 3) for c in result.classes] + [_fmt(result.mean_auc, 3)]])
    if result.auc_ci:
        lines += ["", "Bootstrap 95% intervals (2,000 resamples of the images):", ""]
        lines += _table([*result.classes, "Mean"],
                        [[_ci(result.auc_ci.get(c)) for c in result.classes] + [_ci(result.mean_auc_ci)]])
    lines += ["", "## Localization accuracy (a hit when IoU > T(IoU))", ""]
    boxed = _box_classes(result)
    if boxed:
        lines += _loc_table(result.localization, lambda v: _fmt(v, 2), boxed, ("boxes", result.n_boxes))
    else:
        lines += ["No image of this split carries a box of a scored finding."]
    if result.lesion_localization:
        lines += ["", "## Localization on synthetic lesions in this split's normal films", ""]
        lines += _loc_table(result.lesion_localization, lambda v: _fmt(v, 2), counts=("lesions", result.n_lesions))
    lines += ["", "## Operating points", ""]
    lines += _table(["", *result.classes], [
        ["threshold"] + [_fmt(result.thresholds.get(c), 3) for c in result.classes],
        ["sensitivity"] + [_fmt(result.operating.get(c, {}).get("sensitivity"), 3) for c in result.classes],
        ["specificity"] + [_fmt(result.operating.get(c, {}).get("specificity"), 3) for c in result.classes]])
    return "\n".join(lines) + "\n"


def _figure(width: float = 6.4, height: float = 5.2) -> tuple[Any, Any]:
    """A figure on the Agg canvas (no pyplot, no global backend switch: safe inside the viewer too)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_roc(result: EvaluationResult, path: Path) -> Path:
    """One ROC curve per finding whose AUC is defined, AUC in the legend."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    for name in result.classes:
        curve = result.roc.get(name)
        if curve:
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.5, label=f"{name} ({_fmt(result.auc.get(name), 3)})")
    if not result.roc:
        ax.text(0.5, 0.5, "no finding has both label values", ha="center", va="center")
    else:
        ax.legend(loc="lower right", fontsize=8, title=f"AUC (mean {_fmt(result.mean_auc, 3)})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    fig.savefig(path)
    return path


def plot_localization(result: EvaluationResult, path: Path) -> Path:
    """Localization accuracy against T(IoU): one line per finding with boxes, and their mean."""
    fig, ax = _figure()
    keys = list(result.localization)
    xs = [float(k) for k in keys]
    for name in _box_classes(result):
        ax.plot(xs, [result.localization[k]["per_class"].get(name, np.nan) for k in keys], marker="o",
                markersize=3, linewidth=1.2, label=name)
    means = [result.localization[k]["mean"] for k in keys]
    if any(m is not None for m in means):
        ax.plot(xs, [np.nan if m is None else m for m in means], color="black", linewidth=2.5, label="Mean")
        ax.legend(fontsize=8)
    else:
        ax.text(0.4, 0.5, "no boxed images", ha="center", va="center")
    ax.set(xlim=(min(xs) - 0.02, max(xs) + 0.02), ylim=(-0.02, 1.02), xlabel="T(IoU)", ylabel="accuracy",
           title="Localization accuracy")
    fig.savefig(path)
    return path


def _write_json(doc: Any, path: Path) -> Path:
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_report(result: EvaluationResult, out_dir: str | Path, title: str = "Evaluation") -> dict[str, Path]:
    """Write results.md, results.json, roc.png and localization.png into `out_dir` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(results_markdown(result, title), encoding="utf-8")
    return {"md": md, "json": _write_json(result.to_json(), out / "results.json"),
            "roc": plot_roc(result, out / "roc.png"),
            "localization": plot_localization(result, out / "localization.png")}


# ------------------------------------------------------------------------------ cross-validation


def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """{"mean", "std", "n"} over the defined values (std: ddof=1, None below two values)."""
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(defined.mean()) if defined.size else None,
            "std": float(defined.std(ddof=1)) if defined.size > 1 else None, "n": int(defined.size)}


def _pm(entry: dict[str, Any], digits: int) -> str:
    if entry["mean"] is None:
        return DASH
    return _fmt(entry["mean"], digits) + ("" if entry["std"] is None else f" ± {entry['std']:.{digits}f}")


def folds_summary(results: Sequence[EvaluationResult]) -> dict[str, Any]:
    """Mean ± std across folds of every AUC and localization accuracy, plus the per-fold values."""
    classes = list(dict.fromkeys(c for r in results for c in r.classes))
    return {"n_folds": len(results), "n_images": [r.n_images for r in results],
            "auc": {c: _mean_std([r.auc.get(c) for r in results]) for c in classes},
            "mean_auc": _mean_std([r.mean_auc for r in results]),
            "localization": _loc_summary([r.localization for r in results]),
            "lesion_localization": _loc_summary([r.lesion_localization for r in results]),
            "folds": [r.to_json() for r in results]}


def _loc_summary(per_fold: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean ± std across folds of localization accuracies ({T: {"per_class": ..., "mean": ...}})."""
    loc = {}
    for key in dict.fromkeys(k for fold in per_fold for k in fold):
        boxed = list(dict.fromkeys(c for fold in per_fold for c in fold.get(key, {}).get("per_class", {})))
        loc[key] = {"per_class": {c: _mean_std([fold.get(key, {}).get("per_class", {}).get(c) for fold in per_fold])
                                  for c in boxed},
                    "mean": _mean_std([fold.get(key, {}).get("mean") for fold in per_fold])}
    return loc


def write_folds_report(results: Sequence[EvaluationResult], out_dir: str | Path,
                       title: str = "Cross-validation") -> dict[str, Path]:
    """Write folds.md and folds.json (mean ± std per finding across the folds) into `out_dir`."""
    if not results:
        raise ValueError("a cross-validation report needs at least one fold's result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = folds_summary(results)
    classes = list(summary["auc"])
    lines = [f"# {title}", "", f"{len(results)} folds, test images per fold: "
             + ", ".join(str(n) for n in summary["n_images"]) + ". Mean ± standard deviation across folds.",
             "", "## Classification (ROC AUC)", ""]
    lines += _table([*classes, "Mean"], [[_pm(summary["auc"][c], 3) for c in classes] + [_pm(summary["mean_auc"], 3)]])
    lines += ["", "## Localization accuracy (a hit when IoU > T(IoU))", ""]
    def folds_cell(entry):
        return DASH if entry is None else _pm(entry, 2)

    if any(e["per_class"] for e in summary["localization"].values()):
        lines += _loc_table(summary["localization"], folds_cell)
    else:
        lines += ["No fold's test split carries a box of a scored finding."]
    if summary["lesion_localization"]:
        lines += ["", "## Localization on synthetic lesions in each fold's held-out normal films", ""]
        lines += _loc_table(summary["lesion_localization"], folds_cell)
    md = out / "folds.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"md": md, "json": _write_json(summary, out / "folds.json")}
