"""Start the viewer: QApplication set-up, demo data, offscreen screenshots."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def demo_folders() -> list[Path]:
    """The bundled sample studies, and pydicom-data's real chest CR when that package is installed."""
    from cxrviewer.resources import path as resource

    folders = [resource("samples")]
    try:
        from pydicom.data import get_testdata_file

        rg1 = get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # noqa: BLE001 - optional package
        rg1 = None
    if rg1:
        folders.append(_single_file_folder(Path(rg1)))
    return folders


def _single_file_folder(path: Path) -> Path:
    """A cache folder holding a link to one file, so a single file can be catalogued like a folder."""
    from cxrviewer.io.catalog_db import cache_dir

    folder = cache_dir() / "demo-extra"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / path.name
    if not link.exists():
        try:
            link.symlink_to(path)
        except OSError:
            import shutil

            shutil.copy2(path, link)
    return folder


def run_viewer(paths: list[str], demo: bool = False, screenshot: str | None = None) -> int:
    if screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from cxrviewer.gui.main_window import MainWindow

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("cxrviewer")
    window = MainWindow()
    window.resize(1400, 900)
    window.show()
    folders = demo_folders() if demo else []
    folders += [Path(p) for p in paths]
    for i, folder in enumerate(folders):
        if folder.is_file():
            window.open_image(folder)
        else:
            window.open_folder(folder, then_select_first=(i == 0))
    if screenshot:
        return _screenshot(app, window, Path(screenshot))
    return app.exec()


def _screenshot(app, window, out: Path, timeout: float = 60.0) -> int:
    """Wait until every load has finished and an image is shown, then save the window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if window.idle and window.document.image is not None:
            break
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()
    ok = window.grab().save(str(out))
    if not ok:
        print(f"cxrviewer: {out.name}: cannot write the screenshot there.", file=sys.stderr)
        return 1
    if window.document.image is None:
        print("cxrviewer: no image was shown before the screenshot was taken.", file=sys.stderr)
        return 1
    print(f"screenshot saved to {out}")
    return 0
