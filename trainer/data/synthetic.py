"""`synthetic:ROOT` — real normal radiographs with inserted lesions of known class and box.

ROOT is either an NIH-layout folder (its labels table picks the `No Finding` films, PA by default)
or any folder of PNGs (`ROOT/*.png` or `ROOT/images/*.png`; they are assumed to be normal films).
`n_images` records are planned at build time from `seed`: record i uses base film
`order[i % n_bases]` (a seeded permutation), is a negative (no lesion, pixels identical to the base
film) with probability `negative_fraction` (1/2), otherwise carries 1..`max_lesions` lesions of
distinct classes drawn from `classes` that are in the label space (see `lesions.py` for how each is
drawn). Boxes are known exactly at build time; pixels are generated on demand by `load_image`,
deterministically (the per-record generator is seeded by (seed, i)), and kept in an in-memory LRU
cache and, with `cache_dir`, as PNGs there (then `record.path` is that PNG, named
`synth_NNNNNN-<hash of the plan>.png` so a stale file is never reused; otherwise None).
Always read the pixels through `source.load_image(record)`: it generates what is not there yet.

Labels: 1 for the drawn classes, 0 for every other finding (the base films have none), so never
NaN. `patient_id`/`study_id` are the base film's: a split by patient keeps every synthetic
variant of one film (and every film of one patient) on one side. Split: seeded patient-disjoint 70/10/20.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path

import cv2
import numpy as np

from cxrviewer.errors import BadLabels, MissingFile
from cxrviewer.io.image import ImageData, ImageMeta
from cxrviewer.io.labels import NIH_FINDINGS
from cxrviewer.trainer.data.lesions import (
    LESION_MODEL_VERSION, SYNTHETIC_CLASSES, Lesion, noise_level, plan_lesion,
)
from cxrviewer.trainer.data.nih import find_table, image_size, list_images, open_nih
from cxrviewer.trainer.data.sources import DataSource, Record, register_source
from cxrviewer.trainer.data.splits import assign_splits


class SyntheticSource(DataSource):
    """A `DataSource` whose images are generated from a base film and a lesion plan per record."""

    def __init__(self, root: Path, records: list[Record], label_names: Sequence[str],
                 plans: dict[str, tuple[Path, list[Lesion]]],
                 *, seed: int, cache_dir: Path | None, cache_size: int, notes: list[str]) -> None:
        super().__init__("synthetic", root, records, label_names, seed=seed, notes=notes)
        self._plans = plans
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def base_path(self, record: Record) -> Path:
        """The real film the record's image is made from."""
        return self._plans[record.image_id][0]

    def lesions(self, record: Record) -> list[Lesion]:
        """The lesion models drawn into the record's image (empty for a negative)."""
        return list(self._plans[record.image_id][1])

    def render(self, record: Record) -> np.ndarray:
        """The record's 8-bit image as uint8 [H, W] (cached)."""
        cached = self._cache.get(record.image_id)
        if cached is not None:
            self._cache.move_to_end(record.image_id)
            return cached
        if record.path is not None and record.path.is_file():
            pixels = cv2.imread(str(record.path), cv2.IMREAD_UNCHANGED)
        else:
            pixels = self._generate(record)
            if record.path is not None:
                record.path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(record.path), pixels)
        pixels.setflags(write=False)
        self._cache[record.image_id] = pixels
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pixels

    def _generate(self, record: Record) -> np.ndarray:
        base_path, lesions = self._plans[record.image_id]
        base = load_base(base_path)
        if not lesions:
            return base
        rng = np.random.default_rng([self.seed, self._index(record), 1])
        image = base.astype(np.float32)
        sigma = noise_level(image)
        for lesion in lesions:
            image = lesion.draw(image, rng, sigma)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def _index(self, record: Record) -> int:
        return int(record.image_id.rsplit("_", 1)[1])

    def load_image(self, record: Record) -> ImageData:
        meta = ImageMeta(patient_id=record.patient_id, patient_sex=record.sex, view_position=record.view,
                         patient_age=f"{record.age:03d}Y" if record.age is not None else "", modality="DX",
                         body_part="CHEST", labels=tuple(n for n, v in zip(self.label_names, record.labels) if v == 1))
        return ImageData(path=record.path or self.root / f"{record.image_id}.png",
                         pixels=self.render(record).astype(np.float32), photometric="MONOCHROME2", bits_stored=8,
                         source_format="synthetic", meta=meta)


def load_base(path: Path) -> np.ndarray:
    """A base film as uint8 [H, W] (16-bit films are rescaled to 8 bits by their range)."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise MissingFile(path, "the base image for a synthetic lesion cannot be read")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2GRAY)
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.rint((arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.uint8)
    return arr


def _bases(root: Path, views: Sequence[str] | None, notes: list[str],
           patients: Collection[str] | None = None) -> list[Record]:
    """Normal films: `No Finding` rows of an NIH table (of `patients` only, when given), or every
    PNG of a plain folder."""
    if find_table(root, "Data_Entry_2017") is not None:
        nih = open_nih(root, labels=NIH_FINDINGS)
        normal = [r for r in nih.records if r.path is not None and not np.any(r.labels)
                  and (patients is None or r.patient_id in patients)]
        chosen = [r for r in normal if views is None or r.view in views] or normal
        notes.append(f"{len(chosen)} 'No Finding' films from the NIH table as bases")
        return chosen
    files = sorted({**list_images(root), **{p.name: p for p in root.glob("*.png")}}.items())
    if patients is not None:
        files = [(name, path) for name, path in files if Path(name).stem in patients]
    notes.append(f"{len(files)} PNG files as bases (assumed normal films)")
    return [Record(name, path, Path(name).stem, Path(name).stem, "PA") for name, path in files]


def _plan_digest(seed: int, index: int, base: Path, lesions: list[Lesion]) -> str:
    """A short hash of everything an image is made from: a cached PNG is reused only for that plan."""
    text = repr((LESION_MODEL_VERSION, seed, index, str(base.resolve()), lesions))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@register_source("synthetic")
def open_synthetic(root: Path, *, labels: Sequence[str], seed: int = 0, n_images: int = 200,
                   negative_fraction: float = 0.5, max_lesions: int = 1, classes: Sequence[str] = SYNTHETIC_CLASSES,
                   views: Sequence[str] | None = ("PA",), cache_dir: str | Path | None = None, cache_size: int = 64,
                   fractions: Sequence[float] = (0.7, 0.1, 0.2),
                   patients: Collection[str] | None = None) -> SyntheticSource:
    """Build the synthetic-lesion source (see the module docstring). `patients`: draw base films of
    these patient IDs only (e.g. a held-out fold's, to score localization on films no model saw)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFile(root, "the folder of base images for synthetic lesions does not exist")
    notes: list[str] = []
    bases = _bases(root, views, notes, patients)
    if not bases:
        raise MissingFile(root, "the folder holds no normal PNG films to insert lesions into")
    drawable = [c for c in classes if c in labels]
    if not drawable:
        raise BadLabels(None, f"none of the synthetic classes {', '.join(classes)} is in the label space")
    notes.append(f"lesion classes: {', '.join(drawable)}")
    order = np.random.default_rng(seed).permutation(len(bases))
    cache = Path(cache_dir) if cache_dir is not None else None
    sizes: dict[Path, tuple[int, int]] = {}
    records: list[Record] = []
    plans: dict[str, tuple[Path, list[Lesion]]] = {}
    for i in range(n_images):
        base = bases[int(order[i % len(bases)])]
        rng = np.random.default_rng([seed, i])
        lesions: list[Lesion] = []
        if rng.random() >= negative_fraction:
            k = int(rng.integers(1, min(max_lesions, len(drawable)) + 1))
            if base.path not in sizes:
                sizes[base.path] = image_size(base.path)
            width, height = sizes[base.path]
            for kind in rng.choice(drawable, size=k, replace=False).tolist():
                lesions.append(plan_lesion(kind, rng, width, height))
        shape = sizes.get(base.path, (0, 0))[::-1]
        placed = [(les, les.box(shape)) for les in lesions]
        lesions = [les for les, box in placed if box is not None]  # a lesion wholly off the film is dropped
        boxes = [(les.kind, *box) for les, box in placed if box is not None]
        vector = np.array([1.0 if any(les.kind == n for les in lesions) else 0.0 for n in labels], np.float32)
        image_id = f"synth_{i:06d}"
        path = cache / f"{image_id}-{_plan_digest(seed, i, base.path, lesions)}.png" if cache else None
        records.append(Record(image_id, path, base.patient_id, base.study_id, base.view, base.laterality, vector,
                              boxes, base.sex, base.age))
        plans[image_id] = (base.path, lesions)
    notes.append(assign_splits(records, fractions, seed))
    return SyntheticSource(root, records, labels, plans, seed=seed, cache_dir=cache, cache_size=cache_size, notes=notes)
