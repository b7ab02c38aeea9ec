"""`byol-cam`: BYOL + CAM-loss pre-training, then fine-tuning (Talasila et al.)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cxrviewer.trainer.methods import get_method
from cxrviewer.trainer.methods.ema import byol_momentum, online_encoder
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import (
    check_two_stage_run_resumes_exactly, first_batch, prepared, repeated_batch_losses, tiny_config,
)

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
# The NIH sample has no boxes: setup says the CAM loss will not apply (checked in test_stages_and_plans).
pytestmark = pytest.mark.filterwarnings("ignore:byol-cam. no training image carries a box")
CPU = torch.device("cpu")


def test_defaults_follow_the_paper():
    cls = get_method("byol-cam")
    assert cls.architecture == "efficientnet-lite0" and cls.has_box_path
    assert cls.defaults["cam_weight"] == 2.0 and cls.defaults["tau_base"] == 0.99
    assert cls.defaults["lr"] == 1e-4 and cls.defaults["optimizer"] == "adam"
    assert cls.defaults["projection_dim"] == 256 and cls.defaults["pretrain_epochs"] == 500


def test_byol_momentum_schedule():
    assert byol_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert byol_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert byol_momentum(100, 100, 0.99) == pytest.approx(1.0)
    values = [byol_momentum(k, 100, 0.996) for k in range(101)]
    assert all(b >= a for a, b in itertools.pairwise(values))


@needs_sample
@pytest.mark.filterwarnings("error")
def test_stages_and_plans(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18", pretrain_epochs=3,
                         epochs=2)
    with pytest.warns(UserWarning, match="no training image carries a box"):
        run, method, *_ = prepared(config)
    pre, fine = method.stages()
    assert (pre.name, pre.epochs, pre.trainable, pre.validate) == ("pretrain", 3, "all", False)
    assert (fine.name, fine.epochs, fine.trainable, fine.validate) == ("finetune", 2, "all", True)
    plan = method.plan_epoch(pre, 0)
    assert plan == method.plan_epoch(pre, 0)  # deterministic
    assert plan != method.plan_epoch(pre, 1)
    batch = plan[0]
    v1 = [it for it in batch if it.group == "view1"]
    v2 = [it for it in batch if it.group == "view2"]
    assert len(v1) == len(v2) == run.config.batch_size
    assert [it.index for it in v1] == [it.index for it in v2]  # two views of the same images, in order
    assert all(it.aug == "strong" for it in batch) and len({it.seed for it in batch}) == len(batch)
    assert {it.group for it in method.plan_epoch(fine, 0)[0]} == {"query"}


@needs_sample
def test_pretrain_loss_goes_down_on_real_images(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18")
    losses = repeated_batch_losses(config, 6, stage_index=0, lr=1e-3)
    assert np.mean(losses[-3:]) < 0.5 * losses[0]


@needs_sample
def test_finetune_loss_goes_down_on_real_images(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18")
    losses = repeated_batch_losses(config, 8, stage_index=1, lr=1e-3)
    assert np.mean(losses[-3:]) < losses[0]


@needs_sample
def test_cam_loss_on_boxed_images_trains_the_head_and_goes_down(tmp_path):
    config = tiny_config(f"synthetic:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18",
                         data_options={"n_images": 40})
    run, method, model, modules, step = prepared(config)
    stage = method.stages()[0]
    batch = first_batch(run, stage)
    assert any(len(b) for b in batch["view1"]["boxes"]), "the synthetic batch should carry boxes"
    optimizer = torch.optim.Adam(step.parameters(), lr=1e-3)
    step.train()
    cams = []
    for _ in range(6):
        loss, parts = step(stage, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
        optimizer.step()
        method.after_step(stage, model, modules, {})
        cams.append(float(parts["cam"]))
        assert float(loss.detach()) == pytest.approx(float(parts["byol"]) + 2.0 * float(parts["cam"]), rel=1e-5)
    assert np.mean(cams[-2:]) < cams[0]
    # without boxes the head gets no gradient in pre-training (BYOL does not use it)
    for part in batch.values():
        part["boxes"] = [b[:0] for b in part["boxes"]]
    model.zero_grad(set_to_none=True)
    loss, parts = step(stage, batch)
    loss.backward()
    assert "cam" not in parts and model.head.weight.grad is None


@needs_sample
def test_target_is_an_ema_copy_and_round_trips_through_state_dict(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18")
    run, method, model, modules, step = prepared(config)
    target_params = list(method.target.module.parameters())
    assert not any(p.requires_grad for p in target_params)
    assert not {id(p) for p in target_params} & {id(p) for p in step.parameters()}
    stage = method.stages()[0]
    batch = first_batch(run, stage)
    optimizer = torch.optim.Adam(step.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in target_params]
    loss, _ = step(stage, batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    tau = byol_momentum(0, method.total_steps, 0.99)
    method.after_step(stage, model, modules, {})
    online = list(online_encoder(model).parameters())
    for old, new, theta in zip(before, target_params, online):
        torch.testing.assert_close(new, tau * old + (1 - tau) * theta.detach(), rtol=1e-5, atol=1e-6)
    state = method.state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    state = torch.load(path, weights_only=True)  # plain tensors and numbers: nothing pickled
    _, other, *_ = prepared(config)
    other.load_state_dict(state)
    assert other.steps_done == 1 and other.total_steps == method.total_steps
    for a, b in zip(other.target.module.state_dict().values(), method.target.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_sample
def test_head_is_reset_once_when_finetuning_starts(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, architecture="resnet18")
    _, method, model, _, _ = prepared(config)
    pre, fine = method.stages()
    with torch.no_grad():
        model.head.weight.fill_(3.0)
    method.on_epoch_start(pre, 0, model, CPU)
    assert torch.all(model.head.weight == 3.0)
    method.on_epoch_start(fine, 0, model, CPU)
    first = model.head.weight.detach().clone()
    assert not torch.all(first == 3.0)
    _, again, other, _, _ = prepared(config)
    again.on_epoch_start(fine, 0, other, CPU)
    torch.testing.assert_close(other.head.weight, first)  # seeded: the same on a resumed run
    with torch.no_grad():
        model.head.weight.add_(1.0)
    method.on_epoch_start(fine, 1, model, CPU)  # not reset a second time
    torch.testing.assert_close(model.head.weight, first + 1.0)
    assert method.state_dict()["head_reset"] is True


@needs_sample
def test_fit_crosses_into_finetuning_and_resumes_exactly(tmp_path):
    """3 pre-training steps then fine-tuning; stopped after step 2 and resumed, the run repeats the
    uninterrupted run's third loss (the momentum encoder, its step count were restored)."""
    check_two_stage_run_resumes_exactly(f"nih:{NIH_SAMPLE}", "byol-cam", tmp_path, "byol")
