"""Model registry, spec, checkpoint safety and the single preprocessing path."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from cxrviewer.errors import MissingFile
from cxrviewer.io import load_image
from cxrviewer.io.image import ImageData
from cxrviewer.models import (
    DEFAULT_TARGETS, BadModel, ModelSpec, SpecError, create_model, install_model, list_architectures, load_model,
    read_spec, save_model, sha256_of,
)
from cxrviewer.models.preprocess import resize_to_input
from tests.conftest import dicom_testfile

SMALL = {"input_size": (64, 64)}


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


def test_builtin_architectures_are_registered():
    assert {"resnet18", "resnet34", "resnet50", "resnet18-ta", "resnet50-ta", "scalp", "kacl"} <= set(
        list_architectures())


@pytest.mark.parametrize("arch", list_architectures())
def test_every_architecture_builds_and_returns_logits(arch):
    model, spec = create_model(arch, **SMALL)
    assert spec.targets == DEFAULT_TARGETS and len(spec.thresholds) == 8
    x = torch.randn(2, spec.in_channels, *spec.input_size)
    with torch.no_grad():
        assert model(x).shape == (2, 8)
    assert isinstance(model.get_submodule(spec.cam_layer), torch.nn.Module)


@pytest.mark.parametrize("channels", [1, 3])
def test_one_or_three_channel_input(channels):
    model, spec = create_model("resnet18", in_channels=channels, **SMALL)
    assert model.backbone.conv1.in_channels == channels and len(spec.mean) == channels
    image = ImageData(path=__import__("pathlib").Path("x.png"), pixels=np.random.rand(80, 70).astype(np.float32))
    assert spec.preprocess(image).shape == (1, channels, 64, 64)


def test_triplet_attention_sits_before_the_residual_add():
    model, _ = create_model("resnet50-ta", **SMALL)
    block = model.backbone.layer4[0]
    assert type(block.bn3[1]).__name__ == "TripletAttention"
    model18, _ = create_model("resnet18-ta", **SMALL)
    assert type(model18.backbone.layer1[0].bn2[1]).__name__ == "TripletAttention"


def test_scalp_and_kacl_heads():
    scalp, _ = create_model("scalp", **SMALL)
    assert isinstance(scalp.head, torch.nn.Sequential) and len(scalp.head) == 3  # Linear-ReLU-Linear
    assert scalp.aux["projection"][-1].out_features == 128
    kacl, _ = create_model("kacl", arch_kwargs={"radiomic_features": 93}, **SMALL)
    assert isinstance(kacl.head, torch.nn.Linear) and kacl.head.in_features == 512
    encoder = kacl.aux["radiomic_encoder"]
    assert sum(isinstance(m, torch.nn.Linear) for m in encoder) == 3 and encoder[0].in_features == 93


def test_save_load_round_trip_is_exact(tmp_path):
    model, spec = create_model("resnet18", targets=["Effusion", "Mass"], **SMALL)
    path = tmp_path / "m.safetensors"
    digest = save_model(model, spec, path)
    assert digest == sha256_of(path)
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec and loaded_spec.targets == ("Effusion", "Mass")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training


def test_fp16_storage_changes_outputs_by_little(tmp_path):
    model, spec = create_model("resnet18", **SMALL)
    save_model(model, spec, tmp_path / "h.safetensors", half=True)
    loaded, _ = load_model(tmp_path / "h.safetensors")
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert (torch.sigmoid(loaded(x)) - torch.sigmoid(model(x))).abs().max() < 1e-3


def test_registered_name_checks_sha256(tmp_path):
    model, spec = create_model("resnet18", **SMALL)
    path = tmp_path / "m.safetensors"
    install_model("mine", path, save_model(model, spec, path))
    assert load_model("mine")[1] == spec
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(BadModel, match="does not match its registry entry"):
        load_model("mine")
    with pytest.raises(BadModel, match="sha256"):
        load_model(path)  # the same file by path is also checked against its registry entry


def test_malformed_spec_is_refused(tmp_path):
    with pytest.raises(SpecError, match="thresholds"):
        ModelSpec(architecture="resnet18", thresholds=(0.5, 0.5))
    with pytest.raises(SpecError, match="unknown field"):
        ModelSpec.from_dict({"architecture": "resnet18", "colour": "red"})
    from safetensors.torch import save_file

    model, _ = create_model("resnet18", **SMALL)
    path = tmp_path / "m.safetensors"
    bad_spec = json.dumps({"architecture": "resnet18", "in_channels": 2})
    save_file(dict(model.state_dict()), str(path), metadata={"cxrviewer_spec": bad_spec})
    with pytest.raises(BadModel, match="malformed model spec"):
        load_model(path)


def test_unusable_files_are_refused_with_one_sentence(tmp_path):
    pickle_file = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2)}, pickle_file)  # a pickle, never loaded as a model
    with pytest.raises(BadModel) as info:
        load_model(pickle_file)
    assert str(info.value).startswith("evil.pt: ")
    with pytest.raises(MissingFile, match="no model file or registered model"):
        load_model("no-such-model")
    model, spec = create_model("resnet18", **SMALL)
    other, other_spec = create_model("resnet34", **SMALL)
    path = tmp_path / "swapped.safetensors"
    save_model(other, spec, path)  # resnet34 weights under a resnet18 spec
    with pytest.raises(BadModel, match="do not fit"):
        load_model(path)
    assert read_spec(path).architecture == "resnet18"


def test_preprocess_display_path_uses_the_files_voi_upright():
    image = load_image(dicom_testfile("RG1_UNCR.dcm"))
    _, spec = create_model("resnet18", input_size=(128, 128))
    x = spec.preprocess(image)
    assert x.shape == (1, 1, 128, 128) and x.dtype == torch.float32
    from cxrviewer.imaging.voi import to_display

    picture = (x[0, 0].numpy() * 0.25 + 0.5) * 255  # undo mean/std
    expected, _ = resize_to_input(to_display(image).astype(np.float32), (128, 128), "stretch")
    np.testing.assert_allclose(picture, expected, atol=1e-3)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_geometry_maps_input_edges_to_image_edges_exactly(mode):
    picture = np.zeros((300, 200), np.float32)
    picture[100:150, 40:60] = 1.0  # a block at known pixel edges
    resized, geo = resize_to_input(picture, (100, 100), mode)
    # The whole input maps onto the image (stretch) or the letterboxed region maps onto it.
    if mode == "stretch":
        assert geo.box_to_image((0, 0, 100, 100)) == (0, 0, 200, 300)
    else:
        assert geo.box_to_image((0, 0, 100, 100)) == (0, 0, 200, 300)  # clipped to the image
        # 300x200 -> scale 1/3 -> 100x67, padded left by (100 - 67) // 2 = 16 columns
        assert geo.to_image(16, 0) == (0.0, 0.0) and geo.to_image(83, 100) == pytest.approx((200.0, 300.0))
    ys, xs = np.nonzero(resized > 0.5)
    x0, y0 = geo.to_image(xs.min(), ys.min())
    x1, y1 = geo.to_image(xs.max() + 1, ys.max() + 1)
    assert abs(x0 - 40) <= 3 and abs(x1 - 60) <= 3 and abs(y0 - 100) <= 3 and abs(y1 - 150) <= 3
