"""Typed errors for bad input.

Every error carries the file it is about and renders as one sentence a user can act on
(`str(err)`), e.g. "RG1.dcm: the file is truncated (pixel data ends early)." The GUI shows that
sentence, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CxrError(Exception):
    """Base of every error cxrviewer raises for bad input."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem.rstrip(".")
        super().__init__(self.sentence)

    @property
    def sentence(self) -> str:
        where = f"{self.path.name}: " if self.path is not None else ""
        return f"{where}{self.problem}."

    def __str__(self) -> str:
        return self.sentence


class MissingFile(CxrError):
    """The file does not exist or cannot be read."""


class CorruptImage(CxrError):
    """The file claims a format it does not hold: truncated, malformed, undecodable."""


class UnsupportedFormat(CxrError):
    """Not a DICOM file and not a raster image format we read."""


class UnsupportedDicom(CxrError):
    """A valid DICOM file we cannot show as a radiograph (syntax, layout or pixel format)."""


class NotAnImage(UnsupportedDicom):
    """A DICOM object without pixel data: SR, presentation state, KO, RT plan, waveform..."""


class BadLabels(CxrError):
    """A labels table that is missing columns or rows."""


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn the OS's errors while opening/reading `path` into `MissingFile` with one sentence."""
    try:
        yield
    except FileNotFoundError as exc:
        raise MissingFile(path, "the file does not exist") from exc
    except IsADirectoryError as exc:
        raise MissingFile(path, "this is a folder, not a file") from exc
    except PermissionError as exc:
        raise MissingFile(path, "the file cannot be read (permission denied)") from exc
    except OSError as exc:
        raise MissingFile(path, f"the file cannot be read ({exc.strerror or exc})") from exc


def first_line(exc: BaseException, limit: int = 160) -> str:
    """A third-party exception's first line (or its type name), short enough for a sentence."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
