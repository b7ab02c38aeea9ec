"""Catalog speed: cold scan rate, reopen of an unchanged folder, incremental rescan.

    .venv/bin/python benchmarks/bench_catalog.py [-n 2000] [--folder DIR] [--json OUT]

Generates N small DICOM files (512x512 8-bit, one patient/study/series each, distinct UIDs) from
real NIH PNG pixels (../shared/data/nih-sample/images; a synthetic gradient when absent), using
`cxrviewer.io.dicomize.build_dataset` when it is there, then times:

- cold scan: `Catalog.open` with no index, automatic workers and with one process (best and
  median of --repeat runs: other work on the machine makes single runs noisy);
- reopen: `Catalog.open` of the unchanged folder (stats every file, reads none), and with
  `rescan=False` (trusts the index);
- rescan after touching 1% of the files.

The files were just written, so the OS page cache is warm; a first scan from a cold disk is
bounded by the disk instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

from cxrviewer.io.catalog import Catalog  # noqa: E402
from cxrviewer.io.labels import LabelRow  # noqa: E402

NIH_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih-sample" / "images"


def _pixels(count: int) -> list[np.ndarray]:
    """Up to `count` distinct 512x512 uint8 images from the NIH sample (or a gradient)."""
    import cv2

    out: list[np.ndarray] = []
    for png in sorted(NIH_IMAGES.glob("*.png"))[:count] if NIH_IMAGES.is_dir() else []:
        img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            out.append(cv2.resize(img, (512, 512), interpolation=cv2.INTER_AREA) if img.shape != (512, 512) else img)
    return out or [np.tile(np.arange(512, dtype=np.uint16).astype(np.uint8), (512, 1))]


def _dataset(i: int, pixels: np.ndarray) -> pydicom.Dataset:
    row = LabelRow(image_index=f"{i:08d}_000.png", labels=(), follow_up=i % 3, patient_id=f"B{i:05d}",
                   age=20 + i % 60, sex="MF"[i % 2], view_position="PA" if i % 2 else "AP")
    try:
        from cxrviewer.io.dicomize import build_dataset

        return build_dataset(Path(row.image_index), row, pixels, modality="DX")
    except Exception:  # noqa: BLE001 - dicomize absent or changed: write a minimal DX file
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.PatientName, ds.PatientSex = row.patient_id, f"NIH^{row.patient_id}", row.sex
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20000101", "DX", 1, 1
        ds.ViewPosition, ds.Rows, ds.Columns = row.view_position, *pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        return ds


def generate(folder: Path, n: int) -> int:
    """Write `n` DICOM files (no suffix on every tenth) into 20 subfolders; return total bytes."""
    images = _pixels(min(n, 474))
    total = 0
    for i in range(n):
        sub = folder / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / (f"img{i:05d}" if i % 10 == 0 else f"img{i:05d}.dcm")
        _dataset(i, images[i % len(images)]).save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def _timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def run(folder: Path, n: int, repeat: int = 3) -> dict[str, object]:
    if not any(folder.rglob("*")):
        nbytes = generate(folder, n)
    else:
        nbytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    index_dir = Path(tempfile.mkdtemp(prefix="catidx-"))
    figures: dict[str, object] = {"files": n, "mean_file_kb": round(nbytes / max(n, 1) / 1024, 1),
                                  "repeats": repeat}
    try:
        for label, workers in (("auto", None), ("1", 1)):
            times = []
            for r in range(repeat):  # best and median of `repeat` cold scans, each with a new index
                index = index_dir / f"cold-{label}-{r}.sqlite"
                cat, dt = _timed(lambda: Catalog.open(folder, index, workers=workers))
                assert len(cat.images()) == n, (len(cat.images()), cat.errors[:3])
                cat.close()
                times.append(dt)
            figures[f"cold_files_per_s_workers_{label}_best"] = round(n / min(times), 1)
            figures[f"cold_files_per_s_workers_{label}_median"] = round(n / statistics.median(times), 1)
        index = index_dir / "cold-auto-0.sqlite"
        cat, dt = _timed(lambda: Catalog.open(folder, index))
        figures["reopen_rescan_s"] = round(dt, 4)
        cat.close()
        cat, dt = _timed(lambda: Catalog.open(folder, index, rescan=False))
        figures["reopen_trusted_s"] = round(dt, 4)
        touched = sorted(p for p in folder.rglob("*") if p.is_file())[:: 100]
        for p in touched:
            os.utime(p, ns=(time.time_ns(), time.time_ns()))
        report, dt = _timed(cat.scan)
        figures["rescan_touched_files"] = report.changed
        figures["rescan_touched_s"] = round(dt, 4)
        cat.close()
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="number of DICOM files (default 2000)")
    ap.add_argument("--folder", type=Path, help="use (or fill, if empty) this folder instead of a temporary one")
    ap.add_argument("--repeat", type=int, default=3, help="cold scans per setting (best and median)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    tmp = None
    folder = args.folder
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="bench-catalog-")
        folder = Path(tmp)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        figures = run(folder, args.n, args.repeat)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    info = f"{machine_description()}, pydicom {pydicom.__version__}"
    print(f"machine: {info}\n")
    print("| measure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
