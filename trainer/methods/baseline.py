"""`baseline`: a supervised multi-label classifier trained with binary cross-entropy.

The reference every paper compares against (SCALP's and KACL's "ResNet + BCE" rows), here in the
recipe that fine-tunes an ImageNet-pretrained network on a few hundred radiographs:
- EfficientNet-Lite0 (`--init imagenet`, output stride 16) with a linear head;
- AdamW at 3e-4 (weight decay 0.01) with the one-cycle schedule, 12 epochs;
- "crop" augmentation (the input-size crop of a 12.5% larger picture, ±10% contrast/brightness);
- BCE with a positive weight per finding, negatives/positives over the training split capped at
  `pos_weight_cap` = 10, so rare findings count without one of them swamping the loss (0: off);
- NaN (unknown) labels masked out;
- optional metadata inputs (`--inputs age,sex,view`): a linear term of the encoded age, sex and
  view (missing values masked) added to the image logits (`CXRClassifier.attach_metadata`).
The papers' setting (ResNet-50, Adam at 1e-4, light affine augmentation, plain BCE) is
`--architecture resnet50 --init PATH --optimizer adam --lr 1e-4 --schedule cosine
--set augmentation=light --set pos_weight_cap=0`.
With `--corrections` the clinician-corrected boxes add a CAM loss (see `Method.correction_term`).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrviewer.trainer.losses import masked_bce, positive_weights
from cxrviewer.trainer.methods.base import Method, Stage, register_method


@register_method
class Baseline(Method):
    name = "baseline"
    title = "EfficientNet-Lite0 (ImageNet) + weighted binary cross-entropy"
    paper = "the supervised baseline of SCALP Table I / KACL Table 1"
    architecture = "efficientnet-lite0"
    takes_inputs = True
    defaults = {"epochs": 12, "lr": 3e-4, "optimizer": "adamw", "weight_decay": 0.01,
                "schedule": "onecycle", "augmentation": "crop",  # none | light | crop | strong (trainer/batches.py)
                "pos_weight_cap": 10.0}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pos_weight: torch.Tensor | None = None

    def setup(self, model: nn.Module, spec, device: torch.device) -> None:
        cap = float(self.args["pos_weight_cap"] or 0)
        if cap > 0:
            self.pos_weight = torch.from_numpy(positive_weights(self.labels[self.train], cap)).to(device)

    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        part = batch["query"]
        logits = net(part["image"], part["metadata"]) if "metadata" in part else net(part["image"])
        bce = masked_bce(logits, part["labels"], self.pos_weight)
        total, parts = self.correction_term(net, part, bce)
        return total, {"bce": bce.detach(), **parts}
