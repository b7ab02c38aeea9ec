"""`AnnotationStore`: the SQLite file the viewer writes boxes and labels into and the trainer reads.

    with AnnotationStore.open("reads.cxra") as store:
        store.add_image("00000001_000.png", path="/data/nih/00000001_000.png", rows=1024, cols=1024)
        box_id = store.propose_box("00000001_000.png", "Cardiomegaly", (300, 400, 700, 800), model_name="m")
        store.correct_box(box_id, (310, 400, 690, 790), annotator="dr.a")
        store.corrections()          # {image_key: Corrections(boxes=[...], labels={...})}

Every edit appends a version (never UPDATE or DELETE); a box's current state is its highest version
and a deletion is a tombstone version. Labels are versioned the same way per (image, finding).
Image paths are stored as given; a relative one is relative to the store's folder.

Several viewers share one store, so no edit is lost and conflicts are surfaced, not merged:

    rec = store.box(box_id)                          # the version the user sees (say 3)
    store.correct_box(box_id, coords, "dr.a", expected_version=rec.version)
    # -> EditConflict (nothing written) if another viewer wrote version 4 meanwhile;
    #    err.current is that version, err.expected is 3; reload, then edit again

`accept_box`, `correct_box`, `relabel_box` and `delete_box` take `expected_version`; the check and
the append run in one `BEGIN IMMEDIATE` transaction (the write lock is held from before the check
until the commit), so of two processes editing the same version exactly one wins. Without
`expected_version` an edit builds on whatever version is current (a script's or an import's way).
To notice other processes' edits, poll `changes_since`:

    marker = store.marker()                          # before loading the current state
    marker, boxes, labels = store.changes_since(marker)   # every ~2 s: new versions, in write order
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence

from cxrviewer.annotations.base import StoreBase
from cxrviewer.annotations.records import (
    VALIDATED, BoxRecord, ChangeMarker, Coords, Corrections, EditConflict, LabelRecord, check_box, check_label,
    finding_name, utc_now,
)
from cxrviewer.annotations.schema import BadAnnotation

SAME_PROPOSAL_PX = 0.5  # a stored proposal whose original box is within this (pixels) is the same proposal
_BOX_COLUMNS = ("box_id, version, image_key, finding, x0, y0, x1, y1, orig_x0, orig_y0, orig_x1, orig_y1, "
                "status, annotator, created_at, model_name, model_sha256, note")
_CURRENT_BOXES = ("SELECT b." + _BOX_COLUMNS.replace(", ", ", b.") + " FROM boxes b JOIN (SELECT box_id, "
                  "MAX(version) AS v, MIN(rowid) AS first FROM boxes {where} GROUP BY box_id) m "
                  "ON b.box_id = m.box_id AND b.version = m.v")
_LABEL_COLUMNS = "image_key, finding, value, version, annotator, created_at, note"
_CURRENT_LABELS = ("SELECT l." + _LABEL_COLUMNS.replace(", ", ", l.") + " FROM labels l JOIN (SELECT image_key, "
                   "finding, MAX(version) AS v FROM labels {where} GROUP BY image_key, finding) m "
                   "ON l.image_key = m.image_key AND l.finding = m.finding AND l.version = m.v "
                   "ORDER BY l.image_key, l.finding")


def _box(row: Sequence) -> BoxRecord:
    orig = None if row[8] is None else (row[8], row[9], row[10], row[11])
    return BoxRecord(row[0], row[1], row[2], row[3], (row[4], row[5], row[6], row[7]), row[12], orig,
                     row[13], row[14], row[15], row[16], row[17])


class AnnotationStore(StoreBase):
    """Versioned, append-only boxes and labels per image in one SQLite file (see the module docstring)."""

    def _latest(self, conn: sqlite3.Connection, box_id: str, missing_ok: bool = False) -> BoxRecord | None:
        row = conn.execute(f"SELECT {_BOX_COLUMNS} FROM boxes WHERE box_id = ? ORDER BY version DESC LIMIT 1",
                           (box_id,)).fetchone()
        if row is None and not missing_ok:
            raise BadAnnotation(self.path, f"there is no box '{box_id}' in the store")
        return None if row is None else _box(row)

    def _append(self, conn: sqlite3.Connection, rec: BoxRecord) -> BoxRecord:
        o = rec.orig or (None, None, None, None)
        conn.execute(f"INSERT INTO boxes ({_BOX_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                     (rec.box_id, rec.version, rec.image_key, rec.finding, *rec.box, *o, rec.status,
                      rec.annotator, rec.created_at, rec.model_name, rec.model_sha256, rec.note))
        return rec

    def _edit(self, box_id: str, status: str, annotator: str, note: str, new_box: object = None,
              finding: str | None = None, expected_version: int | None = None) -> BoxRecord:
        """Append the next version of a live box with `status` (and new coordinates or finding if given).

        With `expected_version`, refuse (`EditConflict`, nothing written) unless that is still the
        box's current version; the check and the append share one write transaction.
        """
        annotator = self._annotator(annotator)
        if finding is not None:
            finding = finding_name(finding, self.path)
        with self._write() as conn:
            prev = self._latest(conn, box_id)
            if expected_version is not None and prev.version != int(expected_version):
                raise EditConflict(self.path, box_id, int(expected_version), prev)
            if prev.deleted:
                raise BadAnnotation(self.path, f"box '{box_id}' was deleted and cannot be {status}")
            coords = prev.box
            if new_box is not None:
                image = self._require_image(conn, prev.image_key)
                coords = check_box(new_box, self.path, image.rows, image.cols)
            return self._append(conn, BoxRecord(
                box_id, prev.version + 1, prev.image_key, finding or prev.finding, coords, status, prev.orig,
                annotator, utc_now(), prev.model_name, prev.model_sha256, note))

    def _new_box(self, image_key: str, finding: str, box: object, status: str, annotator: str, note: str,
                 model_name: str = "", model_sha256: str = "") -> str:
        finding = finding_name(finding, self.path)
        with self._write() as conn:
            image = self._require_image(conn, image_key)
            coords = check_box(box, self.path, image.rows, image.cols)
            if status == "proposed":  # the same proposal twice (two viewers touching one model box) is one box
                row = conn.execute(
                    "SELECT box_id FROM boxes WHERE image_key = ? AND version = 1 AND status = 'proposed' "
                    "AND finding = ? AND model_name = ? AND model_sha256 = ? AND abs(orig_x0 - ?) <= ? "
                    "AND abs(orig_y0 - ?) <= ? AND abs(orig_x1 - ?) <= ? AND abs(orig_y1 - ?) <= ? "
                    "ORDER BY rowid LIMIT 1",
                    (image_key, finding, model_name, model_sha256,
                     *(v for c in coords for v in (c, SAME_PROPOSAL_PX)))).fetchone()
                if row is not None:
                    return row[0]
            box_id = uuid.uuid4().hex
            orig = coords if status == "proposed" else None
            self._append(conn, BoxRecord(box_id, 1, image_key, finding, coords, status, orig, annotator,
                                         utc_now(), model_name, model_sha256, note))
        return box_id

    # -- boxes -------------------------------------------------------------------------------
    def propose_box(self, image_key: str, finding: str, box: Coords, model_name: str = "",
                    model_sha256: str = "", note: str = "") -> str:
        """Record a model's proposal (status `proposed`, orig = the box); returns its box id.

        A proposal already stored for the image (same finding, model name and sha256, original box
        within `SAME_PROPOSAL_PX`) is not stored again: its id is returned, whatever became of it
        since. The check and the insert share one write transaction, so two viewers touching the
        same model box at once record one proposal, and their edits of it then conflict as usual.
        """
        return self._new_box(image_key, finding, box, "proposed", "", note, model_name, model_sha256)

    def accept_box(self, box_id: str, annotator: str, note: str = "", *,
                   expected_version: int | None = None) -> BoxRecord:
        """The annotator confirms the box as it stands (status `accepted`).

        `expected_version`: the version the annotator saw; `EditConflict` if another edit replaced it.
        """
        return self._edit(box_id, "accepted", annotator, note, expected_version=expected_version)

    def correct_box(self, box_id: str, new_box: Coords, annotator: str, note: str = "", *,
                    expected_version: int | None = None) -> BoxRecord:
        """The annotator moves the box (status `corrected`; `orig` keeps the model's proposal)."""
        return self._edit(box_id, "corrected", annotator, note, new_box, expected_version=expected_version)

    def relabel_box(self, box_id: str, finding: str, annotator: str, note: str = "", *,
                    expected_version: int | None = None) -> BoxRecord:
        """The annotator names the box's finding anew (status `corrected`, as for a moved box)."""
        return self._edit(box_id, "corrected", annotator, note, finding=finding, expected_version=expected_version)

    def add_box(self, image_key: str, finding: str, box: Coords, annotator: str, note: str = "") -> str:
        """The annotator draws a box no model proposed (status `added`); returns its id."""
        return self._new_box(image_key, finding, box, "added", self._annotator(annotator), note)

    def import_box(self, image_key: str, finding: str, box: Coords, annotator: str, note: str = "") -> str:
        """A box from an outside table (status `imported`, the annotator vouching for it); returns its id."""
        return self._new_box(image_key, finding, box, "imported", self._annotator(annotator), note)

    def delete_box(self, box_id: str, annotator: str, note: str = "", *,
                   expected_version: int | None = None) -> BoxRecord:
        """A tombstone version (status `deleted`); history keeps every earlier version."""
        return self._edit(box_id, "deleted", annotator, note, expected_version=expected_version)

    def restore_box(self, record: BoxRecord, *, expected_version: int | None = None) -> bool:
        """Append `record`'s state (status, provenance, time) to its box unless it is already current.

        For restoring an export (`bbox_io.import_json`) or undoing an edit; returns True when a
        version was written. `expected_version` as for `correct_box` (the box must exist then).
        """
        if record.status not in VALIDATED | {"proposed", "deleted"}:
            raise BadAnnotation(self.path, f"box '{record.box_id}' has the unknown status '{record.status}'")
        finding = finding_name(record.finding, self.path)
        with self._write() as conn:
            image = self._require_image(conn, record.image_key)
            coords = check_box(record.box, self.path, image.rows, image.cols)
            orig = None if record.orig is None else check_box(record.orig, self.path, image.rows, image.cols)
            prev = self._latest(conn, record.box_id, missing_ok=expected_version is None)
            if expected_version is not None and prev.version != int(expected_version):
                raise EditConflict(self.path, record.box_id, int(expected_version), prev)
            if prev is not None and prev.image_key != record.image_key:
                raise BadAnnotation(self.path, f"box '{record.box_id}' belongs to image '{prev.image_key}', "
                                               f"not '{record.image_key}'")
            state = (finding, coords, record.status, orig, record.annotator)
            if prev is not None and (prev.finding, prev.box, prev.status, prev.orig, prev.annotator) == state:
                return False
            self._append(conn, BoxRecord(
                record.box_id, 1 if prev is None else prev.version + 1, record.image_key, finding, coords,
                record.status, orig, record.annotator, record.created_at or utc_now(), record.model_name,
                record.model_sha256, record.note))
            return True

    def current_boxes(self, image_key: str | None = None, include_deleted: bool = False) -> list[BoxRecord]:
        """The current version of every box (of one image if given), in the order the boxes were made."""
        where, args = ("WHERE image_key = ?", (image_key,)) if image_key is not None else ("", ())
        sql = _CURRENT_BOXES.format(where=where)
        if not include_deleted:
            sql += " WHERE b.status != 'deleted'"
        return [_box(r) for r in self._query(sql + " ORDER BY m.first", args)]

    def box(self, box_id: str) -> BoxRecord:
        """The current version of one box (a tombstone if deleted); `BadAnnotation` if unknown."""
        with self._lock:
            return self._latest(self._conn(), box_id)

    def history(self, box_id: str) -> list[BoxRecord]:
        """Every version of one box, oldest first; `BadAnnotation` if unknown."""
        rows = self._query(f"SELECT {_BOX_COLUMNS} FROM boxes WHERE box_id = ? ORDER BY version", (box_id,))
        if not rows:
            raise BadAnnotation(self.path, f"there is no box '{box_id}' in the store")
        return [_box(r) for r in rows]

    def image_history(self, image_key: str) -> tuple[list[BoxRecord], list[LabelRecord]]:
        """Every box version and every label version of one image, in the order they were written."""
        boxes = self._query(f"SELECT {_BOX_COLUMNS} FROM boxes WHERE image_key = ? ORDER BY rowid", (image_key,))
        labels = self._query(f"SELECT {_LABEL_COLUMNS} FROM labels WHERE image_key = ? ORDER BY rowid", (image_key,))
        return [_box(r) for r in boxes], [LabelRecord(*r) for r in labels]

    # -- other writers -----------------------------------------------------------------------
    def marker(self) -> ChangeMarker:
        """Where the store stands now: pass it to `changes_since` later to get what was written since.

        Take it before reading the state it stands for, so an edit made in between is reported
        (perhaps again), never missed.
        """
        boxes = self._query("SELECT COALESCE(MAX(rowid), 0) FROM boxes")[0][0]
        labels = self._query("SELECT COALESCE(MAX(rowid), 0) FROM labels")[0][0]
        return ChangeMarker(boxes, labels)

    def changes_since(self, marker: ChangeMarker | None = None
                      ) -> tuple[ChangeMarker, list[BoxRecord], list[LabelRecord]]:
        """(new marker, box versions, label versions) written after `marker` by anyone, this store included.

        Versions come in the order they were written (rows are append-only, so row ids only grow);
        None means from the start. Cheap when nothing changed (two index look-ups): poll it.
        """
        marker = marker or ChangeMarker()
        box_rows = self._query(f"SELECT rowid, {_BOX_COLUMNS} FROM boxes WHERE rowid > ? ORDER BY rowid",
                               (marker.boxes,))
        label_rows = self._query(f"SELECT rowid, {_LABEL_COLUMNS} FROM labels WHERE rowid > ? ORDER BY rowid",
                                 (marker.labels,))
        new = ChangeMarker(box_rows[-1][0] if box_rows else marker.boxes,
                           label_rows[-1][0] if label_rows else marker.labels)
        return new, [_box(r[1:]) for r in box_rows], [LabelRecord(*r[1:]) for r in label_rows]

    # -- labels ------------------------------------------------------------------------------
    def set_label(self, image_key: str, finding: str, value: float | None, annotator: str,
                  note: str = "") -> LabelRecord:
        """Set an image-level label: 1 present, 0 absent, None back to unknown (a new version)."""
        return self._put_label(LabelRecord(image_key, finding, value, 0, self._annotator(annotator), "", note))

    def restore_label(self, record: LabelRecord) -> bool:
        """Append `record` (value, annotator, time) unless it is already the current state; True if written."""
        current = self.current_labels(record.image_key)
        finding = finding_name(record.finding, self.path)
        value = check_label(record.value, self.path)
        if any(c.finding == finding and (c.value, c.annotator) == (value, record.annotator) for c in current):
            return False
        self._put_label(record)
        return True

    def _put_label(self, rec: LabelRecord) -> LabelRecord:
        finding = finding_name(rec.finding, self.path)
        value = check_label(rec.value, self.path)
        with self._write() as conn:
            self._require_image(conn, rec.image_key)
            version = conn.execute("SELECT COALESCE(MAX(version), 0) FROM labels WHERE image_key = ? AND "
                                   "finding = ?", (rec.image_key, finding)).fetchone()[0] + 1
            out = LabelRecord(rec.image_key, finding, value, version, rec.annotator, rec.created_at or utc_now(),
                              rec.note)
            conn.execute(f"INSERT INTO labels ({_LABEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (out.image_key, out.finding, out.value, out.version, out.annotator, out.created_at,
                          out.note))
        return out

    def current_labels(self, image_key: str | None = None) -> list[LabelRecord]:
        """The current version of every label (of one image if given), cleared ones included."""
        where, args = ("WHERE image_key = ?", (image_key,)) if image_key is not None else ("", ())
        return [LabelRecord(*row) for row in self._query(_CURRENT_LABELS.format(where=where), args)]

    def labels(self, image_key: str) -> dict[str, float]:
        """The current labels of one image ({finding: 1.0 or 0.0}; cleared ones left out)."""
        return {r.finding: float(r.value) for r in self.current_labels(image_key) if r.value is not None}

    def corrections(self) -> dict[str, Corrections]:
        """Per image, the clinician-validated boxes (never proposals or deleted ones) and the labels."""
        out: dict[str, Corrections] = {}
        for rec in self.current_boxes():
            if rec.validated:
                out.setdefault(rec.image_key, Corrections()).boxes.append((rec.finding, *rec.box))
        for rec in self.current_labels():
            if rec.value is not None:
                out.setdefault(rec.image_key, Corrections()).labels[rec.finding] = float(rec.value)
        return out
