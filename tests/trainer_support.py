"""Helpers for trainer tests: a tiny configuration on the real NIH sample, and repeated steps on one
planned batch (the "its loss goes down" check every method must pass)."""

from __future__ import annotations

import numpy as np
import torch

from cxrviewer.trainer.batches import collate, to_device
from cxrviewer.trainer.config import resolve_config
from cxrviewer.trainer.loop import TrainStep, _Fit
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


CPU = torch.device("cpu")


def prepared(config):
    """(run, method, model, modules, step module) set up on the CPU as the loop sets them up."""
    run = _Fit(config, Runtime(CPU), QuietReporter(), None)
    modules = run.method.build_modules(run.model, run.spec)
    step = TrainStep(run.method, run.model, modules)
    run.method.setup(run.model, run.spec, CPU)
    return run, run.method, run.model, modules, step


def first_batch(run, stage):
    """The collated first planned batch of `stage`'s epoch 0, on the CPU."""
    plan = run.method.plan_epoch(stage, 0)
    assert plan, "the method planned no batch"
    return to_device(collate([run.dataset[item] for item in plan[0]]), CPU, False)


def repeated_batch_losses(config, steps: int, stage_index: int = 0, lr: float | None = None) -> list[float]:
    """Losses of `steps` optimiser steps of the method's loss on its first planned batch, repeated.

    Same images, same augmentation: a method whose loss and gradients are wired correctly drives it
    down. Returns the per-step losses."""
    from cxrviewer.trainer.loop import make_optimizer, set_trainable

    run, method, model, modules, step_module = prepared(config)
    stage = method.stages()[stage_index]
    params = set_trainable(step_module, stage)
    optimizer = make_optimizer(method.hyper("optimizer"), params, lr or stage.lr, 0.0)
    method.on_epoch_start(stage, 0, model, CPU)
    batch = first_batch(run, stage)
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


def step_losses(run) -> dict[int, tuple[str, float]]:
    """{global step: (stage, loss)} from a run's progress log."""
    import json

    events = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    return {e["global_step"]: (e["stage"], e["loss"]) for e in events if e["event"] == "step"}


def check_two_stage_run_resumes_exactly(data: str, method: str, tmp_path, loss_part: str, **fields) -> None:
    """A two-stage method on a tiny run: 3 pre-training steps then fine-tuning, loadable best/last files;
    stopped after step 2 and resumed, the run repeats the uninterrupted run's third loss (its method
    state — EMA target, key encoder, queue — was restored)."""
    import json

    from cxrviewer.models import load_model
    from cxrviewer.trainer.loop import fit

    def config(name, steps):
        return tiny_config(data, method, tmp_path, architecture="resnet18", pretrain_epochs=1, epochs=1,
                           max_train_images=18, max_val_images=6, max_steps=steps, name=name, **fields)

    whole = fit(config("whole", 4))
    reference = step_losses(whole)
    assert [reference[k][0] for k in (1, 2, 3, 4)] == ["pretrain", "pretrain", "pretrain", "finetune"]
    events = [json.loads(line) for line in (whole / "progress.jsonl").read_text().splitlines()]
    assert loss_part in next(e for e in events if e["event"] == "step")
    for name in ("best", "last"):
        model, spec = load_model(whole / f"{name}.safetensors")
        assert spec.method == method and spec.architecture == "resnet18" and "projection" in model.aux
    part = fit(config("part", 2))
    fit(config("part", 3), resume=part)
    resumed = step_losses(part)
    assert resumed[3][0] == "pretrain"
    assert abs(resumed[3][1] - reference[3][1]) <= 1e-6 + 1e-5 * abs(reference[3][1])
