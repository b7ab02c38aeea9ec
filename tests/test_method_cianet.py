"""The `cianet` training method: paper defaults, the pictures it puts into the model (canonical chest,
"No Finding" bank), the alignment pre-training and the CIA-Net losses going down on real images
(synthetic lesions with boxes, and the NIH sample without), a fit smoke run through both stages,
and the viewer's Analyzer on the exported model file.

CPU, 64-pixel inputs, ResNet-18 instead of the paper's ResNet-50 and phi_A at 64 pixels instead of 128
(`depth`, `align_resolution`: test-only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrviewer.io import load_image
from cxrviewer.models import create_model, load_model
from cxrviewer.models.cianet import CIANet
from cxrviewer.trainer.batches import collate
from cxrviewer.trainer.data.negative_bank import no_finding_indices
from cxrviewer.trainer.loop import _Fit, fit
from cxrviewer.trainer.methods import get_method
from cxrviewer.trainer.methods.cianet import batch_grid_targets
from cxrviewer.trainer.progress import QuietReporter
from cxrviewer.trainer.runtime import Runtime
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import repeated_batch_losses, tiny_config

needs_sample = pytest.mark.skipif(not (NIH_SAMPLE / "images").is_dir(),
                                  reason="../shared/data/nih-sample is not present")
SYNTHETIC = f"synthetic:{NIH_SAMPLE}"
SMALL = {"depth": "resnet18", "align_resolution": 64}


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


def _config(tmp_path, data: str = SYNTHETIC, method_args: dict | None = None, **fields):
    options = {"data_options": {"n_images": 40}} if data.startswith("synthetic:") else {}
    return tiny_config(data, "cianet", tmp_path, method_args={**SMALL, **(method_args or {})}, **options, **fields)


def _prepared(config):
    """The loop's objects for `config`, with the method's setup done (no training)."""
    prepared = _Fit(config, Runtime(torch.device("cpu")), QuietReporter(), None)
    prepared.method.setup(prepared.model, prepared.spec, torch.device("cpu"))
    return prepared


def _as_pictures(x: torch.Tensor, spec) -> np.ndarray:
    """Model inputs [N, C, H, W] -> the 8-bit-scale pictures [N, H, W] in [0, 1] they came from."""
    mean, std = float(spec.mean[0]), float(spec.std[0])
    return (x[:, 0] * std + mean).numpy()


# --- defaults and helpers -------------------------------------------------------------------

def test_paper_defaults():
    method = get_method("cianet")
    assert method.architecture == "cianet" and method.has_box_path
    d = method.defaults
    assert (d["epochs"], d["lr"], d["optimizer"], d["weight_decay"]) == (15, 1e-3, "sgd", 1e-4)  # Sec. 3.3
    assert d["depth"] == "efficientnet-lite0" and d["grid_size"] == 16 and d["hash_size"] == 16 and d["augment"] == "none"
    assert d["clip_grad"] and d["canonical_images"] == 500 and len(d["canonical_crop"]) == 4


def test_box_targets_live_on_the_aligned_grid():
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    zoom = torch.tensor([[0.5, 0, 0], [0, 0.5, 0]])  # the aligned view is the central half of the input
    boxes = [torch.tensor([[2, 0.0, 0.0, 16.0, 16.0]]), torch.zeros(0, 5)]  # class 2, top-left quarter
    targets, lam = batch_grid_targets(boxes, torch.stack([identity, identity]), 3, 4, (64, 64))
    assert lam.tolist() == [[False, False, True], [False, False, False]]
    assert targets[0, 2].tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert targets[1].sum() == 0 and targets[0, :2].sum() == 0
    # zoomed in, the box lies outside the aligned view: no all-negative grid, the MIL term takes the class
    targets, lam = batch_grid_targets(boxes[:1], zoom[None], 3, 4, (64, 64))
    assert not lam.any() and targets.sum() == 0


# --- the pictures in the model ---------------------------------------------------------------

@needs_sample
def test_setup_puts_no_finding_pictures_into_the_model(tmp_path):
    prepared = _prepared(_config(tmp_path, method_args={"canonical_crop": "none"}))
    model, spec, method = prepared.model, prepared.spec, prepared.method
    assert isinstance(model, CIANet) and model.bank_resolution == 64
    pool = no_finding_indices(prepared.source, method.train)
    assert 4 <= len(pool) < model.bank_size and all(not prepared.source.records[i].boxes for i in pool)
    pictures = np.stack([prepared.cache.picture(int(i))[0] for i in pool]).astype(np.float32) / 255.0
    step = float(model.bank_scale[0]) * float(spec.std[0])  # one 8-bit code of the stored bank
    bank = _as_pictures(model.bank_images(), spec)
    nearest = [int(np.abs(pictures - image).max(axis=(1, 2)).argmin()) for image in bank]
    for image, j in zip(bank, nearest):  # every bank image is one of the "No Finding" training pictures
        assert np.abs(pictures[j] - image).max() <= step + 1 / 255
    assert sorted(set(nearest)) == list(range(len(pool)))  # all of a pool smaller than the bank,
    assert nearest[len(pool):] == nearest[:model.bank_size - len(pool)]  # repeated to fill it
    # fewer than 500 in the pool: the canonical chest is the mean of all of them
    canonical = _as_pictures(model.canonical_chest(), spec)[0]
    code = float(model.canonical_scale[0]) * float(spec.std[0])
    assert np.abs(canonical - pictures.mean(0)).max() <= 1.5 / 255 + code


# --- losses go down --------------------------------------------------------------------------

@needs_sample
def test_cianet_loss_goes_down_on_a_batch_with_boxes(tmp_path):
    config = _config(tmp_path, batch_size=4)
    prepared = _Fit(config, Runtime(torch.device("cpu")), QuietReporter(), None)
    stage = prepared.method.stages()[1]
    assert stage.name == "train"
    first = prepared.method.plan_epoch(stage, 0)[0]
    boxed = [item for item in first if prepared.source.records[item.index].boxes]
    assert boxed and len(boxed) < len(first)  # Eq. 4 and Eq. 5 both take part
    losses = repeated_batch_losses(config, 6, stage_index=1)
    assert np.mean(losses[-3:]) < 0.9 * losses[0], losses


@needs_sample
def test_each_stage_trains_its_own_part(tmp_path):
    prepared = _prepared(_config(tmp_path, batch_size=4))
    method, model = prepared.method, prepared.model
    pretrain, train = method.stages()
    assert (pretrain.name, pretrain.validate) == ("pretrain", False)
    assert (train.name, train.epochs, train.lr) == ("train", 15, 1e-3)
    factor = method.lr_factor(train, 10)  # Sec. 3.3: lr / 10 every 5 epochs (here 10 steps an epoch)
    assert [factor(s) for s in (0, 49, 50, 99, 100, 149)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert method.lr_factor(pretrain, 10) is None  # the loop's cosine
    groups = method.param_groups(model, list(model.parameters()), 1e-4)
    assert groups[0]["nesterov"] and groups[0]["weight_decay"] == 1e-4  # SGD with Nesterov momentum
    model.train()
    for stage, learns in ((pretrain, "align"), (train, "rest")):
        items = method.plan_epoch(stage, 0)[0]
        batch = collate([prepared.dataset[item] for item in items])
        model.zero_grad(set_to_none=True)
        loss, parts = method.loss(stage, model, torch.nn.ModuleDict(), batch)
        loss.backward()
        grads: dict[str, bool] = {}  # top-level module -> does any of its parameters get a gradient
        for name, p in model.named_parameters():
            top = name.split(".")[0]
            grads[top] = grads.get(top, False) or (p.grad is not None and bool(p.grad.any()))
        if learns == "align":  # L_s only, phi_A only
            assert set(parts) == {"structure"} and grads["align"] and not grads["backbone"] and not grads["classifier"]
        else:  # Eq. 6; phi_A held fixed (structure_weight 0)
            assert {"box", "mil"} <= set(parts) and not grads["align"] and grads["backbone"] and grads["attention"]
            assert not model.align.training


@needs_sample
def test_cianet_loss_goes_down_on_real_nih_images(tmp_path):
    config = _config(tmp_path, f"nih:{NIH_SAMPLE}", batch_size=4, max_train_images=48)
    losses = repeated_batch_losses(config, 6, stage_index=1)
    assert np.mean(losses[-3:]) < losses[0], losses


@needs_sample
def test_alignment_pretraining_moves_towards_the_canonical_chest(tmp_path):
    # the default canonical chest is cropped to the lungs (the paper's "central view"): phi_A has work to do
    config = _config(tmp_path, batch_size=4)
    losses = repeated_batch_losses(config, 7, stage_index=0)  # the default lr and clipping
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


# --- a run, its model file, and the viewer ---------------------------------------------------

@needs_sample
def test_fit_exports_a_model_the_analyzer_reads(tmp_path):
    # 12 training images in batches of 6: 2 alignment steps, then 2 CIA-Net steps
    config = _config(tmp_path, max_steps=4, max_train_images=12)
    run = fit(config)
    events = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    stages = {e["stage"] for e in events if e["event"] == "step"}
    assert stages == {"pretrain", "train"} and events[-1]["event"] == "end"
    assert any(e.get("box", 0) > 0 for e in events if e["event"] == "step" and e["stage"] == "train")

    model, spec = load_model(run / "best.safetensors")
    assert spec.method == "cianet" and spec.architecture == "cianet" and spec.input_size == (64, 64)
    # setup is deterministic: a second setup gives the same pictures, and the file holds them
    again = _prepared(_config(tmp_path / "again", max_train_images=12))
    for name in ("bank", "bank_scale", "bank_offset", "bank_hash", "canonical", "canonical_scale"):
        assert torch.equal(getattr(model, name), getattr(again.model, name)), name
    fresh, _ = create_model("cianet", targets=spec.targets, input_size=(64, 64), arch_kwargs=again.method.arch_kwargs())
    assert not torch.equal(fresh.bank, model.bank) and not torch.equal(fresh.canonical, model.canonical)

    from cxrviewer.analysis import Analyzer

    image = load_image(min((NIH_SAMPLE / "images-1024").glob("*.png")))
    for analyzer in (Analyzer(model, spec, device="cpu", cam="native"),
                     Analyzer(run / "best.safetensors", device="cpu", cam="native")):
        result = analyzer.analyze(image)
        assert [f.name for f in result.findings] == list(spec.targets)
        assert all(0.0 <= f.probability <= 1.0 for f in result.findings)
        assert result.cams.shape == (len(spec.targets), 16, 16) and np.isfinite(result.cams).all()
