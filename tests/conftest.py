"""Shared fixtures: real test files from pydicom / pydicom-data and ../shared/data when present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
NIH_SAMPLE = SHARED_DATA / "nih-sample"


def dicom_testfile(name: str) -> Path:
    """A file from pydicom's test set or pydicom-data, or skip the test with the reason."""
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name)
    except Exception as exc:  # noqa: BLE001 - pydicom-data may be absent or broken
        pytest.skip(f"pydicom test file {name} unavailable ({exc})")
    if not path:
        pytest.skip(f"pydicom test file {name} not installed (pip install pydicom-data)")
    return Path(path)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/bootstrap.sh installs it with apt-get)")
    return path


@pytest.fixture
def nih_sample() -> Path:
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE} (only beside the CI checkout)")
    return NIH_SAMPLE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Catalog indexes, image caches, settings and installed models go to a per-session temporary
    folder, never the user's ~/.cache, ~/.config or ~/.local/share (a test may override them)."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("CXRVIEWER_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("CXRVIEWER_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(base / "data"))
