"""Box generation time per heatmap: SCALP Algorithm 1 (k = 5), Talasila et al.'s contours, the
plain threshold box, on 512 x 512 heatmaps of three kinds (seeded, so every run sees the same maps):

    smooth  a 16 x 16 uniform random map, bilinearly upsampled (many irregular blobs)
    blobs   1-4 Gaussian blobs of random size and brightness on a faint smooth background
    cam7    a ReLU'd 7 x 7 normal map, bilinearly upsampled (a ResNet-like CAM)

    .venv/bin/python benchmarks/bench_boxes.py [--maps 200] [--size 512] [--json OUT]

Each map is timed once per method after a warm-up; reported: wall-clock median, best and 90th
percentile, and the median CPU time of the calling thread (wall minus CPU is time lost to other
processes on a shared machine; the load average is printed too). The floor: SCALP's wall-clock
median under 10 ms on every kind (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

SCALP_FLOOR_S = 0.010
METHODS = ("scalp", "talasila", "threshold")


def make_maps(kind: str, n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng([seed, ("smooth", "blobs", "cam7").index(kind)])
    maps = []
    for _ in range(n):
        if kind == "smooth":
            small = rng.random((16, 16)).astype(np.float32)
        elif kind == "cam7":
            small = np.maximum(rng.standard_normal((7, 7)), 0).astype(np.float32)
            small[rng.integers(7), rng.integers(7)] += 1.0  # never all zero
        else:
            small = 0.15 * rng.random((16, 16)).astype(np.float32)
        heat = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        if kind == "blobs":
            y, x = np.mgrid[:size, :size].astype(np.float32)
            for _ in range(int(rng.integers(1, 5))):
                cy, cx = rng.uniform(0, size, 2)
                sigma = rng.uniform(0.04, 0.15) * size
                heat += rng.uniform(0.5, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
        maps.append(heat)
    return maps


def time_method(method: str, maps: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread) seconds per map."""
    from cxrviewer.explain.boxes import boxes_from_heatmap

    for heat in maps[:5]:  # warm-up: imports, work arrays
        boxes_from_heatmap(heat, method=method)
    wall, cpu = [], []
    for heat in maps:
        t0, c0 = time.perf_counter(), time.thread_time()
        boxes_from_heatmap(heat, method=method)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=200, help="heatmaps per kind")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()

    import cxrviewer.explain.boxes  # noqa: F401 - import cost is not part of a box

    rows = []
    load_before = os.getloadavg()[0]
    for kind in ("smooth", "blobs", "cam7"):
        maps = make_maps(kind, args.maps, args.size)
        for method in METHODS:
            wall, cpu = time_method(method, maps)
            times = sorted(wall)
            median = statistics.median(times)
            rows.append({"kind": kind, "method": method, "maps": len(maps), "size": args.size,
                         "median_s": median, "best_s": times[0], "p90_s": times[int(0.9 * (len(times) - 1))],
                         "cpu_median_s": statistics.median(cpu),
                         "floor_s": SCALP_FLOOR_S if method == "scalp" else None,
                         "meets_floor": median < SCALP_FLOOR_S if method == "scalp" else None})
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(f"machine: {machine_description()}; {load}")
    print(f"| heatmaps ({args.size}x{args.size}) | method | median (ms) | best (ms) | p90 (ms) | CPU median (ms) | floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        floor = f"< {r['floor_s'] * 1e3:.0f} ms" if r["floor_s"] else ""
        print(f"| {r['kind']} x{r['maps']} | {r['method']} | {r['median_s'] * 1e3:.2f} | {r['best_s'] * 1e3:.2f} "
              f"| {r['p90_s'] * 1e3:.2f} | {r['cpu_median_s'] * 1e3:.2f} | {floor} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "load": load, "rows": rows}, indent=2))
    return 0 if all(r["meets_floor"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
