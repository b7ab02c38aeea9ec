"""Per-user settings: defaults, round trip, atomic save, validation with fallback, recent folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrviewer.errors import CxrError
from cxrviewer.settings import (
    MAX_RECENT,
    Settings,
    SettingsError,
    config_dir,
    settings_path,
)
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _config(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


def write(data) -> Path:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_location_follows_the_environment(tmp_path, monkeypatch):
    assert settings_path() == tmp_path / "config" / "settings.json"
    monkeypatch.delenv("CXRVIEWER_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "cxrviewer"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings_path() == tmp_path / "home" / ".config" / "cxrviewer" / "settings.json"


def test_missing_file_gives_defaults_without_warnings(tmp_path):
    settings, warnings = Settings.load()
    assert warnings == []
    assert settings.model == "default" and settings.device == "auto"
    assert settings.store_path == tmp_path / "data" / "annotations.db"
    assert settings.cam_method == "gradcam" and settings.box_method == "scalp"
    assert settings.analyse_on_open is True and settings.heatmap_opacity == 0.5
    assert settings.thresholds == {} and settings.recent_folders == []
    assert not settings_path().exists()  # loading never creates the file


def test_round_trip_and_unknown_keys_survive(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    s = Settings(annotator="dr.a", store_path=tmp_path / "s.db", model="scalp-site", device="cuda",
                 cam_method="gradcam++", box_method="talasila", thresholds={"Mass": 0.3, "Nodule": 1.0},
                 analyse_on_open=False, heatmap_opacity=0.0)
    s.add_recent_folder(folder)
    path = s.save()
    assert path == settings_path()
    data = json.loads(path.read_text())
    data["future_option"] = {"x": 1}
    path.write_text(json.dumps(data))
    loaded, warnings = Settings.load()
    assert warnings == []
    assert loaded.extra == {"future_option": {"x": 1}}
    s.recent_folders = [str(folder.resolve())]
    assert loaded == s
    loaded.save()
    assert json.loads(path.read_text())["future_option"] == {"x": 1}  # kept for the newer version


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    Settings(model="first").save()
    before = settings_path().read_text()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(SettingsError) as err:
        Settings(model="second").save()
    assert str(err.value) == "settings.json: the settings cannot be saved (No space left on device)."
    assert settings_path().read_text() == before  # the old file intact
    assert sorted(p.name for p in settings_path().parent.iterdir()) == ["settings.json"]


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "does not hold a JSON object"),
    ("", "is not valid JSON"),
    (b"\xff\xfe{", "is not UTF-8 text"),
])
def test_corrupt_file_is_kept_as_bad_and_defaults_are_used(text, fragment):
    path = settings_path()
    path.parent.mkdir(parents=True)
    raw = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(raw)
    settings, warnings = Settings.load()
    assert settings == Settings()
    assert len(warnings) == 1 and warnings[0].startswith("settings.json: ") and fragment in warnings[0]
    assert warnings[0].endswith("(the old file is kept as settings.json.bad).")
    assert path.with_name("settings.json.bad").read_bytes() == raw
    # the file was repaired, so the next start is quiet
    again, warnings = Settings.load()
    assert warnings == [] and again == Settings()


def test_each_malformed_field_falls_back_alone(tmp_path):
    good_folder = tmp_path / "good"
    good_folder.mkdir()
    write({"annotator": "dr.b", "device": "tpu", "heatmap_opacity": 1.5, "analyse_on_open": "yes",
           "model": "", "cam_method": 3, "thresholds": {"Mass": 0.25, "Nodule": "high", "Effusion": -0.1},
           "recent_folders": [str(good_folder), 7], "store_path": None, "box_method": "threshold"})
    settings, warnings = Settings.load()
    assert settings.annotator == "dr.b" and settings.box_method == "threshold"
    assert settings.device == "auto" and settings.heatmap_opacity == 0.5 and settings.analyse_on_open is True
    assert settings.model == "default" and settings.cam_method == "gradcam"
    assert settings.thresholds == {"Mass": 0.25}
    assert settings.recent_folders == [str(good_folder.resolve())]
    assert settings.store_path == tmp_path / "data" / "annotations.db"
    assert len(warnings) == 1
    sentence = warnings[0]
    for part in ("'device' must be one of auto, cpu, cuda, not 'tpu'", "'heatmap_opacity' must be a number from 0 to 1",
                 "'analyse_on_open' must be true or false", "'thresholds.Nodule'", "'thresholds.Effusion'",
                 "'recent_folders' holds 7", "'store_path' must be a non-empty string, not null"):
        assert part in sentence
    assert sentence.startswith("settings.json: ") and sentence.count(".bad") == 1 and sentence.endswith(".")
    assert json.loads(settings_path().with_name("settings.json.bad").read_text())["device"] == "tpu"
    assert json.loads(settings_path().read_text())["device"] == "auto"  # repaired in place
    assert Settings.load()[1] == []


@pytest.mark.parametrize("value", [float("nan"), True, "0.5", None])
def test_opacity_rejects_non_numbers(value):
    write(json.dumps({"heatmap_opacity": value}, allow_nan=True))
    settings, warnings = Settings.load()
    assert settings.heatmap_opacity == 0.5 and len(warnings) == 1


def test_unreadable_location_warns_and_leaves_it_alone():
    settings_path().mkdir(parents=True)  # a folder where the file should be
    settings, warnings = Settings.load()
    assert settings == Settings() and len(warnings) == 1 and "cannot be read" in warnings[0]
    assert settings_path().is_dir()
    with pytest.raises(CxrError):
        settings.save()


def test_recent_folders_most_recent_first_deduplicated_capped(tmp_path):
    folders = [tmp_path / f"f{i}" for i in range(MAX_RECENT + 3)]
    for f in folders:
        f.mkdir()
    s = Settings()
    for f in folders:
        s.add_recent_folder(f)
    s.add_recent_folder(str(folders[5]) + "/")  # same folder, other spelling
    s.add_recent_folder(tmp_path / "f6" / ".." / "f7")
    order = [7, 5, 12, 11, 10, 9, 8, 6, 4, 3]  # f0..f2 fell off the end
    expected = [str(folders[i].resolve()) for i in order]
    assert s.recent_folders == expected and len(s.recent_folders) == MAX_RECENT
    s.save()
    folders[12].rmdir()  # gone since: dropped on read, quietly
    loaded, warnings = Settings.load()
    assert warnings == [] and str(folders[12].resolve()) not in loaded.recent_folders
    assert loaded.recent_folders == [f for f in expected if f != str(folders[12].resolve())]


def test_recent_folders_on_read_are_deduplicated_and_capped(tmp_path):
    folders = [tmp_path / f"g{i}" for i in range(14)]
    for f in folders:
        f.mkdir()
    write({"recent_folders": [str(folders[0]), str(folders[0]) + "/.", *map(str, folders[1:])]})
    settings, warnings = Settings.load()
    assert warnings == []
    assert settings.recent_folders == [str(f.resolve()) for f in folders[:MAX_RECENT]]


def test_threshold_override():
    s = Settings(thresholds={"Mass": 0.2})
    assert s.threshold("Mass", 0.5) == 0.2 and s.threshold("Nodule", 0.4) == 0.4


def test_import_is_light():
    code = "import sys, cxrviewer.settings; print(sorted(m for m in ('torch', 'PySide6', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
