"""The training-method interface and its registry.

A method says which network it trains (`architecture`, `arch_kwargs`), in which stages
(`stages`: one for supervised methods; pre-training then fine-tuning for BYOL-CAM and MedAug),
which images each batch holds (`plan_epoch`, a list of `Item` lists) and how a batch becomes a loss
(`loss`). The loop (`cxrviewer.trainer.loop`) owns everything else: devices, autocast, the
optimiser, DistributedDataParallel, checkpoints, validation and progress.

`loss(stage, net, batch)` runs inside DistributedDataParallel's forward: `net` is the model being
trained and `modules` (from `build_modules`) the method's trainable training-only modules (BYOL's
predictor, ...); state that is not trained by gradients (EMA targets, MoCo queues, KACL's radiomic
cache) lives on the method and is saved through `state_dict`/`load_state_dict` for `--resume`.

Methods register with `@register_method`; `cxrviewer-train methods` lists them with their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from cxrviewer.errors import CxrError
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.losses import cam_box_loss, differentiable_gradcam

if TYPE_CHECKING:
    from cxrviewer.models.spec import ModelSpec
    from cxrviewer.trainer.config import TrainConfig
    from cxrviewer.trainer.data.sources import DataSource


class UnknownMethod(CxrError, ValueError):
    """A training method name that is not registered."""


@dataclass(frozen=True)
class Stage:
    name: str  # "train" | "pretrain" | "finetune"
    epochs: int
    lr: float
    trainable: str = "all"  # "all" | "head" (linear evaluation: only the classifier head learns)
    validate: bool = True  # validation AUC each epoch; the best checkpoint is chosen among these


class Method:
    """Base class: a supervised, BCE-trained classifier ("baseline") unless overridden."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    architecture: ClassVar[str] = "resnet50"
    takes_inputs: ClassVar[bool] = False  # trains the metadata inputs (--inputs age,sex,view) of its model
    has_box_path: ClassVar[bool] = False  # boxes are part of the paper's method (else: --corrections adds a CAM loss)
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 10, "lr": 1e-4, "optimizer": "adam", "weight_decay": 1e-5, "clip_grad": None,
        "schedule": "cosine", "correction_weight": 0.1, "box_supervision": False,
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every method has the generic options: its `defaults` extend (and may override) those of
        # the classes above it, so a method cannot drop one by forgetting to spread them.
        super().__init_subclass__(**kwargs)
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("defaults", {}))
        cls.defaults = merged

    def __init__(self, config: "TrainConfig", source: "DataSource", train: np.ndarray) -> None:
        self.config = config
        self.source = source
        self.train = np.asarray(train, dtype=np.int64)  # record indices of the training split
        self.args = {**self.defaults, **{k: v for k, v in config.method_args.items()}}
        unknown = sorted(set(config.method_args) - set(self.defaults))
        if unknown:
            raise CxrError(None, f"the {self.name} method has no option {', '.join(unknown)} "
                                 f"(its options: {', '.join(sorted(self.defaults))})")
        self.labels = source.label_matrix()
        # Boxes train the model when the paper has a box path, when clinicians corrected boxes, or
        # when asked (`--set box_supervision=true`: the source's own boxes, e.g. NIH's or synthetic ones).
        self.use_boxes = self.has_box_path or bool(config.corrections) or bool(self.args.get("box_supervision"))

    # --- configuration -----------------------------------------------------------------------
    def hyper(self, name: str) -> Any:
        """A top-level config value when set, else the method's default."""
        value = getattr(self.config, name, None)
        return self.args.get(name) if value is None else value

    def arch_kwargs(self) -> dict[str, Any]:
        return {}

    def spec_fields(self) -> dict[str, Any]:
        """Spec fields (mean, std, ...) the method's network needs beyond its architecture's defaults."""
        return {}

    def stages(self) -> list[Stage]:
        return [Stage("train", int(self.hyper("epochs")), float(self.hyper("lr")))]

    def param_groups(self, step_module: nn.Module, params: list[nn.Parameter], weight_decay: float) -> list[dict]:
        """Optimiser parameter groups over the trainable `params` (default: one group)."""
        return [{"params": params, "weight_decay": weight_decay}]

    def lr_factor(self, stage: Stage, steps_per_epoch: int) -> Any:
        """The learning-rate multiplier as a function of the step in the stage, or None for the
        loop's cosine decay."""
        return None

    @staticmethod
    def step_decay(every_epochs: int, steps_per_epoch: int, gamma: float = 0.1) -> Any:
        """StepLR as a step function: lr × gamma every `every_epochs` epochs."""
        period = max(1, every_epochs * steps_per_epoch)
        return lambda step: gamma ** (step // period)

    # --- modules and state ---------------------------------------------------------------------
    def build_modules(self, model: nn.Module, spec: "ModelSpec") -> nn.ModuleDict:
        """Trainable training-only modules (saved in the training state, not in the model file)."""
        return nn.ModuleDict()

    def setup(self, model: nn.Module, spec: "ModelSpec", device: torch.device) -> None:
        """Called once before training (and again after a resume): build banks, targets, queues."""

    def on_epoch_start(self, stage: Stage, epoch: int, model: nn.Module, device: torch.device) -> None:
        """Per-epoch work outside the step (e.g. KACL refreshes its radiomic positives)."""

    def after_step(self, stage: Stage, model: nn.Module, modules: nn.ModuleDict, outputs: dict) -> None:
        """After each optimiser step (EMA targets, MoCo queues)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""

    def finalize(self, model: nn.Module, spec: "ModelSpec") -> None:
        """Before the model is saved: record method-specific spec fields."""
        spec.method = self.name

    # --- batches -------------------------------------------------------------------------------
    def epoch_rng(self, stage: Stage, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, _stage_code(stage.name), epoch])

    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """Default: the training records shuffled, in batches of `batch_size` queries."""
        rng = self.epoch_rng(stage, epoch)
        order = rng.permutation(self.train)
        size = self.config.batch_size
        aug = str(self.args.get("augmentation", "light"))
        batches = []
        for b in range(len(order) // size):
            batches.append([Item("query", int(i), aug, item_seed(self.config.seed, _stage_code(stage.name),
                                                                        epoch, b, slot))
                            for slot, i in enumerate(order[b * size:(b + 1) * size])])
        return batches

    # --- the loss ------------------------------------------------------------------------------
    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def correction_term(self, net: nn.Module, part: dict, logits_loss: torch.Tensor,
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`logits_loss` plus, when boxes are in use and some images carry them, the CAM loss on them."""
        if not self.use_boxes or not any(len(b) for b in part["boxes"]):
            return logits_loss, {}
        boxed = torch.tensor([len(b) > 0 for b in part["boxes"]], device=part["image"].device)
        images = part["image"][boxed]
        _, cams = differentiable_gradcam(_unwrap(net), images)
        term = cam_box_loss(cams, [b for b in part["boxes"] if len(b)], tuple(images.shape[-2:]))
        weight = float(self.args.get("correction_weight", 0.1))
        return logits_loss + weight * term, {"cam": term.detach()}


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") else net


def _stage_code(name: str) -> int:
    return {"train": 0, "pretrain": 1, "finetune": 2}.get(name, 3)


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError("a training method needs a name")
    METHODS[cls.name] = cls
    return cls


def methods_taking_inputs() -> list[str]:
    from cxrviewer.trainer import methods as _builtins  # noqa: F401  (registers the built-in methods)

    return sorted(name for name, cls in METHODS.items() if cls.takes_inputs)


def get_method(name: str) -> type[Method]:
    from cxrviewer.trainer import methods as _builtins  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise UnknownMethod(None, f"unknown training method '{name}' (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
