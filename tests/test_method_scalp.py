"""`scalp`: patient-metadata supervised contrastive learning (Jaiswal et al.)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrviewer.models import load_model
from cxrviewer.trainer.batches import collate, to_device
from cxrviewer.trainer.config import TrainConfig
from cxrviewer.trainer.data.sources import DataSource, Record
from cxrviewer.trainer.loop import TrainStep, _Fit, fit
from cxrviewer.trainer.methods import get_method
from cxrviewer.trainer.methods.scalp import masked_contrastive, summed_bce
from cxrviewer.trainer.progress import QuietReporter
from cxrviewer.trainer.runtime import Runtime
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import repeated_batch_losses, tiny_config

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
CPU = torch.device("cpu")
NAMES = ("A", "B", "C")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared two-core machine two threads spend most of a step waiting
    on each other (measured: 25 s with one thread, 134 s with two, for the same six steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_source() -> DataSource:
    """Eight patients; patient p0 has three studies (two with diagnosis A, one with B), p1 two images
    of one study, everyone else one image. Diagnoses: A, B, or none."""
    rows = [("p0", "s0", (1, 0, 0)), ("p0", "s1", (1, 0, 0)), ("p0", "s2", (0, 1, 0)),
            ("p1", "s3", (0, 1, 0)), ("p1", "s3", (0, 1, 0)),
            ("p2", "s4", (1, 0, 0)), ("p3", "s5", (1, 0, 0)), ("p4", "s6", (0, 1, 0)),
            ("p5", "s7", (0, 0, 0)), ("p6", "s8", (0, 0, 0)), ("p7", "s9", (1, 0, 0))]
    records = [Record(f"img{i}", None, p, s, labels=np.array(lab, np.float32)) for i, (p, s, lab) in enumerate(rows)]
    return DataSource("toy", Path("."), records, NAMES)


def toy_method(batch_size: int = 4, **method_args):
    source = toy_source()
    config = TrainConfig(data="toy:.", method="scalp", batch_size=batch_size, method_args=method_args)
    return get_method("scalp")(config, source, np.arange(len(source.records))), source


def test_defaults_follow_the_paper():
    cls = get_method("scalp")
    assert cls.architecture == "scalp-lite0" and not cls.has_box_path
    d = cls.defaults
    assert d["lam"] == 0.8 and d["lr"] == 0.01 and d["optimizer"] == "sgd" and d["weight_decay"] == 1e-4
    method, _ = toy_method()
    assert method.arch_kwargs() == {"head": "mlp", "projection": True, "projection_dim": 128}


def test_planned_batches_follow_the_patient_rules():
    method, source = toy_method(batch_size=4, negatives=3)
    records = source.records
    stage = method.stages()[0]
    for epoch in range(6):
        plan = method.plan_epoch(stage, epoch)
        assert plan == method.plan_epoch(stage, epoch)  # deterministic: exact resume
        assert len(plan) == 8 // 4  # every patient once, incomplete batch dropped
        for batch in plan:
            q = [it for it in batch if it.group == "query"]
            p = [it for it in batch if it.group == "positive"]
            n = [it for it in batch if it.group == "negative"]
            assert len(q) == len(p) == 4 and len(n) == 4 * 3
            assert len({records[it.index].patient_id for it in q}) == 4  # distinct patients
            for slot, (qi, pi) in enumerate(zip(q, p)):
                rq, rp = records[qi.index], records[pi.index]
                assert rp.patient_id == rq.patient_id
                assert np.array_equal(rp.labels, rq.labels)  # same diagnosis
                if rq.patient_id == "p0" and rq.study_id in ("s0", "s1"):
                    assert rp.study_id != rq.study_id  # another study of the same diagnosis exists
                if pi.index == qi.index:
                    assert pi.seed != qi.seed  # the fallback positive is a second view
                for neg in n[slot * 3:(slot + 1) * 3]:
                    assert records[neg.index].patient_id != rq.patient_id
            assert len({it.seed for it in batch}) == len(batch)
    assert method.plan_epoch(stage, 0) != method.plan_epoch(stage, 1)


def test_negatives_share_the_query_diagnosis_when_one_exists():
    method, source = toy_method(batch_size=2, negatives=4)
    stage = method.stages()[0]
    for epoch in range(8):
        for batch in method.plan_epoch(stage, epoch):
            q = [it for it in batch if it.group == "query"]
            n = [it for it in batch if it.group == "negative"]
            for slot, qi in enumerate(q):
                labels = source.records[qi.index].labels
                for neg in n[slot * 4:(slot + 1) * 4]:
                    assert np.array_equal(source.records[neg.index].labels, labels)


def test_eq3_against_a_direct_computation():
    torch.manual_seed(0)
    q, p, keys = torch.randn(3, 5), torch.randn(3, 5), torch.randn(7, 5)
    mask = torch.rand(3, 7) > 0.4
    mask[:, 0] = True
    tau = 0.1
    got = masked_contrastive(q, p, keys, mask, tau)
    expected = []
    for i in range(3):
        sim = lambda a, b: float(F.cosine_similarity(a, b, dim=0))
        num = math.exp(sim(q[i], p[i]) / tau)
        den = sum(math.exp(sim(q[i], keys[j]) / tau) for j in range(7) if mask[i, j])
        expected.append(-math.log(num / den))
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-5)
    # NT-Xent's form adds the positive to the denominator: always positive, and larger
    with_pos = masked_contrastive(q, p, keys, mask, tau, positive_in_denominator=True)
    assert float(with_pos) > float(got) and float(with_pos) > 0
    # a query with no negative key is left out instead of giving inf/NaN
    mask[1] = False
    partial = masked_contrastive(q, p, keys, mask, tau)
    assert float(partial) == pytest.approx(np.mean([expected[0], expected[2]]), rel=1e-5)


def test_summed_bce_sums_classes_and_masks_unknown():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    per = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(labels), reduction="none")
    assert float(summed_bce(logits, labels)) == pytest.approx(float((per[0, 0] + per[1, 0] + per[1, 1]) / 2))


def test_key_mask_is_eq3_indicator_over_the_batch():
    method, _ = toy_method(batch_size=2, negatives=1)
    # queries img0 (p0, A) and img5 (p2, A); keys: positives img1 (p0, A), img5 (p2, A);
    # negatives img6 (p3, A) for query 0, img0 (p0, A) for query 1
    mask = method.key_mask(torch.tensor([0, 5]), torch.tensor([1, 5, 6, 0]), 1)
    assert mask.tolist() == [[False, True, True, False], [True, False, True, True]]
    method.args["batch_negatives"] = False
    mask = method.key_mask(torch.tensor([0, 5]), torch.tensor([1, 5, 6, 0]), 1)
    assert mask.tolist() == [[False, False, True, False], [False, False, False, True]]


@needs_sample
def test_loss_goes_down_on_real_images(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "scalp", tmp_path, batch_size=4, method_args={"negatives": 2})
    losses = repeated_batch_losses(config, 5)
    assert np.mean(losses[-3:]) < losses[0]


@needs_sample
def test_corrections_add_the_cam_loss_on_boxed_images(tmp_path):
    config = tiny_config(f"synthetic:{NIH_SAMPLE}", "scalp", tmp_path, batch_size=4, architecture="resnet18-ta",
                         data_options={"n_images": 40}, method_args={"negatives": 1})
    run = _Fit(config, Runtime(CPU), QuietReporter(), None)
    method = run.method
    step = TrainStep(method, run.model, method.build_modules(run.model, run.spec))
    stage = method.stages()[0]
    plans = [b for e in range(4) for b in method.plan_epoch(stage, e)]
    batch = next(to_device(collate([run.dataset[it] for it in b]), CPU, False) for b in plans
                 if any(run.source.records[it.index].boxes for it in b if it.group == "query"))
    with torch.no_grad():
        _, parts = step(stage, batch)
    assert "cam" not in parts  # no --corrections: SCALP trains on no box
    method.use_boxes = True
    loss, parts = step(stage, batch)
    loss = loss.detach()
    assert float(parts["cam"]) > 0
    lam = 0.8
    assert float(loss) == pytest.approx(lam * float(parts["bce"]) + (1 - lam) * float(parts["contrastive"])
                                        + 0.1 * float(parts["cam"]), rel=1e-4)


@needs_sample
def test_fit_writes_loadable_models(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "scalp", tmp_path, batch_size=4, max_train_images=12,
                         max_val_images=12, max_steps=2, method_args={"negatives": 1})
    run = fit(config)
    for name in ("best", "last"):
        model, spec = load_model(run / f"{name}.safetensors")
        assert spec.method == "scalp" and spec.architecture == "scalp-lite0"
        assert spec.extra["cam_method"] == "gradcam++" and "projection" in model.aux
        assert isinstance(model.head, torch.nn.Sequential)  # the two-layer MLP classifier
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 8)
