"""`medaug`: MoCo v2 with patient-metadata positives, then linear / end-to-end fine-tuning (Vu et al.)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrviewer.errors import CxrError
from cxrviewer.trainer.config import resolve_config
from cxrviewer.trainer.data.sources import DataSource, Record
from cxrviewer.trainer.loop import TrainStep
from cxrviewer.trainer.methods import get_method
from cxrviewer.trainer.methods.ema import split_forward
from cxrviewer.trainer.methods.medaug import hard_negative_nce
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import (
    check_two_stage_run_resumes_exactly, first_batch, prepared, repeated_batch_losses, tiny_config,
)

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
CPU = torch.device("cpu")
FRONTAL = {"PA", "AP"}


def metadata_source() -> tuple[DataSource, np.ndarray]:
    """Records only (no pixels): patients with several studies and frontal/lateral views."""
    rng = np.random.default_rng(7)
    records = []
    for p in range(12):
        for s in range(int(rng.integers(1, 4))):
            for v in rng.choice(["PA", "AP", "LL", "LAT"], size=int(rng.integers(1, 4))):
                records.append(Record(f"p{p}s{s}_{len(records)}", None, f"P{p}", f"P{p}_S{s}", str(v),
                                      labels=np.zeros(8, np.float32)))
    train = np.array([i for i in range(len(records)) if i % 7 != 3])  # a few images are not training images
    return DataSource("test", Path("."), records, [f"c{k}" for k in range(8)]), train


def medaug_config(**args):
    return resolve_config(None, {"data": "nih:/unused", "method": "medaug", "batch_size": 4},
                          [f"{k}={v}" for k, v in args.items()])


def test_defaults_follow_the_papers():
    cls = get_method("medaug")
    d = cls.defaults
    assert cls.architecture == "efficientnet-lite0" and not cls.has_box_path
    assert (d["studies"], d["laterality"], d["negatives"]) == ("same", "all", "default")  # MedAug Tables 1, 6
    assert (d["temperature"], d["momentum"], d["queue"], d["projection_dim"]) == (0.2, 0.999, 24576, 128)
    assert (d["pretrain_lr"], d["pretrain_epochs"], d["lr"], d["epochs"]) == (1e-4, 20, 3e-5, 95)
    assert d["finetune"] == "linear"


def test_finetune_mode_and_bad_options():
    source, train = metadata_source()
    cls = get_method("medaug")
    pre, fine = cls(medaug_config(), source, train).stages()
    assert (pre.name, pre.trainable, pre.validate) == ("pretrain", "all", False)
    assert (fine.name, fine.trainable, fine.validate) == ("finetune", "head", True)
    assert cls(medaug_config(finetune="end-to-end"), source, train).stages()[1].trainable == "all"
    for bad in ({"finetune": "partial"}, {"negatives": "hardest"}, {"studies": "some"}, {"laterality": "left"},
                {"label_fraction": 0}, {"hard_count": 0}):
        with pytest.raises(CxrError):
            cls(medaug_config(**bad), source, train)


def test_label_fraction_fine_tunes_on_a_patient_wise_subset():
    source, train = metadata_source()
    cls = get_method("medaug")
    method = cls(medaug_config(label_fraction=0.25), source, train)
    pre, fine = method.stages()
    labelled = set(method.labelled.tolist())
    assert len(labelled) == max(4, round(0.25 * len(train))) and labelled < set(train.tolist())
    assert labelled == set(cls(medaug_config(label_fraction=0.25), source, train).labelled.tolist())  # seeded
    tuned = {it.index for batch in method.plan_epoch(fine, 0) for it in batch}
    assert tuned <= labelled and len(tuned) == len(labelled) // 4 * 4  # full batches of 4
    pretrained = {it.index for batch in method.plan_epoch(pre, 0) for it in batch if it.group == "query"}
    assert len(pretrained) > len(labelled)  # pre-training still sees every image
    assert np.array_equal(cls(medaug_config(), source, train).labelled, train)  # default: every image


@pytest.mark.parametrize("studies,laterality", list(itertools.product(("same", "distinct", "all"), repeat=2)))
def test_positives_respect_the_criterion(studies, laterality):
    source, train = metadata_source()
    method = get_method("medaug")(medaug_config(studies=studies, laterality=laterality), source, train)
    recs = source.records
    lat = ["frontal" if r.view in FRONTAL else "lateral" for r in recs]

    def qualifies(i: int, j: int) -> bool:
        ok = j != i and recs[j].patient_id == recs[i].patient_id
        ok &= {"same": recs[j].study_id == recs[i].study_id, "distinct": recs[j].study_id != recs[i].study_id,
               "all": True}[studies]
        ok &= {"same": lat[j] == lat[i], "distinct": lat[j] != lat[i], "all": True}[laterality]
        return ok

    stage = method.stages()[0]
    drawn: dict[int, set[int]] = {}
    for epoch in range(6):
        for batch in method.plan_epoch(stage, epoch):
            queries = [it for it in batch if it.group == "query"]
            keys = [it for it in batch if it.group == "key"]
            assert len(queries) == len(keys) == 4
            for q, k in zip(queries, keys):
                allowed = {j for j in train if qualifies(q.index, j)}
                if allowed:
                    assert k.index in allowed, (q.index, k.index, allowed)
                else:
                    assert k.index == q.index  # S_c(x) empty: the image itself
                drawn.setdefault(q.index, set()).add(k.index)
    assert set(drawn) <= set(train.tolist())
    with_choice = [i for i in drawn if len({j for j in train if qualifies(i, j)}) > 1]
    if with_choice:  # draws are random among S_c(x), not always the same image
        assert any(len(drawn[i]) > 1 for i in with_choice)
    assert method.plan_epoch(stage, 2) == method.plan_epoch(stage, 2)


def test_hard_negative_losses_match_their_definitions():
    torch.manual_seed(0)
    q, k, queue = torch.randn(3, 8), torch.randn(3, 8), torch.randn(10, 8)
    valid = torch.rand(3, 10) > 0.2
    hard = valid & (torch.rand(3, 10) > 0.5)
    t = 0.2
    qn, kn, zn = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    pos, neg = (qn * kn).sum(1) / t, qn @ zn.t() / t
    gen = torch.Generator().manual_seed(1)
    got = hard_negative_nce(q, k, queue, valid, hard, "reweighted", t, 0.9, 4, gen)
    expected = []
    for b in range(3):
        r = hard[b].sum() / valid[b].sum()
        w = torch.where(hard[b], 0.9 / r, 0.1 / (1 - r))
        denominator = pos[b].exp() + (w * neg[b].exp())[valid[b]].sum()
        expected.append(-(pos[b] - denominator.log()))
    torch.testing.assert_close(got, torch.stack(expected).mean())
    # appended: the same as a longer queue in which the sampled hard keys occur twice
    appended = hard_negative_nce(q, k, queue, valid, hard, "appended", t, 0.9, 2, torch.Generator().manual_seed(5))
    plain = hard_negative_nce(q, k, queue, valid, hard & False, "appended", t, 0.9, 2, torch.Generator().manual_seed(5))
    from cxrviewer.trainer.losses import info_nce

    torch.testing.assert_close(plain, info_nce(q, k, queue, t, valid))
    assert appended > plain  # more negatives, larger loss
    synthetic = hard_negative_nce(q, k, queue, valid, hard, "synthetic", t, 0.9, 2, torch.Generator().manual_seed(5))
    assert synthetic > appended
    # the sample A only holds hard keys: with none hard the extras vanish
    none = hard_negative_nce(q, k, queue, valid, hard & False, "synthetic", t, 0.9, 2, torch.Generator().manual_seed(5))
    torch.testing.assert_close(none, plain)


def test_split_forward_normalises_groups_and_keeps_row_order():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).train()
    x = torch.randn(8, 4)
    perm = torch.randperm(8)
    torch.testing.assert_close(split_forward(encoder, x, 1, perm), encoder(x))  # one group: plain forward
    got = split_forward(encoder, x, 2, perm)
    groups = torch.cat([encoder(x[perm][:4]), encoder(x[perm][4:])])
    torch.testing.assert_close(got, groups[torch.argsort(perm)])
    assert not torch.allclose(got, encoder(x))  # statistics of the groups, not of the batch
    linear = torch.nn.Linear(4, 3)  # without BatchNorm the grouping changes nothing
    torch.testing.assert_close(split_forward(linear, x, 4, perm), linear(x))


@needs_sample
def test_pretrain_loss_goes_down_with_a_changing_queue(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "medaug", tmp_path, architecture="resnet18",
                         method_args={"queue": 16})
    losses = repeated_batch_losses(config, 6, stage_index=0, lr=1e-3)
    assert losses[0] == 0.0  # the queue holds no key yet: no negatives
    assert np.mean(losses[-3:]) < 0.7 * losses[1]  # the queue holds this batch's (changing) keys from step 2


@needs_sample
def test_finetune_loss_goes_down(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "medaug", tmp_path, architecture="resnet18")
    losses = repeated_batch_losses(config, 5, stage_index=1, lr=1e-2)
    assert np.mean(losses[-3:]) < losses[0]


@needs_sample
@pytest.mark.parametrize("mode", ["linear", "end-to-end"])
def test_linear_evaluation_freezes_the_encoder(tmp_path, mode):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "medaug", tmp_path, architecture="resnet18",
                         method_args={"finetune": mode})
    run, method, model, _, step = prepared(config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    stage = method.stages()[1]
    from cxrviewer.trainer.loop import set_trainable

    optimizer = torch.optim.Adam(set_trainable(step, stage), lr=1e-2)
    step.train()
    loss, _ = step(stage, first_batch(run, stage))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.backbone.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert unchanged == (mode == "linear")
    assert not torch.equal(head_before, model.head.weight)


@needs_sample
def test_corrections_in_linear_evaluation_train_the_head_through_the_cam(tmp_path):
    config = tiny_config(f"synthetic:{NIH_SAMPLE}", "medaug", tmp_path, architecture="resnet18",
                         data_options={"n_images": 40})
    run, method, model, _, step = prepared(config)
    method.use_boxes = True  # what --corrections turns on
    stage = method.stages()[1]
    from cxrviewer.trainer.loop import set_trainable

    set_trainable(step, stage)
    batch = first_batch(run, stage)
    assert any(len(b) for b in batch["query"]["boxes"])
    loss, parts = step(stage, batch)
    loss.backward()
    assert "cam" in parts and float(loss.detach()) > float(parts["bce"])
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


@needs_sample
def test_key_encoder_and_queue_round_trip_through_state_dict(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "medaug", tmp_path, architecture="resnet18",
                         method_args={"queue": 10, "momentum": 0.9})
    run, method, model, modules, step = prepared(config)
    assert not any(p.requires_grad for p in method.key_encoder.module.parameters())
    stage = method.stages()[0]
    batch = first_batch(run, stage)
    optimizer = torch.optim.Adam(step.parameters(), lr=1e-3)
    step.train()
    for _ in range(2):
        loss, _ = step(stage, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(stage, model, modules, {})
    # 2 steps of 6 keys in a queue of 10: the second batch's keys fill slots 6..9 and 0..1
    keys = batch["key"]["index"]
    assert method.queue.ptr == 2
    assert method.queue.index[6:].tolist() == keys[:4].tolist() and method.queue.index[:2].tolist() == keys[4:].tolist()
    assert method.queue.index[2:6].tolist() == keys[2:6].tolist()  # still the first step's
    path = tmp_path / "state.pt"
    torch.save(method.state_dict(), path)
    state = torch.load(path, weights_only=True)
    _, other, *_ = prepared(config)
    other.load_state_dict(state)
    assert other.steps_done == 2 and other.queue.ptr == 2
    torch.testing.assert_close(other.queue.keys, method.queue.keys, rtol=0, atol=0)
    assert torch.equal(other.queue.index, method.queue.index)
    for a, b in zip(other.key_encoder.module.state_dict().values(), method.key_encoder.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the next loss is the same for the original and the restored method
    torch.manual_seed(3)
    loss_a, _ = step(stage, batch)
    other_step = TrainStep(other, model, modules)
    torch.manual_seed(3)
    loss_b, _ = other_step(stage, batch)
    assert float(loss_a.detach()) == pytest.approx(float(loss_b.detach()), rel=1e-6)


@needs_sample
def test_fit_crosses_into_finetuning_and_resumes_exactly(tmp_path):
    """3 pre-training steps then fine-tuning; stopped after step 2 and resumed, the run repeats the
    uninterrupted run's third loss (the momentum encoder, its step count and the queue were restored)."""
    check_two_stage_run_resumes_exactly(f"nih:{NIH_SAMPLE}", "medaug", tmp_path, "nce", method_args={"queue": 8})
