"""Annotation store: versioned boxes and labels the viewer writes and the trainer reads (Qt-free).

`AnnotationStore.open(path)` opens (or creates) one SQLite file in WAL mode that several annotators
and processes may share. Every edit appends a version; `current_boxes()`, `labels()` and
`corrections()` give the current state, `history(box_id)` every version. An edit given the
`expected_version` the user saw raises `EditConflict` (writing nothing) when another annotator got
there first; `changes_since(marker)` lists what other processes wrote, for a viewer to refresh.
`bbox_io` reads and writes the NIH `BBox_List_2017.csv` format and a JSON export with full provenance.
"""

from cxrviewer.annotations.records import (
    FINDING_ALIASES, STATUSES, VALIDATED, BoxRecord, ChangeMarker, Coords, CorrectedBox, Corrections, EditConflict,
    ImageRecord, LabelRecord,
)
from cxrviewer.annotations.schema import SCHEMA_VERSION, BadAnnotation, BadStore
from cxrviewer.annotations.store import AnnotationStore

__all__ = [
    "FINDING_ALIASES", "SCHEMA_VERSION", "STATUSES", "VALIDATED", "AnnotationStore", "BadAnnotation",
    "BadStore", "BoxRecord", "ChangeMarker", "Coords", "CorrectedBox", "Corrections", "EditConflict", "ImageRecord",
    "LabelRecord",
]
