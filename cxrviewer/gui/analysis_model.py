"""The analysis state of the open image: which model/device/CAM, the running analysis, its result and
the selected finding (widgets subscribe; none of them holds this state).

Analyses run one at a time in their own thread pool (so thumbnail or catalog work never queues in
front of them). Each run carries a generation number: moving to another image, or changing the
model, device or CAM method, bumps it, and a stale run stops at its next progress report (Score-CAM
reports after every masked batch) or is dropped when it finishes.

    model = AnalysisModel(document, settings)
    model.finished.connect(...)          # model.result: cxrviewer.analysis.AnalysisResult
    model.select("Effusion")             # model.heatmap("Effusion") -> float32 [rows, cols] in [0, 1]
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from cxrviewer.errors import CxrError
from cxrviewer.gui.document import ViewerDocument
from cxrviewer.gui.workers import run_task
from cxrviewer.settings import Settings


class AnalysisCancelled(CxrError):
    """Raised inside a stale run to stop it (never shown to the user)."""


class AnalysisModel(QObject):
    start_delay_ms = 40  # analysis on open starts this long after the image is shown
    started = Signal(str)  # a sentence: what is being analysed with what
    progress = Signal(float)  # 0 .. 1
    finished = Signal()  # self.result is the new result
    failed = Signal(str)  # one sentence
    cleared = Signal()  # no result (new image, or the settings changed)
    selection_changed = Signal()  # self.selected changed
    options_changed = Signal()  # model / device / CAM method changed

    def __init__(self, document: ViewerDocument, settings: Settings | None = None) -> None:
        super().__init__()
        self.document = document
        self.settings = settings or Settings()
        self.model_name = self.settings.model
        self.device = self.settings.device
        self.cam = self.settings.cam_method
        self.auto_analyse = self.settings.analyse_on_open
        self.result: Any = None  # cxrviewer.analysis.AnalysisResult
        self.analyzer: Any = None  # the Analyzer that made `result`
        self.selected: str | None = None
        self.show_all_findings = False  # False: the viewer's eight findings; True: every target the model scores
        self.running = False
        self._generation = 0
        self._heatmaps: dict[str, np.ndarray] = {}
        self._analyzers: dict[tuple[str, str, str], Any] = {}
        self._build_lock = threading.Lock()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(1)
        document.image_changed.connect(self._on_image)

    # --- options --------------------------------------------------------------------------
    def available_models(self) -> list[str]:
        """Registered model names (shipped, trained and installed, plugins' files), the current one included."""
        from cxrviewer.models.registry import installed_models

        names = sorted(installed_models())
        if self.model_name and self.model_name not in names:
            names.append(self.model_name)
        return names

    @staticmethod
    def available_devices() -> list[str]:
        """`auto` (GPU if present, else CPU), `cpu`, and `cuda` when a GPU is visible."""
        import torch

        return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    @staticmethod
    def available_cams() -> list[str]:
        from cxrviewer.explain import CAM_METHODS

        return sorted(CAM_METHODS)

    def set_options(self, model: str | None = None, device: str | None = None, cam: str | None = None) -> None:
        """Change the model, device or CAM method; the open image is analysed again."""
        changed = False
        for attr, value in (("model_name", model), ("device", device), ("cam", cam)):
            if value is not None and value != getattr(self, attr):
                setattr(self, attr, value)
                changed = True
        if changed:
            self.options_changed.emit()
            self._reset()
            if self.document.image is not None:
                self.analyze()

    def apply_settings(self, settings: Settings) -> None:
        """New settings from the dialog: thresholds apply at once, the rest re-analyses when it changed."""
        self.settings = settings
        self.auto_analyse = settings.analyse_on_open
        self.set_options(settings.model, settings.device, settings.cam_method)
        if self.result is not None:
            self.finished.emit()  # thresholds may have changed

    def threshold(self, finding: str) -> float:
        """The operating threshold in force: the user's override, else the model's."""
        model = self.result.finding(finding).threshold if self.result is not None else 0.5
        return self.settings.threshold(finding, model)

    # --- running --------------------------------------------------------------------------
    def analyze(self) -> None:
        """Analyse the document's image in the background (cancelling any run in flight)."""
        image = self.document.image
        self._reset()
        if image is None:
            return
        self._generation += 1
        generation = self._generation
        key = (self.model_name, self.device, self.cam)
        self.running = True
        self.started.emit(f"Analysing {image.path.name} with '{self.model_name}' ({self.cam}) …")
        self.progress.emit(0.0)

        def report(done: int, total: int) -> None:
            if generation != self._generation:
                raise AnalysisCancelled(None, "cancelled")
            if total:
                self.progress.emit(min(1.0, done / total))

        def work():
            if generation != self._generation:
                raise AnalysisCancelled(None, "cancelled")
            analyzer = self._analyzer(key)
            if generation != self._generation:
                raise AnalysisCancelled(None, "cancelled")
            try:
                return analyzer, analyzer.analyze(image, progress=report)
            except ValueError as err:  # the CAM method does not fit the model (`native` on a plain CNN, ...)
                raise CxrError(image.path, f"model '{key[0]}' cannot be explained with '{key[2]}' ({err})") from err

        def done(out) -> None:
            if generation != self._generation:
                return
            self.running = False
            self.analyzer, self.result = out
            self.progress.emit(1.0)
            ranked = sorted(self.result.findings, key=lambda f: -f.probability)
            self.selected = ranked[0].name if ranked else None
            self.finished.emit()
            self.selection_changed.emit()

        def failed(sentence: str) -> None:
            if generation != self._generation or sentence == "cancelled.":
                return
            self.running = False
            self.failed.emit(sentence)

        run_task(work, done, failed, pool=self.pool)

    def cancel(self) -> None:
        """Stop the run in flight (its result, if it still arrives, is dropped)."""
        self._generation += 1
        if self.running:
            self.running = False
            self.cleared.emit()

    def _analyzer(self, key: tuple[str, str, str]):
        """The Analyzer for (model, device, CAM), built once (in the worker thread)."""
        with self._build_lock:
            if key not in self._analyzers:
                from cxrviewer.analysis import Analyzer
                from cxrviewer.errors import MissingFile

                name, device, cam = key
                try:
                    analyzer = Analyzer(name, device=device, cam=cam)
                except MissingFile as err:
                    raise CxrError(None, f"Model '{name}' cannot be loaded ({err.problem})") from err
                except ValueError as err:  # e.g. CUDA asked for but absent
                    raise CxrError(None, f"Model '{name}' cannot run on '{device}': {err}") from err
                if "box_method" not in analyzer.spec.extra:  # the model's own choice first, then the user's
                    analyzer.box_method = self.settings.box_method
                self._analyzers = {key: analyzer}  # keep one model in memory
            return self._analyzers[key]

    def _on_image(self) -> None:
        self._generation += 1
        self._reset()
        if self.document.image is not None and self.auto_analyse:
            # Start after the canvas has painted the new image: a worker that starts at once (and,
            # the first time, imports torch) competes for the interpreter with the first paint.
            image, generation = self.document.image, self._generation
            QTimer.singleShot(self.start_delay_ms, lambda: self._start_if_current(image, generation))

    def _start_if_current(self, image: Any, generation: int) -> None:
        if generation == self._generation and self.document.image is image and not self.running:
            self.analyze()

    def _reset(self) -> None:
        was_running, had = self.running, self.result is not None
        self.running = False
        self.result = None
        self.selected = None
        self._heatmaps = {}
        if had or was_running:  # a run in flight is dropped too: its progress display must end
            self.cleared.emit()
        if had:
            self.selection_changed.emit()

    # --- findings and heatmaps ------------------------------------------------------------
    def ranked(self) -> list[Any]:
        """The findings shown, highest probability first: the viewer's eight (DEFAULT_TARGETS) unless
        `show_all_findings`, or every finding of a model that scores none of the eight."""
        if self.result is None:
            return []
        hidden = set() if self.show_all_findings else set(self.other_findings())
        return sorted((f for f in self.result.findings if f.name not in hidden), key=lambda f: -f.probability)

    def other_findings(self) -> list[str]:
        """The findings the model scores beyond the viewer's eight, hidden unless `show_all_findings`
        (e.g. the six other NIH labels of a 14-label model; none for a model of other findings)."""
        from cxrviewer.models.spec import DEFAULT_TARGETS

        if self.result is None:
            return []
        names = [f.name for f in self.result.findings]
        if not set(names) & set(DEFAULT_TARGETS):
            return []
        return [n for n in names if n not in DEFAULT_TARGETS]

    def set_show_all_findings(self, show: bool) -> None:
        """Show the model's other findings too (or hide them again: a hidden selection moves to the top one)."""
        self.show_all_findings = bool(show)
        shown = [f.name for f in self.ranked()]
        if self.selected is not None and self.selected not in shown:
            self.selected = shown[0] if shown else None
        self.selection_changed.emit()

    def select(self, finding: str | None) -> None:
        if finding != self.selected:
            self.selected = finding
            self.selection_changed.emit()

    def heatmap(self, finding: str) -> np.ndarray:
        """The finding's CAM in [0, 1] at the image's size (computed once per result)."""
        if finding not in self._heatmaps:
            self._heatmaps[finding] = self.result.heatmap(finding)
        return self._heatmaps[finding]

    def model_identity(self) -> tuple[str, str]:
        """(model name, sha256) of the model that made the current result, for the store's provenance."""
        if self.analyzer is None:
            return self.model_name, ""
        return str(self.analyzer.name or self.model_name), str(self.analyzer.sha256 or "")
