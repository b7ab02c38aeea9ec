"""`kacl`: knowledge-augmented contrastive learning with radiomic positives (BYOP feedback loop).

Han et al., "Knowledge-Augmented Contrastive Learning for Abnormality Classification and
Localization in Chest X-rays with Radiomics using a Feedback Loop".

- Networks (Sec. 3, Fig. 2; architecture "kacl"): image encoder f_i = ResNet-18 (+ global average
  pooling) with a linear classifier and the projector g_i (`aux["projection"]`); radiomic encoder
  f_r, a three-layer MLP (`aux["radiomic_encoder"]`), and its own projector g_r
  (`aux["radiomic_projection"]`), all trained end to end. At test time only f_i and the classifier run.
  Default here (deviation): architecture "kacl-lite0", f_i an ImageNet-initialised
  EfficientNet-Lite0 (1280-d, output stride 16) in place of the ResNet-18; f_r and the projectors
  take the 1280-d width. `--architecture kacl` is the paper's ResNet-18.
- BYOP (Sec. 3.2, Fig. 3; `kacl_radiomics.py`): the positive view of an image is the radiomic
  vector of one box of it — its ground-truth box where `record.boxes` has one (the source's
  annotation, or a clinician's correction with `--corrections`), else the Grad-CAM box of the
  current model (fourth layer, ad-hoc threshold) — measured by pyradiomics on the image in modality
  units (102 features). The vectors are cached on the method and refreshed every `refresh_every`
  epochs with the model as it stands (the feedback loop), only for the records the coming epochs
  use; they are z-scored over the cache and NaN (undefined features) replaced by 0.
- Negatives (Sec. 3.1, the loss's indicator 1[k = b, l ≠ d]): "hard similar" images — normal images
  and images of the same body part with a different disease — of other patients, from the disease
  hierarchy (`trainer/data/hierarchy.py`): k sampled per disease-positive query ("negative", k per
  eligible query, flattened in query order), and, with `batch_negatives`, every other image of the
  batch for which the indicator holds. Negatives are contrasted in the image domain, z_i(v_kl), as
  the loss writes them: a negative's radiomic features are never needed, so none are computed.
- Loss (Sec. 3.3): λ·L_cl + (1 − λ)·L_fl. L_cl = −log( e^{s(z_i(v), z_r(v'))/τ} /
  Σ 1[k = b, l ≠ d] e^{s(z_i(v), z_i(v_kl))/τ} ) over the disease-positive images of the batch
  (the positive is not in the denominator, as printed; `positive_in_denominator` adds it);
  L_fl the focal loss on the linear classifier's logits.
- Optimiser (Sec. 4): Adam, learning rate 1e-3, 30 epochs; the first 10 epochs train the
  classification task only ("linear warmup for the first 10 epochs only for the disease
  classification task, which helps the model converge faster to generate stable heatmaps"):
  radiomics are first extracted, and the contrastive term first used, at epoch `warmup_epochs`.

Choices where the paper is silent: λ = 0.2 (no value given; the same group's SCALP found 20% on
the contrastive term best); τ = 0.1 (SupCon/SimCLR); focal α = 0.25, γ = 2 (Lin et al.'s values;
the paper gives the formula only); k = 4 sampled negatives; refresh every epoch ("dynamically
updated"); box threshold 180 of 255 (the paper's threshold is "ad-hoc"); which box of a
multi-finding image, see `kacl_radiomics`; weight decay 0 (none named); batch size is the run's
(the paper's is 64); "light" augmentation for the image views (none named).

Deviations from the paper:
- The learning rate steps ×0.1 every 5 epochs (`lr_step_epochs`) as the paper's, with no linear
  learning-rate warm-up: the warm-up epochs are classification-only, at the scheduled rate.
- No ImageNet initialisation (the project never downloads weights).
- L_cl is averaged over the eligible queries (not summed); a batch with fewer than two
  disease-positive images with a radiomic vector skips L_cl (the radiomic encoder's BatchNorm needs two).
- Standardised radiomic features are clipped to ±`feature_clip` (heavy-tailed features such as
  energy would otherwise dominate the encoder's input).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cxrviewer.errors import CxrError
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.data.hierarchy import HierarchyIndex
from cxrviewer.trainer.losses import focal_loss
from cxrviewer.trainer.methods.base import Method, Stage, _stage_code, register_method
from cxrviewer.trainer.methods.kacl_radiomics import RadiomicCache, byop_features
from cxrviewer.trainer.methods.scalp import masked_contrastive


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@register_method
class Kacl(Method):
    name = "kacl"
    title = "Knowledge-augmented contrastive learning: radiomic positives from Grad-CAM boxes (BYOP)"
    paper = ("Han et al., Knowledge-Augmented Contrastive Learning for Abnormality Classification and "
             "Localization in Chest X-rays with Radiomics using a Feedback Loop")
    architecture = "kacl-lite0"
    has_box_path = True  # ground-truth / corrected boxes give the radiomic positives
    defaults = {
        "epochs": 30, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "clip_grad": None,
        "lam": 0.2,  # λ on L_cl
        "temperature": 0.1,
        "focal_alpha": 0.25, "focal_gamma": 2.0,
        "negatives": 4,  # k hierarchy negatives sampled per disease-positive query
        "batch_negatives": True,
        "positive_in_denominator": False,
        "warmup_epochs": 10,  # classification only
        "refresh_every": 1,  # epochs between BYOP refreshes
        "box_threshold": 180.0,
        "feature_clip": 5.0,
        "radiomics_workers": None,  # processes for pyradiomics (None: every CPU; 1: in this process)
        "projection_dim": 128,
        "augmentation": "light",
        "lr_step_epochs": 5,  # lr × 0.1 every 5 epochs (Sec. 4)
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from cxrviewer.radiomics import feature_names

        records = [self.source.records[i] for i in self.train]
        self.hierarchy = HierarchyIndex(records, self.source.label_names, self.labels[self.train])
        n = len(self.source.records)
        self.row_of = np.full(n, -1, dtype=np.int64)  # record index -> training row (−1: not training)
        self.row_of[self.train] = np.arange(len(self.train))
        self.eligible = np.zeros(n, dtype=bool)  # disease-positive training records (L_cl anchors)
        self.eligible[self.train] = self.hierarchy.positive.any(axis=1) & (self.hierarchy.patient.max(initial=0) > 0)
        if int(self.args["negatives"]) < 1 or int(self.args["refresh_every"]) < 1:
            raise CxrError(None, "the kacl method needs negatives >= 1 and refresh_every >= 1")
        self.cache = RadiomicCache(len(self.train), len(feature_names()))
        self.spec = None
        self.contrastive_on = False
        self.negative_fallbacks: dict[str, int] = {}

    # --- configuration -----------------------------------------------------------------------
    def lr_factor(self, stage: Stage, steps_per_epoch: int) -> Any:
        return self.step_decay(int(self.args["lr_step_epochs"]), steps_per_epoch)

    def arch_kwargs(self) -> dict[str, Any]:
        from cxrviewer.radiomics import feature_names

        return {"projection": True, "projection_dim": int(self.args["projection_dim"]),
                "radiomic_features": len(feature_names())}

    def finalize(self, model: nn.Module, spec) -> None:
        super().finalize(model, spec)
        spec.extra = {**spec.extra, "cam_method": "gradcam", "box_method": "threshold",
                      "box_threshold": float(self.args["box_threshold"])}

    # --- state -----------------------------------------------------------------------------------
    def setup(self, model: nn.Module, spec, device: torch.device) -> None:
        self.spec = spec

    def state_dict(self) -> dict[str, Any]:
        return {"cache": self.cache.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("cache"):
            self.cache.load_state_dict(state["cache"])

    # --- BYOP ------------------------------------------------------------------------------------
    def on_epoch_start(self, stage: Stage, epoch: int, model: nn.Module, device: torch.device) -> None:
        warmup = int(self.args["warmup_epochs"])
        self.contrastive_on = epoch >= warmup
        if not self.contrastive_on:
            return
        every = max(1, int(self.args["refresh_every"]))
        if self.cache.epoch >= 0 and epoch - self.cache.epoch < every and self.cache.epoch <= epoch:
            return  # the cache of this refresh period is there (also after a resume)
        upcoming = range(epoch, max(epoch + 1, min(stage.epochs, epoch + every)))
        self.refresh(model, device, self.anchors([i for e in upcoming for i in self._epoch_anchors(stage, e)]), epoch)

    def _epoch_anchors(self, stage: Stage, epoch: int) -> list[int]:
        return [it.index for batch in self.plan_epoch(stage, epoch) for it in batch
                if it.group == "query" and self.eligible[it.index]]

    @staticmethod
    def anchors(indices: list[int]) -> list[int]:
        """Distinct record indices, sorted (the rows a refresh computes)."""
        return sorted({int(i) for i in indices})

    def refresh(self, model: nn.Module, device: torch.device, indices: list[int], epoch: int) -> None:
        """Recompute the radiomic positives of `indices` with the model as it stands (split over the
        processes of a distributed run, then shared)."""
        from cxrviewer.parallel import cpu_count

        rank, world = _rank_world()
        mine = indices[rank::world]
        workers = self.args["radiomics_workers"]
        workers = max(1, cpu_count() // world) if workers is None else int(workers)  # the CPUs are shared
        features, boxes, kinds = byop_features(model, self.spec, self.source, mine, device,
                                               threshold=float(self.args["box_threshold"]), workers=workers)
        parts = [(mine, features, boxes, kinds)]
        if world > 1:
            parts = [None] * world
            dist.all_gather_object(parts, (mine, features, boxes, kinds))
        for idx, feats, bxs, knd in parts:
            self.cache.update(self.row_of[np.asarray(idx, dtype=np.int64)], feats, np.nan_to_num(bxs, nan=0.0),
                              knd, epoch)
        self.cache.epoch = int(epoch)

    # --- batches -------------------------------------------------------------------------------
    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """Shuffled queries; after the warm-up, k hierarchy negatives per disease-positive query."""
        rng = self.epoch_rng(stage, epoch)
        order = rng.permutation(self.train)
        size, k, code, seed = self.config.batch_size, int(self.args["negatives"]), _stage_code(stage.name), \
            self.config.seed
        aug = str(self.args["augmentation"])
        with_negatives = epoch >= int(self.args["warmup_epochs"])
        fallbacks: dict[str, int] = {}
        batches = []
        for b in range(len(order) // size):
            queries, negatives = [], []
            for slot, i in enumerate(order[b * size:(b + 1) * size]):
                queries.append(Item("query", int(i), aug, item_seed(seed, code, epoch, b, slot)))
                if not (with_negatives and self.eligible[i]):
                    continue
                draw = self.hierarchy.negative_keys(int(self.row_of[i]), k, rng)
                fallbacks[draw.fallback] = fallbacks.get(draw.fallback, 0) + 1
                if len(draw.indices) != k:
                    raise ValueError(f"no negative image for a KACL anchor ({draw.fallback})")
                negatives.extend(Item("negative", int(self.train[n]), aug,
                                      item_seed(seed, code, epoch, b, size + slot * k + j))
                                 for j, n in enumerate(draw.indices))
            batches.append(queries + negatives)
        self.negative_fallbacks = fallbacks
        return batches

    # --- the loss ------------------------------------------------------------------------------
    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        query, negative = batch["query"], batch.get("negative")
        b = len(query["index"])
        images = query["image"] if negative is None else torch.cat([query["image"], negative["image"]])
        features = net.embed(images)
        focal = focal_loss(net.head(features[:b]), query["labels"], float(self.args["focal_gamma"]),
                           float(self.args["focal_alpha"]))
        parts = {"focal": focal.detach()}
        if not self.contrastive_on or negative is None:
            return focal, parts
        con, n_anchors = self.contrastive(net, features, query["index"], negative["index"])
        parts.update(contrastive=con.detach(), anchors=torch.tensor(float(n_anchors)))
        lam = float(self.args["lam"])
        return lam * con + (1 - lam) * focal, parts

    def contrastive(self, net: nn.Module, features: torch.Tensor, query_index: torch.Tensor,
                    negative_index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(L_cl, number of anchors) over the batch's disease-positive queries with a radiomic vector."""
        b = len(query_index)
        q_idx = query_index.cpu().numpy()
        eligible = self.eligible[q_idx]
        n_eligible = int(eligible.sum())
        if n_eligible == 0:
            return features.sum() * 0.0, 0
        k = len(negative_index) // n_eligible
        rows = self.row_of[q_idx]
        anchor = eligible & self.cache.valid.numpy()[np.maximum(rows, 0)]
        if anchor.sum() < 2:
            return features.sum() * 0.0, int(anchor.sum())
        device = features.device
        z = net.aux["projection"](features)
        radiomic = self.cache.standardised(torch.device("cpu"), float(self.args["feature_clip"]))
        r = radiomic[torch.from_numpy(rows[anchor])].to(device=device, dtype=features.dtype)
        z_r = net.aux["radiomic_projection"](net.aux["radiomic_encoder"](r))
        keys_idx = np.concatenate([q_idx, negative_index.cpu().numpy()])
        own = np.zeros((b, len(keys_idx)), dtype=bool)
        slots = np.cumsum(eligible) - 1  # rank of each eligible query among the eligible ones
        for qi in np.flatnonzero(eligible):
            own[qi, b + slots[qi] * k:b + (slots[qi] + 1) * k] = True
        mask = own
        if self.args["batch_negatives"]:
            mask = own | self.hierarchy.is_negative(self.row_of[q_idx], self.row_of[keys_idx])
        mask_t = torch.from_numpy(mask[anchor]).to(device)
        loss = masked_contrastive(z[:b][torch.from_numpy(anchor).to(device)], z_r, z, mask_t,
                                  float(self.args["temperature"]), bool(self.args["positive_in_denominator"]))
        return loss, int(anchor.sum())
