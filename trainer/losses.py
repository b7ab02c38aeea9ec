"""Losses shared by the training methods.

Labels are float [B, K] with NaN for unknown: every classification loss masks NaN out and averages
over the known entries only (a batch with no known label contributes zero, not NaN).

`differentiable_gradcam` is Grad-CAM computed with `create_graph=True`, so a loss on the map trains
the network (BYOL-CAM's CAM loss, and the CAM loss that clinician-corrected boxes add to methods
with no box path of their own).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _known(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = ~torch.isnan(labels)
    return torch.where(mask, labels, torch.zeros_like(labels)), mask.to(labels.dtype)


def positive_weights(labels: np.ndarray, cap: float | None = None) -> np.ndarray:
    """BCE's `pos_weight` per class: known negatives / known positives (1 where a class has no known
    positive), at most `cap` when given, so a finding with 3 positives in 300 does not swamp the rest."""
    pos = np.nansum(labels == 1, axis=0).astype(np.float64)
    neg = np.nansum(labels == 0, axis=0).astype(np.float64)
    weights = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    if cap is not None:
        weights = np.minimum(weights, cap)
    return weights.astype(np.float32)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over the known (non-NaN) labels."""
    target, mask = _known(labels)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none", pos_weight=pos_weight)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) over the known labels; `alpha` weighs positives (None: unweighted)."""
    target, mask = _known(labels)
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = bce * (1 - p_t).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float, negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with one positive per query. query/positive [B, D]; negatives [B, N, D] or [N, D]
    (shared); `negative_mask` [B, N] bool keeps the valid negatives. Vectors are L2-normalised here."""
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(positive.float(), dim=1)
    n = F.normalize(negatives.float(), dim=-1)
    pos = (q * k).sum(1, keepdim=True)
    neg = torch.einsum("bd,bnd->bn", q, n) if n.dim() == 3 else q @ n.t()
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def byol_regression(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's loss 2 - 2·cos(p, z) averaged over the batch (Grill et al. 2020, Eq. 2)."""
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.float(), dim=1)
    return (2 - 2 * (p * z).sum(1)).mean()


def differentiable_gradcam(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, K], Grad-CAM maps [B, K, h, w]) for every class, differentiable w.r.t. the weights.

    Works for models with `feature_map`, `pool` and `head` (CXRClassifier). The maps are ReLU(Σ_c α_c A_c)
    with α the spatial mean of d logit / d A, as in Grad-CAM, before any normalisation.
    """
    features = model.feature_map(x)
    if not features.requires_grad:  # a frozen encoder (linear evaluation): the CAM loss still trains the head
        features = features.detach().requires_grad_(True)
    logits = model.head(torch.flatten(model.pool(features), 1))
    maps = []
    for k in range(logits.shape[1]):
        (grad,) = torch.autograd.grad(logits[:, k].sum(), features, create_graph=True, retain_graph=True)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        maps.append(F.relu((weights * features).sum(1)))
    return logits, torch.stack(maps, 1)


def box_masks(boxes: list[torch.Tensor], num_classes: int, size: tuple[int, int],
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks [B, K, H, W] with 1 inside the class's boxes, present [B, K] bool) from per-image boxes
    [n, 5] = (class, x0, y0, x1, y1) in pixels of `size`; a pixel is inside when its centre is."""
    h, w = size
    masks = torch.zeros(len(boxes), num_classes, h, w, device=device)
    present = torch.zeros(len(boxes), num_classes, dtype=torch.bool, device=device)
    ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    for b, rows in enumerate(boxes):
        for k, x0, y0, x1, y1 in rows.tolist():
            inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
            masks[b, int(k)] = torch.maximum(masks[b, int(k)], inside.float())
            present[b, int(k)] = True
    return masks, present


def cam_box_loss(cams: torch.Tensor, boxes: list[torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
    """BCE between sigmoid(CAM) and the box mask, over the (image, class) pairs that carry a box
    (Talasila et al.'s CAM loss). The CAM is upsampled to the input size; zero when nothing is boxed."""
    masks, present = box_masks(boxes, cams.shape[1], input_size, cams.device)
    if not present.any():
        return cams.sum() * 0.0
    up = F.interpolate(cams.float(), size=input_size, mode="bilinear", align_corners=False)
    # Grad-CAM maps are non-negative and unnormalised: standardise per map so sigmoid spans (0, 1).
    flat = up.flatten(2)
    mean, std = flat.mean(-1, keepdim=True), flat.std(-1, keepdim=True).clamp_min(1e-6)
    z = ((flat - mean) / std).view_as(up)
    loss = F.binary_cross_entropy_with_logits(z, masks, reduction="none").mean(dim=(2, 3))
    return loss[present].mean()
