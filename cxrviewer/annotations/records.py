"""The store's value types (`ImageRecord`, `BoxRecord`, `Corrections`) and the checks on boxes and names.

Boxes are `(x0, y0, x1, y1)` in the image file's own pixel coordinates with half-open edges
(x1 = last column + 1). A box status says where a version came from: `proposed` by a model,
`accepted` / `corrected` / `added` / `imported` by an annotator (the validated ones a trainer may
learn from), `deleted` a tombstone. `EditConflict` is the refusal of an edit made on a version
another annotator has since replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cxrviewer.annotations.schema import BadAnnotation

Coords = tuple[float, float, float, float]
CorrectedBox = tuple[str, float, float, float, float]  # (finding, x0, y0, x1, y1), as trainer Records hold

STATUSES: tuple[str, ...] = ("proposed", "accepted", "corrected", "added", "imported", "deleted")
VALIDATED: frozenset[str] = frozenset({"accepted", "corrected", "added", "imported"})
FINDING_ALIASES = {"Infiltrate": "Infiltration"}  # the NIH box table's name for the label's finding


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image the store knows; `rows`/`cols` (its pixel size) are None when unknown."""

    image_key: str  # SOPInstanceUID for DICOM, else the file name
    path: Path | None = None
    patient_id: str = ""
    study_uid: str = ""
    rows: int | None = None
    cols: int | None = None
    added_at: str = ""


@dataclass(frozen=True, slots=True)
class BoxRecord:
    """One version of one box, with its provenance; `orig` is the model proposal it started from."""

    box_id: str
    version: int
    image_key: str
    finding: str
    box: Coords
    status: str
    orig: Coords | None = None
    annotator: str = ""
    created_at: str = ""
    model_name: str = ""
    model_sha256: str = ""
    note: str = ""

    @property
    def validated(self) -> bool:
        """True when a clinician stands behind this version (accepted/corrected/added/imported)."""
        return self.status in VALIDATED

    @property
    def deleted(self) -> bool:
        return self.status == "deleted"


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """One version of one image-level label: 1.0 present, 0.0 absent, None cleared (unknown)."""

    image_key: str
    finding: str
    value: float | None
    version: int = 1
    annotator: str = ""
    created_at: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class ChangeMarker:
    """How far a reader has seen the store: the last box and label row it read (see `changes_since`)."""

    boxes: int = 0
    labels: int = 0


@dataclass(slots=True)
class Corrections:
    """What annotators said about one image: validated boxes and image-level finding labels."""

    boxes: list[CorrectedBox] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)


class EditConflict(BadAnnotation):
    """An edit made on `expected` (a version the editor saw) while the box is now at `current`.

    Nothing was written. `current` is the other annotator's version (annotator, created_at, status,
    box); the message says who changed the box and when, e.g. "reads.cxra: box 3f2a9c1e… was changed
    by dr.b at 2026-11-23T10:01:07Z (now version 4, you edited version 3); reload to see it."
    """

    def __init__(self, store: Path | None, box_id: str, expected: int, current: BoxRecord) -> None:
        self.box_id = box_id
        self.expected = int(expected)
        self.current = current
        who = f"by {current.annotator}" if current.annotator else (
            f"by the model '{current.model_name}'" if current.model_name else "by another edit")
        what = "deleted" if current.deleted else "changed"
        super().__init__(store, f"box {box_id[:8]}… was {what} {who} at {short_time(current.created_at)} "
                                f"(now version {current.version}, you edited version {self.expected}); "
                                "reload to see it")

    def __reduce__(self) -> tuple:  # crosses process boundaries (multiprocessing) intact
        return type(self), (self.path, self.box_id, self.expected, self.current)


def short_time(stamp: str) -> str:
    """A stored UTC time as 2026-11-23T10:01:07Z (the text unchanged when it is not ISO-8601)."""
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return str(stamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    """The current time as UTC ISO-8601 with milliseconds, e.g. 2024-05-01T12:00:00.000+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def finding_name(name: str, store: Path | None) -> str:
    """A finding name stripped and with the NIH box table's alias fixed; empty names are refused."""
    text = str(name).strip()
    if not text:
        raise BadAnnotation(store, "a box or label needs a finding name")
    return FINDING_ALIASES.get(text, text)


def check_box(box: object, store: Path | None, rows: int | None = None, cols: int | None = None) -> Coords:
    """`box` as four floats after checking: finite, x1 > x0, y1 > y0, inside the image if its size is known."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise BadAnnotation(store, f"a box must be four numbers (x0, y0, x1, y1), not {box!r}") from exc
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BadAnnotation(store, f"the box {box!r} has a coordinate that is not a finite number")
    if not (x1 > x0 and y1 > y0):
        raise BadAnnotation(store, f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty (x1 must exceed x0 "
                                   "and y1 exceed y0)")
    if x0 < 0 or y0 < 0 or (cols is not None and x1 > cols) or (rows is not None and y1 > rows):
        size = f"{cols}x{rows}" if rows is not None and cols is not None else "non-negative coordinates"
        raise BadAnnotation(store, f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the image "
                                   f"({size})")
    return (x0, y0, x1, y1)


def check_label(value: float | None, store: Path | None) -> float | None:
    """A label value: 1.0 present, 0.0 absent, None (or NaN) cleared back to unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise BadAnnotation(store, f"a label value must be 1, 0 or None, not {value!r}") from exc
    if number not in (0.0, 1.0):
        raise BadAnnotation(store, f"a label value must be 1, 0 or None, not {value!r}")
    return number
