"""Retraining from the viewer: `cxrviewer-train fit` as a subprocess, followed through its events (Qt-free).

    job = TrainingProcess(TrainingRequest(["nih:/data/nih"], method="scalp", epochs=3), on_event=cb).start()
    if job.wait() == 0:      # meanwhile: job.events(), job.progress(), job.cancel()
        register_result(job.run_folder, "scalp-site")   # else show job.error: one sentence

The trainer runs in its own process group (a crash cannot take the viewer down; cancel kills the
whole tree) and prints one JSON event per line on stdout (`--progress jsonl`, `cxrviewer.trainer.progress`);
other stdout lines go to `log`. On bad input it prints `cxrviewer-train: <sentence>` on stderr, exits 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrviewer.errors import CxrError

if TYPE_CHECKING:
    from cxrviewer.models.registry import ModelEntry

Event = dict[str, Any]
DEVICES = ("auto", "cpu", "cuda")
_EXPLICIT = ("data", "method", "corrections", "epochs", "device", "input_size", "batch_size", "output")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BadRequest(CxrError, ValueError):
    """A training request that cannot be run as asked."""



@dataclass
class TrainingRequest:
    """What to train, as the retraining dialog collects it (relative paths are made absolute).

    `data`: sources as `KIND:PATH`; `fit` takes one `--data` (of several, the last would silently win), so more
    than one is refused with `BadRequest`. `corrections`: the annotation store to train on, or None; it must exist
    (the trainer would create an empty one). `options`: other `fit` flags by field name (architecture, lr, seed,
    max_steps, workers, cache, name, channels_last; `cxrviewer.trainer.cli.FIT_FLAGS`). `sets`: `--set K=V` pairs.
    """

    data: list[str]
    method: str = "baseline"
    corrections: str | Path | None = None
    epochs: int | None = None
    device: str = "auto"
    input_size: int | None = None
    batch_size: int | None = None
    output: str | Path | None = None  # parent of the run folders; None: `<user data dir>/runs`
    options: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    python: str = sys.executable

    def validate(self) -> None:
        """Raise `BadRequest` (one sentence) for a request the trainer could not start."""
        from cxrviewer.trainer.cli import FIT_FLAGS  # argparse and json only

        if isinstance(self.data, str) or not self.data:
            raise BadRequest(None, "choose one training data source as KIND:PATH, e.g. nih:/data/nih")
        if len(self.data) > 1:
            raise BadRequest(None, f"cxrviewer-train trains on one data source at a time, not {len(self.data)} "
                                   f"({', '.join(self.data)}); choose one")
        _split_source(self.data[0])
        if self.device not in DEVICES:
            raise BadRequest(None, f"the device must be one of {', '.join(DEVICES)}, not '{self.device}'")
        for name in ("epochs", "input_size", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BadRequest(None, f"{name.replace('_', ' ')} must be a positive whole number, not {value!r}")
        if self.corrections is not None and not _store_path(self.corrections).is_file():
            raise BadRequest(_store_path(self.corrections), "the corrections store does not exist")
        for name in self.options:
            if name in _EXPLICIT or (name not in FIT_FLAGS and name != "channels_last"):
                raise BadRequest(None, f"'{name}' is not a training option this request can pass on")
        for key in self.sets:
            if not isinstance(key, str) or not key.strip() or "=" in key:
                raise BadRequest(None, f"'{key}' is not a name for a --set override")

    def command(self) -> list[str]:
        """The `cxrviewer-train fit ... --progress jsonl` command line (validated first)."""
        from cxrviewer.models.registry import user_data_dir

        self.validate()
        kind, path = _split_source(self.data[0])
        output = Path(self.output).expanduser() if self.output else user_data_dir() / "runs"
        cmd = [self.python, "-m", "cxrviewer.trainer.cli", "fit", "--data", f"{kind}:{Path(path).absolute()}",
               "--method", str(self.method).strip(), "--device", self.device,
               "--output", str(output.absolute())]
        if self.corrections is not None:
            cmd += ["--corrections", f"store:{_store_path(self.corrections).absolute()}"]
        flags = {name: getattr(self, name) for name in ("epochs", "input_size", "batch_size")}
        for name, value in {**flags, **self.options}.items():
            if name == "channels_last" and value is not None:
                cmd.append("--channels-last" if value else "--no-channels-last")
            elif value is not None:
                cmd += ["--" + name.replace("_", "-"), _text(value)]
        for key, value in self.sets.items():
            cmd += ["--set", f"{key.strip()}={_text(value)}"]
        return [*cmd, "--progress", "jsonl"]


def _text(value: Any) -> str:
    """A value as the trainer's YAML parser reads it back (true/false, JSON lists and mappings)."""
    return json.dumps(value) if isinstance(value, (bool, list, tuple, dict)) else str(value)


def _split_source(spec: str) -> tuple[str, Path]:
    kind, sep, path = str(spec).partition(":")
    if not sep or not kind.strip() or not path.strip():
        raise BadRequest(None, f"'{spec}' is not a data source; write KIND:PATH, e.g. nih:/data/nih")
    return kind.strip().lower(), Path(path.strip()).expanduser()


def _store_path(value: str | Path) -> Path:
    return Path(str(value).removeprefix("store:")).expanduser()


class TrainingProcess:
    """One `cxrviewer-train fit` subprocess and what it reported. `on_event(event)` (each JSON event) and
    `on_exit(process)` (once) run in the stdout reader thread: a GUI must pass them to its own (a Qt signal)."""

    def __init__(self, request: TrainingRequest, *, on_event: Callable[[Event], None] | None = None,
                 on_exit: Callable[[TrainingProcess], None] | None = None, env: dict[str, str] | None = None) -> None:
        self.command = request.command()
        self.on_event, self.on_exit = on_event, on_exit
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log: list[str] = []  # stdout lines that are not events, and callback failures
        self.stderr: deque[str] = deque(maxlen=200)  # the last stderr lines
        self.cancelled = False
        self.pid: int | None = None  # also the process group id
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._proc: subprocess.Popen | None = None

    # -- running ------------------------------------------------------------------------------
    def start(self) -> TrainingProcess:
        """Start the trainer in its own process group (a new session); returns self."""
        if self._proc is not None:
            raise RuntimeError("this training process was already started")
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                          bufsize=1, env=self.env, start_new_session=True)
        except OSError as exc:
            raise BadRequest(self.command[0], f"the trainer cannot be started ({exc.strerror or exc})") from exc
        self.pid = self._proc.pid
        err = threading.Thread(target=self._read_stderr, name="cxrviewer-train-stderr", daemon=True)
        err.start()
        threading.Thread(target=self._read_stdout, args=(err,), name="cxrviewer-train-stdout", daemon=True).start()
        return self

    def _read_stderr(self) -> None:
        self.stderr.extend(line.rstrip("\n") for line in self._proc.stderr if line.strip())

    def _read_stdout(self, stderr_thread: threading.Thread) -> None:
        try:
            for line in self._proc.stdout:
                self._take(line.rstrip("\n"))
            self._proc.wait()
            stderr_thread.join()
        finally:
            self._finished.set()
        self._call(self.on_exit, self)

    def _take(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            with self._lock:
                self._events.append(event)
            self._call(self.on_event, event)
        elif line.strip():
            self.log.append(line)

    def _call(self, callback: Callable[[Any], None] | None, arg: Any) -> None:
        try:
            if callback is not None:
                callback(arg)
        except Exception as exc:  # noqa: BLE001 - a failing callback must not kill the reader
            self.log.append(f"callback {getattr(callback, '__name__', callback)} failed: {exc!r}")

    def cancel(self, grace: float = 5.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after `grace` s; returns once the trainer has exited."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._finished.wait(timeout=grace)

    def _signal(self, sig: int) -> None:
        """Signal the group while its leader is unreaped (so the group id cannot have been reused)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end (every event read); the exit status, or None if `timeout` ran out first."""
        if self._proc is None:
            raise RuntimeError("the training process was not started")
        return self._proc.returncode if self._finished.wait(timeout) else None

    # -- what it reported ---------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """None while running (or not started); 0 on success; 2 for bad input; negative when signalled."""
        return self._proc.returncode if self._proc is not None and self._finished.is_set() else None

    @property
    def state(self) -> str:
        """"idle", "running", "succeeded", "cancelled" or "failed"."""
        if self._proc is None or not self._finished.is_set():
            return "idle" if self._proc is None else "running"
        if self.cancelled:
            return "cancelled"
        return "succeeded" if self._proc.returncode == 0 else "failed"

    def events(self) -> list[Event]:
        """Every event so far, in order (a copy)."""
        with self._lock:
            return list(self._events)

    def _last(self, kind: str) -> Event:
        with self._lock:
            return next((e for e in reversed(self._events) if e.get("event") == kind), {})

    @property
    def run_folder(self) -> Path | None:
        """The run folder, from the "start" event."""
        run = self._last("start").get("run")
        return Path(run) if run else None

    @property
    def best_model(self) -> Path | None:
        """The best model file, from the "end" event (None until training ended well)."""
        best = self._last("end").get("best_model")
        return Path(best) if best else None

    def progress(self) -> tuple[int, int | None]:
        """(optimiser steps done, total steps or None when unknown) for a progress bar."""
        start, step = self._last("start"), self._last("step")
        total = start.get("total_steps") if isinstance(start.get("total_steps"), int) else None
        if self._last("end") and total is not None:
            return total, total
        return int(step.get("global_step") or start.get("resumed_at") or 0), total

    @property
    def error(self) -> str | None:
        """One sentence saying why training failed; None unless the state is "failed"."""
        if self.state != "failed":
            return None
        lines = list(self.stderr)
        said = [line.split(":", 1)[1].strip() for line in lines if line.startswith("cxrviewer-train:")]
        message = self._last("error").get("message") or (said[-1] if said else "")
        if message:
            return str(message)
        code = self._proc.returncode
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"the training process was killed by {name} (out of memory?)."
        detail = f" ({lines[-1].strip()[:160]})" if lines else ""
        return f"the training process stopped with exit status {code}{detail}."


def register_result(run_folder: str | Path, name: str, *, replace: bool = False) -> ModelEntry:
    """Export a run's best model into the user's model folder and register it under `name`.

    `name`: letters, digits, '.', '_', '-'. A shipped model's name is refused (the user registry would hide
    it); an existing user model's only with `replace`. Bad input raises a `CxrError` with one sentence."""
    from cxrviewer.models.registry import ModelEntry, installed_models
    from cxrviewer.trainer.export import export_run  # imports torch

    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(None, f"'{name}' is not a usable model name (letters, digits, '.', '_' or '-', "
                               "at most 64, starting with a letter or digit)")
    existing = installed_models().get(name)
    if existing is not None and (existing.source != "user" or not replace):
        raise BadRequest(None, f"a {existing.source} model named '{name}' is already installed; choose another name")
    out, sha, registered = export_run(run_folder, install=True, name=name)
    return ModelEntry(registered or name, Path(out).resolve(), sha, "user")
