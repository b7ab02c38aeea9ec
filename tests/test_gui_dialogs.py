"""The settings and retraining dialogs, offscreen: edits are saved and read back, a tiny real training
run is followed to a registered model, and bad input or a cancel leaves one sentence and a usable dialog."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QDialogButtonBox

from cxrviewer.gui.retrain_dialog import (
    METHOD_NAMES,
    RetrainDialog,
    parse_extra_options,
)
from cxrviewer.gui.settings_dialog import SettingsDialog
from cxrviewer.retrain import BadRequest
from cxrviewer.settings import Settings, settings_path
from tests.conftest import NIH_SAMPLE
from tests.gui_support import TINY_RUN, fill_tiny_retrain

TINY = TINY_RUN


def needs_nih() -> None:
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE} (only beside the CI checkout)")


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores shared with other jobs


# -- settings ------------------------------------------------------------------------------------

def _ok(dialog: SettingsDialog) -> None:
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def test_settings_are_edited_saved_and_read_back(qtbot, tmp_path):
    original = Settings(annotator="dr a", store_path=tmp_path / "a.db", thresholds={"Effusion": 0.3})
    dialog = SettingsDialog(original)
    qtbot.addWidget(dialog)
    dialog.annotator.setText("  Dr B  ")
    dialog.store_path.setText(str(tmp_path / "reads.db"))
    dialog.model.setText("site-scalp")
    dialog.device.setCurrentText("cpu")
    dialog.cam_method.setCurrentText("gradcam++")
    dialog.box_method.setCurrentText("threshold")
    dialog.analyse_on_open.setChecked(False)
    dialog.heatmap_opacity.setValue(0.35)
    _ok(dialog)
    assert dialog.result() == SettingsDialog.DialogCode.Accepted and dialog.error.isHidden()
    edited = dialog.settings()
    assert (edited.annotator, edited.store_path, edited.model, edited.device) == \
           ("Dr B", tmp_path / "reads.db", "site-scalp", "cpu")
    assert (edited.cam_method, edited.box_method, edited.analyse_on_open, edited.heatmap_opacity) == \
           ("gradcam++", "threshold", False, 0.35)
    assert edited.thresholds == {"Effusion": 0.3}
    assert settings_path() == tmp_path / "config" / "settings.json" and settings_path().is_file()
    loaded, warnings = Settings.load()
    assert warnings == [] and loaded == edited
    assert original.annotator == "dr a" and original.model == "default"  # the copy was edited, not the original


def test_bad_settings_show_one_sentence_and_keep_the_dialog_open(qtbot, tmp_path):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.model.setText("   ")
    _ok(dialog)
    assert dialog.result() != SettingsDialog.DialogCode.Accepted and not dialog.error.isHidden()
    assert dialog.error.text() == "'model' must be a non-empty string, not '   '."
    assert not settings_path().exists()

    dialog.model.setText("default")
    (tmp_path / "config").write_text("a file where the folder should be")
    _ok(dialog)
    assert dialog.result() != SettingsDialog.DialogCode.Accepted
    assert dialog.error.text().startswith("settings.json: the settings cannot be saved (")
    assert "\n" not in dialog.error.text() and dialog.error.text().endswith(").")


# -- retraining: the request -----------------------------------------------------------------------

def test_the_method_list_is_the_trainers():
    from cxrviewer.trainer.methods import METHODS

    assert sorted(METHOD_NAMES) == sorted(METHODS)


def test_extra_options_are_parsed_to_flags_and_overrides():
    options, sets, batch = parse_extra_options(TINY + " lr=0.001 channels-last=false lam=0.7 data_options.n=4")
    assert batch == 8 and sets == {"lam": "0.7", "data_options.n": "4"}
    assert options == {"architecture": "resnet18", "max_steps": 3, "workers": 0, "cache": "none",
                       "max_train_images": 24, "max_val_images": 16, "lr": 0.001, "channels_last": False}
    assert parse_extra_options("  ") == ({}, {}, None)
    for text, fragment in [("max-steps", "'max-steps' is not an extra option; write KEY=VALUE"),
                           ("max-steps=many", "max-steps must be a whole number, not 'many'"),
                           ("epochs=3", "set the epochs with its own field"),
                           ("name='unclosed", "the extra options cannot be read")]:
        with pytest.raises(BadRequest) as err:
            parse_extra_options(text)
        assert fragment in str(err.value) and str(err.value).endswith(".")


@pytest.fixture
def retrain(qtbot, tmp_path):
    dialog = RetrainDialog(tmp_path / "reads.db", output=tmp_path / "runs")
    qtbot.addWidget(dialog)
    dialog.show()
    yield dialog
    dialog._stop()  # never leave a trainer behind a failed test


def test_a_bad_request_shows_its_sentence_and_starts_nothing(retrain, tmp_path):
    retrain.name.setText("site")
    retrain.data.setText(str(tmp_path))  # no KIND:
    retrain.start_button.click()
    assert retrain.error.text() == f"'{tmp_path}' is not a data source; write KIND:PATH, e.g. nih:/data/nih."
    assert retrain.start_button.isEnabled() and not retrain.running
    retrain.data.setText(f"nih:{tmp_path}")
    retrain.use_corrections.setChecked(True)
    retrain.start_button.click()
    assert retrain.error.text() == "reads.db: the corrections store does not exist."
    retrain.use_corrections.setChecked(False)
    retrain.name.setText("")
    retrain.start_button.click()
    assert retrain.error.text() == "give the new model a name." and not retrain.error.isHidden()
    assert not (tmp_path / "runs").exists()


def test_a_bad_data_path_shows_the_trainers_sentence(retrain, qtbot, tmp_path):
    retrain.data.setText(f"nih:{tmp_path / 'nowhere'}")
    retrain.device.setCurrentText("cpu")
    retrain.name.setText("never")
    retrain.start_button.click()
    assert retrain.running and retrain.error.isHidden()
    qtbot.waitUntil(lambda: not retrain.running, timeout=120000)
    assert retrain.error.text() == "nowhere: the folder for the nih data source does not exist."
    assert not retrain.error.isHidden() and retrain.status.text() == "Training failed."
    assert "Traceback" not in retrain.log.toPlainText()


# -- retraining: real runs -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_tiny_training_run_registers_its_model(retrain, qtbot, tmp_path):
    needs_nih()
    fill_tiny_retrain(retrain, f"nih:{NIH_SAMPLE}", "tiny-dialog")
    with qtbot.waitSignal(retrain.model_registered, timeout=180000) as blocker:
        retrain.start_button.click()
    assert blocker.args == ["tiny-dialog"], retrain.error.text()
    assert retrain.progress.maximum() == 3 and retrain.progress.value() == retrain.progress.maximum()
    assert retrain.error.isHidden() and retrain.status.text() == "The model 'tiny-dialog' is installed."
    lines = retrain.log.toPlainText().splitlines()
    assert lines[0].startswith("start: ") and lines[-1].startswith("end: ") and any(
        line.startswith("step: ") for line in lines)
    assert retrain.start_button.isEnabled() and not retrain.cancel_button.isEnabled()

    from cxrviewer.models import installed_models

    entry = installed_models()["tiny-dialog"]
    assert entry.source == "user" and entry.path.parent == tmp_path / "data" / "models" and entry.path.is_file()


@pytest.mark.slow
def test_cancel_stops_a_longer_run_and_the_dialog_stays_usable(retrain, qtbot, tmp_path):
    needs_nih()
    retrain.data.setText(f"nih:{NIH_SAMPLE}")
    retrain.epochs.setValue(1000)
    retrain.device.setCurrentText("cpu")
    retrain.input_size.setValue(64)
    retrain.extra.setText(TINY.replace("max-steps=3", "max-steps=100000").replace("batch-size=8", "batch-size=4"))
    retrain.name.setText("never-registered")
    with qtbot.assertNotEmitted(retrain.model_registered):
        retrain.start_button.click()
        qtbot.waitUntil(lambda: retrain.progress.value() >= 1, timeout=180000)
        assert retrain.cancel_button.isEnabled() and "loss " in retrain.status.text()
        job = retrain._job
        retrain.cancel_button.click()
        qtbot.waitUntil(lambda: not retrain.running, timeout=30000)
    assert job.state == "cancelled" and job.returncode is not None and job.returncode < 0
    assert retrain.status.text() == "Training cancelled." and retrain.error.isHidden()
    assert retrain.start_button.isEnabled() and not retrain.cancel_button.isEnabled()
    from cxrviewer.models import installed_models

    assert "never-registered" not in installed_models()
