"""Ship a trained run's model as an embedded model in resources/models/, with its model card.

    .venv/bin/python scripts/ship_model.py RUN [--which best|last] [--name default] [--half]
                                            [--cv-summary FOLDS.json] [--notes TEXT]

What it writes (and what the regression test `tests/test_shipped_models.py` checks):
- `resources/models/NAME.safetensors` (fp16 storage with `--half`, refused if any probability on
  the bundled samples moves by more than 1e-3 from the fp32 model's);
- `resources/models/registry.json`: NAME -> file (relative) and sha256, so `load_model(NAME)`,
  `--model NAME` and the viewer find it;
- `resources/models/NAME.reference.json`: the model's probabilities on two bundled sample images,
  which the regression test reproduces to 1e-3;
- `resources/models/NAME.md`: the model card — method, architecture, input size, training data and
  split, the command that made it (from the run's config.yaml), per-class AUC on the run's held-out
  split with bootstrap 95% intervals, operating thresholds and how they were chosen, limits.
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

    out = {}
    with torch.inference_mode():
        for path in paths:
            x = spec.preprocess(load_image(path))
            out[path.relative_to(REPO / "resources" / "samples").as_posix()] = [
                float(p) for p in torch.sigmoid(model(x).float())[0]]
    return out


def _command(config: dict) -> str:
    """The `cxrviewer-train fit` command line that repeats the run (from its resolved config)."""
    flags = ["fit", "--data", config["data"], "--method", config["method"]]
    for key in ("architecture", "input_size", "batch_size", "epochs", "pretrain_epochs", "lr", "weight_decay",
                "optimizer", "seed", "folds", "fold"):
        if config.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(config[key])]
    for key, value in sorted((config.get("method_args") or {}).items()):
        flags += ["--set", f"{key}={value}"]
    return "cxrviewer-train " + " ".join(shlex.quote(f) for f in flags)


def _card(name: str, spec, config: dict, result, which: str, half: bool, cv: dict | None, notes: str,
          status: str = "", box_method: str | None = None) -> str:
    auc_rows = [f"| {c} | {result.auc.get(c):.3f} | {_ci(result.auc_ci.get(c))} | {spec.thresholds[spec.targets.index(c)]:.3f} | "
                f"{_pct(result.operating.get(c, {}).get('sensitivity'))} | {_pct(result.operating.get(c, {}).get('specificity'))} |"
                for c in result.classes if result.auc.get(c) is not None]
    lines = [
        f"# Model card: `{name}`", "",
        "> Research software, not a medical device. Trained on 474 public radiographs; do not use for diagnosis.", "",
        *([status, ""] if status else []),
        "| | |", "|---|---|",
        f"| method | `{spec.method}` (`cxrviewer-train methods`) |",
        f"| architecture | `{spec.architecture}`, {spec.in_channels} input channel(s), random initialisation (no pretrained weights) |",
        f"| input | {spec.input_size[1]}×{spec.input_size[0]} px, intensity `{spec.intensity}`, resize `{spec.resize}` |",
        f"| findings | {', '.join(spec.targets)} |",
        f"| training data | `{config['data']}`: the NIH ChestX-ray14 sample (474 real radiographs, one per patient), "
        f"patient-disjoint {config.get('folds')}-fold split, this model trained on the folds other than fold {config.get('fold')} "
        "(a tenth of their patients held out for validation), seed "
        f"{config.get('seed')} |",
        f"| checkpoint | the run's `{which}` model; stored in {'fp16' if half else 'fp32'} |",
        f"| CAM layer / boxes | `{spec.cam_layer}`, boxes by `{spec.extra.get('box_method', 'scalp')}` |",
        "", "## Reproduce", "", "```", _command(config), f"python scripts/ship_model.py RUN --which {which} --name {name}"
        + (" --half" if half else "") + (f" --box-method {box_method}" if box_method else ""), "```", "",
        f"## Held-out performance (fold {config.get('fold')}: {result.n_images} images never seen in training)", "",
        "| finding | AUC | bootstrap 95% interval | operating threshold | sensitivity | specificity |",
        "|---|---|---|---|---|---|", *auc_rows,
        f"| **mean** | **{result.mean_auc:.3f}** | {_ci(result.mean_auc_ci)} | | | |", "",
        "Operating thresholds: chosen on the run's validation split by Youden's J (sensitivity + specificity − 1) "
        "and stored in the model file; the viewer marks a finding positive at or above them (Settings can override).",
        "Sensitivity and specificity above are measured at those thresholds on the held-out fold; with a "
        "validation split this small the thresholds are unstable.", "",
    ]
    if cv:
        lines += ["## Cross-validation of the recipe", "", cv.get("text", ""), ""]
    lines += ["## Localization", "",
              notes or "Not measured for this model yet (issue 6: synthetic lesions inserted into held-out folds).", "",
              "## Limits", "",
              "- 474 training images from one public dataset (NIH Clinical Center); labels mined from reports (noisy).",
              "- Random initialisation, CPU training at a small input size: far below published ChestX-ray14 models.",
              "- Intervals are wide (10-23 positives per finding in the held-out fold).",
              "- Not validated on other sites, devices, children or lateral views. Not a medical device.", ""]
    return "\n".join(lines)


def _ci(interval) -> str:
    return "–" if not interval else f"{interval[0]:.3f} – {interval[1]:.3f}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--which", default="best", choices=("best", "last"))
    parser.add_argument("--name", default="default")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--cv-summary", type=Path, help="a folds.json / text to quote in the card")
    parser.add_argument("--notes", default="", help="localization text for the card")
    parser.add_argument("--box-method", default=None, help="the box algorithm the viewer uses for this model")
    parser.add_argument("--status", default="", help="a paragraph at the top of the card (e.g. interim)")
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
    result = evaluate(shipped, shipped_spec, source, split="test", device="cpu", batch_size=32)

    registry = MODELS / "registry.json"
    doc = json.loads(registry.read_text()) if registry.is_file() else {"models": {}}
    doc["models"][args.name] = {"file": out.name, "sha256": sha}
    registry.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (MODELS / f"{args.name}.reference.json").write_text(json.dumps(
        {"model": out.name, "sha256": sha, "targets": list(shipped_spec.targets), "probabilities": stored,
         "max_fp16_drift": drift}, indent=2) + "\n")
    cv = None
    if args.cv_summary:
        cv = {"text": args.cv_summary.read_text()}
    (MODELS / f"{args.name}.md").write_text(_card(args.name, shipped_spec, config, result, args.which, args.half, cv,
                                                  args.notes, args.status, args.box_method))
    print(f"{out.relative_to(REPO)}: {out.stat().st_size / 2**20:.1f} MiB, sha256 {sha[:12]}…, fp16 drift {drift:.1e}, "
          f"held-out mean AUC {result.mean_auc:.3f} {result.mean_auc_ci}; sha256 check {sha256_of(out) == sha}")
    print("per class:", {c: round(v, 3) for c, v in result.auc.items() if v is not None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
