"""CIA-Net's grid predictions, image-level MIL probability and losses (Sec. 3.2, Eqs. 4-6).

Cell probabilities p_j^k = sigmoid(z_j^k) come from a 1x1 conv over the attended feature map.

Image level (Eq. 5, after Li et al. [14], whose paradigm CIA-Net follows "computing losses and making
predictions"): P(image has k) = 1 - prod_j (1 - p_j^k). The paper prints no stability trick; [14]
maps each factor into [0.98, 1] because a product over hundreds of cells otherwise saturates to 0 or
1; we use it: 1 - p_j is replaced by q_j = f + (1 - f)(1 - p_j) with f = `mil_floor` = 0.98
(f = 0 gives Eq. 5 unchanged). Everything is computed in log space from the logits,

    S = sum_j log q_j = sum_j logaddexp(log f, log(1 - f) - softplus(z_j)),
    log P = log(1 - e^S) (log1mexp),   log(1 - P) = S,   logit P = log(1 - e^S) - S,

so neither the product nor the loss underflows. Note what the floor implies: P <= 1 - f^(number of
cells) (0.9943 for the paper's 16x16 grid; small grids cap P much lower).

The same function gives `forward`'s logits (clamped to +-`clamp`) and the MIL loss, so the model is
trained on exactly the quantity it reports.

Box-annotated classes (Eq. 4): binary cross-entropy per cell, SUMMED over cells, target 1 for the
cells that overlap the (projected) box. Total (Eq. 6): sum_k lambda_k beta_B L_B + (1 - lambda_k) L_I;
beta_B is not given in CIA-Net, the default 5 is [14]'s lambda_bbox.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MIL_FLOOR = 0.98
LOGIT_CLAMP = 20.0
BETA_B = 5.0


def mil_log_negative(cell_logits: torch.Tensor, mil_floor: float = MIL_FLOOR) -> torch.Tensor:
    """S = log prod_j q_j, [B, K], from cell logits [B, K, h, w] (computed in float32)."""
    if not 0.0 <= mil_floor < 1.0:
        raise ValueError(f"mil_floor must be in [0, 1), not {mil_floor}")
    z = cell_logits.float().flatten(2)
    log_one_minus_p = -F.softplus(z)
    if mil_floor > 0.0:
        log_q = torch.logaddexp(torch.full_like(z, math.log(mil_floor)), math.log1p(-mil_floor) + log_one_minus_p)
    else:
        log_q = log_one_minus_p
    return log_q.sum(-1)


def _log1mexp(s: torch.Tensor) -> torch.Tensor:
    """log(1 - e^s) for s < 0, accurate at both ends (each branch sees only its own range, so the
    branch torch.where discards cannot put inf/NaN into the gradient)."""
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(s.clamp(min=cut)))
    far = torch.log1p(-torch.exp(s.clamp(max=cut)))
    return torch.where(s > cut, near, far)


def mil_logits(cell_logits: torch.Tensor, mil_floor: float = MIL_FLOOR, clamp: float = LOGIT_CLAMP) -> torch.Tensor:
    """Image-level logits [B, K] = logit(1 - prod_j q_j), clamped to [-clamp, clamp]."""
    s = mil_log_negative(cell_logits, mil_floor).clamp(max=-1e-12)
    return (_log1mexp(s) - s).clamp(-clamp, clamp)


def mil_probabilities(cell_probs: torch.Tensor, mil_floor: float = MIL_FLOOR) -> torch.Tensor:
    """The direct (product) formula from cell probabilities [B, K, h, w]; for checks and small grids."""
    q = mil_floor + (1.0 - mil_floor) * (1.0 - cell_probs.double().flatten(2))
    return 1.0 - q.prod(-1)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    per_sample = loss.sum(-1)
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction '{reduction}' (mean, sum or none)")


def cianet_mil_loss(cell_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                    mil_floor: float = MIL_FLOOR, reduction: str = "mean") -> torch.Tensor:
    """Eq. 5: -y log P - (1 - y) log(1 - P) per (image, class), P from the cells as above.
    labels [B, K] in {0, 1}; mask [B, K] (1 where this loss applies, i.e. 1 - lambda). Reduction:
    "mean" = summed over classes, averaged over images; "sum"; "none" -> [B, K]."""
    s = mil_log_negative(cell_logits, mil_floor).clamp(max=-1e-12)
    y = labels.to(s.dtype)
    loss = -y * _log1mexp(s) - (1.0 - y) * s
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    return _reduce(loss, reduction)


def cianet_box_loss(cell_logits: torch.Tensor, cell_targets: torch.Tensor, mask: torch.Tensor | None = None,
                    beta_b: float = BETA_B, reduction: str = "mean") -> torch.Tensor:
    """Eq. 4 times beta_B (Eq. 6's weight): binary cross-entropy of every cell, summed over cells, per (image, class).
    cell_targets [B, K, h, w] in {0, 1} (see `box_grid_targets`); mask [B, K] = lambda (1 where the
    class has a box in that image)."""
    bce = F.binary_cross_entropy_with_logits(cell_logits.float(), cell_targets.float(), reduction="none")
    loss = beta_b * bce.flatten(2).sum(-1)
    if mask is not None:
        loss = loss * mask.to(loss.dtype)
    return _reduce(loss, reduction)


def cianet_loss(cell_logits: torch.Tensor, labels: torch.Tensor, cell_targets: torch.Tensor | None = None,
                has_box: torch.Tensor | None = None, beta_b: float = BETA_B, mil_floor: float = MIL_FLOOR,
                reduction: str = "mean") -> torch.Tensor:
    """Eq. 6: sum_k lambda_k beta_B L_B + (1 - lambda_k) L_I. has_box [B, K] = lambda (None: no boxes)."""
    if has_box is None or cell_targets is None:
        return cianet_mil_loss(cell_logits, labels, None, mil_floor, reduction)
    lam = has_box.to(torch.float32)
    box = cianet_box_loss(cell_logits, cell_targets, lam, beta_b, "none")
    mil = cianet_mil_loss(cell_logits, labels, 1.0 - lam, mil_floor, "none")
    return _reduce(box + mil, reduction)


def box_grid_targets(boxes: Sequence[tuple[int, float, float, float, float]], num_classes: int,
                     grid_size: int | tuple[int, int], input_size: tuple[int, int],
                     theta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell targets for one image: (targets [K, h, w] float, has_box [K] bool).

    boxes: (class_index, x0, y0, x1, y1) in model-input pixels (input_size = (height, width)). A cell
    is 1 when it overlaps a box of its class with positive area (Sec. 3.2: "if the grid ... has
    overlap with the projected ground truth box"). With `theta` [2, 3] (the alignment of this image,
    `forward_train(...)["theta"][i]`), the cells are those of the ALIGNED image: each cell's corners
    are mapped into the input frame and its bounding rectangle there is tested against the box."""
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    height, width = input_size
    targets = torch.zeros(num_classes, gh, gw)
    has_box = torch.zeros(num_classes, dtype=torch.bool)
    ys = torch.linspace(-1.0, 1.0, gh + 1)
    xs = torch.linspace(-1.0, 1.0, gw + 1)
    x0n, x1n = xs[:-1].view(1, gw).expand(gh, gw), xs[1:].view(1, gw).expand(gh, gw)
    y0n, y1n = ys[:-1].view(gh, 1).expand(gh, gw), ys[1:].view(gh, 1).expand(gh, gw)
    if theta is not None:
        t = theta.detach().float().cpu().reshape(2, 3)
        corners = torch.stack([torch.stack([x0n, y0n], -1), torch.stack([x1n, y0n], -1),
                               torch.stack([x0n, y1n], -1), torch.stack([x1n, y1n], -1)], dim=0)  # [4, gh, gw, 2]
        mapped = corners @ t[:, :2].T + t[:, 2]
        x0n, x1n = mapped[..., 0].amin(0), mapped[..., 0].amax(0)
        y0n, y1n = mapped[..., 1].amin(0), mapped[..., 1].amax(0)
    cx0, cx1 = (x0n + 1) * width / 2, (x1n + 1) * width / 2
    cy0, cy1 = (y0n + 1) * height / 2, (y1n + 1) * height / 2
    for cls, bx0, by0, bx1, by1 in boxes:
        cls = int(cls)
        if not 0 <= cls < num_classes:
            raise ValueError(f"box class index {cls} is outside 0..{num_classes - 1}")
        bx0, bx1 = sorted((float(bx0), float(bx1)))
        by0, by1 = sorted((float(by0), float(by1)))
        hit = (cx0 < bx1) & (cx1 > bx0) & (cy0 < by1) & (cy1 > by0)
        targets[cls] = torch.maximum(targets[cls], hit.float())
        has_box[cls] = True
    return targets, has_box
