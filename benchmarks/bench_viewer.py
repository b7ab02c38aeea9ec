"""The viewer, timed as a user meets it (offscreen Qt, the real main window):

1. opening a 2048×2048 16-bit DICOM (a real NIH radiograph upsampled and written as DX) until the
   first pixel is painted on the canvas, and until the findings and the heatmap are shown;
2. resident memory with a 2,000-image folder open after browsing 50 of its images one by one
   (each shown and analysed), pixels loaded on demand and thumbnails cached on disk.

    .venv/bin/python benchmarks/bench_viewer.py [--repeat 5] [--images 2000] [--browse 50] [--model default]
                                               [--device cpu] [--json OUT]

The model is the registered `default` when installed, else a random-initialised network of the
default architecture (ResNet-50, 512 px): the time is the network's, not the weights'. Times are
medians over `repeat` opens of the same file (in the page cache: decoding, display, analysis and
painting are measured, not the disk). Floors from issue 5: first pixel < 0.5 s, RSS < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import machine_description  # noqa: E402

NIH = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-sample"


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB, from /proc."""
    now = peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


def source_pictures(n: int) -> list:
    """`n` greyscale radiographs (uint8): the NIH sample when present, else the bundled samples."""
    import numpy as np

    from cxrviewer.io import load_image
    from cxrviewer.resources import path as resource

    files = sorted((NIH / "images").glob("*.png")) or sorted(resource("samples").rglob("*.dcm"))
    out = []
    for f in files[:n]:
        image = load_image(f)
        px = image.pixels.astype(np.float32)
        px = (255 * (px - px.min()) / max(1e-6, float(px.max() - px.min()))).astype(np.uint8)
        out.append(px)
    return out


def write_big_dicom(folder: Path) -> Path:
    """A 2048×2048, 16-bit (12 bits stored) MONOCHROME2 DX file from a real radiograph."""
    import cv2
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    picture = source_pictures(1)[0]
    big = cv2.resize(picture, (2048, 2048), interpolation=cv2.INTER_CUBIC).astype(np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "big-2048.dcm"
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "DX", "BENCH", generate_uid(), generate_uid()
    ds.Rows = ds.Columns = 2048
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.15, 0.15]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = big.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ensure_model(name: str) -> str:
    """`name` when registered; else a random-initialised default-architecture model installed as 'bench'."""
    from cxrviewer.models import create_model, installed_models
    from cxrviewer.models.checkpoint import save_model
    from cxrviewer.models.registry import install_model

    if name in installed_models():
        return name
    model, spec = create_model("resnet50", name="bench-random-resnet50")
    path = Path(os.environ["CXRVIEWER_DATA_DIR"]) / "bench.safetensors"
    install_model("bench", path, save_model(model, spec, path))
    print(f"model '{name}' is not installed: timing a random-initialised ResNet-50 at {spec.input_size} instead")
    return "bench"


def wait(app, condition, timeout: float = 300.0) -> float:
    t0 = time.perf_counter()
    while not condition():
        app.processEvents()
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the viewer did not get there in time")
        time.sleep(0.001)
    return time.perf_counter()


def time_open(app, window, path: Path, repeat: int) -> dict:
    """Median seconds from asking for `path` to (first paint of its pixels, findings, heatmap shown)."""
    panel = window.panel
    item, overlay = panel.canvas.item, panel.overlay.item
    painted: list[float] = []
    original = item.paint

    def paint(*args):
        out = original(*args)
        if item.image is not None and item.image.shape[:2] == (2048, 2048):  # the new image's pixels
            painted.append(time.perf_counter())
        return out

    item.paint = paint
    firsts, findings, heatmaps = [], [], []
    for i in range(repeat + 1):
        window.panel.document.set_image(None)
        wait(app, lambda: not panel.busy)
        painted.clear()
        t0 = time.perf_counter()
        window.open_image(path)
        wait(app, lambda: panel.document.image is not None and painted)
        first = painted[0]
        done = wait(app, lambda: panel.analysis.result is not None)
        shown = wait(app, lambda: overlay.image is not None and overlay.isVisible())
        if i:  # the first open loads the model and imports torch: reported apart
            firsts.append(first - t0)
            findings.append(done - t0)
            heatmaps.append(shown - t0)
        else:
            cold = {"first_pixel_s": first - t0, "findings_s": done - t0, "heatmap_s": shown - t0}
    item.paint = original
    return {"cold": cold, "first_pixel_s": statistics.median(firsts), "findings_s": statistics.median(findings),
            "heatmap_s": statistics.median(heatmaps)}


def make_folder(folder: Path, n: int) -> Path:
    """`n` PNG files (real radiographs, reused with small shifts so every file differs)."""
    import cv2
    import numpy as np

    pictures = source_pictures(min(n, 474))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        picture = np.roll(pictures[i % len(pictures)], i // len(pictures), axis=1)
        cv2.imwrite(str(folder / f"{i:05d}_000.png"), picture)
    return folder


def browse(app, window, folder: Path, n: int) -> dict:
    t0 = time.perf_counter()
    window.open_folder(folder, then_select_first=True)
    wait(app, lambda: window.panel.document.image is not None and window.idle and not window.panel.busy, 900)
    opened = time.perf_counter() - t0
    paths = [p for p in sorted(folder.glob("*.png"))][1:n]
    for path in paths:
        window.open_image(path)
        wait(app, lambda: window.panel.document.image is not None and str(window.panel.document.image.path)
             == str(path) and window.panel.analysis.result is not None and not window.panel.busy)
    now, peak = rss_mb()
    return {"images": len(list(folder.glob("*.png"))), "browsed": len(paths) + 1, "open_folder_s": opened,
            "rss_mb": now, "peak_rss_mb": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--browse", type=int, default=50)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cxrviewer-bench-"))
    for var in ("CXRVIEWER_CACHE_DIR", "CXRVIEWER_CONFIG_DIR"):
        os.environ[var] = str(tmp / var.lower())
    os.environ.setdefault("CXRVIEWER_DATA_DIR", str(tmp / "data"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from cxrviewer.gui.main_window import MainWindow
    from cxrviewer.settings import Settings

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication.instance() or QApplication([])
    model = ensure_model(args.model)
    settings = Settings(annotator="bench", store_path=tmp / "reads.cxra", model=model, device=args.device)
    window = MainWindow(settings=settings)
    window.resize(1400, 900)
    window.show()

    big = write_big_dicom(tmp)
    timing = time_open(app, window, big, args.repeat)
    folder = make_folder(tmp / "folder", args.images)
    memory = browse(app, window, folder, args.browse)
    window.close()

    print(f"machine: {machine_description()}; model '{model}' on {args.device}")
    print("| 2048×2048 DICOM | median (s) | cold first open (s) | floor |")
    print("|---|---|---|---|")
    print(f"| first pixel on screen | {timing['first_pixel_s']:.3f} | {timing['cold']['first_pixel_s']:.3f} | < 0.5 |")
    print(f"| findings shown | {timing['findings_s']:.3f} | {timing['cold']['findings_s']:.3f} | |")
    print(f"| heatmap shown | {timing['heatmap_s']:.3f} | {timing['cold']['heatmap_s']:.3f} | |")
    print(f"\nfolder of {memory['images']} images, {memory['browsed']} browsed (each shown and analysed): "
          f"opened and first image shown in {memory['open_folder_s']:.1f} s; "
          f"RSS {memory['rss_mb']:.0f} MiB, peak {memory['peak_rss_mb']:.0f} MiB (floor < 2048 MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "model": model,
                                               "device": args.device, "open": timing, "memory": memory}, indent=2))
    ok = timing["first_pixel_s"] < 0.5 and memory["peak_rss_mb"] < 2048
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
