"""Open-to-8-bit-display time: load_image (read + decode + modality LUT) then to_display (VOI +
MONOCHROME1 inversion), on the real chest CR of pydicom-data, uncompressed and JPEG 2000.

    .venv/bin/python benchmarks/bench_open.py [--repeat 7] [--json OUT]

Reports the median and the best of `repeat` runs per file (the file is in the OS page cache after
the first run: this measures decoding and conversion, not the disk).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description  # noqa: E402

FILES = {"RG1_UNCR.dcm": 0.3, "RG1_J2KR.dcm": 1.0, "RG1_J2KI.dcm": 1.0}  # name -> floor in s


def time_open(path: str, repeat: int) -> tuple[list[float], list[float]]:
    from cxrviewer.imaging.voi import to_display
    from cxrviewer.io import load_image

    totals, loads = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        image = load_image(path)
        t1 = time.perf_counter()
        to_display(image)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        totals.append(t2 - t0)
    return totals, loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    from pydicom.data import get_testdata_file

    import cxrviewer.io  # noqa: F401 - import cost is not part of opening a file

    rows = []
    for name, floor in FILES.items():
        path = get_testdata_file(name)
        if not path:
            print(f"skip {name}: pydicom-data is not installed")
            continue
        time_open(path, 1)  # warm-up: imports, page cache
        totals, loads = time_open(path, args.repeat)
        rows.append({"file": name, "median_s": statistics.median(totals), "best_s": min(totals),
                     "decode_median_s": statistics.median(loads), "floor_s": floor,
                     "meets_floor": statistics.median(totals) < floor})
    print(f"machine: {machine_description()}")
    print("| file | open→display median (s) | best (s) | of which load+decode (s) | floor (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['median_s']:.3f} | {r['best_s']:.3f} | {r['decode_median_s']:.3f} | < {r['floor_s']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    return 0 if all(r["meets_floor"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
