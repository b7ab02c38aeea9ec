"""Radiomics readout time: `compute_radiomics` for a 256×256 box on a real 1024×1024 NIH image,
all seven KACL feature classes, with the shipped settings (resources/radiomics.yaml).

    .venv/bin/python benchmarks/bench_radiomics.py [--repeat 10] [--json OUT]

Reports the median and the best of `repeat` runs after one warm-up (imports pyradiomics and builds
the cached extractor; that first call is reported separately), plus the whole 1024×1024 image for
reference. Uses the first PNG of ../shared/data/nih-sample/images-1024/, or a synthetic textured
image when the shared data is absent. Exit status 1 when the box misses its floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGES_1024 = REPO.parent / "shared" / "data" / "nih-sample" / "images-1024"
BOX = (384, 320, 640, 576)  # x0, y0, x1, y1: 256 × 256, mid-chest
FLOOR_S = 0.5


def load_image() -> tuple[np.ndarray, str]:
    """A real 1024×1024 NIH PNG as float32, or a synthetic textured stand-in."""
    files = sorted(IMAGES_1024.glob("*.png")) if IMAGES_1024.is_dir() else []
    if files:
        import cv2

        pixels = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        if pixels is not None and pixels.ndim == 2:
            return pixels.astype(np.float32), files[0].name
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024]
    img = 120 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 12, yy.shape)
    return np.clip(np.round(img), 0, 255).astype(np.float32), "synthetic 1024×1024 (shared data absent)"


def time_runs(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()

    image, source = load_image()
    from cxrviewer.radiomics import compute_radiomics, feature_names

    t0 = time.perf_counter()
    first = compute_radiomics(image, BOX)  # warm-up: imports pyradiomics/SimpleITK, builds the extractor
    cold = time.perf_counter() - t0
    if first.status != "ok":
        print(f"radiomics failed on the benchmark box: {first.status}: {first.message}")
        return 1

    cases = [("256×256 box", lambda: compute_radiomics(image, BOX), FLOOR_S),
             ("whole 1024×1024 image", lambda: compute_radiomics(image), None)]
    rows = []
    for name, fn, floor in cases:
        times = time_runs(fn, args.repeat)
        median = statistics.median(times)
        rows.append({"case": name, "median_s": median, "best_s": min(times), "runs": args.repeat,
                     "floor_s": floor, "meets_floor": floor is None or median < floor})

    n_features = len(feature_names())
    print(f"machine: {machine_description()}")
    print(f"image: {source}; {n_features} features (7 classes); first call incl. imports: {cold:.2f} s")
    print("| region | median (s) | best (s) | runs | floor (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        floor = f"< {r['floor_s']}" if r["floor_s"] is not None else "—"
        print(f"| {r['case']} | {r['median_s']:.3f} | {r['best_s']:.3f} | {r['runs']} | {floor} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "image": source,
                                               "features": n_features, "first_call_s": cold, "rows": rows},
                                              indent=2))
    return 0 if all(r["meets_floor"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
