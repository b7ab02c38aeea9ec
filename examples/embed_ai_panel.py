"""Embed cxrviewer's AI panel (canvas, findings, heatmap, editable boxes, radiomics) in another
PySide6 application: a bare QMainWindow around `AIPanel`. See docs/plugins.md.

    python examples/embed_ai_panel.py IMAGE [--store reads.cxra] [--model default] [--screenshot OUT.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--store", default="reads.cxra")
    parser.add_argument("--model", default="default")
    parser.add_argument("--annotator", default=os.environ.get("USER", "annotator"))
    parser.add_argument("--screenshot", help="save the window offscreen once analysed, then exit")
    args = parser.parse_args()
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication, QMainWindow

    from cxrviewer.gui.ai_panel import AIPanel
    from cxrviewer.settings import Settings

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setWindowTitle("Host application with the cxrviewer AI panel")
    panel = AIPanel(Settings(annotator=args.annotator, store_path=Path(args.store), model=args.model))
    window.setCentralWidget(panel)
    for action in panel.actions_for_shortcuts():
        window.addAction(action)
    errors: list[str] = []
    panel.error.connect(errors.append)
    panel.error.connect(lambda sentence: window.statusBar().showMessage(sentence))
    window.resize(1200, 800)
    window.show()
    panel.open_path(args.image)
    if not args.screenshot:
        code = app.exec()
        panel.close_store()
        return code

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not errors and (panel.analysis.result is None or panel.busy):
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()
    window.grab().save(args.screenshot)
    panel.close_store()
    if errors or panel.analysis.result is None:
        print("; ".join(errors) or "the analysis did not finish in time", file=sys.stderr)
        return 1
    top = panel.analysis.ranked()[0]
    print(f"{Path(args.image).name}: top finding {top.name} {top.probability:.3f}; screenshot {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
