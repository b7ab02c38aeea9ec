"""The resumable training state (`<run>/train_state.pt`) and the run folder's model files.

The state holds the network, the method's trainable and non-trainable state, the optimiser,
scheduler and gradient scaler, the position (stage, epoch, step within the epoch), the best
validation score so far and the torch RNG. It is written atomically (temporary file, then rename)
and read with `torch.load(weights_only=True)`: no pickled code is ever executed on resume.

`--resume RUN` continues at the saved position. Batches are planned from seeds and augmentations
are seeded per item, so the resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cxrviewer.errors import CxrError

STATE_FILE = "train_state.pt"
STATE_VERSION = 1


class BadRun(CxrError):
    """A run folder that cannot be resumed, evaluated or exported."""


@dataclass
class Position:
    stage: int = 0
    epoch: int = 0
    step: int = 0  # optimiser steps already taken in this epoch (by this process)
    global_step: int = 0


def save_state(path: Path, *, position: Position, model, modules, method_state: dict, optimizer=None,
               scheduler=None, scaler=None, best: dict | None = None, history: list | None = None,
               config: dict | None = None) -> None:
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "position": asdict(position),
        "model": model.state_dict(),
        "modules": modules.state_dict(),
        "method": method_state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "optimizer_stage": position.stage,
        "best": best or {},
        "history": history or [],
        "config": config or {},
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise BadRun(path, "the run has no training state to resume from (no checkpoint was written yet)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types on damaged files
        raise BadRun(path, f"the training state cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise BadRun(path, "the training state was written by another version of cxrviewer-train")
    state["position"] = Position(**state["position"])
    return state
