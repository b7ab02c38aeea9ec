"""Helpers for trainer tests: a tiny configuration on the real NIH sample, and repeated steps on one
planned batch (the "its loss goes down" check every method must pass)."""

from __future__ import annotations

import numpy as np
import torch

from cxrviewer.trainer.batches import collate, to_device
from cxrviewer.trainer.config import resolve_config
from cxrviewer.trainer.loop import _Fit
from cxrviewer.trainer.runtime import Runtime
from cxrviewer.trainer.progress import QuietReporter


def tiny_config(data: str, method: str, tmp_path, **fields):
    """A CPU configuration small enough for tests: 64-pixel inputs, small batches, no workers."""
    base = {"data": data, "method": method, "input_size": 64, "batch_size": 6, "workers": 0, "cache": "none",
            "output": str(tmp_path / "runs"), "name": f"{method}-test", "device": "cpu", "amp": "none",
            "log_every": 1, "checkpoint_every": 0}
    sets = [f"{k}={v}" for k, v in fields.pop("method_args", {}).items()]
    base.update(fields)
    return resolve_config(None, base, sets)


def repeated_batch_losses(config, steps: int, stage_index: int = 0, lr: float | None = None) -> list[float]:
    """Losses of `steps` optimiser steps of the method's loss on its first planned batch, repeated.

    Same images, same augmentation: a method whose loss and gradients are wired correctly drives it
    down. Returns the per-step losses."""
    runtime = Runtime(torch.device("cpu"))
    fit = _Fit(config, runtime, QuietReporter(), None)
    method, model = fit.method, fit.model
    modules = method.build_modules(model, fit.spec)
    from cxrviewer.trainer.loop import TrainStep, make_optimizer, set_trainable

    step_module = TrainStep(method, model, modules)
    method.setup(model, fit.spec, runtime.device)
    stage = method.stages()[stage_index]
    params = set_trainable(step_module, stage)
    optimizer = make_optimizer(method.hyper("optimizer"), params, lr or stage.lr, 0.0)
    method.on_epoch_start(stage, 0, model, runtime.device)
    plan = method.plan_epoch(stage, 0)
    assert plan, "the method planned no batch"
    batch = to_device(collate([fit.dataset[item] for item in plan[0]]), runtime.device, False)
    step_module.train()
    losses = []
    for _ in range(steps):
        loss, parts = step_module(stage, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = method.hyper("clip_grad")
        if clip:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        optimizer.step()
        method.after_step(stage, model, modules, {"loss": loss.detach(), **parts})
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)), losses
    return losses
