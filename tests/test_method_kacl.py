"""`kacl`: knowledge-augmented contrastive learning with radiomic positives (Han et al.)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cxrviewer.models import load_model
from cxrviewer.radiomics import compute_radiomics, feature_names
from cxrviewer.trainer.batches import collate, to_device
from cxrviewer.trainer.loop import TrainStep, _Fit, fit
from cxrviewer.trainer.methods import get_method
from cxrviewer.trainer.methods.kacl_radiomics import GRAD_CAM, GROUND_TRUTH, RadiomicCache
from cxrviewer.trainer.progress import QuietReporter
from cxrviewer.trainer.runtime import Runtime
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import repeated_batch_losses, tiny_config

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared two-core machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def prepared(tmp_path, **fields):
    """(fit, method) set up as the loop sets them up, on a handful of real NIH images."""
    method_args = {"warmup_epochs": 0, "radiomics_workers": 1, **fields.pop("method_args", {})}
    fields = {"batch_size": 8, "input_size": 128, "max_train_images": 16, "max_val_images": 8, **fields}
    config = tiny_config(f"nih:{NIH_SAMPLE}", "kacl", tmp_path, method_args=method_args, **fields)
    run = _Fit(config, Runtime(CPU), QuietReporter(), None)
    run.method.setup(run.model, run.spec, CPU)
    return run, run.method


def test_defaults_follow_the_paper():
    cls = get_method("kacl")
    assert cls.architecture == "kacl-lite0" and cls.has_box_path
    d = cls.defaults
    assert (d["lr"], d["optimizer"], d["epochs"], d["warmup_epochs"]) == (1e-3, "adam", 30, 10)
    assert (d["focal_alpha"], d["focal_gamma"]) == (0.25, 2.0)


def test_cache_standardises_over_valid_rows_and_round_trips(tmp_path):
    cache = RadiomicCache(4, 3)
    feats = np.array([[1.0, np.nan, 10.0], [3.0, 5.0, 10.0], [np.nan, np.nan, np.nan]])
    cache.update(np.array([0, 1, 3]), feats, np.array([[0, 0, 4, 4], [1, 1, 5, 5], [0, 0, 0, 0]]),
                 np.array([GRAD_CAM, GROUND_TRUTH, 0]), epoch=2)
    assert cache.valid.tolist() == [True, True, False, False]
    z = cache.standardised(CPU)
    torch.testing.assert_close(z[:2], torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))  # NaN -> 0, constant -> 0
    assert torch.isfinite(z).all()
    path = tmp_path / "cache.pt"
    torch.save(cache.state_dict(), path)
    other = RadiomicCache(4, 3)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.epoch == 2 and other.valid.tolist() == cache.valid.tolist()
    torch.testing.assert_close(other.features, cache.features, equal_nan=True)
    assert other.box_source.tolist() == [GRAD_CAM, GROUND_TRUTH, 0, 0]
    with pytest.raises(ValueError):
        RadiomicCache(5, 3).load_state_dict(cache.state_dict())


@needs_sample
def test_plan_takes_hierarchy_negatives_of_other_patients_after_the_warmup(tmp_path):
    run, method = prepared(tmp_path, max_train_images=40, method_args={"warmup_epochs": 2, "negatives": 3})
    stage = method.stages()[0]
    records = run.source.records
    assert {it.group for b in method.plan_epoch(stage, 1) for it in b} == {"query"}  # classification only
    plan = method.plan_epoch(stage, 2)
    assert plan == method.plan_epoch(stage, 2)
    for batch in plan:
        queries = [it for it in batch if it.group == "query"]
        negatives = [it for it in batch if it.group == "negative"]
        anchors = [q for q in queries if method.eligible[q.index]]
        assert anchors and len(negatives) == 3 * len(anchors)
        for a, q in enumerate(anchors):
            assert method.labels[q.index].max() == 1
            negs = [n.index for n in negatives[3 * a:3 * a + 3]]
            assert all(records[n].patient_id != records[q.index].patient_id for n in negs)
            assert method.hierarchy.is_negative([method.row_of[q.index]], method.row_of[negs]).all()
        assert len({it.seed for it in batch}) == len(batch)
    assert method.negative_fallbacks == {"": sum(int(method.eligible[it.index]) for b in plan for it in b
                                                 if it.group == "query")}


@needs_sample
def test_refresh_uses_ground_truth_boxes_where_present(tmp_path):
    run, method = prepared(tmp_path)
    names = run.source.label_names
    boxed, plain = [int(i) for i in method.train if method.eligible[i]][:2]
    record = run.source.records[boxed]
    name = names[int(np.flatnonzero(record.labels == 1)[0])]
    record.boxes = [(name, 100.0, 120.0, 260.0, 300.0), ("Not a finding of the label space", 0, 0, 5, 5)]
    method.refresh(run.model, CPU, [boxed, plain], epoch=0)
    rb, rp = method.row_of[boxed], method.row_of[plain]
    assert int(method.cache.box_source[rb]) == GROUND_TRUTH and int(method.cache.box_source[rp]) == GRAD_CAM
    assert method.cache.boxes[rb].tolist() == [100.0, 120.0, 260.0, 300.0]
    expected = compute_radiomics(run.source.load_image(record), box=(100.0, 120.0, 260.0, 300.0)).values
    np.testing.assert_allclose(method.cache.features[rb].numpy(), expected.astype(np.float32), rtol=1e-6)
    x0, y0, x1, y1 = method.cache.boxes[rp].tolist()
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512  # a Grad-CAM box in original-image pixels
    assert method.cache.valid[[rb, rp]].all() and method.cache.epoch == 0
    assert method.cache.features.shape[1] == len(feature_names()) == 102


POOL_CHECK = """
import sys
import numpy as np
import torch
from cxrviewer.models.factory import create_model
from cxrviewer.radiomics import feature_names
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.methods import kacl_radiomics as kr

source = open_source("nih:" + sys.argv[1])
indices = [i for i, r in enumerate(source.records) if r.labels.max() == 1][:4]
torch.manual_seed(0)
model, spec = create_model("kacl", targets=source.label_names, input_size=(128, 128))
one = kr.byop_features(model, spec, source, indices, torch.device("cpu"), workers=1)
pools = []
real_pool = kr._pool
kr._pool = lambda *a, **k: pools.append(real_pool(*a, **k)) or pools[-1]
pooled = kr.byop_features(model, spec, source, indices, torch.device("cpu"), workers=2, min_pool_items=1, chunk=2)
assert len(pools) == 1 and pools[0] is not None, "the crops did not go through a pool"
for a, b in zip(one, pooled):
    np.testing.assert_array_equal(a, b)
assert np.isfinite(one[0]).any(axis=1).sum() >= 2 and one[0].shape == (4, len(feature_names()))
print("ok")
"""


@needs_sample
def test_pool_gives_the_same_features_as_one_process():
    """In a fresh interpreter: pytest-qt has loaded Qt here, and `fork_context` rightly refuses to fork then."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", POOL_CHECK, str(NIH_SAMPLE)], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


@needs_sample
def test_refresh_schedule_and_state_round_trip(tmp_path):
    run, method = prepared(tmp_path, method_args={"warmup_epochs": 1, "refresh_every": 2})
    stage = method.stages()[0]
    calls = []
    real_refresh = method.refresh

    def recording(model, device, indices, epoch):
        calls.append((epoch, list(indices)))
        real_refresh(model, device, indices, epoch)

    method.refresh = recording
    for epoch in range(4):
        method.on_epoch_start(stage, epoch, run.model, CPU)
    assert [c[0] for c in calls] == [1, 3]  # none in the warm-up, then every second epoch
    expected = sorted({it.index for e in (1, 2) for b in method.plan_epoch(stage, e) for it in b
                       if it.group == "query" and method.eligible[it.index]})
    assert calls[0][1] == expected  # the anchors of the two epochs the refresh serves
    path = tmp_path / "state.pt"
    torch.save(method.state_dict(), path)
    _, other = prepared(tmp_path, method_args={"warmup_epochs": 1, "refresh_every": 2})
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.cache.epoch == 3
    torch.testing.assert_close(other.cache.features, method.cache.features, equal_nan=True)
    assert torch.equal(other.cache.valid, method.cache.valid) and torch.equal(other.cache.boxes, method.cache.boxes)
    other.refresh = lambda *a, **k: pytest.fail("a resumed run must reuse the cache of its refresh period")
    other.on_epoch_start(stage, 3, run.model, CPU)
    assert other.contrastive_on


@needs_sample
def test_loss_combines_focal_and_contrastive_terms(tmp_path):
    run, method = prepared(tmp_path)
    modules = method.build_modules(run.model, run.spec)
    step = TrainStep(method, run.model, modules)
    stage = method.stages()[0]
    method.on_epoch_start(stage, 0, run.model, CPU)
    batch = to_device(collate([run.dataset[it] for it in method.plan_epoch(stage, 0)[0]]), CPU, False)
    loss, parts = step(stage, batch)
    assert int(parts["anchors"]) >= 2 and float(parts["contrastive"]) != 0
    assert float(loss.detach()) == pytest.approx(0.2 * float(parts["contrastive"]) + 0.8 * float(parts["focal"]),
                                                 rel=1e-5)
    loss.backward()
    encoder = run.model.aux["radiomic_encoder"][0].weight
    assert encoder.grad is not None and encoder.grad.abs().sum() > 0  # the radiomic branch learns
    method.contrastive_on = False
    loss, parts = step(stage, batch)
    assert set(parts) == {"focal"} and float(loss.detach()) == pytest.approx(float(parts["focal"]))


@needs_sample
def test_loss_goes_down_on_real_images(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "kacl", tmp_path, batch_size=8, input_size=128, max_train_images=16,
                         method_args={"warmup_epochs": 0, "radiomics_workers": 1, "negatives": 2})
    losses = repeated_batch_losses(config, 5)
    assert np.mean(losses[-3:]) < losses[0]


@needs_sample
def test_fit_writes_loadable_models(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "kacl", tmp_path, batch_size=4, max_train_images=12,
                         max_val_images=8, max_steps=2, method_args={"warmup_epochs": 0, "radiomics_workers": 1})
    run = fit(config)
    for name in ("best", "last"):
        model, spec = load_model(run / f"{name}.safetensors")
        assert spec.method == "kacl" and spec.architecture == "kacl-lite0"
        assert {"projection", "radiomic_encoder", "radiomic_projection"} <= set(model.aux)
        assert spec.extra["box_method"] == "threshold"
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 8)
