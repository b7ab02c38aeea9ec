"""`fit`: the training loop shared by every method.

For each of the method's stages: an optimiser (the method's parameter groups) and the method's
learning-rate schedule (default: cosine decay over the stage's steps); for each
epoch the method's planned batches (this process's share under torchrun), decoded through the
preprocessed-image cache by `workers` processes, the loss under autocast, gradient clipping, the
step, the method's after-step hook; every `checkpoint_every` steps and at each epoch's end the
resumable state; at each epoch's end of a validating stage the validation AUC, `last.safetensors`
and, when the mean AUC improved, `best.safetensors`. At the end the operating thresholds are
calibrated on the validation split and written into both model files' specs.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrviewer.models.checkpoint import save_model
from cxrviewer.models.factory import create_model
from cxrviewer.trainer import runtime as rt_mod
from cxrviewer.trainer.batches import PlannedImages, collate, raise_bad_images, to_device
from cxrviewer.trainer.schedules import SCHEDULES
from cxrviewer.trainer.config import TrainConfig, save_config
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.image_cache import ImageCache, default_cache_folder
from cxrviewer.trainer.methods import Method, Stage, get_method, methods_taking_inputs
from cxrviewer.trainer.progress import QuietReporter, Reporter
from cxrviewer.trainer.train_state import STATE_FILE, Position, load_state, save_state
from cxrviewer.trainer.validation import predict_indices, validation_scores


class TrainStep(nn.Module):
    """What DistributedDataParallel wraps: the model, the method's modules, and the method's loss."""

    def __init__(self, method: Method, model: nn.Module, modules: nn.ModuleDict) -> None:
        super().__init__()
        self.model = model
        self.extra = modules
        self._method = method

    def forward(self, stage: Stage, batch: dict) -> tuple[torch.Tensor, dict]:
        return self._method.loss(stage, self.model, self.extra, batch)


class BoxesOf:
    """Picklable box lookup for data-loading workers: the record's boxes in image pixels."""

    def __init__(self, records: list) -> None:
        self.records = records

    def __call__(self, index: int) -> list:
        return self.records[index].boxes


def open_training_source(config: TrainConfig):
    """The configured data source; for a cross-validation run, split by its folds (fold = test)."""
    source = open_source(config.data, labels=config.labels, seed=config.seed, **config.data_options)
    if config.folds is not None and config.fold is not None:
        from cxrviewer.trainer.data.folds import fold_split, patient_folds, with_splits

        folds = patient_folds(source.records, config.folds, seed=config.seed)
        source = with_splits(source, fold_split(source.records, folds, config.fold, seed=config.seed))
    return source


def split_indices(source, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Record indices of the training and validation splits, optionally capped (seeded, by patient)."""
    splits = np.array([r.split for r in source.records])
    train = np.flatnonzero(splits == "train")
    val = np.flatnonzero(splits == config.val_split)
    return _cap(source, train, config.max_train_images, config.seed), _cap(source, val, config.max_val_images,
                                                                         config.seed + 1)


def _cap(source, indices: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` images, taking whole patients in a seeded order (never half a patient)."""
    if limit is None or len(indices) <= limit:
        return indices
    patients = np.array([source.records[i].patient_id for i in indices])
    order = np.random.default_rng(seed).permutation(np.unique(patients))
    rank = {p: k for k, p in enumerate(order)}
    by_patient = indices[np.argsort([rank[p] for p in patients], kind="stable")]
    return np.sort(by_patient[:limit])


def new_run_dir(config: TrainConfig) -> Path:
    name = config.name or f"{config.method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.output) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def make_optimizer(name: str, params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam (default), AdamW or SGD with momentum 0.9 over parameters or parameter groups."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def set_trainable(step_module: TrainStep, stage: Stage) -> list[nn.Parameter]:
    """Freeze all but the classifier head for a linear-evaluation stage; the trainable parameters."""
    for p in step_module.parameters():
        p.requires_grad_(stage.trainable == "all")
    if stage.trainable == "head":
        for p in step_module.model.head.parameters():
            p.requires_grad_(True)
    return [p for p in step_module.parameters() if p.requires_grad]


def fit(config: TrainConfig, *, resume: str | Path | None = None, reporter: Reporter | None = None) -> Path:
    """Train as `config` says (or continue the run folder `resume`); returns the run folder."""
    runtime = rt_mod.start(config.device, config.amp, config.channels_last)
    reporter = reporter if (reporter is not None and runtime.main) else QuietReporter()
    try:
        return _Fit(config, runtime, reporter, Path(resume) if resume else None).run()
    except Exception as exc:
        from cxrviewer.errors import first_line

        reporter.emit("error", message=first_line(exc))
        raise
    finally:
        reporter.close()
        rt_mod.stop(runtime)


class _Fit:
    def __init__(self, config: TrainConfig, runtime, reporter: Reporter, resume: Path | None) -> None:
        self.config, self.rt, self.reporter = config, runtime, reporter
        torch.manual_seed(config.seed + runtime.rank)
        self.source = open_training_source(config)
        self.correction_stats = None
        if config.corrections:
            from cxrviewer.trainer.corrections import apply_corrections

            self.correction_stats = apply_corrections(self.source, config.corrections)
        self.train_idx, self.val_idx = split_indices(self.source, config)
        if len(self.train_idx) < config.batch_size:
            from cxrviewer.errors import CxrError

            raise CxrError(None, f"the training split of {config.data} has {len(self.train_idx)} images, "
                                 f"fewer than one batch of {config.batch_size}")
        self.method = get_method(config.method)(config, self.source, self.train_idx)
        s = int(config.input_size)
        inputs = config.model_inputs()
        if inputs and not self.method.takes_inputs:
            from cxrviewer.errors import CxrError

            raise CxrError(None, f"the {config.method} method does not train metadata inputs (--inputs); "
                                 f"methods that do: {', '.join(m for m in methods_taking_inputs())}")
        self.model, self.spec = create_model(config.architecture or self.method.architecture,
                                             targets=self.source.label_names, input_size=(s, s),
                                             arch_kwargs=self.method.arch_kwargs(), inputs=inputs,
                                             **self.method.spec_fields())
        from cxrviewer.models.init import initialise

        self.init = initialise(self.model, self.spec.architecture, config.init)  # resume overwrites the weights
        self.run_dir = resume or new_run_dir(config)
        self.state = load_state(self.run_dir) if resume else None
        cache_folder = None if config.cache == "none" else (
            default_cache_folder() if config.cache == "auto" else Path(config.cache))
        self.cache = ImageCache(self.source, self.spec, cache_folder)
        names = {n: k for k, n in enumerate(self.source.label_names)}
        metadata = None
        if inputs:
            from cxrviewer.models.metadata import values_of_record

            metadata = np.stack([self.spec.metadata_vector(values_of_record(r)) for r in self.source.records])
        self.dataset = PlannedImages(self.cache, self.spec, self.source.label_matrix(), BoxesOf(self.source.records),
                                     names, metadata)

    # --- helpers ---------------------------------------------------------------------------
    def loader(self, plan: list) -> torch.utils.data.DataLoader:
        workers = max(0, int(self.config.workers))
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=plan, collate_fn=collate, num_workers=workers,
                                           pin_memory=self.rt.device.type == "cuda",
                                           prefetch_factor=4 if workers else None)

    def rank_share(self, plan: list) -> list:
        per_rank = len(plan) // self.rt.world
        return plan[self.rt.rank::self.rt.world][:per_rank]

    def save_models(self, which: tuple[str, ...], metrics: dict) -> None:
        self.method.finalize(self.model, self.spec)
        self.spec.name = f"{self.config.method}-{self.run_dir.name}"
        self.spec.training = {"data": self.config.data, "labels": self.config.labels, "method": self.config.method,
                              "run": self.run_dir.name, "seed": self.config.seed,
                              "train_images": int(len(self.train_idx)), "val_images": int(len(self.val_idx)),
                              "corrections": self.config.corrections or "", "init": self.init}
        self.spec.metrics = metrics
        for name in which:
            save_model(self.model, self.spec, self.run_dir / f"{name}.safetensors")

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> Path:
        config, rt = self.config, self.rt
        if rt.main:
            save_config(config, self.run_dir / "config.yaml")
            self.reporter.attach(self.run_dir)
        modules = self.method.build_modules(self.model, self.spec)
        step_module = TrainStep(self.method, self.model, modules).to(rt.device)
        if rt.channels_last:
            step_module = step_module.to(memory_format=torch.channels_last)
        self.method.setup(self.model, self.spec, rt.device)
        position, best, history = Position(), {}, []
        if self.state is not None:
            self.model.load_state_dict(self.state["model"])
            modules.load_state_dict(self.state["modules"])
            self.method.load_state_dict(self.state["method"])
            torch.set_rng_state(self.state["torch_rng"])
            position, best, history = self.state["position"], self.state["best"], self.state["history"]
        stages = self.method.stages()
        # Plans depend only on (seed, stage, epoch): each stage's first plan sizes its schedule and
        # is then trained from, not planned twice (planning full NIH takes seconds for some methods).
        self._first_plans = {s.name: self.method.plan_epoch(s, 0) for s in stages}
        plan_sizes = [len(self._first_plans[s.name]) // rt.world for s in stages]
        total = sum(s.epochs * n for s, n in zip(stages, plan_sizes))
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        self.reporter.emit("start", run=str(self.run_dir), method=config.method, total_steps=total,
                           train_images=int(len(self.train_idx)), val_images=int(len(self.val_idx)),
                           device=str(rt.device), world=rt.world, resumed_at=position.global_step,
                           corrections=getattr(self.correction_stats, "__dict__", None))
        stopped = False
        for si, stage in enumerate(stages):
            if si < position.stage or stopped:
                continue
            params = set_trainable(step_module, stage)
            decay = float(self.method.hyper("weight_decay"))
            optimizer = make_optimizer(self.method.hyper("optimizer"),
                                       self.method.param_groups(step_module, params, decay), stage.lr, decay)
            steps = max(1, stage.epochs * plan_sizes[si])
            factor = self.method.lr_factor(stage, plan_sizes[si]) or SCHEDULES[self.method.hyper("schedule")](steps)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
            if self.state is not None and si == position.stage and self.state.get("optimizer_stage") == si \
                    and self.state.get("optimizer") is not None:
                optimizer.load_state_dict(self.state["optimizer"])
                scheduler.load_state_dict(self.state["scheduler"])
                scaler.load_state_dict(self.state["scaler"])
            net = step_module
            if rt.distributed:
                net = nn.parallel.DistributedDataParallel(
                    step_module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                    find_unused_parameters=True)
            first_epoch = position.epoch if si == position.stage else 0
            for epoch in range(first_epoch, stage.epochs):
                start = position.step if (si, epoch) == (position.stage, position.epoch) else 0
                stopped = self.train_epoch(si, stage, epoch, start, net, step_module, optimizer, scheduler, scaler,
                                           position, best, history)
                if stopped:
                    break
            position = Position(si + 1, 0, 0, position.global_step)
        self.finish(best, history)
        return self.run_dir

    def train_epoch(self, si, stage, epoch, start, net, step_module, optimizer, scheduler, scaler,
                    position: Position, best: dict, history: list) -> bool:
        config, rt = self.config, self.rt
        self.method.on_epoch_start(stage, epoch, self.model, rt.device)
        first = self._first_plans.pop(stage.name, None) if epoch == 0 else None
        plan = self.rank_share(first if first is not None else self.method.plan_epoch(stage, epoch))
        step_module.train()
        clip = self.method.hyper("clip_grad")
        last = time.perf_counter()
        wait_total = busy_total = 0.0
        step = start
        for step, batch in enumerate(self.loader(plan[start:]), start=start):
            fetched = time.perf_counter()
            raise_bad_images(batch)
            batch = to_device(batch, rt.device, rt.channels_last)
            with rt.autocast():
                loss, parts = net(stage, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], float(clip))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            self.method.after_step(stage, self.model, step_module.extra, {"loss": loss.detach(), **parts})
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            done = time.perf_counter()
            wait, busy = fetched - last, done - fetched
            wait_total, busy_total = wait_total + wait, busy_total + busy
            last = done
            position.global_step += 1
            loss_value = float(loss.detach())  # one device sync per step
            n_images = sum(len(p["index"]) for p in batch.values()) * rt.world
            if position.global_step % max(1, config.log_every) == 0 or step == start:
                self.reporter.emit("step", stage=stage.name, epoch=epoch, step=step + 1, steps=len(plan),
                                   global_step=position.global_step, loss=loss_value,
                                   **{k: float(v) for k, v in parts.items()}, lr=scheduler.get_last_lr()[0],
                                   images_per_s=n_images / max(1e-9, wait + busy),
                                   data_wait=wait / max(1e-9, wait + busy))
            if not math.isfinite(loss_value):
                from cxrviewer.errors import CxrError

                raise CxrError(None, f"the {config.method} loss became {loss_value} at step {position.global_step}; "
                                     "lower the learning rate or set clip_grad")
            at_limit = config.max_steps is not None and position.global_step >= config.max_steps
            if at_limit or (config.checkpoint_every and position.global_step % config.checkpoint_every == 0):
                self.save_state(Position(si, epoch, step + 1, position.global_step), step_module, optimizer,
                                scheduler, scaler, best, history)
            if at_limit:
                return True
        history.append({"stage": stage.name, "epoch": epoch, "global_step": position.global_step,
                        "data_wait": wait_total / max(1e-9, wait_total + busy_total)})
        if stage.validate:
            self.end_of_epoch(stage, epoch, best, history)
        next_pos = Position(si, epoch + 1, 0, position.global_step)
        self.save_state(next_pos, step_module, optimizer, scheduler, scaler, best, history)
        return False

    def end_of_epoch(self, stage: Stage, epoch: int, best: dict, history: list) -> None:
        if self.rt.main:
            scores = validation_scores(self.model, self.dataset, self.val_idx, self.source.label_names, self.rt,
                                       self.config.batch_size, self.config.workers)
            mean = scores["mean_auc"]
            improved = not best or (mean is not None and (best.get("mean_auc") is None or mean > best["mean_auc"]))
            history[-1].update(val_auc=scores["auc"], mean_auc=mean)
            metrics = {"val_auc": scores["auc"], "val_mean_auc": mean, "stage": stage.name, "epoch": epoch}
            self.save_models(("last", "best") if improved else ("last",), metrics)
            if improved:
                best.clear()
                best.update(mean_auc=mean, stage=stage.name, epoch=epoch, metrics=metrics)
            self.reporter.emit("epoch", stage=stage.name, epoch=epoch, auc=scores["auc"], mean_auc=mean, best=improved)
        self.rt.barrier()

    def save_state(self, position, step_module, optimizer, scheduler, scaler, best, history) -> None:
        if self.rt.main:
            save_state(self.run_dir / STATE_FILE, position=position, model=self.model, modules=step_module.extra,
                       method_state=self.method.state_dict(), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       best=best, history=history, config=self.config.to_dict())
            self.reporter.emit("checkpoint", path=str(self.run_dir / STATE_FILE), global_step=position.global_step)
        self.rt.barrier()

    def finish(self, best: dict, history: list) -> None:
        """Thresholds calibrated on validation into both model files; the run summary."""
        if not self.rt.main:
            return
        from cxrviewer.models.checkpoint import load_checkpoint
        from cxrviewer.trainer.thresholds import calibrate_thresholds

        if not (self.run_dir / "last.safetensors").exists():
            self.save_models(("last", "best"), {"val_auc": {}, "val_mean_auc": None, "note": "no validation ran"})
        for name in ("best", "last"):
            path = self.run_dir / f"{name}.safetensors"
            model, spec = load_checkpoint(path)
            model.to(self.rt.device)
            if len(self.val_idx):
                probs, labels = predict_indices(model, self.dataset, self.val_idx, self.rt, self.config.batch_size,
                                                self.config.workers)
                spec.thresholds = tuple(float(t) for t in calibrate_thresholds(labels, probs))
                spec.metrics = {**spec.metrics, "thresholds_from": f"{len(self.val_idx)} validation images (Youden's J)"}
            save_model(model, spec, path)
        self.reporter.emit("end", run=str(self.run_dir), best_model=str(self.run_dir / "best.safetensors"),
                           last_model=str(self.run_dir / "last.safetensors"), best=best.get("metrics"))
