"""`baseline`: a supervised multi-label classifier trained with binary cross-entropy.

The reference every paper compares against (SCALP's and KACL's "ResNet + BCE" rows): a ResNet-50
with a linear head, Adam at 1e-4, light affine augmentation (`--set augmentation=strong|none`), NaN
(unknown) labels masked out.
With `--corrections` the clinician-corrected boxes add a CAM loss (see `Method.correction_term`).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrviewer.trainer.losses import masked_bce
from cxrviewer.trainer.methods.base import Method, Stage, register_method


@register_method
class Baseline(Method):
    name = "baseline"
    title = "ResNet + binary cross-entropy"
    paper = "the supervised baseline of SCALP Table I / KACL Table 1"
    architecture = "resnet50"
    defaults = {**Method.defaults, "augmentation": "light"}  # none | light | strong (trainer/batches.py)

    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        part = batch["query"]
        logits = net(part["image"])
        bce = masked_bce(logits, part["labels"])
        total, parts = self.correction_term(net, part, bce)
        return total, {"bce": bce.detach(), **parts}
