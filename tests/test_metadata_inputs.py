"""Age, sex and view position as model inputs: encoding, masking, the spec, the model term, the
trainer and the analysis pipeline (issue 14, item 3)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cxrviewer.models import create_model
from cxrviewer.models.metadata import METADATA_INPUTS, check_inputs, describe, encode, parse_age
from cxrviewer.models.spec import ModelSpec, SpecError


@pytest.mark.parametrize("text, years", [("045Y", 45.0), ("006M", 0.5), ("52", 52.0), (61, 61.0),
                                         ("014W", 14 * 7 / 365.25), ("", None), (None, None), ("414", None),
                                         ("abc", None), ("-3", None)])
def test_age_strings_are_read_as_dicom_writes_them_and_impossible_ages_are_missing(text, years):
    got = parse_age(text)
    assert (got is None and years is None) or got == pytest.approx(years)


def test_missing_values_are_masked_not_guessed():
    full = encode({"age": "050Y", "sex": "F", "view": "AP"}, METADATA_INPUTS)
    assert full.tolist() == [0.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    none = encode({"age": "", "sex": "O", "view": "LL"}, METADATA_INPUTS)
    assert none.tolist() == [0.0] * 6  # value and known-flag both zero: no average filled in
    assert describe({"age": "", "sex": "M", "view": "PA"}, METADATA_INPUTS) == {
        "age": "missing", "sex": "M", "view": "PA"}


def test_spec_keeps_the_inputs_in_model_order_and_refuses_unknown_ones():
    assert check_inputs(["view", "age"]) == ("age", "view")
    spec = ModelSpec("resnet18", inputs=("age", "sex"))
    assert ModelSpec.from_json(spec.to_json()).inputs == ("age", "sex")
    with pytest.raises(SpecError, match="inputs"):
        ModelSpec("resnet18", inputs=("height",))
    with pytest.raises(SpecError, match="order"):
        ModelSpec("resnet18", inputs=("sex", "age"))


def test_the_metadata_term_changes_the_logits_but_never_the_grad_cam(tmp_path):
    from cxrviewer.explain import compute_cams
    from cxrviewer.models.checkpoint import load_checkpoint, save_model

    torch.manual_seed(0)
    model, spec = create_model("efficientnet-lite0", input_size=(64, 64), inputs=METADATA_INPUTS)
    x = torch.randn(1, 1, 64, 64)
    vector = torch.from_numpy(encode({"age": 80, "sex": "M", "view": "AP"}, spec.inputs))
    with torch.no_grad():
        image_only = model(x)
        assert torch.equal(model(x, vector[None]), image_only)  # the term starts at zero
        model.metadata.weight.normal_()
        with_meta = model(x, vector[None])
        assert not torch.allclose(with_meta, image_only)
        assert torch.allclose(model(x), image_only)  # no vector: all inputs missing, bias zero
    with model.metadata_context(vector):
        cams_meta, logits_meta = compute_cams(model, spec, x, return_logits=True)
    cams_none, logits_none = compute_cams(model, spec, x, return_logits=True)
    assert np.allclose(logits_meta, with_meta.numpy(), atol=1e-5)
    assert np.allclose(cams_meta, cams_none, atol=1e-6)

    save_model(model, spec, tmp_path / "m.safetensors")
    loaded, loaded_spec = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded_spec.inputs == METADATA_INPUTS
    with torch.no_grad():
        assert torch.allclose(loaded(x, vector[None]), with_meta, atol=1e-5)


def _nih_folder(root, n: int = 24) -> None:
    """A small NIH-layout folder: a table with ages, sexes and views (some missing) and PNG films."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"]
    for i in range(n):
        name = f"{i:08d}_000.png"
        film = cv2.GaussianBlur(rng.integers(0, 255, (80, 80), dtype=np.uint8), (9, 9), 3)
        cv2.imwrite(str(root / "images" / name), film)
        label = "Cardiomegaly" if i % 3 == 0 else "No Finding"
        age = "" if i % 5 == 0 else str(20 + 2 * i)
        rows.append(f"{name},{label},0,{i},{age},{'MF'[i % 2]},{('PA', 'AP')[i % 4 == 0]}")
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")


def test_fit_with_inputs_records_them_and_evaluate_feeds_them(tmp_path, monkeypatch):
    from cxrviewer.models.factory import load_model
    from cxrviewer.trainer.cli import main
    from cxrviewer.trainer.data import open_source
    from cxrviewer.trainer.evaluation import predict

    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))
    _nih_folder(tmp_path / "nih")
    runs = tmp_path / "runs"
    assert main(["fit", "--data", f"nih:{tmp_path / 'nih'}", "--method", "baseline", "--inputs", "sex,age,view",
                 "--init", "none", "--input-size", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                 "--progress", "none", "--epochs", "1", "--max-steps", "3", "--output", str(runs),
                 "--name", "meta"]) == 0
    model, spec = load_model(runs / "meta" / "last.safetensors")
    assert spec.inputs == ("age", "sex", "view")
    assert model.metadata is not None and model.metadata.weight.abs().sum() > 0  # it trained
    source = open_source(f"nih:{tmp_path / 'nih'}", labels=list(spec.targets))
    records = source.records[:6]
    fed = predict(model, spec, source, records)
    with torch.no_grad():
        model.metadata.weight.zero_()
        model.metadata.bias.zero_()
    assert not np.allclose(fed, predict(model, spec, source, records))  # evaluation gave it the table's values


def test_a_method_that_cannot_take_inputs_says_so(tmp_path, monkeypatch, capsys):
    from cxrviewer.trainer.cli import main

    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))
    _nih_folder(tmp_path / "nih", n=12)
    assert main(["fit", "--data", f"nih:{tmp_path / 'nih'}", "--method", "scalp", "--inputs", "age",
              "--init", "none", "--input-size", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu",
              "--progress", "none", "--epochs", "1", "--max-steps", "1", "--output", str(tmp_path / "runs")]) != 0
    err = capsys.readouterr().err
    assert "the scalp method does not train metadata inputs" in err and "baseline" in err


def test_analyze_reads_the_inputs_from_the_dicom_tags(tmp_path):
    import pydicom

    from cxrviewer.analysis import Analyzer
    from cxrviewer.io import load_image
    from pathlib import Path

    sample = next(Path(__file__).resolve().parents[1].glob("resources/samples/*/*/*.dcm"))
    torch.manual_seed(0)
    model, spec = create_model("efficientnet-lite0", input_size=(64, 64), inputs=("age", "sex", "view"))
    with torch.no_grad():
        model.metadata.weight.normal_()
    analyzer = Analyzer(model, spec, device="cpu")
    tagged = analyzer.analyze(load_image(sample))
    ds = pydicom.dcmread(sample)
    assert tagged.inputs["sex"] == ds.PatientSex and tagged.inputs["view"] == ds.ViewPosition
    assert tagged.inputs["age"] == f"{int(str(ds.PatientAge).rstrip('Y'))} years"
    for keyword in ("PatientAge", "PatientSex", "ViewPosition"):
        delattr(ds, keyword)
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare)
    untagged = analyzer.analyze(load_image(bare))
    assert untagged.inputs == {"age": "missing", "sex": "missing", "view": "missing"}
    assert untagged.to_json()["inputs"] == untagged.inputs
    x = spec.preprocess(load_image(bare))
    with torch.no_grad():
        expected = torch.sigmoid(model(x))[0].numpy()  # no vector: every input masked
    assert np.allclose([f.probability for f in untagged.findings], expected, atol=1e-5)
    assert not np.allclose([f.probability for f in tagged.findings], expected, atol=1e-5)


def test_triage_feeds_each_files_own_inputs_as_analyze_does(tmp_path):
    import shutil

    import pydicom

    from cxrviewer.analysis import Analyzer
    from cxrviewer.io import load_image
    from cxrviewer.triage import triage
    from pathlib import Path

    samples = sorted(Path(__file__).resolve().parents[1].glob("resources/samples/*/*/*.dcm"))[:2]
    for i, path in enumerate(samples):
        shutil.copy(path, tmp_path / f"{i}.dcm")
    ds = pydicom.dcmread(samples[0])
    del ds.PatientSex  # one file without a sex: masked for that file only
    ds.save_as(tmp_path / "0.dcm")
    torch.manual_seed(0)
    model, spec = create_model("resnet18", input_size=(64, 64), inputs=("age", "sex", "view"))
    with torch.no_grad():
        model.metadata.weight.normal_()
    analyzer = Analyzer(model, spec, device="cpu")
    rows = {r.path.name: r for r in triage(sorted(tmp_path.glob("*.dcm")), analyzer)}
    for name in ("0.dcm", "1.dcm"):
        one = analyzer.analyze(load_image(tmp_path / name))
        assert np.allclose([rows[name].probabilities[f.name] for f in one.findings],
                           [f.probability for f in one.findings], atol=1e-5)
