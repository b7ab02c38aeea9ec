"""The analysis pipeline and `cxrviewer analyze`: probabilities, CAMs, boxes in original pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cxrviewer.analysis import Analyzer
from cxrviewer.cli import main
from cxrviewer.io.image import ImageData
from cxrviewer.models import create_model, register_architecture, save_model, sha256_of
from tests.conftest import dicom_testfile


class Transparent(nn.Module):
    """Feature map = the input average-pooled 8×; logits = positive weights × GAP. Its Grad-CAM for
    any class is proportional to the pooled input, so the boxes must land where the image is bright."""

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.AvgPool2d(8), nn.Identity())
        self.head = nn.Linear(in_channels, num_classes)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


@pytest.fixture
def transparent_architecture():
    """Registered only while a test uses it: other test modules parametrise over the registry."""
    from cxrviewer.models.registry import unregister_architecture

    register_architecture("test-transparent", lambda num_classes, in_channels=1: Transparent(num_classes, in_channels),
                          spec_defaults={"cam_layer": "backbone.1"}, replace=True)
    yield "test-transparent"
    unregister_architecture("test-transparent")


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def model_file(tmp_path):
    model, spec = create_model("resnet18", input_size=(128, 128))
    path = tmp_path / "r18.safetensors"
    save_model(model, spec, path)
    return path


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_boxes_land_on_the_bright_region_in_original_pixels(resize, transparent_architecture):
    model, spec = create_model(transparent_architecture, input_size=(128, 128), resize=resize, intensity="minmax",
                               mean=(0.0,), std=(1.0,))
    pixels = np.zeros((600, 400), np.float32)  # not square: exercises the geometry
    # Rows 225..375 map to input rows 48..80 (4 whole cells of the 8-px pooled grid) in both modes.
    pixels[225:375, 89:202] = 1000.0
    image = ImageData(path=Path("planted.dcm"), pixels=pixels)
    result = Analyzer(model, spec, device="cpu").analyze(image)
    assert (result.width, result.height) == (400, 600)
    # A CAM cell is 8 input pixels: the box can only be as precise as that grid.
    cell_x, cell_y = 8 * result.geometry.sx, 8 * result.geometry.sy
    for finding in result.findings:
        (box,) = finding.boxes
        assert abs(box.x0 - 89) < 0.75 * cell_x and abs(box.x1 - 202) < 0.75 * cell_x
        assert abs(box.y0 - 225) < 0.75 * cell_y and abs(box.y1 - 375) < 0.75 * cell_y
    heat = result.heatmap(spec.targets[0])
    assert heat.shape == (600, 400) and heat[300, 150] > 0.9 and heat[50, 50] < 0.1


def test_probabilities_match_the_model_and_thresholds_apply(model_file):
    analyzer = Analyzer(model_file, device="cpu")
    image = ImageData(path=Path("x.png"), pixels=np.random.default_rng(0).random((200, 180)).astype(np.float32) * 255)
    result = analyzer.analyze(image)
    with torch.no_grad():
        expected = torch.sigmoid(analyzer.model(analyzer.spec.preprocess(image)))[0].numpy()
    got = np.array([f.probability for f in result.findings])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [f.name for f in result.findings] == list(analyzer.spec.targets)
    assert all(f.positive == (f.probability >= f.threshold) for f in result.findings)
    assert result.cams.shape == (8, 4, 4)  # 128 px input, ResNet stride 32


def test_analyze_cli_on_dicom_png_and_a_bad_file(model_file, tmp_path, nih_sample):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    out = tmp_path / "out.json"
    png = nih_sample / "images" / "00000001_000.png"
    status = main(["analyze", str(dicom_testfile("RG1_UNCR.dcm")), str(png), str(bad), "--model", str(model_file),
                   "--json", str(out), "--radiomics"])
    assert status == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["sha256"] == sha256_of(model_file) and len(doc["model"]["targets"]) == 8
    rg1, nih, error = doc["results"]
    assert (rg1["width"], rg1["height"]) == (1841, 1955) and (nih["width"], nih["height"]) == (512, 512)
    assert error == {"file": str(bad), "error": "bad.dcm: this is not a DICOM file or an image format cxrviewer reads."}
    for result in (rg1, nih):
        assert [f["name"] for f in result["findings"]] == doc["model"]["targets"]
        for finding in result["findings"]:
            assert set(finding) == {"name", "probability", "threshold", "positive", "boxes"}
            for box in finding["boxes"]:
                assert 0 <= box["x0"] < box["x1"] <= result["width"] and 0 <= box["y0"] < box["y1"] <= result["height"]
                assert "firstorder_Mean" in box["radiomics"]


def test_analyze_folder_and_exit_status(model_file, tmp_path, capsys):
    folder = tmp_path / "studies"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "ct.dcm").write_bytes(Path(dicom_testfile("CT_small.dcm")).read_bytes())
    (folder / "junk.dcm").write_bytes(b"\x00" * 200)
    assert main(["analyze", str(folder), "--model", str(model_file)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in doc["results"]] == ["ct.dcm", "junk.dcm"]
    assert "error" in doc["results"][1]
    only_bad = tmp_path / "only_bad.dcm"
    only_bad.write_bytes(b"nope")
    assert main(["analyze", str(only_bad), "--model", str(model_file)]) == 1


def test_analyze_without_an_installed_default_model_says_so(tmp_path, capsys):
    assert main(["analyze", str(dicom_testfile("CT_small.dcm")), "--model", "no-such-model"]) == 1
    assert "no model file or registered model" in capsys.readouterr().err


def test_the_box_algorithm_defaults_to_the_one_the_model_file_names():
    from cxrviewer.analysis import Analyzer
    from cxrviewer.models import create_model

    model, spec = create_model("resnet18", input_size=(64, 64))
    assert Analyzer(model, spec, device="cpu").box_method == "scalp"
    spec.extra["box_method"] = "talasila"
    assert Analyzer(model, spec, device="cpu").box_method == "talasila"
    assert Analyzer(model, spec, device="cpu", box_method="threshold").box_method == "threshold"
