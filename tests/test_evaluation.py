"""`cxrviewer-train evaluate`: AUC, localization through the viewer's analyzer, thresholds, reports, folds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cxrviewer.io.image import ImageData
from cxrviewer.metrics import roc_auc, roc_auc_per_class
from cxrviewer.models import ModelSpec, create_model, save_model
from cxrviewer.trainer.data.folds import FoldError, fold_split, patient_folds, with_splits
from cxrviewer.trainer.data.sources import DataSource, Record
from cxrviewer.trainer.evaluation import EvaluationError, EvaluationResult, evaluate, predict, run_evaluation
from cxrviewer.trainer.report import write_folds_report, write_report
from cxrviewer.trainer.thresholds import calibrate_thresholds, operating_point, roc_curve
from tests.conftest import NIH_SAMPLE

T_KEYS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
LABELS = ("Mass", "Nodule", "Effusion", "Atelectasis")  # the planted source's label space
TARGETS = ("Nodule", "Mass", "Pneumothorax")  # the test models' outputs: shares Nodule and Mass only
SHAPE = (240, 200)  # rows, columns: not square, so boxes go through the preprocessing geometry


# --- a source of planted lesions and two test-double models -------------------------------------
class PlantedSource(DataSource):
    """Dim noisy films with one bright rectangle (the ground-truth box) on the positives."""

    def load_image(self, record: Record) -> ImageData:
        rng = np.random.default_rng(int(record.image_id[1:]))
        pixels = 100.0 + rng.normal(0.0, 3.0, SHAPE).astype(np.float32)
        for _name, x0, y0, x1, y1 in record.boxes:
            pixels[int(y0):int(y1), int(x0):int(x1)] = 400.0
        return ImageData(path=Path(f"{record.image_id}.png"), pixels=pixels, source_format="png")


def planted_source(n: int = 16, seed: int = 0) -> PlantedSource:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        labels = np.zeros(len(LABELS), np.float32)
        boxes = []
        if i % 4 != 3:  # three positives in four
            name = LABELS[i % 3]  # Mass, Nodule, Effusion (Effusion: not a model target)
            w, h = int(rng.integers(40, 70)), int(rng.integers(40, 80))
            x0, y0 = int(rng.integers(100, SHAPE[1] - w)), int(rng.integers(120, SHAPE[0] - h))  # lower right
            boxes.append((name, float(x0), float(y0), float(x0 + w), float(y0 + h)))
            labels[LABELS.index(name)] = 1.0
        if i % 5 == 0:
            labels[LABELS.index("Nodule")] = np.nan  # unknown: masked out of Nodule's AUC
        records.append(Record(f"p{i}", None, f"patient{i // 2}", f"s{i}", "PA", labels=labels, boxes=boxes,
                              split="test" if i < n - 2 else "train"))
    return PlantedSource("planted", Path("planted"), records, LABELS)


class Transparent(nn.Module):
    """CAM layer output = the input average-pooled 8x (the rendered lesion); logits = w * its mean.
    Grad-CAM weights are the positive constants w / (h*w), so every class's map is the pooled input."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.features = nn.AvgPool2d(8)
        self.head = nn.Linear(1, k)
        with torch.no_grad():
            self.head.weight.copy_(torch.linspace(1.0, 2.0, k)[:, None])
            self.head.bias.copy_(torch.linspace(-0.5, 0.5, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class Decoy(nn.Module):
    """CAM layer output peaks on the top-left corner whatever the image: boxes there, off the lesions."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.features = _CornerMap()
        self.head = nn.Linear(1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class _CornerMap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, 8)
        corner = torch.zeros_like(pooled)
        corner[..., :4, :4] = 1.0
        return corner + 0.0 * pooled


def double(kind: type[nn.Module]) -> tuple[nn.Module, ModelSpec]:
    spec = ModelSpec(architecture="test-double", targets=TARGETS, input_size=(128, 128), mean=(0.0,), std=(1.0,),
                     cam_layer="features", intensity="minmax", thresholds=(0.6, 0.7, 0.5))
    return kind(len(TARGETS)).eval(), spec


@pytest.fixture(scope="module")
def planted_result() -> tuple[PlantedSource, EvaluationResult]:
    source = planted_source()
    model, spec = double(Transparent)
    return source, evaluate(model, spec, source, split="all", device="cpu", batch_size=5)


# --- evaluation -----------------------------------------------------------------------------------
def test_json_structure(planted_result):
    source, result = planted_result
    doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert {"n_images", "auc", "mean_auc", "localization", "thresholds", "n_boxed_images", "split", "model"} <= set(doc)
    assert doc["n_images"] == 16 and doc["split"] == "all"
    assert list(doc["auc"]) == ["Nodule", "Mass"]  # shared findings, in the model's output order
    assert list(doc["localization"]) == T_KEYS
    for entry in doc["localization"].values():
        assert set(entry) == {"per_class", "mean"} and set(entry["per_class"]) == {"Nodule", "Mass"}
    boxed = [r for r in source.records if any(b[0] in TARGETS for b in r.boxes)]
    assert doc["n_boxed_images"] == len(boxed)
    assert sum(doc["n_boxes"].values()) == len(boxed)  # Effusion boxes: no model output, skipped
    assert doc["thresholds"] == {"Nodule": 0.6, "Mass": 0.7}
    assert EvaluationResult.from_json(doc).to_json() == doc


def test_auc_is_the_metrics_auc_of_the_predictions(planted_result):
    source, result = planted_result
    model, spec = double(Transparent)
    probs = predict(model, spec, source, source.records, batch_size=3)
    with torch.inference_mode():
        direct = torch.sigmoid(model(spec.preprocess(source.load_image(source.records[4]))))[0].numpy()
    np.testing.assert_allclose(probs[4], direct, atol=1e-6)
    labels = source.label_matrix()[:, [LABELS.index("Nodule"), LABELS.index("Mass")]]
    expected = roc_auc_per_class(labels, probs[:, [0, 1]], ["Nodule", "Mass"])
    assert result.auc == pytest.approx(expected)
    assert all(v is not None for v in expected.values())
    sens = operating_point(labels[:, 1], probs[:, 1], 0.7).sensitivity
    assert result.operating["Mass"]["sensitivity"] == pytest.approx(sens)


def test_oracle_cam_localizes_every_lesion_and_a_decoy_none(planted_result):
    _, result = planted_result
    assert result.localization["0.1"]["per_class"] == {"Nodule": 1.0, "Mass": 1.0}
    assert result.localization["0.1"]["mean"] == 1.0
    accuracies = [result.localization[k]["mean"] for k in T_KEYS]
    assert accuracies == sorted(accuracies, reverse=True)  # a hit at T is a hit at every lower T
    model, spec = double(Decoy)
    decoy = evaluate(model, spec, planted_source(), split="all", device="cpu")
    assert decoy.localization["0.1"]["mean"] == 0.0


def test_split_and_label_errors():
    source = planted_source()
    model, spec = double(Transparent)
    with pytest.raises(EvaluationError, match="val split of planted:planted holds no images"):
        evaluate(model, spec, source, split="val", device="cpu")
    spec.targets = ("Pneumothorax", "Edema", "Hernia")
    with pytest.raises(EvaluationError, match="none in common"):
        evaluate(model, spec, source, split="all", device="cpu")


def test_synthetic_source_end_to_end_with_a_resnet18(tmp_path):
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE} (only beside the CI checkout)")
    films = tmp_path / "films"
    films.mkdir()
    for name in ("00000002_000.png", "00000054_004.png", "00000129_000.png"):  # "No Finding" films
        shutil.copy(NIH_SAMPLE / "images" / name, films / name)
    torch.manual_seed(0)
    model, spec = create_model("resnet18", input_size=(128, 128))
    model_file = tmp_path / "r18.safetensors"
    save_model(model, spec, model_file)
    data = f"synthetic:{films}"
    options = {"n_images": 12, "negative_fraction": 0.25}
    result = run_evaluation(model_file, data, split="all", json_out=tmp_path / "eval.json",
                            report_dir=tmp_path / "report", device="cpu", seed=3, data_options=options)
    from cxrviewer.trainer.data import open_source

    source = open_source(data, labels="default8", seed=3, **options)
    boxes = [b for r in source.records for b in r.boxes]
    assert boxes and result.n_images == len(source.records) == 12
    assert result.n_boxed_images == sum(1 for r in source.records if r.boxes)
    assert sum(result.n_boxes.values()) == len(boxes)
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert doc["model"] == str(model_file) and doc["data"] == data and list(doc["localization"]) == T_KEYS
    for entry in doc["localization"].values():
        assert set(entry["per_class"]) == {b[0] for b in boxes}
        assert all(0.0 <= v <= 1.0 for v in entry["per_class"].values())
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"results.md", "results.json", "roc.png",
                                                                   "localization.png"}


# --- thresholds -----------------------------------------------------------------------------------
def test_thresholds_calibrate_to_the_known_optimum():
    # Youden: score >= 0.3 catches 3/3 positives with 4/24 false positives (J = 0.833); F1 prefers >= 0.8.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.6, 0.5, 0.4] + [0.1] * 20)
    labels = np.array([1, 1, 1, 0, 0, 0, 0] + [0] * 20, dtype=np.float32)
    y_true = np.stack([labels, np.zeros_like(labels), labels], axis=1)
    y_true[[3, 4, 5, 6], 2] = np.nan  # unknown labels on the middle negatives: now >= 0.3 is perfect
    y_score = np.stack([scores, scores, scores], axis=1)
    np.testing.assert_allclose(calibrate_thresholds(y_true, y_score), [0.3, 0.5, 0.3])
    np.testing.assert_allclose(calibrate_thresholds(y_true, y_score, rule="f1"), [0.8, 0.5, 0.3])
    with pytest.raises(ValueError, match="unknown threshold rule"):
        calibrate_thresholds(y_true, y_score, rule="accuracy")


def _brute_force(t: np.ndarray, s: np.ndarray, rule: str) -> float:
    best, best_t = -np.inf, None
    for cut in sorted(set(s.tolist()), reverse=True):
        tp = np.sum((s >= cut) & (t == 1))
        fp = np.sum((s >= cut) & (t == 0))
        value = tp / t.sum() - fp / (1 - t).sum() if rule == "youden" else 2 * tp / (tp + fp + t.sum())
        if value > best + 1e-12:
            best, best_t = value, cut
    return best_t


@pytest.mark.parametrize("rule", ["youden", "f1"])
def test_thresholds_match_a_brute_force_search(rule):
    rng = np.random.default_rng(5)
    t = (rng.random((60, 4)) < 0.3).astype(np.float64)
    s = np.round(np.clip(0.3 * t + rng.random((60, 4)) * 0.7, 0, 1), 2)  # ties on purpose
    got = calibrate_thresholds(t, s, rule=rule)
    np.testing.assert_allclose(got, [_brute_force(t[:, k], s[:, k], rule) for k in range(4)])


def test_roc_curve_area_is_the_auc():
    rng = np.random.default_rng(2)
    t = (rng.random(80) < 0.4).astype(np.float64)
    s = np.round(rng.random(80) * 0.5 + 0.3 * t, 1)  # many ties
    curve = roc_curve(t, s)
    assert curve.fpr[0] == 0 and curve.tpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1
    area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(t, s))
    t = (rng.random(400) < 0.3).astype(np.float64)
    s = rng.random(400) + 0.4 * t  # distinct scores: long straight runs to thin out
    full, thin = roc_curve(t, s), roc_curve(t, s, drop_intermediate=True)
    assert thin.fpr.size < full.fpr.size / 2
    for fpr, tpr in ((full.fpr, full.tpr), (thin.fpr, thin.tpr)):
        assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(roc_auc(t, s))
    assert set(zip(thin.fpr, thin.tpr)) <= set(zip(full.fpr, full.tpr))
    assert roc_curve(np.ones(5), np.arange(5.0)).fpr.size == 0


# --- reports --------------------------------------------------------------------------------------
def test_report_writes_tables_json_and_figures(planted_result, tmp_path):
    _, result = planted_result
    paths = write_report(result, tmp_path / "out", title="Planted")
    md = paths["md"].read_text()
    for key in T_KEYS:
        assert f"| T(IoU)={key} |" in md
    assert "| Nodule | Mass | Mean |" in md
    assert f"| {result.auc['Nodule']:.3f} | {result.auc['Mass']:.3f} | {result.mean_auc:.3f} |" in md
    assert "| T(IoU)=0.1 | 1.00 | 1.00 | 1.00 |" in md
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(result.to_json()))
    for key in ("roc", "localization"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_folds_report_gives_mean_and_std(planted_result, tmp_path):
    _, result = planted_result
    other = EvaluationResult.from_json(result.to_json())
    other.auc = {"Nodule": 0.5, "Mass": None}
    paths = write_folds_report([result, other], tmp_path)
    doc = json.loads(paths["json"].read_text())
    nodule = doc["auc"]["Nodule"]
    assert nodule["mean"] == pytest.approx((result.auc["Nodule"] + 0.5) / 2)
    assert nodule["std"] == pytest.approx(np.std([result.auc["Nodule"], 0.5], ddof=1))
    assert doc["auc"]["Mass"] == {"mean": pytest.approx(result.auc["Mass"]), "std": None, "n": 1}
    md = paths["md"].read_text()
    assert f"{nodule['mean']:.3f} ± {nodule['std']:.3f}" in md and "| T(IoU)=0.7 |" in md


# --- folds ----------------------------------------------------------------------------------------
def _records(counts: list[int]) -> list[Record]:
    return [Record(f"{p}_{j}", None, f"P{p:03d}", f"{p}", labels=np.zeros(1, np.float32))
            for p, n in enumerate(counts) for j in range(n)]


def test_patient_folds_are_disjoint_covering_balanced_and_seeded():
    counts = list(np.random.default_rng(0).integers(1, 9, 40))
    records = _records(counts)
    folds = patient_folds(records, 5, seed=1)
    assert folds.shape == (len(records),) and set(folds.tolist()) == set(range(5))
    by_patient: dict[str, set[int]] = {}
    for r, f in zip(records, folds):
        by_patient.setdefault(r.patient_id, set()).add(int(f))
    assert all(len(v) == 1 for v in by_patient.values())
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= max(counts)
    np.testing.assert_array_equal(patient_folds(records, 5, seed=1), folds)
    assert not np.array_equal(patient_folds(records, 5, seed=2), folds)
    order = np.random.default_rng(3).permutation(len(records))
    np.testing.assert_array_equal(patient_folds([records[i] for i in order], 5, seed=1), folds[order])
    with pytest.raises(FoldError, match="at least 50 patients"):
        patient_folds(records, 50)


def test_fold_split_tests_on_one_fold_and_validates_on_other_patients():
    records = _records([3, 1, 2, 4, 2, 1, 1, 3, 2, 2] * 3)
    folds = patient_folds(records, 3, seed=0)
    names = fold_split(records, folds, 1, val_fraction=0.2, seed=0)
    assert set(np.flatnonzero(names == "test")) == set(np.flatnonzero(folds == 1))
    patients = {s: {r.patient_id for r, n in zip(records, names) if n == s} for s in ("train", "val", "test")}
    assert patients["val"] and patients["train"]
    assert not (patients["train"] & patients["val"]) and not (patients["test"] & (patients["train"] | patients["val"]))
    source = DataSource("x", Path("x"), records, ("A",))
    split = with_splits(source, names)
    assert [r.split for r in split.records] == list(names) and all(r.split == "train" for r in records)
    assert len(split.subset("test")) == int(np.sum(folds == 1))
    with pytest.raises(FoldError, match="fold 7 holds no records"):
        fold_split(records, folds, 7)
