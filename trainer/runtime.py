"""Where training runs: device choice, autocast, channels_last, and DistributedDataParallel setup.

Distributed training is PyTorch's own: run `torchrun --nproc_per_node N -m cxrviewer.trainer.cli fit ...`
(or `torchrun ... $(which cxrviewer-train) fit ...`); torchrun sets RANK/WORLD_SIZE/LOCAL_RANK and
this module joins the process group (NCCL on CUDA, gloo on CPU). Each process trains on its share of
every epoch's planned batches; rank 0 validates, writes checkpoints and reports.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def pick_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA devices that support it, else off; CPU autocast is off unless asked."""
    if mode == "none":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def start(device: str = "auto", amp: str = "auto", channels_last: bool | None = None) -> Runtime:
    """Join the process group when launched by torchrun, pick the device and the precision."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend=backend)
    if channels_last is None:
        channels_last = torch_device.type == "cuda"
    return Runtime(torch_device, rank, world, local_rank, pick_amp(amp, torch_device), bool(channels_last))


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(runtime: Runtime, value: bool) -> bool:
    """Rank 0's boolean, on every rank."""
    if not runtime.distributed:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64)
    dist.broadcast(t, 0)
    return bool(t.item())
