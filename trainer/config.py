"""The training configuration: one dataclass, read from YAML, overridden from the command line.

Precedence (timm's `train.py` convention): the dataclass defaults < the method's defaults <
`--config FILE.yaml` < explicit command-line flags < `--set key=value` pairs. The resolved
configuration is written beside every run as `config.yaml`, so `fit --config RUN/config.yaml`
repeats a run exactly.

`method_args` carries the method's own hyper-parameters (SCALP's λ and temperature, MoCo's queue
size, ...); every method lists its defaults in `cxrviewer-train methods`. `--set lam=0.7` and
`--set method_args.lam=0.7` both set one of them; `--set batch_size=8` sets a top-level field;
`--set data_options.n_images=400` passes an option to the data source (`open_source(..., **data_options)`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cxrviewer.errors import CxrError
from cxrviewer.trainer.schedules import SCHEDULES

AMP_MODES = ("auto", "bf16", "fp16", "none")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULE_NAMES = tuple(SCHEDULES)


class BadConfig(CxrError, ValueError):
    """A configuration file or override that cannot be used."""


@dataclass
class TrainConfig:
    """Everything a training run depends on (see `docs/trainer.md` for each field)."""

    data: str = ""  # KIND:PATH, e.g. nih:/data/nih
    data_options: dict[str, Any] = field(default_factory=dict)  # the source kind's options (synthetic: n_images, ...)
    method: str = "baseline"
    labels: str = "default8"  # label space: default8 | nih14 | chexpert14
    architecture: str | None = None  # None: the method's default architecture
    inputs: Any = ""  # metadata model inputs: "age,sex,view" (or a list); "" = image only
    init: str = "auto"  # starting weights: imagenet | none | PATH (torchvision ResNet state dict); auto = imagenet where installed
    input_size: int = 512
    batch_size: int = 16
    epochs: int | None = None  # None: the method's default (fine-tuning epochs for two-stage methods)
    pretrain_epochs: int | None = None  # two-stage methods (byol-cam, medaug): None = method default
    lr: float | None = None  # None: the method's default
    weight_decay: float | None = None
    optimizer: str | None = None  # adam | adamw | sgd (None: the method's default)
    clip_grad: float | None = None  # max gradient norm (None: the method's default)
    schedule: str | None = None  # learning-rate schedule: cosine | onecycle (None: the method's default)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA where supported, else off) | bf16 | fp16 | none
    channels_last: bool | None = None  # None: on for CUDA
    workers: int = 2  # data-loading processes per training process
    cache: str = "auto"  # preprocessed-image cache folder; "auto" = user cache; "none" = off
    output: str = "runs"  # parent folder of run folders
    name: str = ""  # run folder name ("" = method-YYYYmmdd-HHMMSS)
    corrections: str | None = None  # store:DB with clinician-corrected boxes
    max_steps: int | None = None  # stop after this many optimiser steps in all (smoke runs, tests)
    max_train_images: int | None = None  # train on a seeded patient-disjoint subset of this size
    max_val_images: int | None = None
    checkpoint_every: int = 200  # also save the resumable state every N steps (0: end of epoch only)
    log_every: int = 10  # progress events every N steps
    val_split: str = "val"
    folds: int | None = None  # K-fold cross-validation: patient-disjoint folds of the whole source
    fold: int | None = None  # which fold is the test split of this run (with `folds`)
    select: str = "best"  # the model a cross-validation fold is scored with: best (validation AUC) | last
    method_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        problems = []
        if not self.data:
            problems.append("no training data (give --data KIND:PATH)")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, not '{self.device}'")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {', '.join(AMP_MODES)}, not '{self.amp}'")
        if self.input_size < 32:
            problems.append(f"input_size {self.input_size} is below 32 pixels")
        if self.batch_size < 2:
            problems.append("batch_size must be at least 2")
        for name in ("epochs", "pretrain_epochs", "max_steps", "max_train_images", "max_val_images"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must not be negative")
        if (self.folds is None) != (self.fold is None) and self.fold is not None:
            problems.append("fold needs folds (the number of folds)")
        if self.folds is not None and (self.folds < 2 or (self.fold is not None and not 0 <= self.fold < self.folds)):
            problems.append(f"folds must be at least 2 and fold in 0..folds-1 (got folds={self.folds}, fold={self.fold})")
        if self.select not in ("best", "last"):
            problems.append(f"select must be best or last, not '{self.select}'")
        if self.optimizer not in (None, "adam", "adamw", "sgd"):
            problems.append(f"optimizer must be adam, adamw or sgd, not '{self.optimizer}'")
        if self.schedule not in (None, *SCHEDULE_NAMES):
            problems.append(f"schedule must be one of {', '.join(SCHEDULE_NAMES)}, not '{self.schedule}'")
        from cxrviewer.models.metadata import BadInputs

        try:
            self.model_inputs()
        except BadInputs as exc:
            problems.append(str(exc))
        if problems:
            raise BadConfig(None, "bad training configuration: " + "; ".join(problems))

    def model_inputs(self) -> tuple[str, ...]:
        """The metadata inputs as a tuple in model order (cxrviewer.models.metadata)."""
        from cxrviewer.models.metadata import check_inputs

        names = self.inputs.split(",") if isinstance(self.inputs, str) else list(self.inputs or ())
        return check_inputs([str(n).strip() for n in names if str(n).strip()])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def _parse_value(text: str) -> Any:
    """A command-line value as YAML reads it: 0.8 -> float, true -> bool, [1, 2] -> list, abc -> str."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadConfig(path, "the configuration file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadConfig(path, f"the configuration file is not readable YAML ({first})") from exc
    if not isinstance(data, dict):
        raise BadConfig(path, "the configuration file must hold a mapping of field: value")
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise BadConfig(path, f"unknown configuration field(s) {', '.join(unknown)}")
    return data


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides; keys that are not fields go to `method_args`."""
    data = {**data, "method_args": dict(data.get("method_args") or {})}
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadConfig(None, f"'{item}' is not a key=value override")
        if key.startswith("data_options."):
            data.setdefault("data_options", {})
            data["data_options"] = {**(data["data_options"] or {}), key.split(".", 1)[1]: _parse_value(value)}
        elif key.startswith("method_args."):
            data["method_args"][key.split(".", 1)[1]] = _parse_value(value)
        elif key in FIELD_NAMES and key not in ("method_args", "data_options"):
            data[key] = _parse_value(value)
        else:
            data["method_args"][key] = _parse_value(value)
    return data


def resolve_config(yaml_path: str | Path | None = None, flags: dict[str, Any] | None = None,
                   sets: list[str] | None = None) -> TrainConfig:
    """Defaults < YAML < flags (those not None) < `key=value` sets; validated."""
    data: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in FIELD_NAMES:
            raise BadConfig(None, f"unknown configuration field '{key}'")
        data[key] = value
    data = apply_sets(data, sets or [])
    try:
        config = TrainConfig(**data)
    except TypeError as exc:
        raise BadConfig(yaml_path, f"bad configuration ({exc})") from exc
    config.validate()
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
