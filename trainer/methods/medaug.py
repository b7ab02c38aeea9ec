"""`medaug`: MoCo v2 with positive pairs chosen from patient metadata, then fine-tuning.

Vu et al., "MedAug: Contrastive learning leveraging patient metadata improves representations for
chest X-ray interpretation"; MoCo v2 is Chen et al. 2020, with the chest X-ray settings of
Sowrirajan et al. 2020 (MoCo-CXR), which MedAug keeps ("hyperparameter choices as in Sowrirajan").

Stage "pretrain" (Sec. 2.2, 3.1, 3.3, Appendix B):
- query encoder: the model's backbone + global average pooling + `aux["projection"]` (MoCo v2's MLP
  head: Linear(d, d)–ReLU–Linear(d, 128)); key encoder: its momentum copy (m = 0.999), kept on the
  method (`MomentumEncoder`), never trained by gradients;
- positive pair (Eq. 2): the query is an augmented view of image x, the key an augmented view of an
  image x' drawn from S_c(x), the training images that satisfy criterion c: same patient, and
  `studies` same | distinct | all, `laterality` same | distinct | all; x itself when S_c(x) is
  empty (`trainer/data/medaug_pairs.py`). Default: the paper's best, same patient, same study, all
  lateralities (Table 1);
- InfoNCE (Eq. 1) at temperature 0.2 against a queue of past keys (`KeyQueue`), which also keeps
  each key's record index, so the negatives of each query come from `MedAugPairs.queue_masks`
  (slots without a key yet are never negatives) by the `negatives` strategy:
  `default` — every queue key that is not a view of the query image (the paper's best, Table 6);
  `same_laterality` — only keys of the query's laterality, S(x) (Eq. 5);
  `reweighted` — all keys, weighted so that S(x) carries the share `hard_weight` of the negative
  mass (Eq. 6, w^s = t/r, w^d = (1 − t)/(1 − r));
  `appended` — Q ‖ A, A a random sample of at most `hard_count` keys of S(x) (Eq. 7);
  `synthetic` — Q ‖ A ‖ H, H `hard_count` normalised mixtures u·s_i + (1 − u)·s_j of random pairs
  of A, u ~ U(0, 1) (the paper writes Q ‖ B ‖ H, B being those pairs, and says the samples of A
  are appended "in addition": read as Q ‖ A ‖ H). Samples are drawn from a generator seeded by
  (run seed, step), so a resumed run draws the same ones.
- MoCo-CXR's settings: ResNet-18, Adam, lr 1e-4, weight decay 1e-4, batch 16, 20 epochs, queue
  24,576 keys (its `--moco-k` default), 128-d keys, τ = 0.2. MoCo-CXR's ResNet-18 starts from
  ImageNet weights; here the default is the ImageNet-initialised EfficientNet-Lite0 (1280-d keys'
  projector input, 16×16 CAM grid at 256 px), the pretrained network we can ship;
  `--architecture resnet18` is MoCo-CXR's (random init, or `--init PATH`).

Stage "finetune" (Sec. 2.3): linear evaluation — only the classifier head learns, the encoder is
frozen and kept in eval mode — by default, or end to end with `--set finetune=end-to-end`; Adam,
lr 3e-5, batch 16, 95 epochs, binary cross-entropy over the known labels. The paper fine-tunes on
1% of the labelled data after pre-training on all of it: `--set label_fraction=0.01` fine-tunes on
a seeded patient-wise 1% of the training images while pre-training uses them all (config
`max_train_images` instead caps both stages; the paper's five 1% draws are five `--seed`s). With
`--corrections` the clinician-corrected boxes add the CAM loss in this stage
(`Method.correction_term`; in linear evaluation it trains the head only).

Under DistributedDataParallel every process computes the keys of its own share of the batch and the
keys of all processes are gathered into every process's queue (MoCo's `concat_all_gather`), so all
processes hold the same queue and rank 0's saved queue resumes all of them exactly. MoCo's shuffled
BatchNorm is not done across processes; `bn_splits` > 1 emulates it in each process (queries and a
seeded permutation of the keys are normalised in that many groups). Its default, 1, matches
MoCo-CXR's single-GPU runs, where the shuffle was a no-op.

Deviations from the paper:
- Augmentation: the trainer's "light" recipe (rotation ±7°, scale 0.95–1.05, shift ±4%, ±10%
  contrast/brightness) stands for MedAug's random crop of scale 0.95–1 + rotation ±10°; no
  horizontal flip (it would move the heart to the right). `augmentation=strong` is available.
- No ImageNet initialisation (MoCo-CXR starts from ImageNet weights; nothing is downloaded here),
  one input channel, the run's input size (MoCo-CXR: 320 px).
- The pre-trained checkpoint is not chosen by a k-nearest-neighbour probe; the fine-tuning stage's
  best validation AUC picks the model. The loop's cosine schedule replaces MoCo-CXR's step decay.
- One weight decay (1e-4, MoCo-CXR's) for both stages: the loop has one setting.
- `reweighted`: the paper prints t = 0.1 with the formula above, which gives the same-laterality
  keys 10% of the weight, yet says the setting gives 90% to the hard negatives; `hard_weight` is
  the same-laterality share and defaults to 0.9, the stated intent. `hard_count` (m) is not given in
  the paper (256 here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrviewer.errors import CxrError
from cxrviewer.trainer.batches import Item, item_seed
from cxrviewer.trainer.data.medaug_pairs import NEGATIVE_STRATEGIES, MedAugPairs
from cxrviewer.trainer.data.sources import Record
from cxrviewer.trainer.losses import info_nce, masked_bce
from cxrviewer.trainer.methods.base import Method, Stage, _stage_code, register_method
from cxrviewer.trainer.methods.ema import KeyQueue, MomentumEncoder, online_encoder, split_forward

FINETUNE = {"linear": "head", "end-to-end": "all"}


def hard_negative_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, valid: torch.Tensor,
                      hard: torch.Tensor, strategy: str, temperature: float, hard_weight: float,
                      hard_count: int, generator: torch.Generator) -> torch.Tensor:
    """InfoNCE with MedAug's weighted or extended negatives (Appendix B, Eq. 6-7 and the synthetic keys).

    q, k [B, D]; queue [K, D]; `valid` [B, K]: the keys that are negatives of each query (not views
    of the query image); `hard` [B, K] ⊂ valid: S(x), the keys of the query's laterality. A weight w
    on a key is log w added to its logit (Σ w·exp(s/τ)); appending a key once more is weight 2."""
    q, k, queue = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1), F.normalize(queue.float(), dim=1)
    pos = (q * k).sum(1, keepdim=True) / temperature
    neg = q @ queue.t() / temperature
    if strategy == "reweighted":
        n_valid = valid.sum(1, keepdim=True).clamp_min(1)
        r = hard.sum(1, keepdim=True) / n_valid
        mixed = (r > 0) & (r < 1)  # with one group empty there is nothing to reweigh: weight 1
        w_same = torch.where(mixed, hard_weight / r.clamp_min(1e-12), torch.ones_like(r))
        w_diff = torch.where(mixed, (1 - hard_weight) / (1 - r).clamp_min(1e-12), torch.ones_like(r))
        weight = torch.where(hard, w_same, w_diff)
        neg = neg + torch.log(weight.clamp_min(1e-12))
        return _cross_entropy(pos, neg.masked_fill(~valid, float("-inf")))
    # a random sample A of at most m same-laterality keys per query
    scores = torch.rand(hard.shape, generator=generator, device=hard.device).masked_fill(~hard, -1.0)
    m = min(int(hard_count), hard.shape[1])
    top_scores, picked = scores.topk(m, dim=1)
    in_a = top_scores >= 0  # [B, m]
    appended = torch.zeros_like(hard).scatter_(1, picked, in_a)
    neg = neg + torch.log1p(appended.float())  # Q ‖ A: the sampled keys count twice
    neg = neg.masked_fill(~valid, float("-inf"))
    if strategy == "appended":
        return _cross_entropy(pos, neg)
    # synthetic: m mixtures of random pairs of A
    size = in_a.sum(1, keepdim=True)  # |A| per query
    draw = torch.rand((len(q), m, 3), generator=generator, device=q.device)
    first = (draw[..., 0] * size).long().clamp_max(m - 1)
    second = (draw[..., 1] * size).long().clamp_max(m - 1)
    s_i, s_j = queue[picked.gather(1, first)], queue[picked.gather(1, second)]  # [B, m, D]
    u = draw[..., 2:3]
    mixed = F.normalize(u * s_i + (1 - u) * s_j, dim=-1)
    synth = torch.einsum("bd,bmd->bm", q, mixed) / temperature
    synth = synth.masked_fill(size == 0, float("-inf"))
    return _cross_entropy(pos, torch.cat([neg, synth], 1))


def _cross_entropy(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    logits = torch.cat([pos, neg], 1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def labelled_subset(records: Sequence[Record], indices: np.ndarray, fraction: float, seed: int,
                    minimum: int) -> np.ndarray:
    """A seeded `fraction` of `indices` (at least `minimum`), whole patients first in a random order."""
    if fraction >= 1:
        return indices
    patients = np.array([records[i].patient_id for i in indices])
    order = np.random.default_rng([seed, 1]).permutation(np.unique(patients))
    rank = dict(zip(order.tolist(), range(len(order))))
    by_patient = indices[np.argsort([rank[p] for p in patients.tolist()], kind="stable")]
    return np.sort(by_patient[:max(minimum, round(fraction * len(indices)))])


class FrozenTrunk:
    """The model as Grad-CAM sees it in linear evaluation: the frozen encoder's feature maps become
    leaves that require grad, so the CAM loss reaches the head (the only trained part)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.pool, self.head = model, model.pool, model.head

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.feature_map(x)
        return features.requires_grad_(True)


@register_method
class MedAug(Method):
    name = "medaug"
    title = "MoCo v2 with patient-metadata positive pairs, then linear or end-to-end fine-tuning"
    paper = ("Vu et al., MedAug: Contrastive learning leveraging patient metadata improves representations "
             "for chest X-ray interpretation (MoCo v2: Chen et al. 2020; settings of Sowrirajan et al. 2020)")
    architecture = "efficientnet-lite0"
    has_box_path = False
    defaults = {
        "epochs": 95, "lr": 3e-5, "optimizer": "adam", "weight_decay": 1e-4, "clip_grad": None,
        "correction_weight": 0.1,
        "pretrain_epochs": 20, "pretrain_lr": 1e-4,
        "queue": 24576, "momentum": 0.999, "temperature": 0.2, "projection_dim": 128,
        "studies": "same", "laterality": "all", "negatives": "default",
        "hard_weight": 0.9, "hard_count": 256,
        "finetune": "linear", "label_fraction": 1.0, "augmentation": "light", "bn_splits": 1,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for option, allowed in (("negatives", NEGATIVE_STRATEGIES), ("finetune", tuple(FINETUNE)),
                                ("augmentation", ("light", "strong"))):
            if self.args[option] not in allowed:
                raise CxrError(None, f"the medaug option {option} must be one of {', '.join(allowed)}, "
                                     f"not '{self.args[option]}'")
        if int(self.args["hard_count"]) < 1 or not 0 < float(self.args["hard_weight"]) < 1:
            raise CxrError(None, "the medaug options need hard_count >= 1 and 0 < hard_weight < 1")
        if not 0 < float(self.args["label_fraction"]) <= 1:
            raise CxrError(None, "the medaug option label_fraction must lie in (0, 1]")
        self.labelled = labelled_subset(self.source.records, self.train, float(self.args["label_fraction"]),
                                        self.config.seed, self.config.batch_size)
        self.pairs = MedAugPairs(self.source.records, self.train, studies=str(self.args["studies"]),
                                 laterality=str(self.args["laterality"]))
        self.key_encoder: MomentumEncoder | None = None
        self.queue: KeyQueue | None = None
        self.steps_done = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- configuration -----------------------------------------------------------------------
    def arch_kwargs(self) -> dict[str, Any]:
        return {"projection": True, "projection_dim": int(self.args["projection_dim"])}

    def stages(self) -> list[Stage]:
        return [Stage("pretrain", int(self.hyper("pretrain_epochs")), float(self.args["pretrain_lr"]),
                      trainable="all", validate=False),
                Stage("finetune", int(self.hyper("epochs")), float(self.hyper("lr")),
                      trainable=FINETUNE[self.args["finetune"]], validate=True)]

    # --- modules and state ---------------------------------------------------------------------
    def setup(self, model: nn.Module, spec, device: torch.device) -> None:
        self.key_encoder = MomentumEncoder(online_encoder(model))
        self.queue = KeyQueue(int(self.args["queue"]), int(self.args["projection_dim"]), device, self.config.seed)

    def after_step(self, stage: Stage, model: nn.Module, modules: nn.ModuleDict, outputs: dict) -> None:
        if stage.name != "pretrain" or self._pending is None:
            return
        self.key_encoder.update(online_encoder(model), float(self.args["momentum"]))
        self.queue.push(*self._pending)
        self._pending = None
        self.steps_done += 1

    def state_dict(self) -> dict[str, Any]:
        if self.key_encoder is None:
            return {}
        return {"key_encoder": self.key_encoder.state_dict(), "queue": self.queue.state_dict(),
                "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.key_encoder.load_state_dict(state["key_encoder"])
        self.queue.load_state_dict(state["queue"])
        self.steps_done = int(state["steps_done"])

    # --- batches -------------------------------------------------------------------------------
    def plan_epoch(self, stage: Stage, epoch: int) -> list[list[Item]]:
        """Fine-tuning: shuffled batches of the labelled subset (`label_fraction`). Pre-training: per
        training image x a "query" view of x and a "key" view of a positive x' ∈ S_c(x) (x itself
        when S_c(x) is empty)."""
        rng = self.epoch_rng(stage, epoch)
        if stage.name != "pretrain":  # the base class's batches, over the labelled subset
            order, size, code = rng.permutation(self.labelled), self.config.batch_size, _stage_code(stage.name)
            return [[Item("query", int(i), "light", item_seed(self.config.seed, code, epoch, b, slot))
                     for slot, i in enumerate(order[b * size:(b + 1) * size])] for b in range(len(order) // size)]
        order = rng.permutation(self.train)
        size, code, seed = self.config.batch_size, _stage_code(stage.name), self.config.seed
        aug = self.args["augmentation"]
        batches = []
        for b in range(len(order) // size):
            items = []
            for slot, i in enumerate(order[b * size:(b + 1) * size]):
                j = self.pairs.positive_key(int(i), rng)
                items.append(Item("query", int(i), aug, item_seed(seed, code, epoch, b, 2 * slot)))
                items.append(Item("key", int(j), aug, item_seed(seed, code, epoch, b, 2 * slot + 1)))
            batches.append(items)
        return batches

    # --- the loss ------------------------------------------------------------------------------
    def loss(self, stage: Stage, net: nn.Module, modules: nn.ModuleDict,
             batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if stage.name == "pretrain":
            return self.pretrain_loss(net, batch)
        part = batch["query"]
        if stage.trainable == "head":
            net.backbone.eval()  # linear evaluation: a frozen encoder, BatchNorm statistics included
            with torch.no_grad():
                features = net.embed(part["image"])
            logits, cam_net = net.head(features), FrozenTrunk(net)
        else:
            logits, cam_net = net(part["image"]), net
        bce = masked_bce(logits, part["labels"])
        total, parts = self.correction_term(cam_net, part, bce)
        return total, {"bce": bce.detach(), **parts}

    def pretrain_loss(self, net: nn.Module, batch: dict[str, dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        query, key = batch["query"], batch["key"]
        splits = int(self.args["bn_splits"])
        perm = None
        if splits > 1:
            generator = torch.Generator().manual_seed(item_seed(self.config.seed, 1, self.steps_done))
            perm = torch.randperm(len(key["image"]), generator=generator).to(key["image"].device)
        q = split_forward(online_encoder(net), query["image"], splits, None)
        with torch.no_grad():
            k = split_forward(self.key_encoder, key["image"], splits, perm)
        strategy, temperature = self.args["negatives"], float(self.args["temperature"])
        masks = self.pairs.queue_masks(query["index"].cpu().numpy(), self.queue.index.numpy(), strategy)
        valid = torch.from_numpy(masks.negatives).to(q.device, non_blocking=True)
        if strategy in ("default", "same_laterality"):
            nce = info_nce(q, k, self.queue.keys, temperature, valid)
        else:
            hard = torch.from_numpy(masks.hard).to(q.device, non_blocking=True)
            generator = torch.Generator(device=q.device).manual_seed(item_seed(self.config.seed, 2, self.steps_done))
            nce = hard_negative_nce(q, k, self.queue.keys, valid, hard, strategy, temperature,
                                    float(self.args["hard_weight"]), int(self.args["hard_count"]), generator)
        self._pending = (k.detach(), key["index"].detach())
        return nce, {"nce": nce.detach()}
