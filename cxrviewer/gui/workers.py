"""Run work off the UI thread: a QRunnable that reports its result or its one-sentence error."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from cxrviewer.errors import CxrError


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)


class Task(QRunnable):
    """Calls `fn()` in the global thread pool; `done(result)` or `failed(sentence)` on the UI thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = _Signals()

    def run(self) -> None:
        try:
            result = self.fn()
        except CxrError as err:
            self.signals.failed.emit(str(err))
        except Exception as exc:  # noqa: BLE001 - the UI shows one sentence, the log keeps the trace
            traceback.print_exc()
            self.signals.failed.emit(f"Unexpected error: {type(exc).__name__}: {exc}")
        else:
            self.signals.done.emit(result)


_LIVE: set[Task] = set()  # tasks (and their signal objects) stay referenced until they report


def run_task(fn: Callable[[], Any], on_done: Callable[[Any], None], on_failed: Callable[[str], None],
             pool: QThreadPool | None = None) -> Task:
    """Run `fn` in `pool` (default: the global pool); the callbacks run on the UI thread."""
    task = Task(fn)
    task.setAutoDelete(False)
    _LIVE.add(task)
    task.signals.done.connect(on_done)
    task.signals.failed.connect(on_failed)
    task.signals.done.connect(lambda _result: _LIVE.discard(task))
    task.signals.failed.connect(lambda _sentence: _LIVE.discard(task))
    (pool or QThreadPool.globalInstance()).start(task)
    return task
