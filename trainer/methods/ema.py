"""Momentum state shared by the self-supervised methods: a momentum copy of an encoder and a key queue.

- `ProjectedEncoder`: backbone → global average pooling → projection MLP, the z = g(f(x)) path that
  BYOL's online/target networks and MoCo's query/key encoders share. `online_encoder(model)` wraps
  a `CXRClassifier`'s own `backbone` and `aux["projection"]` without copying them.
- `MomentumEncoder`: a frozen copy δ of an online encoder θ, updated after each optimiser step as
  δ ← m·δ + (1 − m)·θ (BYOL's target network, Grill et al. 2020 Eq. 1; MoCo's key encoder, He et al.
  2020 Eq. 2). It is never trained by gradients, runs in train mode (batch statistics, as both
  papers' reference code does; its own BatchNorm running averages are kept but unused) and saves
  its parameters and buffers as plain tensors so `torch.load(weights_only=True)` can restore it.
- `byol_momentum(k, K, base)`: BYOL's schedule τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2.
- `split_forward`: an encoder's forward with BatchNorm statistics over groups of a (permuted) batch,
  a one-process stand-in for MoCo's shuffled BatchNorm.
- `KeyQueue`: MoCo's FIFO of K past keys (on the training device), here with the record index of
  the image each key was computed from (on the CPU, −1 for a slot that holds no key yet), so a
  method can mask queue entries by image or by image metadata.

Under DistributedDataParallel every process holds a momentum copy of the (identical) online
weights, so the copies stay identical too. `KeyQueue.push` gathers the keys of all processes before
enqueueing them, as MoCo does, so every process holds the same queue (and the queue that rank 0
saves is every process's queue: an exact resume).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class ProjectedEncoder(nn.Module):
    """z = projection(GAP(backbone(x))): the encoder + projector of BYOL and MoCo v2."""

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(torch.flatten(F.adaptive_avg_pool2d(self.backbone(x), 1), 1))


def online_encoder(model: nn.Module) -> ProjectedEncoder:
    """The model's own backbone and projection head behind one forward (shared, not copied)."""
    if "projection" not in model.aux:
        raise ValueError("the model has no projection head (build it with arch_kwargs {'projection': True})")
    return ProjectedEncoder(model.backbone, model.aux["projection"])


def byol_momentum(step: int, total: int, base: float) -> float:
    """BYOL's target decay at step k of K: τ_base at the start, rising to 1 along a cosine."""
    progress = min(1.0, step / max(1, total))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MomentumEncoder:
    """A frozen exponential-moving-average copy of an online encoder (kept on the method)."""

    def __init__(self, online: nn.Module) -> None:
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.train()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.module.train()
        return self.module(x)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """δ ← m·δ + (1 − m)·θ over the parameters (one fused call per step)."""
        target = list(self.module.parameters())
        source = [p.detach() for p in online.parameters()]
        if len(target) != len(source):
            raise ValueError("the online encoder does not match its momentum copy")
        torch._foreach_lerp_(target, source, 1.0 - float(momentum))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


def gather_all(t: torch.Tensor) -> torch.Tensor:
    """`t` of every process concatenated along dim 0 (rank order); `t` itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class KeyQueue:
    """MoCo's queue of K L2-normalised keys and the record index of each key's image (−1: none yet).

    Empty slots hold random unit vectors, MoCo's initialisation, drawn from `seed` so that every
    process and every run with the same seed starts from the same queue; their index is −1, so a
    method may also leave them out (MedAug's masks do)."""

    def __init__(self, size: int, dim: int, device: torch.device, seed: int) -> None:
        if size < 1:
            raise ValueError("the queue needs at least one entry")
        generator = torch.Generator().manual_seed(int(seed))
        self.keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        self.index = torch.full((size,), -1, dtype=torch.long)  # on the CPU: masks are built there
        self.ptr = 0

    def __len__(self) -> int:
        return len(self.index)

    @torch.no_grad()
    def push(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """Enqueue the keys of this step (of all processes), dropping the oldest."""
        keys = gather_all(F.normalize(keys.detach().float(), dim=1))
        index = gather_all(index.detach().to(keys.device, torch.long)).cpu()
        keys, index = keys[-len(self):], index[-len(self):]
        slots = (self.ptr + torch.arange(len(keys))) % len(self)
        self.keys[slots.to(self.keys.device)] = keys.to(self.keys.device)
        self.index[slots] = index
        self.ptr = int((self.ptr + len(keys)) % len(self))

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.detach().cpu().clone(), "index": self.index.detach().cpu().clone(),
                "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["keys"].shape) != tuple(self.keys.shape):
            raise ValueError(f"the saved queue holds {tuple(state['keys'].shape)} keys, this run expects "
                             f"{tuple(self.keys.shape)}")
        self.keys.copy_(state["keys"])
        self.index.copy_(state["index"])
        self.ptr = int(state["ptr"])


def split_forward(encoder: nn.Module, x: torch.Tensor, splits: int, perm: torch.Tensor | None) -> torch.Tensor:
    """encoder(x) with BatchNorm statistics taken over `splits` groups of (permuted) rows."""
    if splits <= 1:
        return encoder(x)
    if perm is not None:
        x = x[perm]
    out = torch.cat([encoder(chunk) for chunk in x.tensor_split(splits)])
    return out[torch.argsort(perm)] if perm is not None else out
