"""`BoxEditor`: one annotator's box edits on one image at a time, committed to the store as they are
made, with undo and redo (Qt-free; the viewer wraps it in `cxrviewer.gui.box_model`).

    editor = BoxEditor(store, annotator="dr.a")
    editor.open_image(ImageRef("1.2.3", path, patient_id="7", rows=2048, cols=2048))
    editor.set_proposals([ModelBox("Effusion", (10, 20, 300, 400), 0.8, "default", sha)])
    box = editor.boxes()[0]                       # the model's box, not yet in the store
    box_id = editor.move(box.box_id, (12, 20, 310, 400))   # proposed + corrected, committed now
    editor.undo(); editor.redo()

A model box lives only in memory until the annotator touches it: the first edit records it as the
model's proposal (`propose_box`, keeping the model name and sha256 and the original box) and then
the edit itself, in one undo step. A proposal whose original box is already in the store (accepted,
corrected, rejected or deleted earlier, by anyone) is not shown again.

Every write names the version it was made on (`expected_version`), so an edit on a box another
viewer changed meanwhile raises `EditConflict` and writes nothing; the caller reloads and shows the
other version. Undo appends a new version that restores the earlier state: the history keeps all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cxrviewer.annotations.records import BoxRecord, Coords, EditConflict
from cxrviewer.annotations.store import SAME_PROPOSAL_PX, AnnotationStore

MODEL, CLINICIAN = "model", "clinician"


@dataclass(frozen=True)
class ImageRef:
    """The image being edited, as the store registers it (key: SOPInstanceUID for DICOM, else file name)."""

    key: str
    path: Path | None = None
    patient_id: str = ""
    study_uid: str = ""
    rows: int | None = None
    cols: int | None = None

    @classmethod
    def of(cls, image) -> ImageRef:
        """The reference for a loaded `cxrviewer.io.image.ImageData`."""
        meta = image.meta
        key = meta.sop_instance_uid or Path(image.path).name
        rows, cols = image.shape[:2]
        return cls(key, Path(image.path), meta.patient_id, meta.study_uid, int(rows), int(cols))


@dataclass(frozen=True)
class ModelBox:
    """A box a model proposed for a finding (image pixels, half-open), not yet in the store."""

    finding: str
    box: Coords
    score: float = 0.0
    model_name: str = ""
    model_sha256: str = ""


@dataclass(frozen=True)
class ShownBox:
    """A box as the viewer shows it: a stored box or an untouched model proposal."""

    box_id: str  # the store's id, or "proposal:N" for an untouched model box
    finding: str
    box: Coords
    kind: str  # MODEL (a proposal, stored or not) or CLINICIAN (validated by an annotator)
    status: str  # the store status; "proposed" for an untouched model box
    score: float | None = None
    record: BoxRecord | None = None  # None for an untouched model box

    @property
    def stored(self) -> bool:
        return self.record is not None


@dataclass(frozen=True)
class _Step:
    """One undoable edit: the box's state before (None: the edit created it) and after."""

    box_id: str
    before: BoxRecord | None
    after: BoxRecord
    what: str


class BoxEditor:
    """Edits of one annotator, committed at once; per-image undo/redo stacks (see module docstring)."""

    def __init__(self, store: AnnotationStore, annotator: str) -> None:
        self.store = store
        self.annotator = annotator
        self.image: ImageRef | None = None
        self._proposals: list[ModelBox] = []
        self._undo: dict[str, list[_Step]] = {}
        self._redo: dict[str, list[_Step]] = {}
        self._registered: set[str] = set()
        self._known: dict[str, int] = {}  # box id -> the version this editor last wrote or undid to

    # --- the image and what is shown ------------------------------------------------------
    def open_image(self, image: ImageRef | None) -> None:
        """Make `image` current (nothing is written until the first edit); proposals are cleared."""
        self.image = image
        self._proposals = []

    def set_proposals(self, proposals: list[ModelBox]) -> None:
        """The current model's boxes for the current image (replacing earlier ones)."""
        self._proposals = list(proposals)

    def boxes(self, finding: str | None = None) -> list[ShownBox]:
        """Stored boxes of the image (live ones) then untouched proposals; of one finding if given."""
        if self.image is None:
            return []
        stored = self.store.current_boxes(self.image.key, include_deleted=True)
        shown = [_shown(r) for r in stored if not r.deleted]
        for i, p in enumerate(self._proposals):
            if not any(_same_proposal(r, p) for r in stored):
                shown.append(ShownBox(f"proposal:{i}", p.finding, tuple(map(float, p.box)), MODEL, "proposed",
                                      p.score))
        return [b for b in shown if finding is None or b.finding == finding]

    def box(self, box_id: str) -> ShownBox | None:
        return next((b for b in self.boxes() if b.box_id == box_id), None)

    # --- edits: each is committed now and is one undo step --------------------------------
    def move(self, box_id: str, coords: Coords, seen: int | None = None) -> str:
        """Move or resize a box (`corrected`); returns its store id.

        `seen`: the store version the annotator was looking at (default: the current one); when
        another viewer wrote since, the edit raises `EditConflict` and writes nothing. The same
        holds for the other edits.
        """
        return self._edit(box_id, "move", seen, lambda rec, v: self.store.correct_box(
            rec.box_id, coords, self.annotator, expected_version=v))

    def accept(self, box_id: str, seen: int | None = None) -> str:
        return self._edit(box_id, "accept", seen, lambda rec, v: self.store.accept_box(
            rec.box_id, self.annotator, expected_version=v))

    def reject(self, box_id: str, seen: int | None = None) -> str:
        """Reject a model box (a tombstone noted `rejected`; the proposal stays in the history)."""
        return self._edit(box_id, "reject", seen, lambda rec, v: self.store.delete_box(
            rec.box_id, self.annotator, note="rejected", expected_version=v))

    def delete(self, box_id: str, seen: int | None = None) -> str:
        return self._edit(box_id, "delete", seen, lambda rec, v: self.store.delete_box(
            rec.box_id, self.annotator, expected_version=v))

    def relabel(self, box_id: str, finding: str, seen: int | None = None) -> str:
        return self._edit(box_id, "relabel", seen, lambda rec, v: self.store.relabel_box(
            rec.box_id, finding, self.annotator, expected_version=v))

    def add(self, finding: str, coords: Coords) -> str:
        """A box the annotator draws (`added`); returns its id."""
        image = self._require_image()
        self._register(image)
        box_id = self.store.add_box(image.key, finding, coords, self.annotator)
        after = self.store.box(box_id)
        self._push(_Step(box_id, None, after, "add"))
        self._known[box_id] = after.version
        return box_id

    def _edit(self, box_id: str, what: str, seen: int | None, write) -> str:
        image = self._require_image()
        shown = self.box(box_id)
        if shown is None:
            if not box_id.startswith("proposal:"):  # deleted by another viewer meanwhile
                current = self.store.box(box_id)
                raise EditConflict(self.store.path, box_id, seen or current.version - 1, current)
            taken = self._stored_proposal(int(box_id.split(":", 1)[1]))
            if taken is not None:  # another viewer touched this model box since it was shown
                raise EditConflict(self.store.path, taken.box_id, 0, taken)
            raise KeyError(f"no box '{box_id}' on {image.key}")
        if shown.record is None:  # an untouched model box: record the proposal first
            self._register(image)
            p = self._proposals[int(box_id.split(":", 1)[1])]
            new_id = self.store.propose_box(image.key, p.finding, p.box, p.model_name, p.model_sha256)
            before = self.store.box(new_id)
            if before.version > 1:  # another viewer recorded and edited this proposal since it was shown
                raise EditConflict(self.store.path, before.box_id, 1, before)
        else:
            before = shown.record
        after = write(before, before.version if shown.record is None or seen is None else seen)
        self._push(_Step(before.box_id, before, after, what))
        self._known[before.box_id] = after.version
        return before.box_id

    def _stored_proposal(self, index: int) -> BoxRecord | None:
        """The stored box (current version) that proposal `index` became, if any."""
        if not 0 <= index < len(self._proposals):
            return None
        stored = self.store.current_boxes(self._require_image().key, include_deleted=True)
        return next((r for r in stored if _same_proposal(r, self._proposals[index])), None)

    # --- undo / redo ----------------------------------------------------------------------
    def can_undo(self) -> bool:
        return bool(self.image and self._undo.get(self.image.key))

    def can_redo(self) -> bool:
        return bool(self.image and self._redo.get(self.image.key))

    def undo_text(self) -> str:
        return self._undo[self.image.key][-1].what if self.can_undo() else ""

    def redo_text(self) -> str:
        return self._redo[self.image.key][-1].what if self.can_redo() else ""

    def undo(self) -> str | None:
        """Restore the state before the last edit (a new version); returns the box id, None if nothing to undo.

        `EditConflict` when another viewer changed the box since; the step is dropped then.
        """
        if not self.can_undo():
            return None
        step = self._undo[self.image.key].pop()
        self._restore(step.box_id, step.before)
        self._redo.setdefault(self.image.key, []).append(step)
        return step.box_id

    def redo(self) -> str | None:
        if not self.can_redo():
            return None
        step = self._redo[self.image.key].pop()
        self._restore(step.box_id, step.after)
        self._undo.setdefault(self.image.key, []).append(step)
        return step.box_id

    def _restore(self, box_id: str, state: BoxRecord | None) -> BoxRecord:
        current = self.store.box(box_id)
        version = self._known[box_id]  # the version this editor last left the box at
        if current.version != version:
            raise EditConflict(self.store.path, box_id, version, current)
        if state is None or state.deleted:
            rec = current if current.deleted else self.store.delete_box(
                box_id, self.annotator, note="undo", expected_version=version)
        else:
            annotator = self.annotator if state.status != "proposed" else state.annotator
            self.store.restore_box(replace(state, annotator=annotator, created_at="", note="undo"),
                                   expected_version=version)
            rec = self.store.box(box_id)
        self._known[box_id] = rec.version
        return rec

    # --- helpers --------------------------------------------------------------------------
    def _push(self, step: _Step) -> None:
        key = self._require_image().key
        self._undo.setdefault(key, []).append(step)
        self._redo[key] = []

    def _require_image(self) -> ImageRef:
        if self.image is None:
            raise RuntimeError("no image is open for editing")
        return self.image

    def _register(self, image: ImageRef) -> None:
        if image.key in self._registered:
            return
        self.store.add_image(image.key, path=image.path, patient_id=image.patient_id, study_uid=image.study_uid,
                             rows=image.rows, cols=image.cols)
        self._registered.add(image.key)


def _shown(record: BoxRecord) -> ShownBox:
    kind = MODEL if record.status == "proposed" else CLINICIAN
    return ShownBox(record.box_id, record.finding, tuple(record.box), kind, record.status, None, record)


def _same_proposal(record: BoxRecord, proposal: ModelBox) -> bool:
    if record.orig is None:
        return False
    if proposal.model_sha256 and record.model_sha256 and record.model_sha256 != proposal.model_sha256:
        return False
    return all(abs(a - b) <= SAME_PROPOSAL_PX for a, b in zip(record.orig, proposal.box))
