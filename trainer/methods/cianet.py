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

Each step: every training image x is paired with the bank negative nearest to it by perceptual hash
(`CIANet.match_negatives`, inside `forward_train`), and

    loss = mean over images of sum_k [ lambda_k beta_B L_B^k (Eq. 4) + (1 - lambda_k) L_I^k (Eq. 5) ]  (Eq. 6)
           + structure_weight * L_s(phi_A(x), T)                                                   (Sec. 3.1)

lambda_k = 1 where the image carries a box of class k (the source's boxes, clinician corrections
included: `has_box_path`); cells are those of the ALIGNED image (`box_grid_targets` with theta).
Unknown (NaN) labels take no MIL term.

Paper settings kept: input 512 (config default), ResNet-50, 16 x 16 grid, SGD with momentum 0.9,
lr 0.001, weight decay 1e-4, 15 epochs, no data augmentation ("none"), 16 x 16 hash matching.

Deviations and choices (each because the paper is silent or the framework differs):
- Alignment is trained JOINTLY with CIA-Net (the paper does not say whether phi_A is pre-trained):
  L_s is added to the loss, and phi_A learns from L_s only (`forward_train` detaches theta on the
  classification path; the model's author found classification gradients pull theta off the chest).
  L_s = feature reconstruction loss (fixed random conv features, no pretrained VGG offline) +
  consistency_weight * pixel MSE; both weights 1 (the paper gives none). L_s is taken on the
  training images only, not on the bank negatives (those are a handful of images seen every step).
- Negatives: the paper matches against all 63,000 negatives at training and test time; the model
  carries `bank_size` (16) of them, and training pairs with that same bank, so training sees the
  negatives inference will use (`negative_bank` chooses them to cover the pool).
- Canonical chest: the paper crops "the central view tightly bounding the two lungs" by hand; the
  default `canonical_crop` (top, bottom, left, right) = (0.08, 0.80, 0.12, 0.88) was read off the
  mean of the NIH sample's "No Finding" films (lungs with a margin, costophrenic angles kept);
  `--set canonical_crop=none` keeps the whole mean picture. A box wholly outside the aligned view
  trains its class through MIL (Eq. 5) instead of an all-negative grid.
- Stability: Eq. 4 SUMS the BCE of 256 cells (times beta_B = 5, [14]'s weight): a box term is
  ~1000x an averaged BCE. The default `clip_grad` (max global gradient norm, see `defaults`) keeps
  SGD at the paper's lr 0.001 from diverging from random initialisation; lower the lr instead if you
  remove it.
- Images are averaged over the batch (Eq. 6 sums over samples: a constant factor of the batch size).
- Schedule: the loop's cosine decay over the run, not the paper's /10 every 5 epochs; plain SGD
  momentum, not Nesterov (the loop offers neither; see the report). Batch size is the config's (the
  paper's is 6: pass --batch-size 6). Random initialisation (the paper starts from ImageNet).
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
    paper = "Liu et al., Align, Attend and Locate: Chest X-ray Diagnosis via Contrast Induced Attention Network (ICCV 2019)"
    architecture = "cianet"
    has_box_path = True
    defaults = {
        "epochs": 15, "lr": 1e-3, "optimizer": "sgd", "weight_decay": 1e-4, "clip_grad": 5.0,
        "pretrain_epochs": 1,  # stage "pretrain": phi_A alone on L_s
        # the architecture (see cxrviewer.models.cianet)
        "depth": "resnet50", "grid_size": 16, "bank_size": 16, "hash_size": 16, "negative_match": "phash",
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

    def canonical_crop(self) -> tuple[float, float, float, float] | None:
        """The `canonical_crop` option: four fractions, or None / "none" for the uncropped mean."""
        crop = self.args["canonical_crop"]
        if crop is None or (isinstance(crop, str) and crop.lower() in ("none", "null", "")):
            return None
        if isinstance(crop, str) or len(crop) != 4:
            raise CxrError(None, f"canonical_crop must be four fractions [top, bottom, left, right] or none, not {crop}")
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
