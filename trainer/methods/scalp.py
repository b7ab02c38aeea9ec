"""`scalp`: supervised contrastive learning with patient metadata, trained end to end.

Jaiswal et al., "SCALP - Supervised Contrastive Learning for Cardiopulmonary Disease Classification
and Localization in Chest X-rays using Patient Metadata".

- Network (Sec. III-A, IV-B; architecture "scalp"): ResNet-50 with triplet attention, global
  average pooling, a two-layer MLP classifier with ReLU and a SimCLR projection head g(·)
  (`model.aux["projection"]`, 128-d); one shared encoder f(·) for both modules.
  Default here (deviation): architecture "scalp-lite0", the same heads and triplet attention in
  every MBConv block of an ImageNet-initialised EfficientNet-Lite0 (`--init imagenet`; the paper
  starts from an ImageNet ResNet-50, which cannot ship here). 1280-d features instead of 2048 (the
  MLP classifier and projector take that width); output stride 16, so a 256-px input gives a 16×16
  CAM grid. `--architecture scalp` is the paper's ResNet-50 (random init, or `--init PATH`).
- Batches (Sec. III-C, Fig. 1; `PatientIndex`): N images of N distinct patients ("query"); for
  each a positive key of the same patient with the same diagnosis, from another study where there
  is one, else the query image itself under a second augmentation ("positive"); k negative keys of
  other patients with the query's diagnosis ("negative", k per query, flattened in query order).
- Loss (Eq. 1-5): λ·L_BCE + (1 − λ)·L_con with λ = 0.8 (Table IV). L_con is Eq. 3 as printed:
  −log( e^{s(q, k⁺)/τ} / Σ_neg 1[p ≠ P, d = D] e^{s(q, k⁻)/τ} ), cosine similarity on the projected
  embeddings. The indicator is applied to every key of the batch: a query's own sampled negatives
  always count (the sampler already chose them by that rule or its counted fallback), and with
  `batch_negatives` (default on) so does every other key of the batch (other queries' positives and
  negatives) whose patient differs and whose diagnosis is the query's — an exact reading of Eq. 3's
  indicator over the batch. The positive is not in the denominator, as Eq. 3 prints it
  (`positive_in_denominator: true` gives NT-Xent's form, `losses.info_nce`).
- Optimiser (Sec. IV-B): SGD (momentum 0.9, the loop's), learning rate 0.01, weight decay 1e-4.
- With `--corrections`, clinician-corrected boxes add the CAM loss (`Method.correction_term`);
  SCALP itself uses no box for training (Sec. IV-D).

Choices where the paper is silent:
- τ = 0.1: the paper names none; 0.1 is the value of Supervised Contrastive Learning [19], which
  it extends, and SimCLR's best for large batches.
- k = 4 negatives per query (the paper's k is not given): each key is a full forward/backward,
  so a batch of N queries costs N·(2 + k) images; 4 with the in-batch keys gives dozens of
  negatives per query at batch 16-64.
- 30 epochs: the paper gives none; its step schedule (×0.1 every 10 epochs) reaches 1e-4 by
  epoch 20, so 30 epochs covers three plateaus.
- Batch size is the run's `--batch-size` (the paper only shows AUC rising with it, Fig. 4).
- "Same diagnosis" is the same set of positive findings (see `trainer/data/sampling.py`).
- Augmentation: the trainer's "light" affine for every view (the paper argues against crops,
  blur and jitter; its positive views are other studies, not augmentations).

Deviations from the paper:
- Eq. 2 and Eq. 4 sum over the batch; here both sums are divided by the batch size (BCE summed
  over the known classes of each image, then averaged over images; Eq. 3 averaged over queries):
  the λ balance is the paper's, and the learning rate does not depend on the batch size.
- Weight decay (Sec. IV-B): 1e-6 for the contrastive module's own part (the projection head) and
  1e-4 (`weight_decay`) for the rest; the shared encoder belongs to both modules and takes 1e-4.
- The learning rate steps ×0.1 every 10 epochs (StepLR, as the paper), `lr_step_epochs`.
- No pre-trained weights (the paper starts from triplet attention's ImageNet weights; the
  project never downloads weights).
- Localisation uses Grad-CAM++ and SCALP Algorithm 1 at inference (`finalize` records both in
  the spec's `extra`); training does not depend on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrviewer.errors import CxrError
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.data.sampling import PatientIndex
from cxrviewer.trainer.methods.base import Method, Stage, _stage_code, register_method


def summed_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 per image: BCE summed over the known (non-NaN) classes, averaged over the images."""
    known = ~torch.isnan(labels)
    target = torch.where(known, labels, torch.zeros_like(labels)).float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (loss * known).sum() / max(1, len(logits))


def masked_contrastive(query: torch.Tensor, positive: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor,
                      temperature: float, positive_in_denominator: bool = False) -> torch.Tensor:
    """SCALP Eq. 3 (and KACL's loss, which has the same form) averaged over the queries.

    query, positive [B, D]; keys [M, D] (every candidate negative key of the batch); key_mask [B, M]
    bool, Eq. 3's indicator 1[p ≠ P, d = D] per (query, key). Vectors are L2-normalised here. A query
    with no key in its denominator contributes nothing (its loss is undefined)."""
    q = F.normalize(query.float(), dim=1)
    pos = (q * F.normalize(positive.float(), dim=1)).sum(1) / temperature
    neg = (q @ F.normalize(keys.float(), dim=1).t()) / temperature
    neg = neg.masked_fill(~key_mask, float("-inf"))
    if positive_in_denominator:
        neg = torch.cat([pos[:, None], neg], dim=1)
    has_keys = torch.isfinite(neg).any(dim=1)
    if not has_keys.any():
        return query.sum() * 0.0
    per_query = torch.logsumexp(neg[has_keys], dim=1) - pos[has_keys]
    return per_query.mean()


@register_method
class Scalp(Method):
    name = "scalp"
    title = "Supervised contrastive learning with patient-metadata positives and same-disease negatives"
    paper = ("Jaiswal et al., SCALP - Supervised Contrastive Learning for Cardiopulmonary Disease "
             "Classification and Localization in Chest X-rays using Patient Metadata")
    architecture = "scalp-lite0"
    has_box_path = False
    defaults = {
        "epochs": 30, "lr": 0.01, "optimizer": "sgd", "weight_decay": 1e-4, "clip_grad": None,
        "lam": 0.8,  # λ of Eq. 5 (Table IV)
        "temperature": 0.1,  # τ of Eq. 3 (not given; SupCon's value)
        "negatives": 4,  # k negative keys sampled per query (not given)
        "batch_negatives": True,  # Eq. 3's indicator over every key of the batch
        "positive_in_denominator": False,  # Eq. 3 as printed (True: NT-Xent / InfoNCE)
        "projection_dim": 128,  # SimCLR's projection output
        "contrastive_weight_decay": 1e-6, "lr_step_epochs": 10,
        "augmentation": "light",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if int(self.args["negatives"]) < 1:
            raise CxrError(None, "the scalp method needs at least one negative key per query (negatives >= 1)")
        records = [self.source.records[i] for i in self.train]
        self.index = PatientIndex(records, self.labels[self.train])
        n = len(self.source.records)
        # Patient and diagnosis codes by record index (−1 outside the training split), for Eq. 3's indicator.
        self.patient_code = np.full(n, -1, dtype=np.int64)
        self.diagnosis_code = np.full(n, -1, dtype=np.int64)
        self.patient_code[self.train] = self.index.patient
        self.diagnosis_code[self.train] = self.index.diagnosis
        self._codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.negative_fallbacks: dict[str, int] = {}  # of the last planned epoch: fallback -> count

    # --- configuration -----------------------------------------------------------------------
    def param_groups(self, step_module: nn.Module, params: list[nn.Parameter], weight_decay: float) -> list[dict]:
        projection = {id(p) for p in step_module.model.aux["projection"].parameters()} \
            if "projection" in step_module.model.aux else set()
        groups = [{"params": [p for p in params if id(p) not in projection], "weight_decay": weight_decay},
                  {"params": [p for p in params if id(p) in projection],
                   "weight_decay": float(self.args["contrastive_weight_decay"])}]
        return [g for g in groups if g["params"]]

    def lr_factor(self, stage: Stage, steps_per_epoch: int) -> Any:
        return self.step_decay(int(self.args["lr_step_epochs"]), steps_per_epoch)

    def arch_kwargs(self) -> dict[str, Any]:
        return {"head": "mlp", "projection": True, "projection_dim": int(self.args["projection_dim"])}

    def finalize(self, model: nn.Module, spec) -> None:
        super().finalize(model, spec)
        spec.extra = {**spec.extra, "cam_method": "gradcam++", "box_method": "scalp"}

    # --- batches -------------------------------------------------------------------------------
    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """Batches of distinct patients: B queries, then their B positives, then B·k negatives."""
        rng = self.epoch_rng(stage, epoch)
        size, k, code, seed = self.config.batch_size, int(self.args["negatives"]), _stage_code(stage.name), \
            self.config.seed
        aug = str(self.args["augmentation"])
        fallbacks: dict[str, int] = {}
        batches = []
        for b, local in enumerate(self.index.batches(size, rng)):
            queries, positives, negatives = [], [], []
            for slot, q in enumerate(local):
                p = self.index.positive_key(int(q), rng)
                draw = self.index.negative_keys(int(q), k, rng)
                fallbacks[draw.fallback] = fallbacks.get(draw.fallback, 0) + 1
                if len(draw.indices) < k:  # a training split of one patient: nothing to contrast against
                    raise ValueError("SCALP needs images of at least two patients in the training split")
                queries.append(Item("query", int(self.train[q]), aug, item_seed(seed, code, epoch, b, slot)))
                positives.append(Item("positive", int(self.train[p]), aug,
                                      item_seed(seed, code, epoch, b, size + slot)))
                negatives.extend(Item("negative", int(self.train[n]), aug,
                                      item_seed(seed, code, epoch, b, 2 * size + slot * k + j))
                                 for j, n in enumerate(draw.indices))
            batches.append(queries + positives + negatives)
        self.negative_fallbacks = fallbacks
        return batches

    # --- the loss ------------------------------------------------------------------------------
    def _codes_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._codes:
            self._codes[key] = (torch.from_numpy(self.patient_code).to(device),
                                torch.from_numpy(self.diagnosis_code).to(device))
        return self._codes[key]

    def key_mask(self, query_index: torch.Tensor, key_index: torch.Tensor, k: int) -> torch.Tensor:
        """Eq. 3's indicator [B, M] for keys = B positives followed by B·k negatives (record indices)."""
        patient, diagnosis = self._codes_on(query_index.device)
        b = len(query_index)
        own = torch.zeros(b, len(key_index), dtype=torch.bool, device=query_index.device)
        rows = torch.arange(b, device=own.device).repeat_interleave(k)
        own[rows, b + torch.arange(b * k, device=own.device)] = True
        if not self.args["batch_negatives"]:
            return own
        qp, qd = patient[query_index][:, None], diagnosis[query_index][:, None]
        kp, kd = patient[key_index][None, :], diagnosis[key_index][None, :]
        return own | ((kp != qp) & (kd == qd))

    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        query, positive, negative = batch["query"], batch["positive"], batch["negative"]
        b = len(query["index"])
        k = len(negative["index"]) // b
        features = net.embed(torch.cat([query["image"], positive["image"], negative["image"]]))
        bce = summed_bce(net.head(features[:b]), query["labels"])
        z = net.aux["projection"](features)
        key_index = torch.cat([positive["index"], negative["index"]])
        mask = self.key_mask(query["index"], key_index, k)
        con = masked_contrastive(z[:b], z[b:2 * b], z[b:], mask, float(self.args["temperature"]),
                                bool(self.args["positive_in_denominator"]))
        lam = float(self.args["lam"])
        total = lam * bce + (1 - lam) * con
        total, parts = self.correction_term(net, query, total)
        return total, {"bce": bce.detach(), "contrastive": con.detach(), **parts}
