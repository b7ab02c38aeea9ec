"""CIA-Net's pictures from the training data: the "No Finding" negative bank and the canonical chest.

CIA-Net (Liu et al., ICCV 2019) pairs every image with a negative (an image without disease) of
similar structure, found by perceptual hash (Sec. 4.3.2), and aligns every image to a canonical
chest, the mean of 500 randomly collected negative images (Sec. 3.1). The model carries both
(`CIANet.set_negative_bank`, `CIANet.set_canonical_chest`); this module chooses them:

- `no_finding_indices(source, records)`: the "No Finding" records among `records`: the label space's
  "No Finding" column is 1 where it has one, else every label is known and 0. With a label space
  narrower than the source's findings (default8) an image whose findings all lie outside it counts
  as "No Finding": open the source with nih14 for the exact set.
- `select_negative_bank(source, records, count, size, seed)`: `count` distinct "No Finding" images
  spread over the pool by perceptual hash: farthest-point selection on the Hamming distance of
  the 16 x 16 DCT pHash (256 bits, `cxrviewer.models.phash`), from a seeded random first image, over
  a seeded sample of at most `candidates` pool images. Returns their record indices and the images
  as model inputs [count, C, H, W] (the spec's preprocessing: intensity step, resize, mean/std),
  what `CIANet.set_negative_bank` takes.
- `canonical_chest_from(source, records, size, limit, seed)`: the pixel-wise mean of `limit`
  (the paper: 500) seeded random "No Finding" images through `build_canonical_chest`, as a uint8
  picture [H, W]; `spec.preprocess` of it is what `CIANet.set_canonical_chest` takes.

Deviations: the paper matches against all 63,000 negatives; the model holds a small bank, so the
bank is chosen to cover the pool (farthest points) rather than at random. The paper crops the mean
picture to the lungs by hand; `crop` (fractions top, bottom, left, right) does that when given.
The hash is taken on the model-input picture, as `CIANet.match_negatives` hashes its inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cxrviewer.errors import CxrError
from cxrviewer.models.cianet_bank import build_canonical_chest
from cxrviewer.models.phash import hamming, phash
from cxrviewer.models.preprocess import intensity_01
from cxrviewer.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from cxrviewer.trainer.data.sources import DataSource

NO_FINDING = "No Finding"
CANDIDATES = 2000  # pool images hashed for the farthest-point selection (a seeded sample of a larger pool)


class BankError(CxrError, ValueError):
    """The training records cannot supply the negative bank or the canonical chest."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


def _indices(source: "DataSource", records: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if records is None:
        return np.flatnonzero([r.split == "train" for r in source.records])
    chosen = np.asarray(records, dtype=np.int64).reshape(-1)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= len(source.records)):
        raise BankError(f"record indices must lie in 0..{len(source.records) - 1}")
    return chosen


def no_finding_indices(source: "DataSource", records: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """The "No Finding" record indices among `records` (default: the source's training split), in order."""
    chosen = _indices(source, records)
    labels = source.label_matrix()[chosen] if chosen.size else np.zeros((0, len(source.label_names)), np.float32)
    if NO_FINDING in source.label_names:
        keep = np.nan_to_num(labels[:, source.label_names.index(NO_FINDING)], nan=0.0) > 0.5
    else:
        keep = ~np.isnan(labels).any(axis=1) & (np.nan_to_num(labels) == 0).all(axis=1)
    return chosen[keep]


def _spec(spec: ModelSpec | None, size: int | tuple[int, int]) -> ModelSpec:
    shape = (int(size), int(size)) if np.isscalar(size) else tuple(int(v) for v in size)
    if spec is None:
        return ModelSpec("cianet", input_size=shape)
    return dataclasses.replace(spec, input_size=shape)


def _pool(source: "DataSource", records: Sequence[int] | np.ndarray | None, needed: int, what: str) -> np.ndarray:
    pool = no_finding_indices(source, records)
    if len(pool) < needed:
        raise BankError(f"the {what} needs at least {needed} 'No Finding' training images, "
                        f"the records hold {len(pool)}")
    return pool


def farthest_points(hashes: np.ndarray, count: int, first: int) -> np.ndarray:
    """Indices of `count` codes [N, bits] chosen greedily, each the farthest (Hamming) from those before;
    ties go to the lowest index. Distinct indices; needs count <= N."""
    if not 0 < count <= len(hashes):
        raise BankError(f"cannot choose {count} of {len(hashes)} hashes")
    chosen = [int(first)]
    nearest = np.asarray(hamming(hashes, hashes[first]), dtype=np.int64)
    nearest[first] = -1
    for _ in range(count - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, hamming(hashes, hashes[pick]))
        nearest[chosen] = -1
    return np.asarray(chosen, dtype=np.int64)


def select_negative_bank(source: "DataSource", records: Sequence[int] | np.ndarray | None, count: int,
                         size: int | tuple[int, int], seed: int, spec: ModelSpec | None = None,
                         candidates: int = CANDIDATES, hash_size: int = 16) -> tuple[np.ndarray, "torch.Tensor"]:
    """(record indices [count], model inputs [count, C, H, W]) of a pHash-diverse "No Finding" bank.

    `spec` gives the preprocessing (intensity, resize, channels, mean/std; default: a 1-channel spec
    with create_model's normalisation) at input size `size`; the same seed gives the same bank."""
    import torch

    if count < 1:
        raise BankError("the negative bank needs at least one image")
    if hash_size < 2:
        raise BankError("the hash size must be at least 2")
    model_spec = _spec(spec, size)
    pool = _pool(source, records, count, "negative bank")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(pool, size=min(len(pool), max(int(candidates), count)), replace=False))
    hashes = np.stack([phash(model_spec.preprocess(source.load_image(source.records[int(i)]))[0].numpy(), hash_size)
                       for i in sample])
    chosen = sample[farthest_points(hashes, count, int(rng.integers(len(sample))))]
    images = torch.cat([model_spec.preprocess(source.load_image(source.records[int(i)])) for i in chosen])
    return chosen, images


def _pictures(source: "DataSource", indices: np.ndarray, intensity: str) -> Iterator[np.ndarray]:
    for i in indices:
        yield intensity_01(source.load_image(source.records[int(i)]), intensity)


def canonical_chest_from(source: "DataSource", records: Sequence[int] | np.ndarray | None,
                         size: int | tuple[int, int], limit: int = 500, seed: int = 0,
                         crop: tuple[float, float, float, float] | None = None,
                         spec: ModelSpec | None = None) -> np.ndarray:
    """The canonical chest, uint8 [H, W]: the mean of `limit` seeded random "No Finding" images (all of
    them when fewer), each through the spec's intensity step, resized to `size`, optionally cropped."""
    if limit < 1:
        raise BankError("the canonical chest needs at least one image")
    model_spec = _spec(spec, size)
    pool = _pool(source, records, 1, "canonical chest")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(len(pool), int(limit)), replace=False))
    if crop is not None and not (len(crop) == 4 and 0 <= crop[0] < crop[1] <= 1 and 0 <= crop[2] < crop[3] <= 1):
        raise BankError(f"crop {crop} is not (top, bottom, left, right) fractions with top < bottom, left < right")
    return build_canonical_chest(_pictures(source, chosen, model_spec.intensity), model_spec.input_size, crop=crop)
