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
    from cxrviewer.settings import Settings

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("cxrviewer")
    settings, warnings = Settings.load()
    window = MainWindow(settings=settings)
    for warning in warnings:
        window.show_message(warning)
    if demo:  # the embedded model for this session only; the user's settings stay as they are
        window.panel.analysis.set_options(model="default")
        window.remember_folders = False
    window.resize(1500, 950)
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


def _screenshot(app, window, out: Path, timeout: float = 180.0) -> int:
    """Wait for the first image and its analysis, select the top finding's first box (so its
    radiomics show), wait for everything to settle, then save the whole window."""
    panel = window.panel
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    panel.analysis.failed.connect(failures.append)
    problems: list[str] = [panel.boxes.store_error] if panel.boxes.store_error else []
    panel.error.connect(problems.append)

    def settle(condition) -> bool:
        while time.monotonic() < deadline and not failures:
            app.processEvents()
            if condition():
                return True
            time.sleep(0.02)
        return False

    settle(lambda: window.idle and panel.document.image is not None and panel.analysis.result is not None
           and not panel.busy)
    if panel.analysis.result is not None:
        top = panel.analysis.ranked()[0].name
        panel.analysis.select(top)
        boxes = panel.boxes.boxes(top)
        if boxes:
            panel.boxes.select(boxes[0].box_id)
            settle(lambda: panel.radiomics.result is not None and not panel.busy)
        settle(lambda: not window.browser.thumbs.busy)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)
    ok = window.grab().save(str(out))
    top = panel.analysis.selected
    shown = [panel.document.image.path.name if panel.document.image is not None else "no image",
             f"top finding {top}", f"{len(panel.boxes.boxes(top))} box(es)",
             "radiomics shown" if panel.radiomics.result is not None else "no radiomics"]
    window.close()  # waits for the background work, closes the store
    if not ok:
        print(f"cxrviewer: {out.name}: cannot write the screenshot there.", file=sys.stderr)
        return 1
    if panel.document.image is None:
        print("cxrviewer: no image was shown before the screenshot was taken.", file=sys.stderr)
        return 1
    if panel.analysis.result is None:
        reason = failures[0] if failures else "the analysis did not finish in time"
        print(f"cxrviewer: screenshot saved to {out} without findings: {reason}", file=sys.stderr)
        return 1
    for problem in dict.fromkeys(problems):
        print(f"cxrviewer: {problem}", file=sys.stderr)
    print(f"screenshot saved to {out}: {', '.join(shown)}")
    return 0
