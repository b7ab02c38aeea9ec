"""Progress of a training run: rich bars for people, JSON lines for the viewer, a log in the run.

Every event is a dict with an "event" key: "start", "step", "epoch", "checkpoint", "end" or
"error". `JsonlReporter` prints one JSON object per line on stdout and flushes (the viewer runs
`cxrviewer-train fit --progress jsonl` as a subprocess and reads them); `RichReporter` draws a
progress bar on stderr; both also append every event to `<run>/progress.jsonl`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Reporter:
    """Base: keeps the run log; subclasses show the events."""

    def __init__(self) -> None:
        self._log: TextIO | None = None

    def attach(self, run_dir: Path) -> None:
        self._log = open(run_dir / "progress.jsonl", "a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        record = _clean({"event": event, "time": round(time.time(), 3), **fields})
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()
        self.show(record)

    def show(self, record: dict[str, Any]) -> None:
        """Display one event (nothing in the base class)."""

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class JsonlReporter(Reporter):
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def show(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class QuietReporter(Reporter):
    """Only the run log (library use and tests)."""


class RichReporter(Reporter):
    """A progress bar per stage with loss, throughput and data-wait share; epoch summaries as lines."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console)
        self.task = None

    def show(self, record: dict[str, Any]) -> None:
        kind = record["event"]
        if kind == "start":
            self.progress.start()
            self.task = self.progress.add_task(f"{record.get('method', '')}", total=record.get("total_steps"), info="")
            self.console.print(f"run folder: {record.get('run')}")
        elif kind == "step" and self.task is not None:
            info = (f"{record.get('stage')} ep {record.get('epoch')} loss {record.get('loss', float('nan')):.4f} "
                    f"{record.get('images_per_s', 0):.1f} img/s wait {100 * (record.get('data_wait') or 0):.0f}%")
            self.progress.update(self.task, completed=record.get("global_step"), info=info)
        elif kind == "epoch":
            mean = record.get("mean_auc")
            text = f"{record.get('stage')} epoch {record.get('epoch')}: validation mean AUC " + (
                f"{mean:.4f}" if isinstance(mean, float) else "n/a")
            self.console.print(text + ("  (best)" if record.get("best") else ""))
        elif kind in ("end", "error") and self.task is not None:  # the command line prints errors itself
            self.progress.stop()
            if kind == "end":
                self.console.print(f"best model: {record.get('best_model')}")


def make_reporter(kind: str) -> Reporter:
    if kind == "jsonl":
        return JsonlReporter()
    if kind == "rich":
        return RichReporter()
    if kind == "none":
        return QuietReporter()
    raise ValueError(f"unknown progress kind '{kind}' (rich, jsonl or none)")
