"""`BoxEditor` (Qt-free): model boxes enter the store only when touched, each edit is committed at
once as one undo step, undo/redo append versions that restore earlier states, and an undo over
another viewer's newer version is refused with `EditConflict`."""

from __future__ import annotations

import pytest

from cxrviewer.annotations import AnnotationStore, EditConflict
from cxrviewer.annotations.editing import CLINICIAN, MODEL, BoxEditor, ImageRef, ModelBox

KEY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def editor(tmp_path):
    store = AnnotationStore.open(tmp_path / "reads.cxra")
    ed = BoxEditor(store, "dr.a")
    ed.open_image(ImageRef(KEY, tmp_path / "a.dcm", patient_id="7", rows=512, cols=400))
    ed.set_proposals([ModelBox("Effusion", (10.0, 20.0, 110.0, 220.0), 0.9, "default", "ab" * 32),
                      ModelBox("Mass", (200.0, 200.0, 260.0, 250.0), 0.4, "default", "ab" * 32)])
    yield ed
    store.close()


def test_untouched_proposals_are_shown_but_not_stored(editor):
    shown = editor.boxes()
    assert [(b.box_id, b.finding, b.kind, b.stored) for b in shown] == [
        ("proposal:0", "Effusion", MODEL, False), ("proposal:1", "Mass", MODEL, False)]
    assert editor.store.images() == [] and editor.store.current_boxes() == []
    assert [b.finding for b in editor.boxes("Mass")] == ["Mass"]


def test_moving_a_proposal_records_proposal_and_correction_in_one_undo_step(editor):
    box_id = editor.move("proposal:0", (12.0, 20.0, 112.0, 230.0))
    history = editor.store.history(box_id)
    assert [(h.status, h.box) for h in history] == [("proposed", (10.0, 20.0, 110.0, 220.0)),
                                                    ("corrected", (12.0, 20.0, 112.0, 230.0))]
    assert history[0].model_name == "default" and history[1].orig == (10.0, 20.0, 110.0, 220.0)
    assert history[1].annotator == "dr.a"
    image = editor.store.image(KEY)
    assert (image.rows, image.cols, image.patient_id) == (512, 400, "7")
    # the proposal is now the stored box, not shown twice
    assert [b.box_id for b in editor.boxes()] == [box_id, "proposal:1"]
    assert editor.boxes()[0].kind == CLINICIAN

    assert editor.undo() == box_id
    assert editor.store.box(box_id).status == "proposed" and editor.boxes()[0].kind == MODEL
    assert editor.store.box(box_id).box == (10.0, 20.0, 110.0, 220.0)
    assert not editor.can_undo() and editor.can_redo() and editor.redo_text() == "move"
    assert editor.redo() == box_id
    assert editor.store.box(box_id).box == (12.0, 20.0, 112.0, 230.0)
    assert len(editor.store.history(box_id)) == 4  # nothing rewritten: undo and redo are versions


def test_reject_hides_the_proposal_for_good_and_undo_brings_it_back(editor):
    box_id = editor.reject("proposal:1")
    assert editor.store.box(box_id).status == "deleted" and editor.store.box(box_id).note == "rejected"
    assert [b.finding for b in editor.boxes()] == ["Effusion"]
    # a later analysis proposes the same box again: still rejected
    editor.set_proposals(list(editor._proposals))
    assert [b.finding for b in editor.boxes()] == ["Effusion"]
    editor.undo()
    assert sorted(b.finding for b in editor.boxes()) == ["Effusion", "Mass"]


def test_add_relabel_accept_delete_and_their_undo(editor):
    added = editor.add("Nodule", (50.0, 60.0, 80.0, 90.0))
    assert editor.store.box(added).status == "added"
    editor.relabel(added, "Mass")
    assert editor.store.box(added).finding == "Mass"
    accepted = editor.accept("proposal:0")
    assert editor.store.box(accepted).status == "accepted"
    editor.delete(added)
    assert added not in [b.box_id for b in editor.boxes()]
    editor.undo()  # delete
    assert editor.store.box(added).finding == "Mass" and not editor.store.box(added).deleted
    editor.undo()  # accept
    editor.undo()  # relabel
    assert editor.store.box(added).finding == "Nodule"
    editor.undo()  # add
    assert editor.store.box(added).deleted
    assert editor.undo() is None


def test_undo_over_another_viewers_edit_is_refused(editor, tmp_path):
    box_id = editor.move("proposal:0", (12.0, 20.0, 112.0, 230.0))
    with AnnotationStore.open(tmp_path / "reads.cxra") as other:
        rec = other.box(box_id)
        other.correct_box(box_id, (0.0, 0.0, 50.0, 50.0), "dr.b", expected_version=rec.version)
    with pytest.raises(EditConflict) as caught:
        editor.undo()
    assert caught.value.current.annotator == "dr.b"
    assert "dr.b" in str(caught.value) and str(caught.value).startswith("reads.cxra: ")
    assert editor.store.box(box_id).box == (0.0, 0.0, 50.0, 50.0)  # dr.b's edit stands
    # an edit on the stale version is refused the same way
    stale = editor.boxes()[0]
    assert stale.record.annotator == "dr.b"  # the shown state is reread from the store


def test_undo_stacks_are_per_image(editor, tmp_path):
    box_id = editor.move("proposal:0", (12.0, 20.0, 112.0, 230.0))
    editor.open_image(ImageRef("other.png", tmp_path / "other.png", rows=100, cols=100))
    assert not editor.can_undo() and editor.boxes() == []
    editor.open_image(ImageRef(KEY, tmp_path / "a.dcm", patient_id="7", rows=512, cols=400))
    assert editor.can_undo() and editor.undo() == box_id


def test_an_edit_on_the_version_the_annotator_saw_is_refused_when_another_viewer_wrote(editor, tmp_path):
    box_id = editor.move("proposal:0", (12.0, 20.0, 112.0, 230.0))
    seen = editor.box(box_id).record.version
    with AnnotationStore.open(tmp_path / "reads.cxra") as other:
        other.accept_box(box_id, "dr.b", expected_version=seen)
    with pytest.raises(EditConflict):
        editor.move(box_id, (0.0, 0.0, 10.0, 10.0), seen=seen)
    assert editor.store.box(box_id).status == "accepted" and editor.store.box(box_id).annotator == "dr.b"
    editor.move(box_id, (0.0, 0.0, 10.0, 10.0), seen=seen + 1)  # after a reload it goes through
    assert editor.store.box(box_id).box == (0.0, 0.0, 10.0, 10.0)
    with AnnotationStore.open(tmp_path / "reads.cxra") as other:
        other.delete_box(box_id, "dr.b")
    with pytest.raises(EditConflict, match="deleted by dr.b"):
        editor.move(box_id, (1.0, 1.0, 10.0, 10.0), seen=seen + 2)


def test_a_model_box_another_viewer_touched_first_is_a_conflict_not_a_second_copy(editor, tmp_path):
    shown = editor.boxes()[0]
    assert shown.box_id == "proposal:0"
    with AnnotationStore.open(tmp_path / "reads.cxra") as other:
        rival = BoxEditor(other, "dr.b")
        rival.open_image(editor.image)
        rival.set_proposals(list(editor._proposals))
        rival.accept("proposal:0")
    with pytest.raises(EditConflict, match="dr.b"):
        editor.move("proposal:0", (0.0, 0.0, 10.0, 10.0))
    assert len(editor.store.current_boxes(KEY)) == 1  # one stored copy of the model's box: dr.b's


def test_two_viewers_touching_one_model_box_at_once_store_one_copy(editor, tmp_path, monkeypatch):
    """The race the test above cannot hit: both viewers still see the box as untouched when they
    write. The store records one proposal; the second viewer's edit then conflicts with the first's."""
    with AnnotationStore.open(tmp_path / "reads.cxra") as other:
        rival = BoxEditor(other, "dr.b")
        rival.open_image(editor.image)
        rival.set_proposals(list(editor._proposals))
        stale = rival.box("proposal:0")
        box_id = editor.accept("proposal:0")  # dr.a wins by a millisecond
        monkeypatch.setattr(rival, "box", lambda _id: stale)  # dr.b's view predates dr.a's write
        with pytest.raises(EditConflict, match="dr.a") as err:
            rival.move("proposal:0", (0.0, 0.0, 10.0, 10.0))
        assert err.value.current.box_id == box_id
    assert [(b.box_id, b.status) for b in editor.store.current_boxes(KEY)] == [(box_id, "accepted")]
    assert len(editor.store.history(box_id)) == 2


def test_an_images_history_lists_every_version_of_every_box_in_order(editor):
    moved = editor.move("proposal:0", (12.0, 20.0, 112.0, 230.0))
    added = editor.add("Mass", (1.0, 2.0, 30.0, 40.0))
    editor.undo()
    editor.store.set_label(KEY, "Nodule", 0.0, "dr.a")
    boxes, labels = editor.store.image_history(KEY)
    assert [(b.box_id, b.version, b.status) for b in boxes] == [
        (moved, 1, "proposed"), (moved, 2, "corrected"), (added, 1, "added"), (added, 2, "deleted")]
    assert [(lab.finding, lab.value) for lab in labels] == [("Nodule", 0.0)]
    assert editor.store.image_history("unknown") == ([], [])
