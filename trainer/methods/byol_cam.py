"""`byol-cam`: BYOL pre-training with a Grad-CAM box loss, then supervised fine-tuning.

Talasila et al., "Self-Supervision and Weak Supervision for Accurate and Interpretable Chest X-Ray
Classification Models"; BYOL is Grill et al. 2020.

Stage "pretrain" (Sec. II-C, Fig. 2, Eq. 3-8):
- online network θ: encoder f (the model's backbone + global average pooling), projector g (the
  model's `aux["projection"]`, 256-d output as in Sec. III-C) and predictor q (a training-only MLP,
  `modules["predictor"]`, 256 → 512 → 256 with BatchNorm as in BYOL);
- target network δ: a momentum copy of f + g kept on the method (`MomentumEncoder`), updated after
  every step as δ ← τδ + (1 − τ)θ with BYOL's schedule τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2 from
  τ_base = 0.99 (the paper's value, Sec. III-D) over the K pre-training steps;
- two augmented views of each image; loss = ‖q̄(z_θ) − z̄'_δ‖² + the symmetric term (`byol_regression`
  both ways) + λ·L_CAM with λ = 2 (Sec. III-D);
- L_CAM (Eq. 6-7): on the views that carry boxes, Grad-CAM of the online encoder for each boxed
  class (differentiable, so it trains the network), sigmoid, binary cross-entropy against the mask
  of that class's boxes (`losses.cam_box_loss`). Boxes are `record.boxes`: the source's
  ground-truth boxes and, with `--corrections`, the clinician-corrected ones (`has_box_path`).

  Grad-CAM needs class scores y^c, and BYOL has no classifier. The paper computes Grad-CAM on the
  encoder as it stands during pre-training and, for fine-tuning, "replace[s] the encoder's
  fully-connected layer with another" (Sec. III-C): the class scores during pre-training come from
  the encoder's own classification layer, which only the CAM loss trains. That is what is done
  here: the model's head gives y^c during pre-training (trained only through L_CAM, by the
  gradient of the Grad-CAM weights α^c) and is re-initialised, from a seeded generator, when
  fine-tuning starts (`reset_head`, default true).

Stage "finetune" (Sec. III-D b): the whole network end to end, Adam at 1e-4, binary cross-entropy
with a weight for positive examples (`pos_weight`: negatives/positives per class over the training
split), light affine augmentation; the model with the best validation AUROC is kept (the loop's
`best.safetensors`).

Architecture: the paper trains a ResNet-50 from random weights (Sec. III-C, IV-A); the default here
is EfficientNet-Lite0 from ImageNet weights (`--init imagenet`, a deviation: 1280-d features into the
same 512-wide projector, a 16×16 CAM grid at 256 px). `--architecture resnet50 --init none` is the paper's.

Deviations from the paper:
- Views: both views use the trainer's "strong" recipe (random resized crop, rotation, contrast/
  brightness, blur with p = 0.5); the paper gives the target's view a higher probability of
  slightly stronger augmentation, which the shared augmentation set does not express.
- L_CAM is computed on the boxed images of both views (one mean over all boxed (image, class)
  pairs) and the CAM is standardised per map before the sigmoid (`cam_box_loss`; raw Grad-CAM
  magnitudes are unbounded). The paper does not say which view it uses.
- The projector is the architecture's projection head: Linear(d, 512)–ReLU–Linear(512, 256) (the
  paper's hidden width) without BYOL's BatchNorm; the predictor has the paper's 512 hidden width
  and BYOL's BatchNorm.
- Batch size, input size and epochs are run settings: the paper uses batch 128, 256×256 inputs,
  500 pre-training and up to 200 fine-tuning epochs (the defaults here are those epochs; give
  `--batch-size 128 --input-size 256` for the paper's). The fine-tuning schedule is the loop's
  cosine decay, not the paper's reduce-on-plateau (×0.1 after four epochs without improvement).
- BatchNorm statistics are per process under DistributedDataParallel (BYOL uses global BN).
- The paper pre-trains on NIH and fine-tunes on CheXpert; here both stages use the run's data source.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cxrviewer.models.heads import mlp
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.losses import byol_regression, cam_box_loss, differentiable_gradcam, masked_bce, positive_weights
from cxrviewer.trainer.methods.base import Method, Stage, _stage_code, register_method
from cxrviewer.trainer.methods.ema import MomentumEncoder, byol_momentum, online_encoder


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def reset_seeded(module: nn.Module, seed: int) -> None:
    """Re-initialise every layer of `module` with its default initialiser, drawn on the CPU from
    `seed` (the same weights on any device and after any resume)."""
    fresh = copy.deepcopy(module).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in fresh.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    module.load_state_dict(fresh.state_dict())


@register_method
class ByolCam(Method):
    name = "byol-cam"
    title = "BYOL + Grad-CAM box loss pre-training, then supervised fine-tuning"
    paper = ("Talasila et al., Self-Supervision and Weak Supervision for Accurate and Interpretable "
             "Chest X-Ray Classification Models (BYOL: Grill et al. 2020)")
    architecture = "efficientnet-lite0"
    has_box_path = True
    defaults = {
        "epochs": 200, "lr": 1e-4, "optimizer": "adam", "weight_decay": 0.0, "clip_grad": None,
        "correction_weight": 0.1,
        "pretrain_epochs": 500, "pretrain_lr": 1e-4,
        "cam_weight": 2.0,  # λ of Eq. 8
        "tau_base": 0.99,  # the paper's target decay (BYOL's own default is 0.996)
        "projection_dim": 256, "predictor_hidden": 512,
        "reset_head": True, "pos_weight": True,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target: MomentumEncoder | None = None
        self.steps_done = 0  # pre-training steps taken (k of the τ schedule)
        self.total_steps = 1  # K
        self.head_reset = False
        self.pos_weight: torch.Tensor | None = None

    # --- configuration -----------------------------------------------------------------------
    def arch_kwargs(self) -> dict[str, Any]:
        # BYOL-CAM's projector: hidden width 512 (Sec. III-D), output `projection_dim`
        return {"projection": True, "projection_dim": int(self.args["projection_dim"]), "projection_hidden": 512}

    def stages(self) -> list[Stage]:
        return [Stage("pretrain", int(self.hyper("pretrain_epochs")), float(self.args["pretrain_lr"]),
                      trainable="all", validate=False),
                Stage("finetune", int(self.hyper("epochs")), float(self.hyper("lr")), trainable="all",
                      validate=True)]

    # --- modules and state ---------------------------------------------------------------------
    def build_modules(self, model: nn.Module, spec) -> nn.ModuleDict:
        dim = int(self.args["projection_dim"])
        return nn.ModuleDict({"predictor": mlp([dim, int(self.args["predictor_hidden"]), dim], batch_norm=True)})

    def setup(self, model: nn.Module, spec, device: torch.device) -> None:
        if not any(self.source.records[i].boxes for i in self.train):
            warnings.warn("byol-cam: no training image carries a box, so the CAM loss never applies (NIH's "
                          "official split puts every boxed image in the test split; the paper trains on 80% of "
                          "them)", stacklevel=2)
        self.target = MomentumEncoder(online_encoder(model))
        pretrain = self.stages()[0]
        self.total_steps = max(1, pretrain.epochs * (len(self.plan_epoch(pretrain, 0)) // world_size()))
        if self.args["pos_weight"]:
            weights = positive_weights(self.labels[self.train])
            self.pos_weight = torch.from_numpy(weights).to(device)

    def on_epoch_start(self, stage: Stage, epoch: int, model: nn.Module, device: torch.device) -> None:
        if stage.name == "finetune" and self.args["reset_head"] and not self.head_reset:
            reset_seeded(model.head, self.config.seed)
            self.head_reset = True

    def after_step(self, stage: Stage, model: nn.Module, modules: nn.ModuleDict, outputs: dict) -> None:
        if stage.name != "pretrain":
            return
        tau = byol_momentum(self.steps_done, self.total_steps, float(self.args["tau_base"]))
        self.target.update(online_encoder(model), tau)
        self.steps_done += 1

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict() if self.target is not None else {},
                "steps_done": self.steps_done, "head_reset": self.head_reset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("target"):
            self.target.load_state_dict(state["target"])
        self.steps_done = int(state.get("steps_done", 0))
        self.head_reset = bool(state.get("head_reset", False))

    # --- batches -------------------------------------------------------------------------------
    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """Fine-tuning: the default shuffled batches. Pre-training: each image twice, as "view1" and
        "view2", both "strong", with distinct seeds."""
        if stage.name != "pretrain":
            return super().plan_epoch(stage, epoch)
        rng = self.epoch_rng(stage, epoch)
        order = rng.permutation(self.train)
        size, code, seed = self.config.batch_size, _stage_code(stage.name), self.config.seed
        batches = []
        for b in range(len(order) // size):
            items = []
            for slot, i in enumerate(order[b * size:(b + 1) * size]):
                items.append(Item("view1", int(i), "strong", item_seed(seed, code, epoch, b, 2 * slot)))
                items.append(Item("view2", int(i), "strong", item_seed(seed, code, epoch, b, 2 * slot + 1)))
            batches.append(items)
        return batches

    # --- the loss ------------------------------------------------------------------------------
    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if stage.name == "pretrain":
            return self.pretrain_loss(net, modules, batch)
        part = batch["query"]
        bce = masked_bce(net(part["image"]), part["labels"], self.pos_weight)
        return bce, {"bce": bce.detach()}

    def pretrain_loss(self, net: nn.Module, modules: nn.ModuleDict,
                      batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        v1, v2 = batch["view1"], batch["view2"]
        views = torch.cat([v1["image"], v2["image"]])
        prediction = modules["predictor"](online_encoder(net)(views))
        target = self.target(views)
        p1, p2 = prediction.chunk(2)
        t1, t2 = target.chunk(2)
        byol = byol_regression(p1, t2.detach()) + byol_regression(p2, t1.detach())
        boxes = list(v1["boxes"]) + list(v2["boxes"])
        boxed = [k for k, b in enumerate(boxes) if len(b)]
        if not boxed:
            return byol, {"byol": byol.detach()}
        images = views[torch.tensor(boxed, device=views.device)]
        _, cams = differentiable_gradcam(net, images)
        cam = cam_box_loss(cams, [boxes[k] for k in boxed], tuple(images.shape[-2:]))
        total = byol + float(self.args["cam_weight"]) * cam
        return total, {"byol": byol.detach(), "cam": cam.detach()}
