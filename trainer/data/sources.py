"""Training data sources: one `Record` per image, a `DataSource` holding them, a registry by kind.

A source is named on the command line as `KIND:PATH` (`nih:/data/nih`, `chexpert:/data/CheXpert-v1.0-small`,
`synthetic:/data/nih-sample`) and opened with `open_source`. Each kind registers a builder with
`@register_source("kind")`; a builder is called as `builder(root, labels=..., seed=..., **options)`
and returns a `DataSource`. Kinds still to come (`dicom:FOLDER`, `store:DB`) slot in the same way.

Labels are a float32 vector over the chosen label space: 1 present, 0 absent, NaN unknown (a
finding the source does not annotate, or an uncertain label under the "ignore" policy). Losses
must mask NaN entries out.

Boxes are `(class_name, x0, y0, x1, y1)` in the image file's own pixel coordinates with half-open
pixel edges: pixel (i, j) covers [j, j+1) x [i, i+1), so a box covering columns 10..19 is x0=10, x1=20.
"""

from __future__ import annotations

import copy
import gc
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrviewer.errors import BadLabels, CxrError, MissingFile
from cxrviewer.io.labels import NIH_FINDINGS
from cxrviewer.models.spec import DEFAULT_TARGETS

if TYPE_CHECKING:
    from cxrviewer.io.image import ImageData

Box = tuple[str, float, float, float, float]
SPLITS: tuple[str, ...] = ("train", "val", "test")

CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)

LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "default8": DEFAULT_TARGETS,  # the eight findings the shipped models score
    "nih14": NIH_FINDINGS,  # all fourteen NIH ChestX-ray14 findings
    "chexpert14": CHEXPERT_OBSERVATIONS,  # CheXpert's fourteen observations
}


class UnknownSource(CxrError, ValueError):
    """A data source named with an unknown kind or not written as `KIND:PATH`."""


@dataclass(slots=True, eq=False)
class Record:
    """One image of a data source (see the module docstring for labels and boxes).

    Compared by identity (`eq=False`): the labels are an array, and two records of one image in two
    sources are still two records.
    """

    image_id: str  # unique within the source
    path: Path | None  # None when the images are absent (metadata-only) or generated on demand
    patient_id: str
    study_id: str
    view: str = ""  # PA, AP, LL, RL, LAT, ... ("" unknown)
    laterality: str = ""  # "" unknown
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    boxes: list[Box] = field(default_factory=list)
    sex: str = ""  # "M", "F" or ""
    age: int | None = None
    split: str = "train"  # "train" | "val" | "test"


class DataSource:
    """The records of one data source over one label space, with a uniform image loader."""

    def __init__(self, kind: str, root: Path, records: list[Record], label_names: Sequence[str],
                 *, seed: int = 0, notes: Iterable[str] = ()) -> None:
        self.kind = kind
        self.root = Path(root)
        self.records = records
        self.label_names = tuple(label_names)
        self.seed = seed
        self.notes = list(notes)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.kind}:{self.root} {len(self.records)} records, {len(self.label_names)} labels>"

    def subset(self, split: str | Iterable[str]) -> "DataSource":
        """A source of the same kind holding only the records of `split` (a name or several)."""
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; the splits are {', '.join(SPLITS)}")
        other = copy.copy(self)
        other.records = [r for r in self.records if r.split in wanted]
        other.notes = list(self.notes)
        return other

    def label_matrix(self) -> np.ndarray:
        """Labels of all records as a float32 array [N, K] (NaN = unknown)."""
        if not self.records:
            return np.zeros((0, len(self.label_names)), np.float32)
        return np.stack([r.labels for r in self.records]).astype(np.float32, copy=False)

    def patients(self) -> set[str]:
        return {r.patient_id for r in self.records}

    def load_image(self, record: Record) -> "ImageData":
        """Decode the record's image with `cxrviewer.io.load_image`, identifiers from the record."""
        from cxrviewer.io import load_image

        if record.path is None:
            raise MissingFile(self.root / record.image_id, "this source has no image files (metadata only)")
        image = load_image(record.path, labels={})
        meta = image.meta
        meta.patient_id = meta.patient_id or record.patient_id
        meta.view_position = meta.view_position or record.view
        meta.laterality = meta.laterality or record.laterality
        meta.patient_sex = meta.patient_sex or record.sex
        if not meta.patient_age and record.age is not None:
            meta.patient_age = f"{record.age:03d}Y"
        if not meta.labels:
            meta.labels = tuple(n for n, v in zip(self.label_names, record.labels) if v == 1)
        return image

    def load(self, record: Record) -> np.ndarray:
        """The record's pixels as float32 [H, W] (modality values)."""
        return self.load_image(record).pixels


Builder = Callable[..., DataSource]
SOURCES: dict[str, Builder] = {}


def register_source(kind: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(root: Path, *, labels, seed, **options) -> DataSource` as `kind`."""

    def decorate(builder: Builder) -> Builder:
        SOURCES[kind] = builder
        return builder

    return decorate


def resolve_label_space(labels: str | Sequence[str]) -> tuple[str, ...]:
    """A label-space name ("default8", "nih14", "chexpert14") or an explicit list of finding names."""
    if isinstance(labels, str):
        if labels not in LABEL_SPACES:
            raise BadLabels(None, f"unknown label space '{labels}' (known: {', '.join(LABEL_SPACES)})")
        return LABEL_SPACES[labels]
    names = tuple(str(n) for n in labels)
    if not names or len(set(names)) != len(names):
        raise BadLabels(None, "a label space needs at least one finding name and no duplicates")
    return names


def parse_source(spec: str) -> tuple[str, Path]:
    """`"nih:/data/nih"` -> ("nih", Path("/data/nih"))."""
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise UnknownSource(None, f"'{spec}' is not a data source; write KIND:PATH, e.g. nih:/data/nih")
    return kind.strip().lower(), Path(path).expanduser()


def _check_options(kind: str, builder: Builder, options: dict) -> None:
    """Refuse an option the kind's builder does not take, naming the ones it does."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("labels", "seed")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UnknownSource(None, f"the {kind} data source has no option {', '.join(unknown)} "
                                  f"(its options: {', '.join(known) or 'none'})")


def open_source(spec: str, labels: str | Sequence[str] = "default8", seed: int = 0, **options) -> DataSource:
    """Open a data source named `KIND:PATH` over a label space; `options` go to the kind's builder.

    Raises `UnknownSource` for an unknown kind, `MissingFile` for a missing folder or table and
    `BadLabels` for a malformed table or label space, each with a one-sentence message.
    """
    kind, root = parse_source(spec)
    builder = SOURCES.get(kind)
    if builder is None:
        raise UnknownSource(None, f"unknown data source kind '{kind}' (known: {', '.join(sorted(SOURCES))})")
    if not root.exists():
        raise MissingFile(root, f"the folder for the {kind} data source does not exist")
    label_names = resolve_label_space(labels)
    _check_options(kind, builder, options)
    # Building creates ~10 objects per row; the cyclic GC would rescan them over and over
    # (half the build time of the 112,120-row NIH table). None of them form cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return builder(root, labels=label_names, seed=seed, **options)
    finally:
        if was_enabled:
            gc.enable()
