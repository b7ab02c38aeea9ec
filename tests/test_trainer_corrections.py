"""`--corrections store:DB`: corrected boxes reach training records, never evaluation records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrviewer.annotations import AnnotationStore
from cxrviewer.trainer.corrections import apply_corrections
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.loop import fit
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import tiny_config

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")


def _store_with(tmp_path, records, size=1024):
    """A store where an annotator corrected a proposed Effusion box (drawn on 1024-px originals) on
    each record, and labelled Nodule absent."""
    db = tmp_path / "annotations.db"
    with AnnotationStore.open(db) as store:
        for r in records:
            store.add_image(r.image_id, path=None, patient_id=r.patient_id, rows=size, cols=size)
            box_id = store.propose_box(r.image_id, "Effusion", (100, 200, 300, 400), model_name="m")
            store.correct_box(box_id, (120, 220, 420, 520), annotator="dr-a")
            store.set_label(r.image_id, "Nodule", 0.0, annotator="dr-a")
    return db


@needs_sample
def test_corrections_apply_to_training_records_only(tmp_path):
    source = open_source(f"nih:{NIH_SAMPLE}")
    train = next(r for r in source.records if r.split == "train")
    test = next(r for r in source.records if r.split == "test")
    before_test = (list(test.boxes), test.labels.copy())
    db = _store_with(tmp_path, [train, test])
    stats = apply_corrections(source, f"store:{db}")
    assert (stats.matched, stats.applied, stats.held_out, stats.boxes) == (2, 1, 1, 1)
    # drawn on the 1024-px original, applied to the 512-px training copy: halved
    assert train.boxes == [("Effusion", 60.0, 110.0, 210.0, 260.0)]
    names = list(source.label_names)
    assert train.labels[names.index("Effusion")] == 1.0 and train.labels[names.index("Nodule")] == 0.0
    assert test.boxes == before_test[0] and np.array_equal(test.labels, before_test[1], equal_nan=True)


@needs_sample
def test_corrections_on_a_dicomized_copy_match_the_png_by_stem(tmp_path):
    """The bundled samples are DICOMs made from NIH PNGs: keyed by SOP Instance UID in the store,
    their corrections still reach the PNG records through the shared stem (and only a unique one)."""
    source = open_source(f"nih:{NIH_SAMPLE}")
    train = [r for r in source.records if r.split == "train"][:2]
    db = tmp_path / "annotations.db"
    with AnnotationStore.open(db) as store:
        for i, r in enumerate(train):
            uid = f"1.2.3.{i}"
            store.add_image(uid, path=f"/samples/{i}/{r.image_id.replace('.png', '.dcm')}", rows=512, cols=512)
            store.add_box(uid, "Mass", (10, 20, 110, 220), annotator="dr-a")
        # a second store image with the first one's stem: that stem is ambiguous, so it matches nothing
        store.add_image("1.2.3.9", path=f"/elsewhere/{train[0].image_id.replace('.png', '.dcm')}", rows=512, cols=512)
        store.add_box("1.2.3.9", "Mass", (0, 0, 50, 50), annotator="dr-b")
    stats = apply_corrections(source, f"store:{db}")
    assert (stats.matched, stats.applied) == (1, 1)
    assert train[1].boxes == [("Mass", 10.0, 20.0, 110.0, 220.0)] and train[0].boxes != train[1].boxes


def test_corrections_must_name_a_store(tmp_path):
    from cxrviewer.errors import CxrError

    with pytest.raises(CxrError, match="store:DB"):
        apply_corrections(None, "nih:/x")  # type: ignore[arg-type]
    with pytest.raises(CxrError, match="does not exist"):
        apply_corrections(None, f"store:{tmp_path / 'missing.db'}")  # type: ignore[arg-type]
    assert not (tmp_path / "missing.db").exists()  # and no empty store was created


@needs_sample
def test_baseline_trains_with_a_cam_loss_on_corrected_boxes(tmp_path):
    source = open_source(f"nih:{NIH_SAMPLE}")
    train = [r for r in source.records if r.split == "train"][:40]
    db = _store_with(tmp_path, train)
    config = tiny_config(f"nih:{NIH_SAMPLE}", "baseline", tmp_path, architecture="resnet18", max_steps=3,
                         corrections=f"store:{db}", batch_size=16)
    run = fit(config)
    steps = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    start = steps[0]
    assert start["corrections"]["applied"] == 40
    cams = [e["cam"] for e in steps if e["event"] == "step" and "cam" in e]
    assert cams and all(np.isfinite(cams))
