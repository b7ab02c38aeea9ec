"""Localization on synthetic lesions inserted into held-out films (issue 6's localization figure).

The NIH sample has almost no boxes, so a fold's own test split cannot measure localization. Instead,
the normal ("No Finding") films of the held-out patients become the bases of a `synthetic:` source
(`cxrviewer.trainer.data.synthetic`, one lesion of known class and box per image, no negatives),
and the model's box for the lesion's class is scored against it at T(IoU) 0.1–0.7 with the same
code as every other localization figure (`cxrviewer.metrics.localization_accuracy`). No film of a
training patient is used, so the model has never seen the film under the lesion.

The lesions are drawn by our lesion models (`lesions.py`), not by disease: this measures whether a
CAM and a box method put the box where the image changed for that finding, a proxy that favours
methods whose CAMs follow local evidence. Only the lesion classes among the model's findings are
scored (Consolidation is not in the default eight).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cxrviewer.errors import CxrError
from cxrviewer.metrics import IOU_THRESHOLDS, localization_accuracy, localization_records
from cxrviewer.trainer.data.sources import DataSource, Record

Progress = Callable[[str, int, int], Any]  # as in cxrviewer.trainer.evaluation


def lesion_source(source: DataSource, records: Sequence[Record], classes: Sequence[str], *, n_images: int,
                  seed: int = 0) -> DataSource:
    """A synthetic source of `n_images` films, each with one lesion of a class in `classes`, built on
    the normal films of the patients of `records` (an `nih:` source's held-out split)."""
    from cxrviewer.trainer.data.lesions import SYNTHETIC_CLASSES
    from cxrviewer.trainer.data.synthetic import open_synthetic

    if source.kind != "nih":
        raise CxrError(None, f"lesions are inserted into the normal films of an nih: source, not {source.kind}:")
    drawable = [c for c in SYNTHETIC_CLASSES if c in classes]
    if not drawable:
        raise CxrError(None, f"none of the model's findings ({', '.join(classes)}) has a synthetic lesion model")
    patients = {r.patient_id for r in records}
    return open_synthetic(source.root, labels=list(classes), seed=seed, n_images=n_images, negative_fraction=0.0,
                          classes=drawable, views=None, patients=patients, fractions=(0.0, 0.0, 1.0))


def lesion_localization(analyzer: Any, lesions: DataSource, *,
                        progress: Progress | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(localization accuracy by T(IoU), lesions scored per class) of `analyzer` on every image of
    `lesions` (see `lesion_source`), scored as `evaluate` scores a split's own boxes."""
    from cxrviewer.trainer.evaluation import _localize

    classes = list(dict.fromkeys(b[0] for r in lesions.records for b in r.boxes))
    scored = _localize(analyzer, lesions, list(lesions.records), classes, progress, stage="lesions")
    counts: dict[str, int] = {}
    for rec in scored:
        counts[rec.class_name] = counts.get(rec.class_name, 0) + 1
    return localization_accuracy(scored, IOU_THRESHOLDS), counts


def centre_box_localization(lesions: DataSource) -> dict[str, dict[str, Any]]:
    """The reference a model's boxes must beat: localization accuracy of one fixed box, the middle
    half of the film (a quarter of its area), for every lesion of `lesions`."""
    truth, predicted = [], {}
    for record in lesions.records:
        rows, cols = lesions.load_image(record).pixels.shape[:2]
        for name, *box in record.boxes:
            truth.append((record.image_id, name, tuple(box)))
            predicted[(record.image_id, name)] = (cols / 4, rows / 4, 3 * cols / 4, 3 * rows / 4)
    return localization_accuracy(localization_records(truth, predicted), IOU_THRESHOLDS)
