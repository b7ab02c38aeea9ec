"""Validation during training: probabilities on the validation split and their per-class AUC.

Images come from the same preprocessed-image cache as training, without augmentation, so the
validation input equals the inference path's up to the cache's 8-bit rounding (see image_cache).
The full evaluation (localization, reports) is `cxrviewer.trainer.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cxrviewer.metrics import mean_auc, roc_auc_per_class
from cxrviewer.trainer.batches import Item, collate, raise_bad_images


@torch.inference_mode()
def predict_indices(model, dataset, indices: np.ndarray, runtime, batch_size: int, workers: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K], labels [N, K] with NaN) for the records `indices`."""
    plan = [[Item("query", int(i), "none", 0) for i in indices[at:at + batch_size]]
            for at in range(0, len(indices), batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=plan, collate_fn=collate,
                                         num_workers=max(0, int(workers)))
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for batch in loader:
            raise_bad_images(batch)
            part = batch["query"]
            image = part["image"].to(runtime.device)
            if runtime.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            metadata = part["metadata"].to(runtime.device) if "metadata" in part else None
            with runtime.autocast():
                logits = model(image) if metadata is None else model(image, metadata)
            probs.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(part["labels"].numpy())
    finally:
        model.train(was_training)
    k = len(dataset.class_index)
    if not probs:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.float32)
    return np.concatenate(probs), np.concatenate(labels)


def validation_scores(model, dataset, indices: np.ndarray, names: Sequence[str], runtime, batch_size: int,
                      workers: int) -> dict:
    """{"auc": {finding: AUC or None}, "mean_auc": float or None} on the records `indices`."""
    if len(indices) == 0:
        return {"auc": {n: None for n in names}, "mean_auc": None}
    probs, labels = predict_indices(model, dataset, indices, runtime, batch_size, workers)
    auc = roc_auc_per_class(labels, probs, names)
    return {"auc": auc, "mean_auc": mean_auc(auc)}
