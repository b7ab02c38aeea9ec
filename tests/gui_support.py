"""Shared set-up for the viewer's pytest-qt tests: a small random-initialised model installed as
`default` in a per-test user data folder, and a settings object on a per-test annotation store."""

from __future__ import annotations

from pathlib import Path

import pytest


def install_tiny_model(folder: Path, name: str = "default", input_size: int = 96, **spec_fields) -> Path:
    """Save a random-initialised ResNet-18 (small input) and register it under `name` in `folder`
    (`spec_fields`: e.g. targets, inputs)."""
    from cxrviewer.models import create_model
    from cxrviewer.models.checkpoint import save_model
    from cxrviewer.models.registry import install_model

    model, spec = create_model("resnet18", input_size=(input_size, input_size), name=f"tiny-{name}", **spec_fields)
    path = folder / f"{name}.safetensors"
    sha = save_model(model, spec, path)
    install_model(name, path, sha, registry=folder / "registry.json")
    return path


@pytest.fixture
def tiny_default_model(tmp_path, monkeypatch) -> Path:
    """A tiny model installed as `default` in this test's own user data folder."""
    data = tmp_path / "userdata"
    (data / "models").mkdir(parents=True)
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(data))
    return install_tiny_model(data / "models")


@pytest.fixture
def viewer_settings(tmp_path):
    """Settings on this test's own annotation store, annotator `tester`."""
    from cxrviewer.settings import Settings

    return Settings(annotator="tester", store_path=tmp_path / "reads.cxra")


def shown_main_window(qtbot, settings=None, size: tuple[int, int] = (1000, 700)):
    """A `MainWindow` (the user's settings of the test's config folder unless given), shown."""
    import pyqtgraph as pg

    from cxrviewer.gui.main_window import MainWindow

    pg.setConfigOptions(imageAxisOrder="row-major")
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    return win


TINY_RUN = "architecture=resnet18 batch-size=8 max-steps=3 workers=0 cache=none max-train-images=24 max-val-images=16"


def fill_tiny_retrain(dialog, data: str, name: str, *, corrections: bool = False) -> None:
    """Fill the retrain dialog for a three-step CPU run of the baseline at 64 px."""
    dialog.method.setCurrentText("baseline")
    dialog.data.setText(data)
    dialog.use_corrections.setChecked(corrections)
    dialog.epochs.setValue(1)
    dialog.device.setCurrentText("cpu")
    dialog.input_size.setValue(64)
    dialog.extra.setText(TINY_RUN)
    dialog.name.setText(name)
