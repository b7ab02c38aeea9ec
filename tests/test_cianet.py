"""CIA-Net ("cianet"): registration, forward contract, native maps, MIL formula, alignment, negative
matching, pHash, model-file round trip, losses, and the CAM layer's per-sample tail. CPU, small
inputs (128 px, ResNet-18, a 4-image bank)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cxrviewer.models import create_model, list_architectures, load_model, save_model
from cxrviewer.models.cianet import (
    CIANet, box_grid_targets, build_canonical_chest, cianet_box_loss, cianet_loss, cianet_mil_loss, mil_logits,
    mil_probabilities, synthetic_chest,
)
from cxrviewer.models.cianet_align import affine_matrix, to_input_frame, warp
from cxrviewer.models.phash import (
    cosine_distance_matrix, hamming, hamming_matrix, nearest, phash, phash_batch, thumbnail_code,
)

SIZE = 128
SMALL = {"input_size": (SIZE, SIZE),
         "arch_kwargs": {"depth": "resnet18", "bank_size": 4, "bank_resolution": SIZE}}


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def small():
    torch.manual_seed(0)
    return create_model("cianet", **SMALL)


def _pictures(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """n clearly different model inputs [n, 1, size, size] (normalised with 0.5 / 0.25)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        picture = synthetic_chest((size, size), variant=10 + 7 * i)
        picture = np.clip(picture + 0.15 * rng.standard_normal((8, 8)).repeat(size // 8, 0).repeat(size // 8, 1),
                          0, 1)
        out.append((torch.from_numpy(picture.astype(np.float32)) - 0.5) / 0.25)
    return torch.stack(out)[:, None]


# --- registration and forward contract ---------------------------------------------------------

def test_registered_with_spec_defaults():
    assert "cianet" in list_architectures()
    from cxrviewer.models.registry import get_architecture

    arch = get_architecture("cianet")
    assert arch.spec_defaults["cam_layer"] == "attended" and tuple(arch.spec_defaults["input_size"]) == (512, 512)
    assert arch.defaults["depth"] == "resnet50" and arch.defaults["grid_size"] == 16


def test_forward_returns_logits(small):
    model, spec = small
    assert isinstance(model, CIANet) and spec.cam_layer == "attended"
    x = torch.randn(3, 1, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (3, 8) and torch.isfinite(logits).all()
    assert isinstance(model.get_submodule(spec.cam_layer), torch.nn.Module)


def test_native_cams_shape_range_and_frames(small):
    model, _ = small
    x = _pictures(2)
    with torch.no_grad():
        cams = model.native_cams(x)
        aligned = model.native_cams(x, frame="aligned")
        fine = model.native_cams(x, size=32)
    assert cams.shape == (2, 8, 16, 16) and fine.shape == (2, 8, 32, 32)
    assert float(cams.min()) >= 0.0 and float(cams.max()) <= 1.0
    torch.testing.assert_close(cams, aligned, atol=1e-5, rtol=0)  # identity alignment at init


def test_mil_probability_matches_the_cells(small):
    model, _ = small
    with torch.no_grad():
        out = model.forward_train(_pictures(2))
    cells = torch.sigmoid(out["cell_logits"].double())
    expected = mil_probabilities(cells, model.mil_floor)  # 1 - prod_j (0.98 + 0.02 (1 - p_j))
    torch.testing.assert_close(torch.sigmoid(out["logits"].double()), expected, atol=1e-5, rtol=1e-4)
    # Eq. 5 without the floor, on a grid small enough for the direct product to be meaningful
    z = torch.randn(2, 3, 2, 2) * 2
    plain = 1 - (1 - torch.sigmoid(z.double())).flatten(2).prod(-1)
    torch.testing.assert_close(torch.sigmoid(mil_logits(z, mil_floor=0.0).double()), plain, atol=1e-6, rtol=1e-5)


def test_mil_is_stable_at_extremes():
    z = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0]).view(5, 1, 1, 1).expand(5, 2, 16, 16).clone()
    z.requires_grad_(True)
    for floor in (0.98, 0.0):
        logits = mil_logits(z, mil_floor=floor)
        loss = cianet_mil_loss(z, torch.tensor([[1.0, 0.0]]).expand(5, 2), mil_floor=floor)
        assert torch.isfinite(logits).all() and torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(grad).all()
    assert float(mil_logits(z.detach())[-1, 0]) == pytest.approx(np.log((1 - 0.98 ** 256) / 0.98 ** 256), rel=1e-4)


# --- alignment ----------------------------------------------------------------------------------

def test_alignment_is_the_identity_at_init(small):
    model, _ = small
    x = _pictures(2)
    with torch.no_grad():
        aligned, theta = model.align(x)
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    torch.testing.assert_close(aligned, x, atol=1e-5, rtol=0)


def test_to_input_frame_inverts_the_warp():
    theta = affine_matrix(torch.tensor([[0.1, -0.05, 0.9, 0.95, 0.1]]))
    maps = torch.zeros(1, 1, 64, 64)
    maps[..., 24:40, 20:44] = 1.0
    back = to_input_frame(warp(maps, theta), theta)
    inner = (slice(None), slice(None), slice(16, 48), slice(16, 48))
    assert float((back[inner] - maps[inner]).abs().mean()) < 0.05


# --- negative matching and pHash -------------------------------------------------------------------

def test_negative_selection_picks_the_nearest_bank_image(small):
    model, _ = small
    bank = _pictures(4)
    model.set_negative_bank(bank)
    stored = model.bank_images()
    torch.testing.assert_close(stored, bank, atol=0.5 * float(model.bank_scale.max()) + 1e-6, rtol=0)
    for j in range(4):
        x = stored[j:j + 1]
        assert int(model.match_negatives(x)[0]) == j
        noisy = x + 0.02 * torch.randn_like(x)
        assert int(model.match_negatives(noisy)[0]) == j
    # in general: the index minimising the Hamming distance between the input's and the bank's hashes
    queries = _pictures(5, seed=3)
    expected = hamming_matrix(phash_batch(queries.numpy()), phash_batch(stored.numpy())).argmin(1)
    assert model.match_negatives(queries).tolist() == expected.tolist()
    with torch.no_grad():
        out = model.forward_train(stored[2:3])
    assert int(out["negative_index"][0]) == 2


def test_cosine16_matching_is_the_papers_option():
    model, _ = create_model("cianet", **{**SMALL, "arch_kwargs": {**SMALL["arch_kwargs"],
                                                                  "negative_match": "cosine16"}})
    model.set_negative_bank(_pictures(4))
    stored = model.bank_images()
    assert model.match_negatives(stored).tolist() == [0, 1, 2, 3]


def test_phash_properties():
    a = synthetic_chest((256, 256), 0)
    h = phash(a)
    assert h.dtype == bool and h.shape == (256,)
    assert hamming(h, phash(a.copy())) == 0
    noisy = np.clip(a + 0.02 * np.random.default_rng(0).standard_normal(a.shape), 0, 1)
    assert hamming(h, phash(noisy)) <= 16
    other = np.random.default_rng(1).random((256, 256))
    assert hamming(h, phash(other)) >= 80
    assert hamming(h, phash(synthetic_chest((256, 256), 5))) >= 30
    # invariant to the normalisation: the 8-bit picture and the model input hash alike
    as_uint8 = np.round(a * 255).astype(np.uint8)
    assert hamming(phash(as_uint8), phash((as_uint8[None].astype(np.float32) / 255 - 0.5) / 0.25)) == 0
    assert phash(a, hash_size=8).shape == (64,)
    assert thumbnail_code(a).shape == (256,)
    assert nearest(phash_batch([noisy]), phash_batch([other, a]))[0] == 1
    assert cosine_distance_matrix(thumbnail_code(a)[None], thumbnail_code(a)[None])[0, 0] == pytest.approx(0, abs=1e-9)


# --- model file ------------------------------------------------------------------------------------

def test_save_load_round_trip_keeps_outputs_and_bank(small, tmp_path):
    model, spec = small
    model.set_negative_bank(_pictures(4, seed=7))
    model.set_canonical_chest(_pictures(1, seed=8))
    x = _pictures(2, seed=9)
    with torch.no_grad():
        before = model(x)
        cams_before = model.native_cams(x)
    save_model(model, spec, tmp_path / "cianet.safetensors")
    loaded, loaded_spec = load_model(tmp_path / "cianet.safetensors")
    assert loaded_spec == spec
    for name in ("bank", "bank_scale", "bank_offset", "bank_hash", "bank_thumb", "canonical"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    with torch.no_grad():
        assert torch.equal(loaded(x), before)
        assert torch.equal(loaded.native_cams(x), cams_before)


def test_bank_must_fit_the_architecture(small):
    model, _ = small
    with pytest.raises(ValueError, match="bank_size=4"):
        model.set_negative_bank(_pictures(3))
    model.set_negative_bank(_pictures(4, size=64))  # resized to bank_resolution
    assert model.bank.shape == (4, 1, SIZE, SIZE) and model.bank.dtype == torch.uint8


# --- losses ----------------------------------------------------------------------------------------

def test_box_grid_targets():
    targets, has_box = box_grid_targets([(1, 10, 20, 40, 50)], 3, 4, (128, 128))
    assert has_box.tolist() == [False, True, False]
    assert targets[1].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    same, _ = box_grid_targets([(1, 10, 20, 40, 50)], 3, 4, (128, 128), theta=identity)
    assert torch.equal(same, targets)
    shifted, _ = box_grid_targets([(1, 10, 20, 40, 50)], 3, 4, (128, 128),
                                  theta=torch.tensor([[1.0, 0, -0.5], [0, 1.0, 0]]))
    assert shifted[1].tolist()[0] == [0, 1, 1, 0]  # aligned cell c covers input x in [32c - 32, 32c]


def _steps(model, loss_fn, steps=4, lr=1e-4, params=None):
    """A few Adam steps in train mode from the same initial state; the losses seen."""
    model.train()
    opt = torch.optim.Adam(list(params or model.parameters()), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_losses_decrease(small):
    model, _ = small
    initial = copy.deepcopy(model.state_dict())
    x = _pictures(2, seed=4)
    labels = torch.tensor([[1, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    targets0, has0 = box_grid_targets([(4, 30, 30, 70, 60)], 8, 16, (SIZE, SIZE))
    targets1, has1 = box_grid_targets([], 8, 16, (SIZE, SIZE))
    targets, has_box = torch.stack([targets0, targets1]), torch.stack([has0, has1])

    mil = _steps(model, lambda: cianet_mil_loss(model.forward_train(x)["cell_logits"], labels), steps=3)
    assert all(a > b for a, b in zip(mil, mil[1:]))  # the whole network
    assert all(p.grad is None or not p.grad.any() for p in model.align.parameters())  # phi_A learns from L_s

    # Box-supervised losses on the grid head (attention 1x1 conv + classifier), trunk frozen: with the
    # whole random-init trunk in train mode (BatchNorm over 2 images + 2 negatives) and Eq. 4's sum over
    # 256 cells times beta_B = 5, single Adam steps overshoot now and then, which says nothing about
    # the loss functions.
    head = [*model.attention.parameters(), *model.classifier.parameters()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(any(p is h for h in head))
        for loss_fn in (lambda out: cianet_box_loss(out["cell_logits"], targets, has_box),
                        lambda out: cianet_loss(out["cell_logits"], labels, targets, has_box)):
            model.load_state_dict(initial)
            losses = _steps(model, lambda: loss_fn(model.forward_train(x)), lr=1e-3, params=head)
            assert all(a > b for a, b in zip(losses, losses[1:]))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)

    model.load_state_dict(initial)
    model.zero_grad()
    model.structure_loss(model.forward_train(x)["aligned"]).backward()  # L_s reaches phi_A through "aligned"
    assert any(p.grad is not None and p.grad.any() for p in model.align.parameters())
    source = model.canonical_chest().expand(2, -1, -1, -1).clone()
    model.set_canonical_chest(torch.roll(source[:1], shifts=(6, -4), dims=(2, 3)))
    structure = _steps(model, lambda: model.structure_loss(model.align(source)[0]), steps=6, lr=1e-3,
                       params=model.align.parameters())
    assert structure[-1] < structure[0]


def test_canonical_chest_is_the_mean():
    a = np.full((40, 40), 100, np.uint8)
    b = np.full((40, 40), 200, np.uint8)
    canon = build_canonical_chest([a, b], size=(20, 20))
    assert canon.dtype == np.uint8 and canon.shape == (20, 20) and int(canon[5, 5]) == 150
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    cropped = build_canonical_chest([ramp], size=(40, 40), crop=(0.0, 1.0, 0.5, 1.0))
    assert int(cropped[0, 0]) >= 120  # the left half was cut away


# --- the CAM layer ---------------------------------------------------------------------------------

def test_cam_layer_tail_is_per_sample(small):
    model, spec = small
    layer = model.get_submodule(spec.cam_layer)
    batch, k = 2, 8
    x = _pictures(batch)

    def repeat(module, inputs, output):
        return output.repeat_interleave(k, 0)

    handle = layer.register_forward_hook(repeat)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    assert logits.shape == (batch * k, k)
    with torch.no_grad():
        plain = model(x)
    torch.testing.assert_close(logits.view(batch, k, k)[:, 0], plain)
    torch.testing.assert_close(logits.view(batch, k, k)[:, 5], plain)


def test_default_configuration_sizes():
    model, spec = create_model("cianet")
    params = sum(p.numel() for p in model.parameters())
    assert 23e6 < params < 26e6  # ResNet-50 trunk + light alignment net + heads
    assert model.bank.shape == (16, 1, 512, 512) and model.bank.numel() == 4 * 2 ** 20  # 4 MiB, uint8
    assert spec.input_size == (512, 512)
