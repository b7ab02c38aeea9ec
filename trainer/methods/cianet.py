"""`cianet`: CIA-Net (Liu et al., "Align, Attend and Locate", ICCV 2019) trained as the paper does.

Network: the registered architecture "cianet" (`cxrviewer.models.cianet`): the alignment network
phi_A, a ResNet-50 whose C5 is the upper branch and whose C4 is the shared attention encoder, the
contrast-induced attention Delta M = |M+ - M-| against a "No Finding" negative, and a 16 x 16 grid
classifier whose image probability is the MIL product of Eq. 5.

Before training (`setup`, through `cxrviewer.trainer.data.negative_bank`): the canonical chest T =
the mean of (up to 500, Sec. 3) randomly chosen "No Finding" training images (`canonical_chest_from`),
and the model's negative bank = `bank_size` "No Finding" training images spread over the pool by
their 16 x 16 perceptual hashes (`select_negative_bank`). Both are written into model BUFFERS
(`set_canonical_chest`, `set_negative_bank`), so `best.safetensors` carries them and the viewer's
Analyzer needs nothing else. A pool smaller than the bank is repeated to fill it.

Two stages:
- "pretrain" (`pretrain_epochs`, default 1; no validation): the alignment network phi_A alone,
  loss L_s(phi_A(x), T) (Sec. 3.1); nothing else runs or learns.
- "train" (`epochs`, 15): every training image x is paired with the bank negative nearest to it by
  perceptual hash (`CIANet.match_negatives`, inside `forward_train`), and

    loss = mean over images of sum_k [ lambda_k beta_B L_B^k (Eq. 4) + (1 - lambda_k) L_I^k (Eq. 5) ]  (Eq. 6)
           (+ structure_weight * L_s, default 0: phi_A held fixed, BatchNorm in eval mode)

  lambda_k = 1 where the image carries a box of class k (the source's boxes, clinician corrections
  included: `has_box_path`); cells are those of the ALIGNED image (`box_grid_targets` with theta).
  Unknown (NaN) labels take no MIL term.

Backbone: the paper's ResNet-50 starts from ImageNet weights; the default here is the
ImageNet-initialised EfficientNet-Lite0 (depth "efficientnet-lite0", `--init imagenet`: C4 = its
112-channel stride-16 features, C5 = its 1280-channel head at stride 32; see cxrviewer.models.cianet),
the pretrained trunk we can ship. `--set depth=resnet50` is the paper's network.

Paper settings kept (Sec. 3.3, 4.1, 4.3.2): input 512 (config default), 16 x 16 grid, SGD
with Nesterov momentum 0.9 (`param_groups`), lr 0.001 divided by 10 every 5 epochs (`lr_factor`),
weight decay 1e-4, 15 epochs, no data augmentation ("none"), 16 x 16 hash matching.

Deviations and choices (each because the paper is silent or the framework differs):
- The alignment network is PRE-TRAINED, then held fixed. The paper frames phi_A's learning as its own
  minimisation of L_s (Sec. 3.1) and plugs the module into both its baseline and CIA-Net (Table 6),
  but does not say when it is trained. Training it jointly under one clipped gradient norm does not
  work: the CIA-Net gradient is 200 to 10^4 times larger (measured), so clipping freezes phi_A anyway.
  `structure_weight` > 0 continues L_s in "train". `forward_train` never lets the classification
  loss reach phi_A (its author found that pulls theta off the chest).
  L_s = feature reconstruction loss (fixed random conv features: no pretrained VGG offline) +
  consistency_weight (1; the paper gives none) * pixel MSE, on the training images only.
- Negatives: the paper matches against all 63,000 negatives at training and test time; the model
  carries `bank_size` (16) of them, and training pairs with that same bank, so training sees the
  negatives inference will use (`negative_bank` chooses them to cover the pool).
- Canonical chest: the paper crops "the central view tightly bounding the two lungs" by hand; the
  default `canonical_crop` (top, bottom, left, right) = (0.08, 0.80, 0.12, 0.88) was read off the
  mean of the NIH sample's "No Finding" films (lungs with a margin, costophrenic angles kept);
  `--set canonical_crop=none` keeps the whole mean picture. A box wholly outside the aligned view
  trains its class through MIL (Eq. 5) instead of an all-negative grid.
- Stability: Eq. 4 SUMS the BCE of 256 cells (times beta_B = 5, [14]'s weight): a box term is
  ~1000x an averaged BCE, and the randomly initialised network's global gradient norm is 10^3-10^4
  (ResNet-18, 128 px) to 10^5 (ResNet-50, 512 px). Unclipped, SGD at the paper's lr 0.001 diverged
  within 8 steps (loss 245 -> 62,000); `clip_grad` = 5 caps every step's gradient at norm 5 and
  trained stably (CIA-Net, ResNet-18 at 128 px, 40 steps; phi_A over 3 epochs of the NIH sample,
  L_s 0.70 -> 0.48). Remove it only with a much lower lr.
- Images are averaged over the batch (Eq. 6 sums over samples: a constant factor of the batch size).
- The "pretrain" stage (not in the paper) uses the same optimiser and lr with the loop's cosine decay.
- Batch size is the config's (the paper's is 6: pass --batch-size 6; a method cannot set it).
  Random initialisation (the paper starts from ImageNet; nothing is downloaded).
- No `correction_weight`: corrected boxes are boxes and go through Eq. 4 like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cxrviewer.errors import CxrError
from cxrviewer.models.cianet import CIANet, box_grid_targets, cianet_box_loss, cianet_mil_loss
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.data.negative_bank import canonical_chest_from, no_finding_indices, select_negative_bank
from cxrviewer.trainer.methods.base import Method, Stage, _stage_code, _unwrap, register_method

if TYPE_CHECKING:
    from cxrviewer.models.spec import ModelSpec

# (top, bottom, left, right): the two lungs with a margin, read off the mean of the NIH sample's "No Finding" films
CANONICAL_CROP = (0.08, 0.80, 0.12, 0.88)
ARCH_OPTIONS = ("depth", "grid_size", "bank_size", "hash_size", "negative_match", "mil_floor", "align_width",
                "align_resolution")


def batch_grid_targets(boxes: list[torch.Tensor], theta: torch.Tensor, num_classes: int, grid: int,
                       input_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(cell targets [B, K, P, P], lambda [B, K] bool) for the batch's boxes (input pixels),
    over the cells of each ALIGNED image. A class whose boxes fall wholly outside the aligned
    view (no cell overlaps them) keeps lambda = 0: its image label goes to the MIL term instead
    of an all-negative grid."""
    targets, has_box = [], []
    for b, t in zip(boxes, theta):
        rows = [tuple(float(v) for v in row) for row in b.detach().cpu().tolist()]
        cell, lam = box_grid_targets(rows, num_classes, grid, input_size, theta=t)
        targets.append(cell)
        has_box.append(lam & cell.flatten(1).any(1))
    return torch.stack(targets), torch.stack(has_box)


@register_method
class CIANetMethod(Method):
    name = "cianet"
    title = "CIA-Net: alignment + contrast-induced attention, grid BCE on boxes and MIL on labels"
    paper = ("Liu et al., Align, Attend and Locate: Chest X-ray Diagnosis via Contrast Induced Attention "
             "Network (ICCV 2019)")
    architecture = "cianet"
    has_box_path = True
    defaults = {
        "epochs": 15, "lr": 1e-3, "optimizer": "sgd", "weight_decay": 1e-4, "clip_grad": 5.0,
        "pretrain_epochs": 1,  # stage "pretrain": phi_A alone on L_s
        # the architecture (see cxrviewer.models.cianet)
        "depth": "efficientnet-lite0", "grid_size": 16, "bank_size": 16, "hash_size": 16, "negative_match": "phash",
        "mil_floor": 0.98, "align_width": 16, "align_resolution": 128,
        # the losses
        "beta_b": 5.0, "consistency_weight": 1.0, "structure_weight": 0.0,  # > 0: phi_A also learns in "train"
        # the pictures carried by the model
        "canonical_images": 500, "canonical_crop": CANONICAL_CROP,
        # data
        "augment": "none",
    }

    def __init__(self, config, source, train) -> None:
        super().__init__(config, source, train)
        arch = config.architecture or self.architecture
        if arch != "cianet":
            raise CxrError(None, f"the cianet method trains the cianet architecture, not {arch}")
        if self.args["augment"] not in ("none", "light", "strong"):
            raise CxrError(None, f"augment must be none, light or strong, not {self.args['augment']}")

    def spec_fields(self) -> dict[str, Any]:
        from cxrviewer.models.efficientnet_lite import VARIANTS

        # the ImageNet EfficientNet-Lite weights were trained on pixels in [-1, 1]
        return {"std": (0.5,)} if self.args["depth"] in VARIANTS else {}

    def arch_kwargs(self) -> dict[str, Any]:
        kwargs = {k: self.args[k] for k in ARCH_OPTIONS}
        kwargs["bank_resolution"] = int(self.config.input_size)  # stored at the size it is used at
        return kwargs

    def stages(self) -> list[Stage]:
        """"pretrain": the alignment network alone on L_s (no validation); "train": CIA-Net (Eq. 6)."""
        lr = float(self.hyper("lr"))
        pretrain = int(self.hyper("pretrain_epochs"))
        first = [Stage("pretrain", pretrain, lr, validate=False)] if pretrain > 0 else []
        return first + [Stage("train", int(self.hyper("epochs")), lr)]

    def param_groups(self, step_module: nn.Module, params: list[nn.Parameter], weight_decay: float) -> list[dict]:
        """One group; with SGD, Nesterov momentum (Sec. 3.3; the loop's SGD has momentum 0.9)."""
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay}
        if self.hyper("optimizer") == "sgd":
            group["nesterov"] = True
        return [group]

    def lr_factor(self, stage: Stage, steps_per_epoch: int) -> Any:
        """"train": lr / 10 every 5 epochs (Sec. 3.3); "pretrain": the loop's cosine decay."""
        return self.step_decay(5, steps_per_epoch, 0.1) if stage.name == "train" else None

    def canonical_crop(self) -> tuple[float, float, float, float] | None:
        """The `canonical_crop` option: four fractions, or None / "none" for the uncropped mean."""
        crop = self.args["canonical_crop"]
        if crop is None or (isinstance(crop, str) and crop.lower() in ("none", "null", "")):
            return None
        if isinstance(crop, str) or len(crop) != 4:
            raise CxrError(None, f"canonical_crop must be four fractions [top, bottom, left, right] or none, "
                                 f"not {crop}")
        return tuple(float(c) for c in crop)

    def setup(self, model: nn.Module, spec: "ModelSpec", device: torch.device) -> None:
        """Canonical chest and negative bank from the "No Finding" training images, into the model."""
        model = _unwrap(model)
        if not isinstance(model, CIANet):
            raise CxrError(None, f"the cianet method needs a CIANet model, got {type(model).__name__}")
        pool = no_finding_indices(self.source, self.train)
        if len(pool) == 0:
            raise CxrError(None, "the cianet method needs 'No Finding' training images for its canonical chest "
                                 "and negative bank, and the training split has none")
        size, seed = tuple(spec.input_size), int(self.config.seed)
        canonical = canonical_chest_from(self.source, self.train, size, int(self.args["canonical_images"]), seed,
                                         crop=self.canonical_crop(), spec=spec)
        count = min(model.bank_size, len(pool))
        _, bank = select_negative_bank(self.source, self.train, count, size, seed, spec=spec,
                                       hash_size=int(self.args["hash_size"]))
        model.set_canonical_chest(spec.preprocess(canonical))
        model.set_negative_bank(bank[torch.arange(model.bank_size) % count])

    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """The training images shuffled, in batches of `batch_size`, augmented as `augment` says
        (the paper: none). Each image's negative is matched inside the model."""
        rng = self.epoch_rng(stage, epoch)
        order = rng.permutation(self.train)
        size, aug, code = self.config.batch_size, self.args["augment"], _stage_code(stage.name)
        return [[Item("query", int(i), aug, item_seed(self.config.seed, code, epoch, b, slot))
                 for slot, i in enumerate(order[b * size:(b + 1) * size])]
                for b in range(len(order) // size)]

    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        part = batch["query"]
        model = _unwrap(net)
        x = part["image"]
        consistency = float(self.args["consistency_weight"])
        if stage.name == "pretrain":
            structure = model.structure_loss(model.align(x)[0], consistency)
            return structure, {"structure": structure.detach()}
        weight = float(self.args["structure_weight"])
        if weight == 0.0:
            model.align.eval()  # held fixed: no gradient, and its BatchNorm statistics stay as pre-trained
        out = model.forward_train(x)
        cells = out["cell_logits"]
        targets, lam = batch_grid_targets(part["boxes"], out["theta"], cells.shape[1], model.grid_size,
                                         tuple(x.shape[-2:]))
        targets, lam = targets.to(cells.device), lam.to(cells.device)
        labels = part["labels"].float()
        known = ~torch.isnan(labels)
        box = cianet_box_loss(cells, targets, lam, float(self.args["beta_b"]), "none")
        mil = cianet_mil_loss(cells, torch.nan_to_num(labels, nan=0.0), known & ~lam, model.mil_floor, "none")
        box, mil = box.sum(1).mean(), mil.sum(1).mean()
        total = box + mil
        parts = {"box": box.detach(), "mil": mil.detach(), "boxed": lam.any(1).float().sum()}
        if weight:
            structure = model.structure_loss(out["aligned"], consistency)
            total = total + weight * structure
            parts["structure"] = structure.detach()
        return total, parts
