"""Image cache, augmentations that move boxes with the pixels, planned datasets and the shared losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrviewer.models.factory import create_model
from cxrviewer.trainer.batches import Item, PlannedImages, augment, collate
from cxrviewer.trainer.data import open_source
from cxrviewer.trainer.image_cache import ImageCache, geometry_for
from cxrviewer.trainer.losses import box_masks, cam_box_loss, focal_loss, info_nce, masked_bce
from tests.conftest import NIH_SAMPLE

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")


@pytest.mark.parametrize("aug", ["light", "strong"])
@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_boxes_with_the_pixels(aug, seed):
    picture = np.zeros((96, 96), np.uint8)
    picture[30:50, 40:70] = 255  # a bright block; its box is x 40..70, y 30..50
    boxes = np.array([[2, 40, 30, 70, 50]], np.float32)
    out, moved = augment(picture, boxes, aug, seed)
    bright = out > 0.5 * out.max()
    ys, xs = np.nonzero(bright)
    if len(moved) == 0:  # cropped away: then the block must have left the picture too
        assert bright.sum() < 20
        return
    _, x0, y0, x1, y1 = moved[0]
    # the block's bounding box after the warp lies inside the moved box (up to interpolation)
    assert xs.min() >= x0 - 2 and xs.max() + 1 <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() + 1 <= y1 + 2
    # and is not much smaller than it (rotation enlarges the box of a rectangle a little)
    assert (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1) >= 0.5 * (x1 - x0) * (y1 - y0)


def test_augmentation_is_deterministic_in_its_seed():
    picture = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
    a, _ = augment(picture, np.zeros((0, 5), np.float32), "strong", 7)
    b, _ = augment(picture, np.zeros((0, 5), np.float32), "strong", 7)
    c, _ = augment(picture, np.zeros((0, 5), np.float32), "strong", 8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@needs_sample
def test_cache_matches_the_inference_preprocessing(tmp_path):
    source = open_source(f"nih:{NIH_SAMPLE}")
    source.records = source.records[:4]
    _, spec = create_model("resnet18", input_size=(96, 96))
    cache = ImageCache(source, spec, tmp_path)
    for index in range(4):
        picture, geometry = cache.picture(index)  # decoded and stored
        again, geometry2 = cache.picture(index)  # read back from the memory map
        assert np.array_equal(picture, again) and geometry == geometry2
        reference, ref_geometry = spec.preprocess_with_geometry(source.load_image(source.records[index]))
        assert geometry == ref_geometry
        restored = reference[0, 0].numpy() * spec.std[0] + spec.mean[0]
        assert np.abs(picture / 255.0 - restored).max() <= 0.5 / 255 + 1e-6
    assert cache.filled() == 4
    # another cache object on the same folder (a worker process) reads the filled rows
    assert ImageCache(source, spec, tmp_path).filled() == 4


def test_geometry_for_letterbox_matches_resize():
    from cxrviewer.models.preprocess import resize_to_input

    _, spec = create_model("resnet18", input_size=(64, 64), resize="letterbox")
    for shape in [(100, 50), (50, 100), (64, 64), (1024, 1000)]:
        _, expected = resize_to_input(np.zeros(shape, np.float32), (64, 64), "letterbox")
        assert geometry_for(shape, spec) == expected


@needs_sample
def test_planned_dataset_scales_boxes_into_input_pixels(tmp_path):
    source = open_source(f"synthetic:{NIH_SAMPLE}", n_images=12, seed=3)  # the NIH sample has no boxes
    boxed = [i for i, r in enumerate(source.records) if r.boxes]
    assert boxed
    _, spec = create_model("resnet18", input_size=(64, 64))
    names = {n: k for k, n in enumerate(source.label_names)}
    dataset = PlannedImages(ImageCache(source, spec, None), spec, source.label_matrix(),
                            lambda i: source.records[i].boxes, names)
    i = boxed[0]
    record = source.records[i]
    sample = dataset[Item("query", i, "none", 0)]
    rows, cols = source.load_image(record).pixels.shape
    known = [b for b in record.boxes if b[0] in names]
    assert len(sample["boxes"]) == len(known)
    for (name, x0, y0, x1, y1), got in zip(known, sample["boxes"].tolist()):
        assert got[0] == names[name]
        assert got[1:] == pytest.approx([x0 * 64 / cols, y0 * 64 / rows, x1 * 64 / cols, y1 * 64 / rows], rel=1e-5)
    batch = collate([sample, dataset[Item("positive", boxed[-1], "light", 1)], dataset[Item("query", 0, "none", 0)]])
    assert batch["query"]["image"].shape == (2, 1, 64, 64) and batch["positive"]["index"].tolist() == [boxed[-1]]


def test_masked_losses_ignore_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([[1.0, float("nan"), 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, [0, 2]], labels[:, [0, 2]])
    assert masked_bce(logits, labels).item() == pytest.approx(expected.item())
    assert masked_bce(logits, torch.full_like(labels, float("nan"))).item() == 0.0
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(expected.item())
    assert focal_loss(logits, labels, gamma=2.0) < masked_bce(logits, labels)


def test_info_nce_prefers_the_positive():
    q = torch.tensor([[1.0, 0.0]])
    good = info_nce(q, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), 0.1)
    bad = info_nce(q, torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.1)
    assert good < 0.01 < bad
    masked = info_nce(q, torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.1,
                      negative_mask=torch.tensor([[False, True]]))
    assert masked < bad


def test_cam_box_loss_rewards_maps_inside_the_box():
    boxes = [torch.tensor([[1, 8, 8, 24, 24]], dtype=torch.float32)]
    inside = torch.zeros(1, 3, 8, 8)
    inside[0, 1, 2:6, 2:6] = 1.0
    outside = torch.zeros(1, 3, 8, 8)
    outside[0, 1, 0:2, 6:8] = 1.0
    assert cam_box_loss(inside, boxes, (32, 32)) < cam_box_loss(outside, boxes, (32, 32))
    masks, present = box_masks(boxes, 3, (32, 32), torch.device("cpu"))
    assert present.tolist() == [[False, True, False]] and masks[0, 1].sum() == 16 * 16
    assert cam_box_loss(inside, [torch.zeros(0, 5)], (32, 32)).item() == 0.0


@needs_sample
def test_a_bad_image_stops_training_with_one_sentence(tmp_path):
    """A corrupt file met by a data-loading worker reaches the user as its one-sentence error."""
    import shutil

    from cxrviewer.errors import CxrError
    from cxrviewer.trainer.loop import fit
    from tests.trainer_support import tiny_config

    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    shutil.copy(NIH_SAMPLE / "Data_Entry_2017_v2020.csv", root)
    for png in sorted((NIH_SAMPLE / "images").glob("*.png")):
        (root / "images" / png.name).write_bytes(png.read_bytes()[:200])  # every file truncated
    config = tiny_config(f"nih:{root}", "baseline", tmp_path, architecture="resnet18", workers=1, max_steps=1)
    with pytest.raises(CxrError, match=r"^\d+_\d+\.png: .*training stopped"):
        fit(config)


@pytest.mark.parametrize("aug", ["none", "light", "strong"])
def test_the_baseline_plans_its_batches_with_the_chosen_augmentation(tmp_path, aug):
    from tests.trainer_support import prepared, tiny_config

    if not NIH_SAMPLE.is_dir():
        pytest.skip("../shared/data/nih-sample is not present")
    config = tiny_config(f"nih:{NIH_SAMPLE}", "baseline", tmp_path, method_args={"augmentation": aug})
    run, method, *_ = prepared(config)
    plan = method.plan_epoch(method.stages()[0], 0)
    assert plan and {item.aug for batch in plan for item in batch} == {aug}
