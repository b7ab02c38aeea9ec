"""When forking worker processes is both worth it and safe (shared by the catalog and dicomize).

pydicom's parsing and encoding are pure Python and hold the GIL, so threads reach about one core
and processes scale. Fork, not spawn or forkserver: those re-import the caller's `__main__` and
take 0.6–0.9 s to start. Fork only while this is the only Python thread and no Qt binding is
loaded: a child can inherit a lock another thread holds (idle BLAS threads are fork-safe).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading

QT_MODULES = ("PySide6", "PyQt6", "PyQt5", "PySide2")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fork_context(n_items: int, min_items: int) -> multiprocessing.context.BaseContext | None:
    """A fork context when `n_items` justify a pool and forking is safe here, else None."""
    if n_items < min_items or cpu_count() < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    if threading.active_count() > 1 or any(m in sys.modules for m in QT_MODULES):
        return None
    return multiprocessing.get_context("fork")
