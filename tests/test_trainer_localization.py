"""A short CPU training on synthetic lesions localizes them far better than a fixed centre box.

Measured when this test was written (2026-11-23, 2-core CPU): the baseline method with the CAM loss
on the synthetic boxes (`box_supervision`), ResNet-18 at 128 px, 5 epochs on 211 training images
with one inserted pleural effusion in half of them, reached validation AUC 0.97; on the test split's
boxed images, Grad-CAM boxes by Talasila et al.'s threshold-and-contour rule hit at T(IoU)=0.3 on
0.96 of 25 images (median IoU 0.50), a centre box (the middle half of the film) on 0.0 (median IoU
0.19). SCALP's Algorithm 1 keeps only the densest rectangle of the coarse 4×4 map: 0.0 at 0.3 here
(0.92 at 0.1), which is why the test names its box method.
"""

from __future__ import annotations

import pytest

from cxrviewer.metrics import iou
from cxrviewer.models import load_model
from cxrviewer.trainer.evaluation import evaluate
from cxrviewer.trainer.loop import fit, open_training_source
from tests.conftest import NIH_SAMPLE
from tests.trainer_support import tiny_config

MARGIN = 0.5  # accuracy points above the centre box at T(IoU)=0.3 (0.96 was measured)


@pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
def test_short_training_beats_a_centre_box_on_synthetic_lesions(tmp_path):
    config = tiny_config(f"synthetic:{NIH_SAMPLE}", "baseline", tmp_path, architecture="resnet18", input_size=128,
                         batch_size=16, epochs=5, workers=1, lr=1e-3,
                         data_options={"n_images": 300, "classes": ["Effusion"]},
                         method_args={"box_supervision": True, "correction_weight": 1.0})
    run = fit(config)
    model, spec = load_model(run / "best.safetensors")
    source = open_training_source(config)
    result = evaluate(model, spec, source, split="test", device="cpu", cam="gradcam", box_method="talasila")
    assert result.n_boxed_images >= 20
    learned = result.localization["0.3"]["mean"]

    boxed = [r for r in source.records if r.split == "test" and r.boxes]
    hits = 0
    for record in boxed:
        rows, cols = source.load_image(record).pixels.shape
        centre = (cols / 4, rows / 4, 3 * cols / 4, 3 * rows / 4)
        hits += iou(centre, record.boxes[0][1:]) > 0.3
    centre_accuracy = hits / len(boxed)
    assert learned >= centre_accuracy + MARGIN, (learned, centre_accuracy)
