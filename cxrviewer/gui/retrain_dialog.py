"""The retraining dialog: runs `cxrviewer-train fit` through `cxrviewer.retrain` and registers the result.

    dialog = RetrainDialog(settings.store_path, parent)
    dialog.model_registered.connect(lambda name: ...)   # a new model is installed under `name`
    dialog.show()

The trainer is a subprocess (`TrainingProcess`); its callbacks run in a reader thread and are passed to
the GUI thread through Qt signals. Registration (`register_result`, which imports torch) runs in a
worker. Every failure is shown as one sentence in the dialog's error label, never as a traceback.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cxrviewer.errors import CxrError
from cxrviewer.gui.workers import run_task
from cxrviewer.retrain import (
    DEVICES,
    BadRequest,
    TrainingProcess,
    TrainingRequest,
    register_result,
)

# The names of `cxrviewer.trainer.methods.METHODS`, listed statically: importing that registry imports
# torch, and the dialog must open at once (tests/test_gui_dialogs.py checks the two lists agree).
METHOD_NAMES = ("baseline", "scalp", "kacl", "cianet", "byol-cam", "medaug")
# Extra options that have fields of their own in the dialog (batch size has none, so it may be given).
_OWN_FIELDS = {"data": "data source", "method": "method", "corrections": "use corrections",
               "epochs": "epochs", "device": "device", "input_size": "input size", "output": "model name"}


def parse_extra_options(text: str) -> tuple[dict[str, Any], dict[str, str], int | None]:
    """`KEY=VALUE ...` as (fit options, `--set` overrides, batch size); `BadRequest` with one sentence if bad.

    A key naming a `fit` flag (dashes or underscores: `max-steps=3`) is converted to the flag's type;
    `batch-size` sets the batch size; any other key (e.g. `lam=0.7`, `data_options.n_images=40`)
    becomes a `--set` override passed through as written.
    """
    from cxrviewer.trainer.cli import FIT_FLAGS  # argparse and json only

    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BadRequest(None, f"the extra options cannot be read ({exc})") from exc
    options: dict[str, Any] = {}
    sets: dict[str, str] = {}
    batch_size: int | None = None
    for word in words:
        key, sep, value = word.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not value.strip():
            raise BadRequest(None, f"'{word}' is not an extra option; write KEY=VALUE, e.g. max-steps=100")
        if name in _OWN_FIELDS:
            raise BadRequest(None, f"set the {_OWN_FIELDS[name]} with its own field, not as the extra option '{word}'")
        if name == "channels_last":
            if value.lower() not in ("true", "false"):
                raise BadRequest(None, f"channels-last must be true or false, not '{value}'")
            options[name] = value.lower() == "true"
        elif name in FIT_FLAGS:
            kind = FIT_FLAGS[name][0]
            try:
                converted = kind(value)
            except ValueError:
                raise BadRequest(None, f"{key} must be {'a whole number' if kind is int else 'a number'}, "
                                       f"not '{value}'") from None
            if name == "batch_size":
                batch_size = converted
            else:
                options[name] = converted
        else:
            sets[key.strip()] = value
    return options, sets, batch_size


class RetrainDialog(QDialog):
    """Collects a `TrainingRequest`, runs it, follows its events and registers the trained model.

    `store_path`: the annotation store (from the settings) used when "use corrections" is ticked.
    `env`: extra environment for the trainer; `output`: parent of the run folders (None: the user's).
    """

    model_registered = Signal(str)  # the name the new model is installed under
    _event = Signal(object)  # from the trainer's reader thread
    _exited = Signal(object)

    def __init__(self, store_path: str | Path, parent: QWidget | None = None, *, env: dict[str, str] | None = None,
                 output: str | Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Retrain a model")
        self._env, self._output = env, output
        self._job: TrainingProcess | None = None
        self._event.connect(self._on_event)
        self._exited.connect(self._on_exit)

        self.method = QComboBox()
        self.method.addItems(list(METHOD_NAMES))
        self.data = QLineEdit("nih:")
        self.data.setPlaceholderText("KIND:PATH, e.g. nih:/data/nih")
        folder = QPushButton("Folder…")
        folder.clicked.connect(self._choose_folder)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data, 1)
        data_row.addWidget(folder)
        self.store_path = QLineEdit(str(store_path))
        self.store_path.setReadOnly(True)
        self.use_corrections = QCheckBox("Train on the corrected boxes of this store")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10000)
        self.epochs.setValue(10)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.input_size = QSpinBox()
        self.input_size.setRange(32, 4096)
        self.input_size.setSingleStep(32)
        self.input_size.setValue(512)
        self.extra = QLineEdit()
        self.extra.setPlaceholderText("KEY=VALUE …, e.g. architecture=resnet18 batch-size=8 max-steps=100")
        self.name = QLineEdit()
        self.name.setPlaceholderText("name of the new model, e.g. site-scalp")

        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("Training data", data_row)
        form.addRow("Corrections store", self.store_path)
        form.addRow("", self.use_corrections)
        form.addRow("Epochs", self.epochs)
        form.addRow("Device", self.device)
        form.addRow("Input size", self.input_size)
        form.addRow("Extra options", self.extra)
        form.addRow("Model name", self.name)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Ready.")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.error.hide()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.start_button, self.cancel_button, close):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.error)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)

    # -- state -------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a trainer process runs (or its model is being registered)."""
        return not self.start_button.isEnabled()

    def request(self) -> TrainingRequest:
        """The request the fields describe; `BadRequest` (one sentence) when it cannot be run."""
        options, sets, batch_size = parse_extra_options(self.extra.text())
        name = self.name.text().strip()
        if not name:
            raise BadRequest(None, "give the new model a name")
        request = TrainingRequest([self.data.text().strip()], method=self.method.currentText(),
                                  corrections=self.store_path.text() if self.use_corrections.isChecked() else None,
                                  epochs=self.epochs.value(), device=self.device.currentText(),
                                  input_size=self.input_size.value(), batch_size=batch_size, output=self._output,
                                  options=options, sets=sets)
        request.validate()
        return request

    def show_error(self, sentence: str) -> None:
        """Show one sentence in the error label."""
        self.error.setText(sentence)
        self.error.show()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running and self._job is not None and self._job.state == "running")

    # -- actions -----------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        """Start training with the fields' request; a bad request shows its sentence and starts nothing."""
        if self.running:
            return
        self.error.hide()
        try:
            job = TrainingProcess(self.request(), on_event=self._event.emit, on_exit=self._exited.emit,
                                  env=self._env)
            job.start()
        except CxrError as err:
            self.show_error(str(err))
            return
        self._job = job
        self.log.clear()
        self.progress.setRange(0, 0)  # busy until the start event gives the total
        self.status.setText("Starting the trainer…")
        self._set_running(True)

    @Slot()
    def cancel(self) -> None:
        """Stop the trainer (its whole process tree) in a worker; the dialog stays usable."""
        job = self._job
        if job is None or job.state != "running":
            return
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")
        run_task(job.cancel, lambda _result: None, self.show_error)

    # -- what the trainer reports (on the GUI thread) -----------------------------------------------
    @Slot(object)
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        shown = {k: v for k, v in event.items() if k not in ("event", "time")}
        self.log.appendPlainText(f"{kind}: {json.dumps(shown, separators=(', ', ': '))}")
        if kind == "start":
            total = event.get("total_steps")
            if isinstance(total, int) and total > 0:
                self.progress.setRange(0, total)
                self.progress.setValue(min(int(event.get("resumed_at") or 0), total))
            self.status.setText("Training…")
        elif kind == "step":
            if self.progress.maximum() > 0:
                self.progress.setValue(min(int(event.get("global_step") or 0), self.progress.maximum()))
            self._show_numbers()
        elif kind == "epoch":
            self._show_numbers()
        elif kind == "end":
            self.progress.setRange(0, max(self.progress.maximum(), 1))
            self.progress.setValue(self.progress.maximum())

    def _show_numbers(self) -> None:
        """The live label: the latest loss and validation mean AUC the trainer reported."""
        events = self._job.events() if self._job is not None else []
        loss = next((e.get("loss") for e in reversed(events) if e.get("event") == "step"), None)
        auc = next((e.get("mean_auc") for e in reversed(events) if e.get("event") == "epoch"), None)
        parts = [f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "",
                 f"validation mean AUC {auc:.4f}" if isinstance(auc, (int, float)) else ""]
        self.status.setText(" · ".join(p for p in parts if p) or "Training…")

    @Slot(object)
    def _on_exit(self, job: TrainingProcess) -> None:
        if job is not self._job:
            return
        if job.state == "cancelled":
            self.progress.setRange(0, max(self.progress.maximum(), 1))
            self.status.setText("Training cancelled.")
            self._set_running(False)
        elif job.state == "failed":
            self.progress.setRange(0, max(self.progress.maximum(), 1))
            self.status.setText("Training failed.")
            self.show_error(job.error or "the training failed.")
            self._set_running(False)
        else:
            self.cancel_button.setEnabled(False)
            name, folder = self.name.text().strip(), job.run_folder
            self.status.setText(f"Registering the model '{name}'…")
            run_task(lambda: register_result(folder, name), lambda entry: self._registered(entry.name),
                     self._registration_failed)

    def _registered(self, name: str) -> None:
        self.status.setText(f"The model '{name}' is installed.")
        self._set_running(False)
        self.model_registered.emit(name)

    def _registration_failed(self, sentence: str) -> None:
        self.show_error(sentence)
        self.status.setText("Training finished; the model was not registered.")
        self._set_running(False)

    def _choose_folder(self) -> None:
        kind = self.data.text().partition(":")[0].strip() or "nih"
        folder = QFileDialog.getExistingDirectory(self, "Training data folder", self.data.text().partition(":")[2])
        if folder:
            self.data.setText(f"{kind}:{folder}")

    # -- closing -----------------------------------------------------------------------------------
    def _stop(self) -> None:
        if self._job is not None and self._job.state == "running":
            self._job.cancel()

    def reject(self) -> None:
        """Closing stops a running trainer (it must not outlive the dialog)."""
        self._stop()
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._stop()
        super().closeEvent(event)
