"""KACL's BYOP module: radiomic positives from Grad-CAM boxes (or ground-truth boxes), cached.

Han et al., Sec. 3.2 and Fig. 3: for an unannotated image, Grad-CAM of the image encoder's fourth
layer, an ad-hoc threshold, the bounding box; for an annotated image, its ground-truth box; then
pyradiomics features of that box on the original image. Here:

- `byop_features(model, spec, source, indices, ...)` → one row per record: the box, where it came
  from (`GROUND_TRUTH` when `record.boxes` holds a box of a class of the label space — the source's
  annotation or a clinician's correction —, else `GRAD_CAM`) and the 102 features of
  `cxrviewer.radiomics` (`feature_names()` order; NaN where undefined).
  Which box, when an image has several findings: the class among the candidates with the highest
  predicted probability, the candidates being the classes that carry a ground-truth box when there
  is one, else the image's positive labels (the largest box when that class has several). The
  Grad-CAM box is `boxes_from_heatmap(..., method="threshold")` on the min-max scaled map (the
  paper's "ad-hoc threshold"; 180 of 255 by default), mapped to original-image pixels through the
  preprocessing geometry; features are computed on the image in modality units (`ImageData.pixels`).
- The CAMs run batched on the model's device (`compute_cams`, every class in one pass); the
  radiomics run in a fork pool (`cxrviewer.parallel.fork_context`) when there are many boxes. The
  main process hands each worker only the box's crop, not the image.
- `RadiomicCache`: the rows of the training records, with a validity mask and the epoch they were
  made in; `state_dict` holds plain tensors and numbers only (loaded with weights_only=True).
  `standardised()` z-scores each feature with the mean and standard deviation over the valid rows
  (NaN-aware), replaces NaN by 0 (the mean) and clips to ±`clip`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

NONE, GRAD_CAM, GROUND_TRUTH = 0, 1, 2


class RadiomicCache:
    """Radiomic features of `n` training records (row r = the r-th training record)."""

    def __init__(self, n: int, n_features: int) -> None:
        self.features = torch.full((n, n_features), float("nan"))
        self.valid = torch.zeros(n, dtype=torch.bool)
        self.boxes = torch.zeros(n, 4)
        self.box_source = torch.zeros(n, dtype=torch.int8)
        self.epoch = -1  # the epoch of the last refresh (−1: never)
        self._standard: dict[str, torch.Tensor] = {}

    def update(self, rows: np.ndarray, features: np.ndarray, boxes: np.ndarray, box_source: np.ndarray,
               epoch: int) -> None:
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        values = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.features[rows_t] = values
        self.valid[rows_t] = torch.isfinite(values).any(dim=1) if len(values) else self.valid[rows_t]
        self.boxes[rows_t] = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        self.box_source[rows_t] = torch.as_tensor(np.asarray(box_source, dtype=np.int8))
        self.epoch = int(epoch)
        self._standard.clear()

    def standardised(self, device: torch.device, clip: float = 5.0) -> torch.Tensor:
        """[n, F] z-scores over the valid rows, NaN → 0, clipped to ±clip (cached per device)."""
        key = str(device)
        if key not in self._standard:
            rows = self.features[self.valid].double()
            finite = torch.isfinite(rows)
            count = finite.sum(0).clamp_min(1)
            mean = torch.where(finite, rows, 0.0).sum(0) / count
            var = torch.where(finite, (rows - mean) ** 2, 0.0).sum(0) / count
            std = var.sqrt()
            std = torch.where(std > 0, std, torch.ones_like(std))
            z = (self.features.double() - mean) / std
            z = torch.nan_to_num(z, nan=0.0, posinf=clip, neginf=-clip).clamp(-clip, clip)
            self._standard[key] = z.float().to(device)
        return self._standard[key]

    def state_dict(self) -> dict[str, Any]:
        return {"features": self.features.clone(), "valid": self.valid.clone(), "boxes": self.boxes.clone(),
                "box_source": self.box_source.clone(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["features"].shape) != tuple(self.features.shape):
            raise ValueError(f"the saved radiomic cache is {tuple(state['features'].shape)}, this run expects "
                             f"{tuple(self.features.shape)}")
        self.features = state["features"].float().clone()
        self.valid = state["valid"].bool().clone()
        self.boxes = state["boxes"].float().clone()
        self.box_source = state["box_source"].to(torch.int8).clone()
        self.epoch = int(state["epoch"])
        self._standard.clear()


# --- boxes -------------------------------------------------------------------------------------
def candidate_classes(record: Any, label_names: Sequence[str]) -> tuple[list[int], bool]:
    """(class indices the positive view may come from, whether they carry ground-truth boxes)."""
    names = {n: k for k, n in enumerate(label_names)}
    boxed = sorted({names[b[0]] for b in record.boxes if b[0] in names})
    if boxed:
        return boxed, True
    labels = np.asarray(record.labels, dtype=np.float32)
    return [int(k) for k in np.flatnonzero(labels == 1)], False


def ground_truth_box(record: Any, name: str) -> tuple[float, float, float, float]:
    """The largest of the record's boxes of class `name`, in image pixels."""
    boxes = [b[1:] for b in record.boxes if b[0] == name]
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]


def _boxes_for_chunk(model, spec, source, indices: Sequence[int], device: torch.device, threshold: float,
                     ) -> list[tuple[int, tuple[float, float, float, float] | None, int, np.ndarray | None, tuple]]:
    """(index, box in image pixels or None, box source, crop in modality units, spacing) per record."""
    from cxrviewer.explain import boxes_from_heatmap, cams_to_image, compute_cams
    from cxrviewer.radiomics import pixel_box

    images, inputs, geometries = [], [], []
    for i in indices:
        image = source.load_image(source.records[i])
        x, geometry = spec.preprocess_with_geometry(image)
        images.append(image)
        inputs.append(x)
        geometries.append(geometry)
    cams, logits = compute_cams(model, spec, torch.cat(inputs), method="gradcam", amp=device.type == "cuda",
                                return_logits=True)
    heat = cams_to_image(cams, spec.input_size)
    out = []
    for j, i in enumerate(indices):
        record = source.records[i]
        classes, from_truth = candidate_classes(record, spec.targets)
        box, kind = None, NONE
        if classes:
            best = max(classes, key=lambda k: float(logits[j, k]))
            if from_truth:
                box, kind = ground_truth_box(record, spec.targets[best]), GROUND_TRUTH
            else:
                found = boxes_from_heatmap(heat[j, best], method="threshold", threshold=threshold)
                if found:
                    box, kind = geometries[j].box_to_image(found[0].as_tuple()), GRAD_CAM
        crop, spacing = None, (1.0, 1.0)
        if box is not None:
            pixels = images[j].pixels
            x0, y0, x1, y1 = pixel_box(box, pixels.shape)
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1], dtype=np.float32)
            spacing = tuple(getattr(images[j], "pixel_spacing", None) or (1.0, 1.0))
        out.append((int(i), box, kind, crop, spacing))
    return out


# --- radiomics ---------------------------------------------------------------------------------
def crop_features(job: tuple[np.ndarray | None, tuple[float, float]]) -> np.ndarray:
    """The radiomic feature vector of a whole crop (NaN when there is none or it cannot be measured)."""
    from cxrviewer.radiomics import compute_radiomics, feature_names

    crop, spacing = job
    if crop is None or crop.size == 0:
        return np.full(len(feature_names()), np.nan)
    return np.asarray(compute_radiomics(crop, spacing=spacing).values, dtype=np.float64)


def _pool(n_jobs: int, workers: int | None, min_items: int):
    from cxrviewer.parallel import cpu_count, fork_context

    processes = cpu_count() if workers is None else int(workers)
    context = fork_context(n_jobs, min_items) if processes > 1 else None
    if context is None:
        return None
    from cxrviewer.radiomics import feature_names

    feature_names()  # import pyradiomics once, before forking, so every worker inherits it
    return context.Pool(processes)


def byop_features(model, spec, source, indices: Sequence[int], device: torch.device, *, threshold: float = 180.0,
                  workers: int | None = None, min_pool_items: int = 16, chunk: int = 32,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [n, F], boxes [n, 4] in image pixels (NaN: none), box source [n]) for `indices`.

    CAMs of chunk c+1 are computed while the pool measures the crops of chunk c."""
    from cxrviewer.radiomics import feature_names

    n_features = len(feature_names())
    features = np.full((len(indices), n_features), np.nan)
    boxes = np.full((len(indices), 4), np.nan)
    kinds = np.zeros(len(indices), dtype=np.int8)
    if not len(indices):
        return features, boxes, kinds
    position = {int(i): p for p, i in enumerate(indices)}
    pool = _pool(len(indices), workers, min_pool_items)
    pending = None

    def collect(rows, result) -> None:
        for (i, box, kind, _, _), values in zip(rows, result):
            p = position[i]
            features[p] = values
            kinds[p] = kind
            if box is not None:
                boxes[p] = box

    try:
        for part in _chunks(list(indices), max(1, chunk)):
            rows = _boxes_for_chunk(model, spec, source, part, device, threshold)
            jobs = [(crop, spacing) for _, _, _, crop, spacing in rows]
            if pending is not None:
                collect(pending[0], pending[1].get())
                pending = None
            if pool is None:
                collect(rows, [crop_features(job) for job in jobs])
            else:
                pending = (rows, pool.map_async(crop_features, jobs, chunksize=max(1, math.ceil(len(jobs) / 8))))
        if pending is not None:
            collect(pending[0], pending[1].get())
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    return features, boxes, kinds
