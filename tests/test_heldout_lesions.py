"""Localization on synthetic lesions inserted into a held-out split's normal films."""

from __future__ import annotations

import numpy as np
import pytest

from cxrviewer.errors import CxrError
from cxrviewer.metrics import IOU_THRESHOLDS
from cxrviewer.models import create_model
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.data.lesions import SYNTHETIC_CLASSES
from cxrviewer.trainer.evaluation import EvaluationResult, evaluate
from cxrviewer.trainer.heldout_lesions import centre_box_localization, lesion_source
from cxrviewer.trainer.report import folds_summary, write_folds_report
from tests.conftest import NIH_SAMPLE

pytestmark = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")


@pytest.fixture(scope="module")
def fold0():
    from cxrviewer.trainer.data.folds import fold_split, patient_folds, with_splits

    source = open_source(f"nih:{NIH_SAMPLE}", labels="default8", seed=0)
    return with_splits(source, fold_split(source.records, patient_folds(source.records, 3, seed=0), 0, seed=0))


def test_lesions_are_drawn_on_held_out_normal_films_only(fold0):
    test = [r for r in fold0.records if r.split == "test"]
    train_patients = {r.patient_id for r in fold0.records if r.split != "test"}
    classes = list(fold0.label_names)
    lesions = lesion_source(fold0, test, classes, n_images=40, seed=3)
    assert len(lesions.records) == 40
    held_out = {r.patient_id for r in test}
    normal_test = {r.path.name for r in test if not np.any(np.nan_to_num(r.labels))}
    for record in lesions.records:
        assert record.patient_id in held_out and record.patient_id not in train_patients
        assert lesions.base_path(record).name in normal_test  # a normal film of the held-out fold
        assert len(record.boxes) == 1 and record.boxes[0][0] in SYNTHETIC_CLASSES
        assert record.boxes[0][0] in classes  # Consolidation is not one of the default eight
    assert len({r.boxes[0][0] for r in lesions.records}) >= 4
    again = lesion_source(fold0, test, classes, n_images=40, seed=3)
    assert [r.boxes for r in again.records] == [r.boxes for r in lesions.records]


def test_evaluate_scores_lesions_and_the_folds_report_summarises_them(fold0, tmp_path):
    model, spec = create_model("resnet18", input_size=(64, 64))
    result = evaluate(model, spec, fold0, split="test", device="cpu", box_method="talasila", lesions=12)
    assert set(result.lesion_localization) == {format(t, "g") for t in IOU_THRESHOLDS}
    assert sum(result.n_lesions.values()) == 12
    for entry in result.lesion_localization.values():
        assert all(0.0 <= v <= 1.0 for v in entry["per_class"].values() if v is not None)
    strict = [result.lesion_localization[format(t, "g")]["mean"] for t in IOU_THRESHOLDS]
    assert all(a >= b for a, b in zip(strict, strict[1:]))  # a hit at T is a hit at every lower T
    back = EvaluationResult.from_json(result.to_json())
    assert back.lesion_localization == result.lesion_localization and back.n_lesions == result.n_lesions

    summary = folds_summary([result, back])
    assert summary["lesion_localization"]["0.1"]["mean"]["mean"] == pytest.approx(strict[0])
    text = write_folds_report([result, back], tmp_path)["md"].read_text()
    assert "synthetic lesions" in text and "T(IoU)=0.7" in text

    plain = evaluate(model, spec, fold0, split="test", device="cpu")
    assert plain.lesion_localization == {} and plain.n_lesions == {}


def test_lesions_need_an_nih_source(tmp_path):
    synthetic = open_source(f"synthetic:{NIH_SAMPLE}", labels="default8", n_images=4, seed=1)
    with pytest.raises(CxrError, match="nih"):
        lesion_source(synthetic, synthetic.records, list(synthetic.label_names), n_images=4)


def test_the_centre_box_reference_is_a_fixed_box(fold0):
    test = [r for r in fold0.records if r.split == "test"]
    lesions = lesion_source(fold0, test, list(fold0.label_names), n_images=30, seed=5)
    reference = centre_box_localization(lesions)
    assert set(reference) == {format(t, "g") for t in IOU_THRESHOLDS}
    assert reference["0.7"]["mean"] <= reference["0.1"]["mean"] <= 1.0
    # the per-class accuracies at T(IoU)=0.1 recount the hits of the middle-half box
    from cxrviewer.metrics import iou

    hits = sum(iou((c / 4, r / 4, 3 * c / 4, 3 * r / 4), tuple(rec.boxes[0][1:])) > 0.1
               for rec in lesions.records for r, c in [lesions.load_image(rec).pixels.shape[:2]])
    per_class = reference["0.1"]["per_class"]
    counts = {}
    for rec in lesions.records:
        counts[rec.boxes[0][0]] = counts.get(rec.boxes[0][0], 0) + 1
    assert sum(per_class[c] * n for c, n in counts.items()) == pytest.approx(hits)
