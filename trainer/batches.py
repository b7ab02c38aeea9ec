"""From a method's batch plan to tensors: items, augmentation, the dataset and the collate function.

A method plans each batch as a list of `Item(group, index, aug, seed)`: which record, in which role
("query", "positive", "negative", "view1", ...), with which augmentation and with which seed. The
plan is made in the main process from a generator seeded by (run seed, stage, epoch), so a resumed
run replays exactly the batches an uninterrupted run would have seen, whatever the number of
data-loading workers. `collate` groups the items by role: `batch["query"]["image"]` is [B, C, H, W].

Augmentations work on the cached 8-bit picture and move the boxes with it:
- "none": the picture as is (evaluation, CIA-Net's aligned inputs);
- "light": small random affine (rotation ±7°, scale 0.95-1.05, shift ±4%) and ±10% contrast/brightness;
- "crop": a random crop of the picture enlarged by 288/256 (the input-size crop of a 12.5% larger
  resize, anywhere within it) and ±10% contrast/brightness: the fine-tuning recipe of the pretrained
  EfficientNet-Lite models;
- "strong": the two-view contrastive recipe adapted to grey radiographs (SimCLR/MoCo v2/BYOL use
  colour jitter and greyscale, meaningless here): random resized crop (area 0.5-1, aspect 3/4-4/3),
  rotation ±10°, ±25% contrast/brightness, Gaussian blur with p=0.5. No horizontal flip: it would
  move the heart to the right, which is a finding (dextrocardia), not an augmentation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np
import torch

from cxrviewer.errors import CxrError

if TYPE_CHECKING:
    from cxrviewer.models.spec import ModelSpec
    from cxrviewer.trainer.image_cache import ImageCache

AUGMENTATIONS = ("none", "light", "crop", "strong")
CROP_ZOOM = 288 / 256  # "crop": the resize the crop is taken from, relative to the input size
ERRORS = "__errors__"  # the collated batch's key when an image could not be read


@dataclass(frozen=True, slots=True)
class Item:
    group: str
    index: int
    aug: str = "light"
    seed: int = 0


def _affine(rng: np.random.Generator, size: tuple[int, int], aug: str) -> np.ndarray | None:
    """A 2x3 matrix mapping input pixel edges to output pixel edges (None: identity)."""
    if aug == "none":
        return None
    h, w = size
    if aug == "light":
        angle, scale = rng.uniform(-7, 7), rng.uniform(0.95, 1.05)
        tx, ty = rng.uniform(-0.04, 0.04) * w, rng.uniform(-0.04, 0.04) * h
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += (tx, ty)
        return matrix
    if aug == "crop":
        margin_x, margin_y = (CROP_ZOOM - 1) * w / 2, (CROP_ZOOM - 1) * h / 2
        tx, ty = rng.uniform(-margin_x, margin_x), rng.uniform(-margin_y, margin_y)
        return np.array([[CROP_ZOOM, 0, -margin_x + tx], [0, CROP_ZOOM, -margin_y + ty]])
    # strong: random resized crop, then rotation about the centre
    for _ in range(10):
        area = rng.uniform(0.5, 1.0) * h * w
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if cw <= w and ch <= h:
            break
    else:
        cw, ch = w, h
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    crop = np.array([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch], [0, 0, 1]])
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-10, 10), 1.0), [0, 0, 1]])
    return (rot @ crop)[:2]


def _map_boxes(boxes: np.ndarray, matrix: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """Boxes [n, 5] (class, x0, y0, x1, y1) through the affine; clipped; vanished boxes dropped."""
    if matrix is None or len(boxes) == 0:
        return boxes
    x0, y0, x1, y1 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    h, w = size
    out = boxes.copy()
    out[:, 1] = np.clip(mapped[..., 0].min(1), 0, w)
    out[:, 2] = np.clip(mapped[..., 1].min(1), 0, h)
    out[:, 3] = np.clip(mapped[..., 0].max(1), 0, w)
    out[:, 4] = np.clip(mapped[..., 1].max(1), 0, h)
    keep = (out[:, 3] - out[:, 1] >= 1) & (out[:, 4] - out[:, 2] >= 1)
    return out[keep]


def augment(picture: np.ndarray, boxes: np.ndarray, aug: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 picture in [0, 1], boxes) after the named augmentation, deterministic in `seed`."""
    if aug not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation '{aug}' (known: {', '.join(AUGMENTATIONS)})")
    rng = np.random.default_rng(seed)
    size = picture.shape
    matrix = _affine(rng, size, aug)
    out = picture
    if matrix is not None:
        out = cv2.warpAffine(picture, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = out.astype(np.float32) / np.float32(255.0)
    if aug != "none":
        spread = 0.25 if aug == "strong" else 0.10
        contrast, brightness = rng.uniform(1 - spread, 1 + spread), rng.uniform(-spread, spread) / 2
        out = np.clip((out - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
        if aug == "strong" and rng.random() < 0.5:
            sigma = rng.uniform(0.1, 2.0) * size[0] / 224
            out = cv2.GaussianBlur(out, (0, 0), sigma)
    return out.astype(np.float32, copy=False), _map_boxes(boxes, matrix, size)


BoxLookup = Callable[[int], list]


class PlannedImages(torch.utils.data.Dataset):
    """Dataset indexed by `Item`: the augmented, normalised image, its labels and boxes (input pixels)."""

    def __init__(self, cache: "ImageCache", spec: "ModelSpec", labels: np.ndarray, boxes: BoxLookup,
                 class_index: dict[str, int], metadata: np.ndarray | None = None) -> None:
        self.cache = cache
        self.metadata = metadata  # [N, D] encoded model inputs (cxrviewer.models.metadata), or None
        self.spec = spec
        self.labels = np.asarray(labels, dtype=np.float32)
        self.boxes = boxes
        self.class_index = class_index
        self.mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(spec.std, dtype=np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def input_boxes(self, index: int, geometry) -> np.ndarray:
        """The record's boxes of known classes in model-input pixels, [n, 5] float32."""
        rows = []
        for name, x0, y0, x1, y1 in self.boxes(index):
            k = self.class_index.get(name)
            if k is None:
                continue
            rows.append((k, (x0 - geometry.tx) / geometry.sx, (y0 - geometry.ty) / geometry.sy,
                         (x1 - geometry.tx) / geometry.sx, (y1 - geometry.ty) / geometry.sy))
        return np.asarray(rows, dtype=np.float32).reshape(-1, 5)

    def __getitem__(self, item: Item) -> dict:
        try:
            picture, geometry = self.cache.picture(item.index)
        except CxrError as exc:  # travels to the main process as text: torch cannot rebuild CxrError
            return {"group": item.group, "index": item.index, "error": str(exc)}
        picture, boxes = augment(picture, self.input_boxes(item.index, geometry), item.aug, item.seed)
        stacked = np.repeat(picture[None], self.spec.in_channels, axis=0)
        image = (stacked - self.mean) / self.std
        sample = {"group": item.group, "index": item.index, "image": torch.from_numpy(np.ascontiguousarray(image)),
                  "labels": torch.from_numpy(self.labels[item.index]), "boxes": torch.from_numpy(boxes)}
        if self.metadata is not None:
            sample["metadata"] = torch.from_numpy(self.metadata[item.index])
        return sample


def collate(samples: list[dict]) -> dict[str, dict]:
    """Group planned samples by role: {group: {"image", "labels", "index", "boxes" (list)}}."""
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        return {ERRORS: {"messages": errors}}
    grouped: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        grouped[sample["group"]].append(sample)
    out: dict[str, dict] = {}
    for group, items in grouped.items():
        out[group] = {
            "image": torch.stack([s["image"] for s in items]),
            "labels": torch.stack([s["labels"] for s in items]),
            "index": torch.tensor([s["index"] for s in items], dtype=torch.long),
            "boxes": [s["boxes"] for s in items],
        }
        if "metadata" in items[0]:
            out[group]["metadata"] = torch.stack([s["metadata"] for s in items])
    return out


def raise_bad_images(batch: dict) -> None:
    """Raise, in the main process, the first bad-image sentence a worker met while building `batch`."""
    if ERRORS in batch:
        first = batch[ERRORS]["messages"][0].rstrip(".")
        raise CxrError(None, f"{first}; training stopped (fix or remove the file, then continue with --resume)")


def to_device(batch: dict[str, dict], device: torch.device, channels_last: bool) -> dict[str, dict]:
    out = {}
    for group, part in batch.items():
        image = part["image"].to(device, non_blocking=True)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        out[group] = {**part, "image": image, "labels": part["labels"].to(device, non_blocking=True),
                      "index": part["index"].to(device, non_blocking=True),
                      "boxes": [b.to(device, non_blocking=True) for b in part["boxes"]]}
        if "metadata" in part:
            out[group]["metadata"] = part["metadata"].to(device, non_blocking=True)
    return out


def item_seed(base: int, *parts: int) -> int:
    """A 63-bit seed from the run seed and the item's coordinates (stage, epoch, step, slot)."""
    return int(np.random.SeedSequence([base, *parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
