"""The annotation store: versions and history, current state, tombstones, corrections, concurrent
writers, edit conflicts between viewers, polling for other processes' edits, refusal of foreign
files, and the NIH box table / JSON import and export."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import multiprocessing
import pickle
import re
import sqlite3
from pathlib import Path

import pytest

from cxrviewer.annotations import AnnotationStore, BadAnnotation, BadStore, ChangeMarker, Corrections, EditConflict
from cxrviewer.annotations.bbox_io import export_bbox_csv, export_json, import_bbox_csv, import_json, read_bbox_csv
from cxrviewer.annotations.schema import SCHEMA_VERSION
from cxrviewer.errors import BadLabels, CxrError
from tests.conftest import SHARED_DATA

BBOX_TABLE = SHARED_DATA / "nih-metadata" / "BBox_List_2017.csv.gz"
IMG = "00000001_000.png"


@pytest.fixture
def store(tmp_path):
    with AnnotationStore.open(tmp_path / "reads.cxra") as s:
        s.add_image(IMG, path="/data/" + IMG, patient_id="1", rows=512, cols=512)
        yield s


def _one_sentence(exc: CxrError, name: str) -> None:
    text = str(exc)
    assert text.startswith(f"{name}: ") and text.endswith(".") and "\n" not in text, text


# --- versions, current state, tombstones ---------------------------------------------------------
def test_edits_append_versions_and_history_keeps_them(store):
    box_id = store.propose_box(IMG, "Cardiomegaly", (100, 200, 300, 400), model_name="densenet", model_sha256="ab12")
    store.accept_box(box_id, "dr.a")
    store.correct_box(box_id, (110, 205, 290, 410), "dr.b", note="tighter")
    hist = store.history(box_id)
    assert [h.version for h in hist] == [1, 2, 3]
    assert [h.status for h in hist] == ["proposed", "accepted", "corrected"]
    assert [h.annotator for h in hist] == ["", "dr.a", "dr.b"]
    assert hist[0].box == hist[1].box == (100, 200, 300, 400) and hist[2].box == (110, 205, 290, 410)
    assert all(h.orig == (100, 200, 300, 400) for h in hist)  # the proposal each version started from
    assert all(h.model_name == "densenet" and h.model_sha256 == "ab12" for h in hist)
    assert hist[2].note == "tighter" and hist[2].created_at.endswith("+00:00")
    assert hist[0].created_at <= hist[1].created_at <= hist[2].created_at
    assert store.box(box_id) == hist[2]
    with sqlite3.connect(store.path) as raw:  # nothing was overwritten
        assert raw.execute("SELECT count(*) FROM boxes WHERE box_id = ?", (box_id,)).fetchone()[0] == 3


def test_current_state_is_the_highest_version_per_box(store):
    store.add_image("other.png", rows=1024, cols=1024)
    a = store.propose_box(IMG, "Mass", (10, 10, 50, 50))
    b = store.add_box(IMG, "Nodule", (60, 60, 70, 70), "dr.a")
    c = store.add_box("other.png", "Effusion", (600, 600, 900, 1000), "dr.a")
    store.correct_box(a, (12, 12, 48, 48), "dr.a")
    store.correct_box(a, (14, 14, 46, 46), "dr.b")
    current = store.current_boxes()
    assert [r.box_id for r in current] == [a, b, c]  # in the order the boxes were made
    assert current[0].version == 3 and current[0].box == (14, 14, 46, 46) and current[0].annotator == "dr.b"
    assert current[1].orig is None and current[1].status == "added"
    assert [r.box_id for r in store.current_boxes("other.png")] == [c]
    assert store.current_boxes("unknown.png") == []


def test_delete_is_a_tombstone(store):
    keep = store.add_box(IMG, "Mass", (10, 10, 50, 50), "dr.a")
    gone = store.propose_box(IMG, "Nodule", (60, 60, 70, 70))
    store.accept_box(gone, "dr.a")
    tomb = store.delete_box(gone, "dr.b", note="artefact")
    assert tomb.status == "deleted" and tomb.version == 3 and tomb.box == (60, 60, 70, 70)
    assert [r.box_id for r in store.current_boxes()] == [keep]
    assert [r.box_id for r in store.current_boxes(include_deleted=True)] == [keep, gone]
    assert [h.status for h in store.history(gone)] == ["proposed", "accepted", "deleted"]
    for edit in (lambda: store.accept_box(gone, "dr.a"), lambda: store.correct_box(gone, (1, 1, 5, 5), "dr.a"),
                 lambda: store.delete_box(gone, "dr.a")):
        with pytest.raises(BadAnnotation, match="was deleted"):
            edit()
    assert len(store.history(gone)) == 3


def test_rows_are_append_only_even_for_raw_sql(store):
    box_id = store.add_box(IMG, "Mass", (10, 10, 50, 50), "dr.a")
    store.set_label(IMG, "Mass", 1, "dr.a")
    with sqlite3.connect(store.path) as raw:
        for sql in ("UPDATE boxes SET x0 = 0", "DELETE FROM boxes", "UPDATE labels SET value = 0",
                    "DELETE FROM labels"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(sql)
    assert store.box(box_id).box == (10, 10, 50, 50) and store.labels(IMG) == {"Mass": 1.0}


def test_corrections_hold_only_validated_boxes_and_labels(store):
    store.add_image("b.png", rows=512, cols=512)
    store.add_image("c.png")
    store.propose_box(IMG, "Mass", (1, 1, 9, 9))  # pure proposal: never a correction
    accepted = store.propose_box(IMG, "Nodule", (20, 20, 30, 30))
    store.accept_box(accepted, "dr.a")
    corrected = store.propose_box(IMG, "Infiltrate", (40, 40, 80, 80))  # the box table's name
    store.correct_box(corrected, (42, 40, 80, 78), "dr.a")
    deleted = store.add_box(IMG, "Mass", (100, 100, 120, 120), "dr.a")
    store.delete_box(deleted, "dr.a")
    store.import_box("b.png", "Effusion", (300, 300, 500, 500), "nih")
    store.set_label("b.png", "Effusion", 1, "dr.a")
    store.set_label("b.png", "Pneumonia", 0, "dr.a")
    store.propose_box("c.png", "Mass", (1, 1, 2, 2))
    out = store.corrections()
    assert set(out) == {IMG, "b.png"}  # c.png holds only a proposal
    assert out[IMG] == Corrections(boxes=[("Nodule", 20, 20, 30, 30), ("Infiltration", 42, 40, 80, 78)], labels={})
    assert out["b.png"] == Corrections(boxes=[("Effusion", 300, 300, 500, 500)],
                                       labels={"Effusion": 1.0, "Pneumonia": 0.0})


def test_labels_are_versioned_and_can_be_cleared(store):
    store.set_label(IMG, "Mass", 1, "dr.a")
    store.set_label(IMG, "Nodule", 0.0, "dr.a")
    store.set_label(IMG, "Mass", 0, "dr.b")
    assert store.labels(IMG) == {"Mass": 0.0, "Nodule": 0.0}
    store.set_label(IMG, "Nodule", None, "dr.b")
    assert store.labels(IMG) == {"Mass": 0.0}
    current = {r.finding: r for r in store.current_labels(IMG)}
    assert current["Mass"].version == 2 and current["Mass"].annotator == "dr.b"
    assert current["Nodule"].version == 2 and current["Nodule"].value is None
    for bad in (0.5, 2, "yes"):
        with pytest.raises(BadAnnotation, match="1, 0 or None"):
            store.set_label(IMG, "Mass", bad, "dr.a")


@pytest.mark.parametrize("box, problem", [
    ((10, 10, 10, 20), "empty"), ((10, 30, 20, 20), "empty"), ((0, 0, math.nan, 5), "finite"),
    ((0, 0, math.inf, 5), "finite"), ((-1, 0, 5, 5), "outside"), ((0, 0, 513, 100), "outside"),
    ((0, 0, 100, 512.5), "outside"), ((1, 2, 3), "four numbers"), ("abcd", "four numbers"),
])
def test_bad_boxes_are_refused_in_one_sentence(store, box, problem):
    with pytest.raises(BadAnnotation, match=problem) as err:
        store.add_box(IMG, "Mass", box, "dr.a")
    _one_sentence(err.value, "reads.cxra")
    assert store.current_boxes() == []


def test_unknown_images_boxes_and_names_are_refused(store):
    box_id = store.add_box(IMG, "Mass", (0, 0, 512, 512), "dr.a")  # the whole image is inside it
    with pytest.raises(BadAnnotation, match="not in the store"):
        store.propose_box("nope.png", "Mass", (1, 1, 2, 2))
    with pytest.raises(BadAnnotation, match="no box 'nope'"):
        store.accept_box("nope", "dr.a")
    with pytest.raises(BadAnnotation, match="no box"):
        store.history("nope")
    with pytest.raises(BadAnnotation, match="name the annotator"):
        store.accept_box(box_id, "  ")
    with pytest.raises(BadAnnotation, match="finding name"):
        store.add_box(IMG, " ", (1, 1, 2, 2), "dr.a")
    with pytest.raises(BadAnnotation, match="is 512x512 in the store"):
        store.add_image(IMG, rows=1024, cols=1024)
    with pytest.raises(BadAnnotation, match="both rows and cols"):
        store.add_image("x.png", rows=10)
    assert store.add_image(IMG, patient_id="999", study_uid="1.2.3").patient_id == "1"  # fills only the gaps
    assert store.image(IMG).study_uid == "1.2.3" and store.image("nope.png") is None
    store.add_image("unsized.png")
    store.import_box("unsized.png", "Mass", (10, 10, 900, 900), "nih")  # in the 1024 space, size unknown
    with pytest.raises(BadAnnotation, match="beyond 512x512"):
        store.add_image("unsized.png", rows=512, cols=512)
    assert store.add_image("unsized.png", rows=1024, cols=1024).rows == 1024


def test_a_closed_store_says_so(tmp_path):
    s = AnnotationStore.open(tmp_path / "a.cxra")
    s.close()
    s.close()
    with pytest.raises(BadStore, match="closed"):
        s.images()


# --- two processes, one file ---------------------------------------------------------------------
N_EDITS = 40


def _writer(path: str, who: str, queue) -> None:
    try:
        with AnnotationStore.open(path) as s:
            for i in range(N_EDITS):
                box_id = s.propose_box(IMG, "Mass", (i, i, i + 10, i + 10), model_name=who)
                s.accept_box(box_id, who)
                s.set_label(IMG, "Mass", i % 2, who)  # both writers version the same label
        queue.put((who, "ok"))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put((who, f"{type(exc).__name__}: {exc}"))


def test_two_processes_write_one_store_concurrently(store):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(store.path), who, queue)) for who in ("dr.a", "dr.b")]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == {"dr.a": "ok", "dr.b": "ok"}
    current = store.current_boxes(IMG)
    assert sorted(r.annotator for r in current) == ["dr.a"] * N_EDITS + ["dr.b"] * N_EDITS
    assert all(r.version == 2 and r.status == "accepted" for r in current)
    label = store.current_labels(IMG)[0]
    assert label.version == 2 * N_EDITS  # every write got its own version, none lost
    with sqlite3.connect(store.path) as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM labels ORDER BY version")]
        assert versions == list(range(1, 2 * N_EDITS + 1))
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- conflicts between viewers -------------------------------------------------------------------
def test_an_edit_on_a_stale_version_is_a_conflict_and_writes_nothing(store):
    box_id = store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet")
    theirs = store.accept_box(box_id, "dr.b", expected_version=1)  # the version both viewers saw
    assert theirs.version == 2
    stale = [lambda: store.accept_box(box_id, "dr.a", expected_version=1),
             lambda: store.correct_box(box_id, (12, 12, 48, 48), "dr.a", expected_version=1),
             lambda: store.relabel_box(box_id, "Nodule", "dr.a", expected_version=1),
             lambda: store.delete_box(box_id, "dr.a", expected_version=1),
             lambda: store.restore_box(store.history(box_id)[0], expected_version=1)]
    for edit in stale:
        with pytest.raises(EditConflict) as err:
            edit()
        assert isinstance(err.value, BadAnnotation)
        assert (err.value.box_id, err.value.expected, err.value.current) == (box_id, 1, theirs)
        _one_sentence(err.value, "reads.cxra")
        assert re.fullmatch(rf"reads\.cxra: box {box_id[:8]}… was changed by dr\.b at "
                            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(now version 2, you edited version 1\); "
                            r"reload to see it\.", str(err.value)), str(err.value)
    assert len(store.history(box_id)) == 2  # nothing was written
    copy = pickle.loads(pickle.dumps(err.value))  # e.g. from a worker process
    assert (copy.box_id, copy.expected, copy.current, str(copy)) == (box_id, 1, theirs, str(err.value))
    mine = store.correct_box(box_id, (12, 12, 48, 48), "dr.a", expected_version=2)  # after the reload
    assert (mine.version, mine.status, mine.annotator, mine.orig) == (3, "corrected", "dr.a", (10, 10, 50, 50))
    gone = store.delete_box(box_id, "dr.b", expected_version=3)
    with pytest.raises(EditConflict, match=r"was deleted by dr\.b .*now version 4, you edited version 3") as err:
        store.accept_box(box_id, "dr.a", expected_version=3)
    assert err.value.current == gone and err.value.current.deleted
    with pytest.raises(BadAnnotation, match="was deleted and cannot be") as err:
        store.accept_box(box_id, "dr.a", expected_version=4)  # up to date, but there is nothing to accept
    assert not isinstance(err.value, EditConflict)
    with pytest.raises(EditConflict, match="changed by the model 'densenet'"):
        store.accept_box(store.propose_box(IMG, "Mass", (1, 1, 5, 5), model_name="densenet"), "dr.a",
                         expected_version=0)
    assert [h.annotator for h in store.history(box_id)] == ["", "dr.b", "dr.a", "dr.b"]


def test_the_same_proposal_is_stored_once(store):
    first = store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet", model_sha256="cafe")
    assert store.propose_box(IMG, "Mass", (10.3, 10, 50, 49.8), model_name="densenet", model_sha256="cafe") == first
    store.accept_box(first, "dr.a")  # whatever became of it, proposing it again finds it
    assert store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet", model_sha256="cafe") == first
    others = {store.propose_box(IMG, "Mass", (11, 10, 50, 50), model_name="densenet", model_sha256="cafe"),
              store.propose_box(IMG, "Nodule", (10, 10, 50, 50), model_name="densenet", model_sha256="cafe"),
              store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet", model_sha256="beef"),
              store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="other", model_sha256="cafe")}
    assert first not in others and len(others) == 4
    assert len(store.current_boxes(IMG)) == 5
    # a box an annotator drew is never a proposal, even where a model proposed the same
    assert store.add_box(IMG, "Mass", (10, 10, 50, 50), "dr.a") != first


def test_relabel_appends_a_version_with_the_new_finding(store):
    box_id = store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet")
    rec = store.relabel_box(box_id, " Infiltrate ", "dr.a", note="not a mass", expected_version=1)
    assert (rec.version, rec.finding, rec.status, rec.box, rec.orig) == (
        2, "Infiltration", "corrected", (10, 10, 50, 50), (10, 10, 50, 50))
    assert (rec.annotator, rec.note, rec.model_name) == ("dr.a", "not a mass", "densenet")
    assert store.box(box_id) == rec and store.history(box_id)[0].finding == "Mass"
    assert store.corrections()[IMG].boxes == [("Infiltration", 10, 10, 50, 50)]
    added = store.add_box(IMG, "Nodule", (60, 60, 70, 70), "dr.a")
    assert store.relabel_box(added, "Mass", "dr.b").status == "corrected"  # no expected version: on the current
    with pytest.raises(BadAnnotation, match="finding name"):
        store.relabel_box(box_id, "  ", "dr.a")
    with pytest.raises(BadAnnotation, match="no box 'nope'"):
        store.relabel_box("nope", "Mass", "dr.a")
    store.delete_box(added, "dr.a")
    with pytest.raises(BadAnnotation, match="was deleted"):
        store.relabel_box(added, "Nodule", "dr.a")
    assert len(store.history(box_id)) == 2 and len(store.history(added)) == 3


def test_changes_since_reports_new_versions_in_write_order(store):
    start = store.marker()
    assert store.changes_since(start) == (start, [], [])
    with AnnotationStore.open(store.path) as other:  # a second connection, as another viewer holds
        box_id = other.propose_box(IMG, "Mass", (10, 10, 50, 50))
        other.accept_box(box_id, "dr.b")
        other.set_label(IMG, "Mass", 1, "dr.b")
    store.set_label(IMG, "Nodule", 0, "dr.a")  # this store's own edits are reported too
    marker, boxes, labels = store.changes_since(start)
    assert [(b.box_id, b.version, b.status) for b in boxes] == [(box_id, 1, "proposed"), (box_id, 2, "accepted")]
    assert [(lab.finding, lab.value, lab.annotator) for lab in labels] == [("Mass", 1.0, "dr.b"), ("Nodule", 0.0, "dr.a")]
    assert boxes[1] == store.box(box_id) and marker == store.marker() and marker != start
    assert store.changes_since(marker) == (marker, [], [])
    assert store.changes_since(None)[1:] == (boxes, labels) and isinstance(marker, ChangeMarker)


N_RACED = 12


def _racer(path: str, who: str, box_ids: list[str], barrier, queue) -> None:
    """Correct every box on version 1 as the other process does; on a conflict reload and redo."""
    try:
        won, lost, own = [], [], []
        with AnnotationStore.open(path) as s:
            barrier.wait(timeout=60)
            shift = 1 if who == "dr.a" else 2
            for i, box_id in enumerate(box_ids):
                coords = (10 + shift, 10 + i, 50 + shift, 50 + i)
                try:
                    s.correct_box(box_id, coords, who, expected_version=1)
                    won.append(box_id)
                except EditConflict as exc:
                    lost.append((box_id, exc.expected, exc.current.version, exc.current.annotator))
                    s.correct_box(box_id, coords, who, note="redone", expected_version=exc.current.version)
                own.append(s.add_box(IMG, "Nodule", (i, i, i + 5, i + 5), who))  # nobody else touches these
        queue.put((who, "ok", won, lost, own))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put((who, f"{type(exc).__name__}: {exc}", [], [], []))


def test_two_processes_editing_one_version_one_wins_and_nothing_is_lost(store):
    box_ids = [store.propose_box(IMG, "Mass", (10, 10 + i, 50, 50 + i)) for i in range(N_RACED)]
    start = store.marker()
    ctx = multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_racer, args=(str(store.path), who, box_ids, barrier, queue))
             for who in ("dr.a", "dr.b")]
    for p in procs:
        p.start()
    results = {who: rest for who, *rest in (queue.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=30)
    assert {who: r[0] for who, r in results.items()} == {"dr.a": "ok", "dr.b": "ok"}
    (_, won_a, lost_a, own_a), (_, won_b, lost_b, own_b) = results["dr.a"], results["dr.b"]
    assert sorted(won_a + won_b) == sorted(box_ids) and not set(won_a) & set(won_b)  # exactly one winner each
    assert lost_a == [(b, 1, 2, "dr.b") for b in won_b] and lost_b == [(b, 1, 2, "dr.a") for b in won_a]
    for box_id in box_ids:
        winner, loser = ("dr.a", "dr.b") if box_id in won_a else ("dr.b", "dr.a")
        hist = store.history(box_id)
        assert [(h.version, h.annotator, h.status) for h in hist] == [
            (1, "", "proposed"), (2, winner, "corrected"), (3, loser, "corrected")]
        assert hist[2].note == "redone" and hist[1].note == ""
    nodules = [r for r in store.current_boxes(IMG) if r.finding == "Nodule"]
    assert sorted(r.box_id for r in nodules) == sorted(own_a + own_b) and len(nodules) == 2 * N_RACED
    marker, boxes, labels = store.changes_since(start)  # what a polling viewer learns
    assert len(boxes) == 4 * N_RACED and labels == [] and marker == store.marker()
    assert {(b.box_id, b.version) for b in boxes} == (
        {(b, v) for b in box_ids for v in (2, 3)} | {(b, 1) for b in own_a + own_b})


# --- refusing files that are not stores ----------------------------------------------------------
def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE patients (id TEXT)")
        conn.execute("INSERT INTO patients VALUES ('precious')")
    conn.close()


def _newer_store(path: Path) -> None:
    AnnotationStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("PRAGMA journal_mode = DELETE")  # fold the WAL in: the file alone holds everything
    conn.close()


@pytest.mark.parametrize("make, problem", [
    (_foreign_sqlite, "not an annotation store"),
    (lambda p: p.write_text("Image Index,Finding Label\nx.png,Mass\n"), "not an SQLite database"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), "not a readable annotation store"),
    (_newer_store, f"schema version {SCHEMA_VERSION + 1}, newer"),
])
def test_foreign_or_newer_files_are_refused_untouched(tmp_path, make, problem):
    path = tmp_path / "thing.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(BadStore, match=problem) as err:
        AnnotationStore.open(path)
    _one_sentence(err.value, "thing.db")
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists()


def test_a_folder_or_a_missing_parent_is_refused(tmp_path):
    with pytest.raises(BadStore, match="folder"):
        AnnotationStore.open(tmp_path)
    with pytest.raises(BadStore, match="folder"):
        AnnotationStore.open(tmp_path / "no" / "such.cxra")


def test_an_empty_file_becomes_a_store_and_reopens(tmp_path):
    path = tmp_path / "empty.cxra"
    path.write_bytes(b"")
    with AnnotationStore.open(path) as s:
        s.add_image("a.png")
        s.add_box("a.png", "Mass", (1, 1, 4, 4), "dr.a")
    with AnnotationStore.open(path) as s:
        assert [r.finding for r in s.current_boxes()] == ["Mass"]


# --- NIH box table -------------------------------------------------------------------------------
def _table_rows(path: Path) -> list[list[str]]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_the_real_box_table_round_trips(tmp_path):
    if not BBOX_TABLE.is_file():
        pytest.skip(f"the NIH box table is not present at {BBOX_TABLE} (only beside the CI checkout)")
    with AnnotationStore.open(tmp_path / "s.cxra") as s:
        report = import_bbox_csv(s, BBOX_TABLE, annotator="nih")
        assert (report.images_added, report.boxes_added, report.boxes_skipped) == (880, 984, 0)
        again = import_bbox_csv(s, BBOX_TABLE, annotator="nih")
        assert (again.images_added, again.boxes_added, again.boxes_skipped) == (0, 0, 984)
        current = s.current_boxes()
        assert len(current) == 984 and {r.status for r in current} == {"imported"}
        assert {r.annotator for r in current} == {"nih"}
        assert "Infiltrate" not in {r.finding for r in current} and "Infiltration" in {r.finding for r in current}
        assert export_bbox_csv(s, tmp_path / "out.csv") == 984
    original, exported = _table_rows(BBOX_TABLE), _table_rows(tmp_path / "out.csv")
    assert exported[0] == original[0]  # NIH's header, trailing commas included

    def keyed(rows):
        return sorted((r[0], r[1], *(float(v) for v in r[2:6])) for r in rows[1:])

    for a, b in zip(keyed(original), keyed(exported), strict=True):
        assert a[:2] == b[:2]  # "Infiltrate" again in NIH's vocabulary
        assert all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9) for x, y in zip(a[2:], b[2:]))


def test_box_table_boxes_are_scaled_to_the_image_size(tmp_path, nih_sample):
    names = sorted(p.name for p in (nih_sample / "images").glob("*.png"))[:2]
    table = tmp_path / "boxes.csv"
    table.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                     f"{names[0]},Infiltrate,100.5,200,300,400\n{names[1]},Mass,0,0,1024,1024\n")
    with AnnotationStore.open(tmp_path / "s.cxra") as s:
        report = import_bbox_csv(s, table, "dr.a", image_dir=nih_sample / "images")  # the 512-px copies
        assert report.boxes_added == 2
        first, second = s.current_boxes()
        assert (first.finding, first.box) == ("Infiltration", (50.25, 100, 200.25, 300))
        assert second.box == (0, 0, 512, 512)
        assert s.image(names[0]).rows == 512 and s.image(names[0]).path == nih_sample / "images" / names[0]
        export_bbox_csv(s, tmp_path / "out.csv")
    assert _table_rows(tmp_path / "out.csv")[1:] == [
        [names[0], "Infiltrate", "100.5", "200.0", "300.0", "400.0"],
        [names[1], "Mass", "0.0", "0.0", "1024.0", "1024.0"]]


def test_malformed_box_tables_are_refused(tmp_path, store):
    cases = {"noheader.csv": "x.png,Mass,1,2,3,4\n",
             "text.csv": "Image Index,Finding Label,Bbox [x,y,w,h],,,\nx.png,Mass,1,two,3,4\n",
             "empty_box.csv": "Image Index,Finding Label,Bbox [x,y,w,h],,,\nx.png,Mass,1,2,0,4\n",
             "outside.csv": f"Image Index,Finding Label,Bbox [x,y,w,h],,,\n{IMG},Mass,1000,2,100,4\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BadLabels) as err:
            import_bbox_csv(store, tmp_path / name, "dr.a")
        _one_sentence(err.value, name)
    assert store.current_boxes() == []
    assert read_bbox_csv(tmp_path / "outside.csv") == [(IMG, "Mass", 1000.0, 2.0, 100.0, 4.0)]


# --- JSON ----------------------------------------------------------------------------------------
def test_json_export_restores_boxes_provenance_and_labels(tmp_path, store):
    store.add_image("1.2.3.4", path="/dicom/a.dcm", patient_id="p7", study_uid="1.2.3", rows=2000, cols=1800)
    p = store.propose_box(IMG, "Mass", (10, 10, 50, 50), model_name="densenet", model_sha256="cafe")
    store.correct_box(p, (12, 11, 49, 50), "dr.a", note="moved")
    store.propose_box(IMG, "Nodule", (60, 60, 80, 80), model_name="densenet")
    d = store.add_box("1.2.3.4", "Effusion", (100, 1500, 900, 1990), "dr.b")
    gone = store.add_box("1.2.3.4", "Mass", (1, 1, 5, 5), "dr.b")
    store.delete_box(gone, "dr.b")
    store.set_label("1.2.3.4", "Effusion", 1, "dr.b")
    store.set_label(IMG, "Pneumonia", 0, "dr.a")
    assert export_json(store, tmp_path / "a.json") == 3
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["format"] == "cxrviewer-annotations" and len(doc["images"]) == 2

    with AnnotationStore.open(tmp_path / "copy.cxra") as copy:
        report = import_json(copy, tmp_path / "a.json")
        assert (report.images_added, report.boxes_added, report.labels_set) == (2, 3, 2)

        def state(s):
            return [(r.box_id, r.image_key, r.finding, r.box, r.orig, r.status, r.annotator, r.created_at,
                     r.model_name, r.model_sha256, r.note) for r in s.current_boxes()]

        assert state(copy) == state(store)
        assert copy.corrections() == store.corrections()
        assert copy.image("1.2.3.4") == store.image("1.2.3.4").__class__(
            "1.2.3.4", Path("/dicom/a.dcm"), "p7", "1.2.3", 2000, 1800, copy.image("1.2.3.4").added_at)
        assert copy.current_labels("1.2.3.4")[0].annotator == "dr.b"
        again = import_json(copy, tmp_path / "a.json")
        assert (again.images_added, again.boxes_added, again.boxes_skipped, again.labels_set) == (0, 0, 3, 0)
        assert len(copy.history(d)) == 1
        copy.correct_box(d, (100, 1500, 800, 1990), "dr.c")  # a later edit; restoring appends the old state
        assert import_json(copy, tmp_path / "a.json").boxes_added == 1
        assert copy.box(d).box == (100, 1500, 900, 1990) and [h.version for h in copy.history(d)] == [1, 2, 3]


def test_malformed_json_is_refused(tmp_path, store):
    cases = {"garbage.json": "{not json", "other.json": json.dumps({"format": "coco", "images": []}),
             "future.json": json.dumps({"format": "cxrviewer-annotations", "format_version": 99, "images": []}),
             "broken.json": json.dumps({"format": "cxrviewer-annotations", "format_version": 1,
                                        "images": [{"image_key": IMG, "boxes": [{"finding": "Mass"}]}]}),
             "badbox.json": json.dumps({"format": "cxrviewer-annotations", "format_version": 1, "images": [
                 {"image_key": IMG, "boxes": [{"box_id": "b1", "finding": "Mass", "box": [5, 5, 1, 1],
                                               "status": "added"}]}]})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BadLabels) as err:
            import_json(store, tmp_path / name)
        _one_sentence(err.value, name)
    assert store.current_boxes() == []
