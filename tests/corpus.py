"""The real DICOM corpus: pydicom's own test files plus pydicom-data's, listed from disk.

(pydicom.data.get_testdata_files with a pattern tries to download missing files over the network;
listing the two installed folders never does.)
"""

from __future__ import annotations

from pathlib import Path


def corpus_dirs() -> list[Path]:
    import pydicom.data

    dirs = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        dirs.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return [d for d in dirs if d.is_dir()]


def corpus_files() -> list[Path]:
    files: list[Path] = []
    for d in corpus_dirs():
        files.extend(p for p in sorted(d.iterdir()) if p.is_file())
    return files
